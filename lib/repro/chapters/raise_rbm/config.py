"""The RAISE chapter's config, the paper's reference values and the chapter's claims.

Imports only the standard library, :mod:`repro.config` and
:mod:`repro.scorecard` (no torch), so ``python -m repro params raise`` is
instant.  The package is ``raise_rbm`` because ``raise`` is a Python keyword;
the chapter is still called ``raise`` (``book/raise.md``).
"""
from __future__ import annotations

from dataclasses import dataclass

from repro.config import ConfigError, ProfileConfig, param
from repro.scorecard import CHECK, FINDING, THEOREM, Above, Below, Claim, EverySeed, Holds, Within

# Mirrors of library constants, kept here so this module needs no torch; tests/test_rbm.py checks they agree.
MAX_ENUMERATION_UNITS = 25  # repro.rbm.MAX_ENUMERATION_UNITS
SCHEDULES = ("linear", "sigmoidal", "piecewise")  # repro.ais.SCHEDULES
DTYPE_CHOICES = ("float64", "float32")  # repro.chapters.raise_rbm.experiments.DTYPES
METHOD_CHOICES = ("cd1", "cd3", "cd10", "cd25", "pcd")  # each parses with repro.rbm.parse_method

# Reference values, from the fact sheet (/work/shared/papers/raise.md); the paper's own tables are not cited
# by number because the fact sheet does not give them.
PAPER = {
    "source": "Burda, Grosse & Salakhutdinov (AISTATS 2015), arXiv 1412.8566 (fact sheet: headline claims)",
    "sm2008_cd25_mnist_500h": -86.34,  # Salakhutdinov & Murray (2008): CD-25, 500 hidden, MNIST, AIS (nats)
    "omniglot_pcd_500h": -100.46,  # as cited by the IWAE paper (nats)
    "sm2008_tolerance_nats": 1.0,  # ours: how close counts as matching their number
}

# Decision constants of the scorecard (ours, not the paper's: the paper gives no thresholds).
Z = 2.0  # standard errors a comparison must clear
CONVERGE_TOL = 0.1  # nats: "converged to the exact value" at the largest K
AGREE_TOL = 0.25  # nats: "AIS and RAISE agree closely" at the largest K on the large RBM
CHECK_SE = 5.0  # standard errors allowed in the unbiasedness theorems' sampled checks


@dataclass(frozen=True)
class RaiseConfig(ProfileConfig):
    """All knobs of the RAISE chapter; see ``python -m repro params raise``."""

    dataset: str = param("digits", "binarised data: sklearn 8x8 digits or MNIST (paper)", choices=("digits", "mnist"))
    data_root: str = param("data", "folder holding one folder per data set: MNIST's IDX files in <data_root>/mnist")
    download: bool = param(False, "download MNIST into <data_root>/mnist if missing (needs internet)")
    binarise: str = param("threshold", "intensities -> bits: threshold at 0.5, or one seeded Bernoulli draw",
                          choices=("threshold", "bernoulli"))
    small_hidden: int = param(20, "hidden units of the small RBMs (exact log Z by enumeration)", min=1,
                              max=MAX_ENUMERATION_UNITS)
    small_methods: tuple[str, ...] = param(("cd1", "cd25", "pcd"), "training methods of the small RBMs",
                                           choices=METHOD_CHOICES)
    large_hidden: int = param(200, "hidden units of the large RBM (no exact value; paper: 500)", min=1)
    large_methods: tuple[str, ...] = param(("cd1",), "training methods of the large RBMs", choices=METHOD_CHOICES)
    epochs: int = param(100, "training epochs per RBM", min=1)
    batch_size: int = param(100, "minibatch size (and PCD fantasy chains)", min=1)
    lr: float = param(0.1, "initial SGD learning rate (decays linearly to 0)", min=0.0)
    momentum: float = param(0.9, "SGD momentum after the first 5 epochs", min=0.0, max=0.999)
    weight_decay: float = param(1e-4, "L2 penalty on the weights", min=0.0)
    K_grid: tuple[int, ...] = param((10, 30, 100, 300, 1000, 3000, 10000),
                                    "numbers of intermediate distributions K for the small RBMs", min=1)
    large_K_grid: tuple[int, ...] = param((10, 100, 1000, 3000),
                                          "numbers of intermediate distributions K for the large RBM", min=1)
    schedule: str = param("linear", "annealing schedule", choices=SCHEDULES)
    ais_chains: int = param(16, "AIS chains per estimate of log Z", min=1)
    ais_reps: int = param(20, "independent AIS estimates of log Z at every K", min=1)
    raise_reps: int = param(3, "independent RAISE runs (one chain per test example) at every K", min=1)
    bias_reps: int = param(1000, "independent AIS runs at the smallest K for the 'AIS above exact' test "
                           "(a separate sample, its own random stream)", min=1)
    n_test: int = param(0, "test examples used (0: all) for the small RBMs", min=0)
    large_n_test: int = param(100, "test examples for RAISE on the large RBM (0: all)", min=0)
    dtype: str = param("float64", "floating-point type of models and estimators", choices=DTYPE_CHOICES)
    checkpoint_dir: str = param("", "folder for RBM training checkpoints, resumed when present ('' = none)")
    checkpoint_every: int = param(10, "epochs between training checkpoints", min=1)

    PROFILES = {
        "smoke": dict(small_hidden=10, small_methods=("cd1", "pcd"), large_hidden=40, epochs=30,
                      K_grid=(10, 100, 1000), large_K_grid=(10, 100), ais_reps=10, raise_reps=3, n_test=120,
                      large_n_test=50, bias_reps=200),
        "book": {},
        "paper": dict(dataset="mnist", binarise="bernoulli", small_hidden=20, small_methods=("cd1", "pcd"),
                      large_hidden=500,
                      large_methods=("cd1", "cd3", "cd25", "pcd"), epochs=100, batch_size=100, lr=0.05,
                      K_grid=(10, 100, 1000, 10000, 100000), large_K_grid=(10, 100, 1000, 10000, 100000),
                      ais_chains=100, ais_reps=5, raise_reps=3, n_test=0, large_n_test=0),
    }

    def check(self) -> None:
        if not self.small_methods:
            raise ConfigError("small_methods must name at least one training method (the exact-Z experiment)")
        for name in ("K_grid", "large_K_grid"):
            grid = getattr(self, name)
            if (not grid and (name == "K_grid" or self.large_methods)) or any(b <= a for a, b in zip(grid, grid[1:])):
                raise ConfigError(f"{name} must be a non-empty increasing sequence of K values, got {grid}")
        if self.schedule == "piecewise" and min(self.K_grid + self.large_K_grid) < 3:
            raise ConfigError("the piecewise schedule needs K >= 3")


