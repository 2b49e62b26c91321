"""The IWAE chapter's typed config, the paper's reference values and the chapter's claims.

Imports only the standard library, :mod:`repro.config` and
:mod:`repro.scorecard` (no torch), so ``python -m repro params iwae`` is
instant.  The experiment runs live in :mod:`repro.chapters.iwae.experiments`,
the algorithm in :mod:`repro.vae`.
"""
from __future__ import annotations

from dataclasses import dataclass

from repro.config import ConfigError, ProfileConfig, param
from repro.scorecard import Claim, Greater, Holds, Less, Within

DATASETS = ("digits", "mnist", "omniglot")
OBJECTIVES = ("VAE", "IWAE")

# ---------------------------------------------------------------------------
# The paper's numbers (Burda et al. 2016; fact sheet /work/shared/papers/iwae.md)
# ---------------------------------------------------------------------------

#: Table 1, MNIST: (layers, k, objective) -> (test NLL in nats, active units).  At k = 1 the two
#: objectives coincide, so both columns hold the same model.
PAPER_TABLE1 = {
    (1, 1, "VAE"): (86.76, "19"), (1, 1, "IWAE"): (86.76, "19"),
    (1, 5, "VAE"): (86.47, "20"), (1, 5, "IWAE"): (85.54, "22"),
    (1, 50, "VAE"): (86.35, "20"), (1, 50, "IWAE"): (84.78, "25"),
    (2, 1, "VAE"): (85.33, "16+5"), (2, 1, "IWAE"): (85.33, "16+5"),
    (2, 5, "VAE"): (85.01, "17+5"), (2, 5, "IWAE"): (83.89, "21+5"),
    (2, 50, "VAE"): (84.78, "17+5"), (2, 50, "IWAE"): (82.90, "26+7"),
}
#: Table 2, MNIST, 1 stochastic layer: (first objective, continued with) -> (NLL before, NLL after).
PAPER_TABLE2 = {("VAE", "IWAE"): (86.76, 84.88), ("IWAE", "VAE"): (84.78, 86.02)}
#: Latent units of the paper's nets (Table 1's "of 50" / "of 100 + 50").
PAPER_LATENT_UNITS = {1: 50, 2: 150}

