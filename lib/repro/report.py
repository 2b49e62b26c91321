"""The bookkeeping of one chapter run: seeds, device, outputs, glue, scorecard, metrics.json.

The scorecard model itself (claims declared once, statuses decided by rules)
lives in :mod:`repro.scorecard`; this module ties it to a run.
"""
from __future__ import annotations

import html
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .device import configure_threads, describe, get_device
from .paths import git_commit, repo_root, run_dir  # noqa: F401  (repo_root re-exported)
from .scorecard import (CHECK, FINDING, INCONCLUSIVE, NOT_EVALUATED, NOT_REPRODUCED, PASSES,  # noqa: F401
                        REPRODUCED, THEOREM, Claim, Scorecard)
from .seed import seed_everything



def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, torch.Tensor):
        return _jsonable(v.tolist())
    if hasattr(v, "item") and callable(v.item):  # numpy scalars
        return v.item()
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    return v


class Run:
    """One execution of a chapter: seeds, device, threads, outputs, scorecard.

    ``run = Run("grokking", cfg)`` at the top of a chapter records the seed and
    config, picks the device and prepares the output folder; ``run.glue`` keeps
    a number for the prose and ``metrics.json``; ``run.finish()`` writes
    ``metrics.json`` and returns the scorecard for display.
    """

    def __init__(self, chapter: str, config, claims=(), threads: int | None = None):
        self.chapter = chapter
        self.config = config
        self.started = time.time()
        self.dir = run_dir(chapter)
        self.figures = self.dir / "figures"
        self.figures.mkdir(parents=True, exist_ok=True)
        self.device = get_device(config.device)
        self.threads = configure_threads(threads) if self.device.type == "cpu" else torch.get_num_threads()
        self.generator = seed_everything(config.seed)
        self.scorecard = Scorecard(chapter, config.profile, tuple(claims))
        self.numbers: dict[str, Any] = {}
        print(f"[{chapter}] profile={config.profile} seed={config.seed} device={describe(self.device)} "
              f"threads={self.threads} torch={torch.__version__} repro={__version__}")
        print(f"[{chapter}] config: {json.dumps(config.to_dict())}")
        print(f"[{chapter}] outputs: {self.dir}")

    def glue(self, name: str, value: Any, display: bool = False) -> Any:
        """Keep ``value`` for metrics.json and for ``{glue:}`` references in the prose."""
        self.numbers[name] = _jsonable(value)
        try:
            from myst_nb import glue
        except ImportError:  # pragma: no cover - myst_nb ships with jupyter-book
            return value
        glue(name, value, display=display)
        return value

    def savefig(self, fig, name: str) -> Path:
        path = self.figures / f"{name}.png"
        fig.savefig(path)
        return path

    def metrics(self) -> dict:
        return {
            "chapter": self.chapter,
            "profile": self.config.profile,
            "config": self.config.to_dict(),
            "seed": self.config.seed,
            "scorecard": self.scorecard.to_records(),
            **self.scorecard.counts(),
            "numbers": _jsonable(self.numbers),
            "notebook_wall_time_s": round(time.time() - self.started, 2),
            "library_version": __version__,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "device": describe(self.device),
            "threads": self.threads,
            "commit": git_commit(),
        }

    def finish(self) -> Scorecard:
        """Check every declared claim was recorded, write metrics.json, return the scorecard (two tables)."""
        self.scorecard.complete()
        path = self.dir / "metrics.json"
        path.write_text(json.dumps(self.metrics(), indent=2))
        print(f"[{self.chapter}] {self.scorecard.summary()}; wrote {path}")
        return self.scorecard