# ---------------------------------------------------------------------------
# The claims (statements built from the book profile and the constants above)
# ---------------------------------------------------------------------------

_BOOK = RaiseConfig.for_profile("book")
_K0, _KMAX, _LKMAX = _BOOK.K_grid[0], _BOOK.K_grid[-1], _BOOK.large_K_grid[-1]
_SMALL = f"small RBMs ({_BOOK.small_hidden} hidden units, exact log Z by enumeration)"
_WEAKEST = ("every small RBM must clear the margin; the row shows the one with the smallest margin in s.e., "
            "which decides")
_EXACT_Z = "exact-Z experiment on small RBMs; fact sheet, headline claim 1"

CLAIMS = (
    Claim("ais_above_exact_small_K", FINDING,
          f"AIS overestimates at small K: at the smallest K (K={_K0} at book) the mean over independent AIS runs "
          f"({_BOOK.bias_reps} at book, bias_reps, a sample of its own; {_BOOK.ais_chains} chains each) of "
          f"AIS − exact mean test log-likelihood exceeds {Z:g} s.e. on the {_SMALL}; {_WEAKEST}. "
          f"Unit of replication: one AIS run.",
          f"AIS estimates lie above the exact value ({_EXACT_Z})",
          Above(what="AIS − exact at the smallest K (nats)", threshold=0.0, z=Z, min_seeds=3)),
    Claim("raise_below_exact_small_K", FINDING,
          f"RAISE is conservative at small K: at the smallest K (K={_K0} at book) the mean over independent RAISE "
          f"runs ({_BOOK.raise_reps} at book, one chain per test example each) of RAISE − exact mean test "
          f"log-likelihood is below 0 by more than {Z:g} s.e. on the {_SMALL}; {_WEAKEST}. "
          f"Unit of replication: one RAISE run.",
          f"RAISE estimates lie below the exact value ({_EXACT_Z})",
          Below(what="RAISE − exact at the smallest K (nats)", threshold=0.0, z=Z, min_seeds=3)),
    Claim("bracket_every_K", FINDING,
          f"RAISE ≤ exact ≤ AIS at every K: on every small RBM and every K of the grid, neither AIS is below nor "
          f"RAISE above the exact mean test log-likelihood by more than {Z:g} s.e. of its mean over independent "
          f"runs. n counts (RBM, K) cases ({len(_BOOK.small_methods)} RBMs × {len(_BOOK.K_grid)} K = "
          f"{len(_BOOK.small_methods) * len(_BOOK.K_grid)} at book); the values are each case's larger violation "
          f"in s.e. (max of (exact − AIS)/s.e. and (RAISE − exact)/s.e.; a case passes below {Z:g}).",
          f"AIS above and RAISE below the exact value as K grows ({_EXACT_Z})",
          EverySeed(condition=f"exact − AIS < {Z:g} s.e. and RAISE − exact < {Z:g} s.e.",
                    min_seeds=3, unit="(RBM, K) case")),
    Claim("converge_at_large_K", FINDING,
          f"Both converge: at the largest K (K={_KMAX} at book) both AIS and RAISE are within {CONVERGE_TOL:g} "
          f"nats of the exact mean test log-likelihood on the {_SMALL}: |mean(estimate − exact)| + {Z:g} s.e. < "
          f"{CONVERGE_TOL:g} for every (RBM, estimator); the row shows the case with the smallest margin.",
          f"both estimators converge to the exact value as K grows ({_EXACT_Z})",
          Within(what="estimate − exact at the largest K (nats)", target=0.0, tol=CONVERGE_TOL, z=Z, min_seeds=3)),
    Claim("ais_raise_agree_large", FINDING,
          f"AIS and RAISE agree closely on a large RBM (no exact value; {_BOOK.large_hidden} hidden units at "
          f"book, 500 on MNIST in the paper): at the largest K (K={_LKMAX} at book), |mean over r of "
          f"(AIS_r − RAISE_r)| + {Z:g} s.e. < {AGREE_TOL:g} nats, pairing the r = 1..min(ais_reps, raise_reps) "
          f"independent runs ({min(_BOOK.ais_reps, _BOOK.raise_reps)} at book); with several large RBMs every "
          f"one must pass and the one with the smallest margin in s.e. decides. The tolerance is ours: the paper "
          f"gives no number for 'closely'.",
          "AIS and RAISE agree closely on 500-hidden MNIST RBMs (fact sheet, headline claim 2)",
          Within(what="paired AIS − RAISE at the largest K (nats)", target=0.0, tol=AGREE_TOL, z=Z, min_seeds=3),
          needs="a large RBM (large_methods non-empty; book and paper profiles have one)"),
    Claim("exact_logZ_enumeration", CHECK,
          "The exact log Z (enumerate the smaller layer, sum the other out) equals brute force over both layers "
          "to 1e-9 nats on random 9×7 and 7×9 RBMs, with and without chunking.",
          "exact Z by enumeration (the paper's reference for small RBMs)",
          Holds("max |enumeration − brute force| < 1e-9 nats")),
    Claim("ais_unbiased_in_Z", THEOREM,
          f"AIS is unbiased for Z (Neal 2001): on a 6×4 RBM at K=5, the mean of Ẑ/Z over 100,000 single-chain "
          f"AIS runs is within {CHECK_SE:g} s.e. of 1.",
          "E[Ẑ] = Z, hence E[log Ẑ] ≤ log Z",
          Holds(f"|mean(Ẑ/Z) − 1| < {CHECK_SE:g} s.e.")),
    Claim("raise_unbiased_for_p_ann", THEOREM,
          f"RAISE is unbiased for the annealing model: on a 5×4 RBM at K=4, the mean of p̂(v) over 5,000 RAISE "
          f"runs is within {CHECK_SE:g} s.e. of the exact p_ann(v) (transition matrices multiplied) for all 32 "
          f"visible states.",
          "E[p̂(v)] = p_ann(v), hence E[log p̂(v)] ≤ log p_ann(v)",
          Holds(f"max over v of |mean p̂(v) / p_ann(v) − 1| < {CHECK_SE:g} s.e.")),
    Claim("sm2008_cd25", CHECK,
          f"Agreement with Salakhutdinov & Murray (2008): the AIS test log-likelihood at the largest K of a "
          f"500-hidden CD-25 RBM on MNIST is within {PAPER['sm2008_tolerance_nats']:g} nat (our tolerance) of "
          f"{PAPER['sm2008_cd25_mnist_500h']} (mean over the independent AIS runs).",
          f"{PAPER['sm2008_cd25_mnist_500h']} nats (Salakhutdinov & Murray 2008, cited by the paper)",
          Within(what="AIS test log-likelihood, CD-25 500 hidden MNIST (nats)",
                 target=PAPER["sm2008_cd25_mnist_500h"], tol=PAPER["sm2008_tolerance_nats"], z=Z, min_seeds=3),
          needs="profile paper (MNIST, 500 hidden units, cd25 among large_methods)"),
)
