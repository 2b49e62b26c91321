"""One figure style for the whole book."""
from __future__ import annotations

import matplotlib

PALETTE = "colorblind"


def set_style() -> None:
    """Seaborn's whitegrid with a colour-blind palette and readable sizes."""
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    matplotlib.rcParams.update({
        "figure.dpi": 100,
        "savefig.dpi": 150,
        "savefig.bbox": "tight",
        "axes.titlesize": "medium",
        "legend.fontsize": "small",
        "figure.autolayout": True,
    })