# ---------------------------------------------------------------------------
# The config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IWAEConfig(ProfileConfig):
    """All knobs of the IWAE chapter; see ``python -m repro params iwae``."""

    dataset: str = param("digits", "digits (scikit-learn 8x8, offline) | mnist | omniglot", choices=DATASETS)
    data_root: str = param("data", "folder holding one folder per data set: mnist/, omniglot/ (paper profile)")
    download: bool = param(False, "download MNIST / Omniglot into data_root if missing (needs internet)")
    n_test: int = param(297, "digits only: test images held out by the fixed split", min=1, max=1796)
    layers: tuple[int, ...] = param((1, 2), "stochastic-layer counts to train (paper: 1 and 2)", min=1, max=2)
    ks: tuple[int, ...] = param((1, 5, 50), "numbers of importance samples k (Table 1 rows)", min=1)
    n_seeds: int = param(3, "models per (layers, k, objective): seeds seed, seed+1, ...", min=1, max=32)
    hidden_1l: int = param(64, "deterministic width of the 1-layer net (paper: 200)", min=1)
    latent_1l: int = param(16, "latent units of the 1-layer net (paper: 50)", min=1)
    hidden_2l: tuple[int, ...] = param((64, 32), "deterministic widths of the 2-layer net (paper: 200, 100)", min=1)
    latent_2l: tuple[int, ...] = param((32, 16), "latent units of the 2-layer net (paper: 100, 50)", min=1)
    batch_size: int = param(20, "minibatch size (paper: 20)", min=1)
    lr: float = param(1e-3, "learning rate of stage 0 (paper: 1e-3)", min=0.0)
    beta1: float = param(0.9, "Adam beta1", min=0.0, max=1.0)
    beta2: float = param(0.999, "Adam beta2", min=0.0, max=1.0)
    adam_eps: float = param(1e-4, "Adam epsilon (paper: 1e-4)", min=0.0)
    n_stages: int = param(4, "stages i = 0..n-1 of 3^i passes at lr 10^(-i/7) (paper: 8, 3,280 passes)", min=1, max=8)
    eval_k: int = param(5000, "k of the test log-likelihood estimate -L_k (paper: 5000)", min=1)
    eval_chunk: int = param(100, "samples drawn at once when estimating bounds (memory bound)", min=1)
    eval_batch: int = param(20, "test images per evaluation batch (memory bound)", min=1)
    max_test: int = param(0, "evaluate on the first max_test test images only (0: all)", min=0)
    bound_ks: tuple[int, ...] = param((1, 5, 50), "k of the L_k estimates checked for monotonicity", min=1)
    bound_samples: int = param(500, "samples per L_k estimate of bound_ks (averaged groups of k)", min=1)
    curve_ks: tuple[int, ...] = param((1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
                                      "k of the L_k-versus-k curve of one fixed model", min=1)
    curve_samples: int = param(1000, "samples per point of the L_k curve (at least k)", min=1)
    active_threshold: float = param(1e-2, "a unit is active if A_u = Cov_x(E_q[u|x]) exceeds this", min=0.0)
    active_samples: int = param(100, "samples of the layer below for E_q[h_l|x] of deeper layers", min=1)
    continue_passes: int = param(13, "Table 2: extra passes with either objective (paper: 3^8)", min=0)
    continue_k: int = param(50, "Table 2: k of the IWAE objective when continuing (paper: 50)", min=2)
    checkpoint_dir: str | None = param(None, "save each training group at stage ends here and resume from it")
    checkpoint_every: int = param(0, "also save every this many passes within a stage (0: stage ends only)", min=0)
    progress: bool = param(True, "report training progress (periodic lines, one summary per group)")

    PROFILES = {
        "smoke": dict(layers=(1, 2), ks=(1, 5), n_seeds=2, hidden_1l=32, latent_1l=8, hidden_2l=(32, 16),
                      latent_2l=(16, 8), batch_size=100, n_stages=2, eval_k=200, max_test=60,
                      bound_ks=(1, 5, 50), bound_samples=100, curve_ks=(1, 5, 50, 200), curve_samples=200,
                      continue_passes=1, continue_k=5, active_samples=20),
        "book": {},
        "paper": dict(dataset="mnist", layers=(1, 2), n_seeds=3, hidden_1l=200, latent_1l=50,
                      hidden_2l=(200, 100), latent_2l=(100, 50), n_stages=8, eval_chunk=500, eval_batch=100,
                      curve_samples=5000, continue_passes=3 ** 8, checkpoint_dir="checkpoints/iwae",
                      checkpoint_every=27),
    }

    def check(self) -> None:
        """Cross-field rules: two-layer widths, no repeated k or layer count, Table 2's rows exist."""
        if len(self.hidden_2l) != 2 or len(self.latent_2l) != 2:
            raise ConfigError("hidden_2l and latent_2l need two entries (one per stochastic layer)")
        if len(set(self.ks)) != len(self.ks) or len(set(self.layers)) != len(self.layers):
            raise ConfigError("ks and layers must not repeat")
        if self.dataset == "digits" and self.batch_size > 1797 - self.n_test:
            raise ConfigError("batch_size exceeds the digits training set")
        if self.continue_passes > 0 and not (1 in self.layers and 1 in self.ks and self.continue_k in self.ks):
            raise ConfigError("Table 2 (continue_passes > 0) continues the 1-layer models with k = 1 and "
                              "k = continue_k: both must be in ks and 1 in layers (or set continue_passes=0)")

    def widths(self, n_layers: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(deterministic widths, latent units), one entry per stochastic layer, of the ``n_layers`` net."""
        if n_layers == 1:
            return (self.hidden_1l,), (self.latent_1l,)
        return tuple(self.hidden_2l), tuple(self.latent_2l)

    @property
    def total_passes(self) -> int:
        """Passes over the training set of the schedule: sum of 3^i for i < n_stages."""
        return (3 ** self.n_stages - 1) // 2

    @property
    def seeds(self) -> list[int]:
        """The seeds of the models of every (layers, k, objective): seed, seed + 1, ..."""
        return [self.seed + r for r in range(self.n_seeds)]

    @property
    def k_max(self) -> int:
        """The largest k trained: the Table 1 row the findings compare (50 at book and paper)."""
        return max(self.ks)


# ---------------------------------------------------------------------------
# The claims
# ---------------------------------------------------------------------------

BOOK = IWAEConfig.for_profile("book")
K = BOOK.k_max                    # the k the statements name (the largest trained k at book and paper)
SEEDS = 3                         # seeds a finding needs to be reproduced
Z = 2.0                           # margin of the comparisons, in standard errors
MONOTONE_SE = 3.0                 # an L_k estimate may fall below the previous one by this many s.e.
MNIST_TOL = 1.0                   # nats: our MNIST 2-layer IWAE against the paper's 82.90
LAYER_WORDS = {1: "1 stochastic layer", 2: "2 stochastic layers"}
PAPER_RUN = "python -m repro run iwae --profile paper -p download=true"


def _nll_claim(n_layers: int) -> Claim:
    vae, iwae = PAPER_TABLE1[(n_layers, K, "VAE")][0], PAPER_TABLE1[(n_layers, K, "IWAE")][0]
    k1 = PAPER_TABLE1[(n_layers, 1, "VAE")][0]
    vae, iwae, k1 = f"{vae:.2f}", f"{iwae:.2f}", f"{k1:.2f}"
    return Claim(
        f"iwae-beats-vae-{n_layers}l", "finding",
        f"{LAYER_WORDS[n_layers]}: the IWAE trained with k={K} has a lower test NLL (−L_{BOOK.eval_k}) than the "
        f"VAE trained with the same k={K} samples, per seed (both start from the same weights), over ≥ {SEEDS} "
        f"seeds.  With the shared k=1 model as baseline this is the same as: the IWAE gains more from "
        f"k=1 → {K} than the VAE (Table 1).",
        f"Table 1, MNIST: IWAE {iwae} vs VAE {vae} nats (from {k1} at k=1)",
        Less("test NLL", f"IWAE k={K}", f"VAE k={K}", z=Z, paired=True, min_seeds=SEEDS))


def _active_claim(n_layers: int) -> Claim:
    vae, iwae = PAPER_TABLE1[(n_layers, K, "VAE")][1], PAPER_TABLE1[(n_layers, K, "IWAE")][1]
    return Claim(
        f"active-units-{n_layers}l", "finding",
        f"{LAYER_WORDS[n_layers]}: the IWAE trained with k={K} has strictly more active latent units "
        f"(A_u > {BOOK.active_threshold:g}, summed over layers) than the VAE with k={K}, per seed, by more than "
        f"{Z:g} s.e., over ≥ {SEEDS} seeds (Table 1, brackets).",
        f"Table 1, MNIST: IWAE {iwae} vs VAE {vae} of {PAPER_LATENT_UNITS[n_layers]}",
        Greater("active units", f"IWAE k={K}", f"VAE k={K}", z=Z, paired=True, min_seeds=SEEDS))


CLAIMS = (
    _nll_claim(1),
    _nll_claim(2),
    _active_claim(1),
    _active_claim(2),
    Claim("bound-monotone", "theorem",
          "For every trained model (all layer counts, k and seeds), the test-set estimates satisfy "
          "L_" + " ≤ L_".join(map(str, sorted(set(BOOK.bound_ks) | {BOOK.eval_k})))
          + f": no estimate falls below the previous one by more than {MONOTONE_SE:g} standard errors "
          "(paired over test images).",
          "the paper's method section: L_k ≤ L_{k+1} ≤ log p(x) for any model (proved there)",
          Holds(f"every model, every consecutive pair: z > −{MONOTONE_SE:g}")),
    Claim("vae-then-iwae", "finding",
          f"1 stochastic layer: a trained VAE (k=1) continued with the IWAE objective (k={BOOK.continue_k}) "
          f"for {BOOK.continue_passes} passes (paper: 3^8) reaches a lower test NLL than the same VAE continued as a VAE for "
          f"the same passes (control), per seed, over ≥ {SEEDS} seeds (Table 2).",
          f"Table 2, MNIST: {PAPER_TABLE2[('VAE', 'IWAE')][0]} → {PAPER_TABLE2[('VAE', 'IWAE')][1]} nats",
          Less("test NLL after continuing", "VAE→IWAE", "VAE→VAE", z=Z, paired=True, min_seeds=SEEDS)),
    Claim("iwae-then-vae", "finding",
          f"1 stochastic layer: a trained IWAE (k={BOOK.continue_k}) continued with the VAE objective (k=1) for "
          f"{BOOK.continue_passes} passes (paper: 3^8) ends with a higher test NLL than the same IWAE continued as an IWAE "
          f"for the same passes (control), per seed, over ≥ {SEEDS} seeds (Table 2).",
          f"Table 2, MNIST: {PAPER_TABLE2[('IWAE', 'VAE')][0]} → {PAPER_TABLE2[('IWAE', 'VAE')][1]} nats",
          Greater("test NLL after continuing", "IWAE→VAE", "IWAE→IWAE", z=Z, paired=True, min_seeds=SEEDS)),
    Claim("mnist-nll", "finding",
          f"On MNIST, the 2-layer IWAE with k={K} reaches the paper's test NLL: |mean − "
          f"{PAPER_TABLE1[(2, K, 'IWAE')][0]:.2f}| + {Z:g} s.e. < {MNIST_TOL:g} nat over ≥ {SEEDS} seeds.",
          f"Table 1: {PAPER_TABLE1[(2, K, 'IWAE')][0]:.2f} nats",
          Within("MNIST test NLL", PAPER_TABLE1[(2, K, "IWAE")][0], MNIST_TOL, z=Z, min_seeds=SEEDS),
          needs=f"the paper profile on MNIST: `{PAPER_RUN}` (3 seeds; days of GPU time)"),
)
