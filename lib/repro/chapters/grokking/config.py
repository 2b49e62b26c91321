"""The grokking chapter's config, the paper's reference values and its claims.

Imports only the standard library, :mod:`repro.config` and
:mod:`repro.scorecard` (no torch), so ``python -m repro params grokking`` is
instant.  The operation names repeat :data:`repro.grokking.OPERATIONS`; a
test checks the two lists agree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from repro.config import ConfigError, ProfileConfig, param
from repro.launch import DataParallelParams
from repro.scorecard import FINDING, Claim, EverySeed, Greater, Less

MODULAR_OPS = ("x+y", "x-y", "x/y", "x/y if y odd else x-y", "x^2+y^2", "x^2+xy+y^2",
               "x^2+xy+y^2+x", "x^3+xy", "x^3+xy^2+y")
S5_OPS = ("x.y", "x.y.x^-1", "x.y.x")
OPERATIONS = MODULAR_OPS + S5_OPS
INTERVENTIONS = ("none", "weight_decay", "decay_to_init")

# Paper reference values (fact sheet /work/shared/papers/grokking.md; Power et al. 2022, arXiv 2201.02177).
PAPER = {
    "setup": "x/y mod 97, 2 layers of width 128, 4 heads, AdamW lr 1e-3, betas (0.9, 0.98), weight decay 1, "
             "batch min(512, N/2), 1e5 steps",
    "fig1_left": "x/y mod 97, 50% training data: training accuracy ~100% within ~1e3 steps, validation accuracy "
                 "near chance, then ~100% at ~1e5 steps (ratio ~100x) (Fig. 1 left)",
    "fig1_centre": "steps until 99% validation accuracy grow steeply as the training fraction shrinks (Fig. 1 centre)",
    "fig2_left": "weight decay improves data efficiency the most (more than halves the data needed); decay toward "
                 "the initialisation helps less (Fig. 2 left)",
    "fig2_right": "less symmetric operations need more data (Fig. 2 right)",
    "fig3": "output-layer embeddings show the operation's structure: a circle for modular addition (Fig. 3)",
}

# thresholds of the claims (the statements below are built from these, so text and rule agree)
GENERALISED = 0.99     # "reached 99% accuracy"
CHANCE_MARGIN = 0.1    # validation accuracy at memorisation must be <= 1/p + CHANCE_MARGIN
DELAY_RATIO = 10.0     # steps to 99% validation / steps to 99% training, per seed
FOURIER_TOP = 3        # frequencies whose energy share is measured
FOURIER_FACTOR = 2.0   # trained share >= FOURIER_FACTOR x the share at initialisation
Z = 2.0                # margin of the mean comparisons, in standard errors
MIN_SEEDS = 3


def _is_prime(p: int) -> bool:
    return p >= 2 and all(p % q for q in range(2, math.isqrt(p) + 1))


@dataclass(frozen=True)
class GrokkingConfig(DataParallelParams, ProfileConfig):
    """All knobs of the grokking chapter; see ``python -m repro params grokking`` (``nproc`` etc.: the
    ensembles sharded over torchrun processes, :mod:`repro.launch`)."""

    operation: str = param("x/y", "operation of Figure 1 and the fraction sweep", choices=OPERATIONS)
    p: int = param(31, "prime modulus (the paper uses 97)", min=3, max=211)
    train_fraction: float = param(0.5, "training fraction of Figure 1 left, of the regulariser comparison and "
                                       "of Figure 3 (paper: 0.5)", min=0.01, max=0.99)
    fractions: tuple[float, ...] = param((0.5, 0.6, 0.7, 0.8), "training fractions swept for Figure 1 centre",
                                         min=0.01, max=0.99)
    n_seeds: int = param(3, "seeds per setting (seed, seed+1, ...)", min=1, max=64)
    interventions: tuple[str, ...] = param(INTERVENTIONS, "regularisers compared in Figure 2 left",
                                           choices=INTERVENTIONS)
    embed_operation: str = param("x+y", "operation whose embeddings Figure 3 analyses", choices=MODULAR_OPS)
    symmetry_operations: tuple[str, ...] = param(("x+y", "x-y"), "operations of the Figure 2 right sweep "
                                                 "(first: the symmetric one; empty: skip)", choices=OPERATIONS)
    symmetry_fractions: tuple[float, ...] = param((0.5,), "training fractions of the Figure 2 right sweep (book: one, for time)",
                                                  min=0.01, max=0.99)
    n_layers: int = param(1, "transformer layers (paper: 2)", min=1, max=12)
    d_model: int = param(32, "residual width (paper: 128)", min=8, max=1024)
    n_heads: int = param(4, "attention heads (paper: 4)", min=1, max=32)
    lr: float = param(3e-3, "AdamW learning rate (paper: 1e-3)", min=1e-6, max=1.0)
    beta1: float = param(0.9, "AdamW beta1", min=0.0, max=0.999999)
    beta2: float = param(0.98, "AdamW beta2 (paper: 0.98)", min=0.0, max=0.999999)
    warmup_steps: int = param(10, "linear learning-rate warm-up steps (paper: 10)", min=0)
    weight_decay: float = param(1.0, "decoupled weight decay of the regularised runs (paper: 1)", min=0.0,
                                max=100.0)
    batch_size: int = param(0, "0: full batch; otherwise min(batch_size, N_train/2) as in the paper", min=0)
    steps: int = param(3000, "optimisation steps per run (paper: 1e5)", min=1)
    embed_steps: int = param(2000, "steps for the embedding-structure run (when it is not part of the "
                                   "Figure 2 right sweep)", min=1)
    n_evals: int = param(120, "log-spaced evaluation points", min=2, max=10000)
    early_stop: bool = param(True, "stop once every model has generalised and plateaued")
    checkpoint_every: int = param(0, "steps between checkpoints (0: none)", min=0)
    checkpoint_dir: str = param("", "where checkpoints (and data-parallel results) live ('' = <run folder>/checkpoints)")

    PROFILES = {
        "smoke": dict(p=13, fractions=(0.5, 0.8), n_seeds=2, steps=200, embed_steps=150, n_evals=20,
                      d_model=16, n_heads=2, interventions=("none", "weight_decay"), train_fraction=0.5,
                      symmetry_operations=(), symmetry_fractions=(0.5,)),
        "book": {},
        "paper": dict(p=97, n_layers=2, d_model=128, n_heads=4, lr=1e-3, batch_size=512, steps=100_000,
                      embed_steps=100_000, train_fraction=0.5,
                      fractions=tuple(round(0.1 * i, 1) for i in range(1, 10)),
                      symmetry_operations=OPERATIONS, symmetry_fractions=tuple(round(0.1 * i, 1) for i in range(1, 10)),
                      n_evals=400, early_stop=False, checkpoint_every=5000, n_seeds=3),
    }

    def check(self) -> None:
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if not _is_prime(self.p):
            raise ConfigError(f"parameter 'p' must be prime, got {self.p}")
        if self.n_evals > self.steps:
            raise ConfigError(f"n_evals ({self.n_evals}) cannot exceed steps ({self.steps})")
        if len(self.symmetry_operations) == 1:
            raise ConfigError("symmetry_operations needs at least two operations to compare (or none)")
        self.check_data_parallel(checkpoint_dir=self.checkpoint_dir)


CLAIMS = (
    Claim(
        "grokking-delay", FINDING,
        f"Generalisation long after overfitting (Fig. 1 left): at the Figure 1 training fraction, in every seed "
        f"(≥ {MIN_SEEDS}), validation accuracy is at most chance (1/p) + {CHANCE_MARGIN:g} at the first evaluated "
        f"step where training accuracy reaches {GENERALISED:.0%}, and validation accuracy reaches {GENERALISED:.0%} "
        f"within the budget after at least {DELAY_RATIO:g}× as many steps (the paper's ratio is ~100×).",
        PAPER["fig1_left"],
        EverySeed(f"val acc at train-{GENERALISED:.0%} ≤ 1/p + {CHANCE_MARGIN:g} and steps to {GENERALISED:.0%} "
                  f"val / steps to {GENERALISED:.0%} train ≥ {DELAY_RATIO:g} (values: the ratios)",
                  min_seeds=MIN_SEEDS)),
    Claim(
        "fraction-trend", FINDING,
        f"Less data, longer wait (Fig. 1 centre): the mean number of steps to {GENERALISED:.0%} validation accuracy "
        f"at the smallest swept training fraction exceeds that at the largest by more than {Z:g} standard errors. "
        f"Only runs that generalised within the budget count (a censored run is no evidence of growth), so fewer "
        f"than {MIN_SEEDS} uncensored seeds at either end is at most inconclusive.",
        PAPER["fig1_centre"],
        Greater(f"steps to {GENERALISED:.0%} validation accuracy (uncensored runs)", "smallest fraction",
                "largest fraction", z=Z, min_seeds=MIN_SEEDS),
        needs="runs at both ends of the fraction sweep that generalise within the budget (-p steps=... or the "
              "paper profile)"),
    Claim(
        "weight-decay", FINDING,
        f"Weight decay helps (Fig. 2 left, in miniature): at the Figure 1 training fraction, models trained with "
        f"weight decay toward zero reach {GENERALISED:.0%} validation accuracy in fewer steps than unregularised "
        f"models with the same seed, split and initialisation (paired per-seed difference beyond {Z:g} s.e., "
        f"≥ {MIN_SEEDS} seeds). A run that never generalises counts as the step budget, which can only shrink "
        f"the difference. The paper measures the data needed; we measure the wait at one fraction.",
        PAPER["fig2_left"],
        Less(f"steps to {GENERALISED:.0%} validation accuracy (censored at the budget)", "weight decay",
             "no regularisation", z=Z, paired=True, min_seeds=MIN_SEEDS),
        needs="interventions including none and weight_decay"),
    Claim(
        "decay-to-init", FINDING,
        f"Decay toward the initialisation helps less (Fig. 2 left, in miniature): at the Figure 1 training "
        f"fraction, weight decay toward zero reaches {GENERALISED:.0%} validation accuracy in fewer steps than the "
        f"same decay toward the initial weights, same seeds (paired per-seed difference beyond {Z:g} s.e., "
        f"≥ {MIN_SEEDS} seeds; a run that never generalises counts as the budget).",
        PAPER["fig2_left"],
        Less(f"steps to {GENERALISED:.0%} validation accuracy (censored at the budget)", "decay toward zero",
             "decay toward init", z=Z, paired=True, min_seeds=MIN_SEEDS),
        needs="interventions including weight_decay and decay_to_init (book and paper profiles)"),
    Claim(
        "symmetry", FINDING,
        f"Less symmetric operations need more data (Fig. 2 right, in miniature): the symmetric operation (first of "
        f"symmetry_operations, x+y at book) reaches {GENERALISED:.0%} validation accuracy sooner than the "
        f"asymmetric one (second, x−y at book): per seed, the steps to {GENERALISED:.0%} summed over the "
        f"symmetry_fractions (a run that never generalises counts as the budget), paired difference beyond "
        f"{Z:g} s.e., ≥ {MIN_SEEDS} seeds.",
        PAPER["fig2_right"],
        Less(f"steps to {GENERALISED:.0%} validation accuracy summed over the fractions (censored at the budget)",
             "symmetric op", "asymmetric op", z=Z, paired=True, min_seeds=MIN_SEEDS),
        needs="the book profile (x+y vs x−y at training fraction 0.5) or the paper profile (all 12 operations at fractions "
              "0.1..0.9)"),
    Claim(
        "embedding-structure", FINDING,
        f"Structured embeddings (Fig. 3): in every seed (≥ {MIN_SEEDS}), the model trained on the embedding "
        f"operation (x+y) generalised (validation accuracy reached {GENERALISED:.0%} within the budget) and, at "
        f"the first evaluation where it did, the top {FOURIER_TOP} Fourier frequencies of its number embeddings "
        f"hold at least {FOURIER_FACTOR:g}× their share of the (non-constant) energy at initialisation.",
        PAPER["fig3"],
        EverySeed(f"val acc reached {GENERALISED:.0%} and the top-{FOURIER_TOP} Fourier share then ≥ "
                  f"{FOURIER_FACTOR:g}× its initial share (values: that ratio)", min_seeds=MIN_SEEDS)),
)
