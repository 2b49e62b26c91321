"""The chapter on evaluating decoder-based models with AIS (Wu et al. 2017): config, paper values, claims.

Imports only the standard library, :mod:`repro.config` and
:mod:`repro.scorecard` (no torch), so ``python -m repro params ais_decoders``
is instant.  ``METHODS`` mirrors :data:`repro.decoders.METHODS` (a test checks).
"""
from __future__ import annotations

from dataclasses import dataclass

from repro.config import ConfigError, ProfileConfig, param
from repro.scorecard import CHECK, FINDING, Below, Claim, EverySeed, Greater, Holds

METHODS = ("vae", "gan", "gmmn")
LABELS = {"vae": "VAE", "gan": "GAN", "gmmn": "GMMN"}

# Table 2 of the paper (continuous MNIST, nats, higher is better), from the fact sheet
# /work/shared/papers/ais_decoders.md: (AIS test, AIS train, BDMC gap, KDE test, IWAE test)
PAPER_TABLE2 = {
    ("vae", 50): (991.4, 1272.6, 1.54, 351.2, 826.3),
    ("gan", 50): (627.3, 620.5, 10.05, 300.3, None),
    ("gmmn", 50): (593.5, 571.8, 1.15, 277.2, None),
    ("vae", 10): (705.4, 780.2, 0.83, 408.7, 486.5),
    ("gan", 10): (328.8, 318.9, 0.93, 259.7, None),
    ("gmmn", 10): (346.7, 345.2, 0.61, 262.7, None),
}
PAPER = {
    "setup": "continuous MNIST; decoders 10-64-256-256-1024-784 and 50-1024-1024-1024-784 trained as VAE, GAN "
             "and GMMN; AIS with 16 chains, 10,000 intermediate distributions, HMC with 10 leapfrog steps",
    "kde": "KDE (Parzen) estimates are far below AIS, can rank models wrongly, and plateau with more samples",
    "bdmc": "BDMC gaps are small (0.61-1.54 nats except GAN-50: 10.05) at 10,000 intermediate distributions",
    "vae_best": "VAEs get far higher log-likelihoods than GANs and GMMNs (e.g. VAE-50 991.4 vs GAN-50 627.3, "
                "GMMN-50 593.5 nats on the test set)",
    "memorise": "GAN/GMMN train and test log-likelihoods are close (GAN-50 620.5 vs 627.3); the VAE's are not "
                "(VAE-50 1272.6 train vs 991.4 test)",
    "iwae": "the IWAE bound is loose on continuous data: VAE-50 826.3 vs AIS 991.4 nats",
}

# decision constants (ours; the paper states no thresholds)
Z = 2.0                 # standard errors a comparison must clear
MIN_SEEDS = 3
KDE_MARGIN = 5.0        # nats: "far below" = AIS − KDE larger than this for a model
BDMC_SMALL = 1.0        # nats: "small" BDMC gap at the largest K (mean over models of one seed)


@dataclass(frozen=True)
class AISDecodersConfig(ProfileConfig):
    """All knobs of the AIS-for-decoders chapter; see ``python -m repro params ais_decoders``."""

    dataset: str = param("digits", "continuous data: dequantised sklearn 8x8 digits, or MNIST (paper)",
                         choices=("digits", "mnist"))
    data_root: str = param("data", "folder holding one folder per data set: MNIST's IDX files in <data_root>/mnist")
    download: bool = param(False, "download MNIST into <data_root>/mnist if missing (needs internet)")
    n_train: int = param(400, "training examples (small, so that a VAE can memorise them; 0: all)", min=0)
    n_valid: int = param(100, "validation examples (sigma², KDE bandwidth)", min=10)
    latents: tuple[int, ...] = param((2, 10), "latent sizes (one decoder ensemble each; paper: 10 and 50)", min=1)
    hidden: tuple[int, ...] = param((64, 128), "decoder hidden widths, z -> ... -> x (paper: 64-256-256-1024 for "
                                    "10 latents)", min=1)
    hidden_large: tuple[int, ...] = param((), "hidden widths for the largest latent size when it differs (paper: "
                                          "1024-1024-1024 for 50 latents); empty: hidden", min=1)
    n_seeds: int = param(3, "seeds per method", min=1, max=32)
    steps: int = param(2000, "training steps per ensemble", min=1)
    batch_size: int = param(64, "minibatch per model", min=2)
    lr: float = param(1e-3, "Adam learning rate (beta1 0.5) of every method", min=1e-6, max=1.0)
    train_sigma2: float = param(0.02, "the VAE's observation variance while training", min=1e-6)
    sigma2_grid: tuple[float, ...] = param((0.005, 0.01, 0.02, 0.05, 0.1, 0.2), "observation variances tried "
                                           "per model on validation data", min=1e-6)
    ais_K: int = param(1000, "intermediate distributions of the Table 2 AIS runs (paper: 10,000)", min=2)
    ais_chains: int = param(4, "AIS chains per example (paper: 16)", min=2)
    n_eval: int = param(48, "test (and training) examples evaluated by AIS", min=2)
    K_sweep: tuple[int, ...] = param((10, 30, 100, 300), "intermediate distributions of the BDMC sweep", min=2)
    n_simulated: int = param(16, "examples simulated from each model for BDMC", min=2)
    select_K: int = param(50, "intermediate distributions of the short AIS runs that choose sigma²", min=2)
    iwae_k: int = param(100, "samples of the IWAE bound for the VAEs", min=1)
    kde_samples: tuple[int, ...] = param((100, 300, 1000, 3000, 10000), "numbers of model samples for the KDE",
                                         min=10)
    kde_bandwidths: tuple[float, ...] = param((0.05, 0.1, 0.15, 0.2, 0.3, 0.5), "KDE bandwidths tried on "
                                              "validation data", min=1e-4)
    leapfrog: int = param(10, "HMC leapfrog steps per intermediate distribution (paper: 10)", min=1)
    workers: int = param(2, "processes for the latent sizes (1: in the notebook's process)", min=1, max=16)
    checkpoint_dir: str = param("", "folder for trained decoders, reused when present ('' = the run folder)")

    PROFILES = {
        "smoke": dict(n_train=200, n_valid=50, latents=(2,), hidden=(32,), n_seeds=2, steps=150, ais_K=20,
                      ais_chains=2, n_eval=8, K_sweep=(5, 20), n_simulated=4, select_K=5, iwae_k=10,
                      sigma2_grid=(0.01, 0.05), kde_samples=(50, 200), kde_bandwidths=(0.1, 0.3), workers=1),
        "book": {},
        "paper": dict(dataset="mnist", n_train=50000, n_valid=10000, latents=(10, 50), hidden=(64, 256, 256, 1024),
                      hidden_large=(1024, 1024, 1024),
                      n_seeds=3, steps=100_000, batch_size=100, ais_K=10000, ais_chains=16, n_eval=1000,
                      K_sweep=(100, 1000, 10000), n_simulated=100, select_K=1000,
                      iwae_k=5000, kde_samples=(100, 1000, 10000, 100000), workers=1),
    }

    def check(self) -> None:
        if not self.latents:
            raise ConfigError("latents must name at least one latent size")
        for name in ("K_sweep", "kde_samples"):
            grid = getattr(self, name)
            if not grid or any(b <= a for a, b in zip(grid, grid[1:])):
                raise ConfigError(f"{name} must be a non-empty increasing sequence, got {grid}")
        if len(self.K_sweep) < 2:
            raise ConfigError("K_sweep needs at least two values to show the gap shrinking")
        if self.n_train and self.n_eval > self.n_train:
            raise ConfigError(f"n_eval ({self.n_eval}) exceeds the training examples ({self.n_train})")
        if self.n_train and self.n_train < self.batch_size:
            raise ConfigError(f"n_train ({self.n_train}) is smaller than one batch ({self.batch_size})")


_BOOK = AISDecodersConfig.for_profile("book")
_SIZES = " and ".join(str(d) for d in _BOOK.latents)
_PAIRED = (f"paired per (seed, latent size), {_BOOK.n_seeds} seeds × {len(_BOOK.latents)} latent sizes at book; "
           f"difference beyond {Z:g} s.e., ≥ {MIN_SEEDS} pairs")

CLAIMS = (
    Claim("kde-far-below", FINDING,
          f"KDE is far below AIS: for every trained model (3 methods × {_BOOK.n_seeds} seeds × latent sizes "
          f"{_SIZES} at book), the KDE test log-likelihood with the largest number of samples is more than "
          f"{KDE_MARGIN:g} nats below the model's AIS test log-likelihood (means over the same test examples).",
          PAPER["kde"],
          EverySeed(f"AIS − KDE > {KDE_MARGIN:g} nats (values: AIS − KDE)", min_seeds=MIN_SEEDS, unit="model")),
    Claim("kde-misranks", FINDING,
          f"KDE misranks models: in every seed, among the pairs of methods at each latent size ({_SIZES} at book), "
          f"at least one pair is ordered differently by the mean KDE and the mean AIS test log-likelihood.",
          PAPER["kde"],
          EverySeed("KDE orders at least one pair of models differently from AIS (values: misordered pairs)",
                    min_seeds=MIN_SEEDS)),
    Claim("bdmc-shrinks", FINDING,
          "The BDMC gap shrinks with the number of intermediate distributions: per (seed, latent size), the mean "
          "gap (reverse − forward AIS on data simulated from the models, mean over the 3 methods) at the smallest "
          f"K of the sweep exceeds the gap at the largest K; {_PAIRED}.",
          PAPER["bdmc"],
          Greater("mean BDMC gap (nats)", "smallest K", "largest K", z=Z, paired=True, min_seeds=MIN_SEEDS)),
    Claim("bdmc-small", FINDING,
          f"AIS is accurate at the largest K: the BDMC gap at the Table 2 AIS setting (K = {_BOOK.ais_K} at book), "
          f"mean over the models of one (seed, latent size), is below {BDMC_SMALL:g} nat by more than {Z:g} s.e. "
          f"over the (seed, latent size) pairs (≥ {MIN_SEEDS}).",
          PAPER["bdmc"],
          Below("mean BDMC gap at the Table 2 K (nats)", BDMC_SMALL, z=Z, min_seeds=MIN_SEEDS)),
    Claim("vae-beats-gan", FINDING,
          f"The VAE's AIS test log-likelihood exceeds the GAN's: {_PAIRED}.",
          PAPER["vae_best"],
          Greater("AIS test log-likelihood (nats)", "VAE", "GAN", z=Z, paired=True, min_seeds=MIN_SEEDS)),
    Claim("vae-beats-gmmn", FINDING,
          f"The VAE's AIS test log-likelihood exceeds the GMMN's: {_PAIRED}.",
          PAPER["vae_best"],
          Greater("AIS test log-likelihood (nats)", "VAE", "GMMN", z=Z, paired=True, min_seeds=MIN_SEEDS)),
    Claim("vae-memorises", FINDING,
          f"The VAE's train − test gap is larger than the GAN's and GMMN's: the AIS log-likelihood on "
          f"{_BOOK.n_eval} training examples minus that on {_BOOK.n_eval} test examples, VAE vs the mean of GAN "
          f"and GMMN (trained on {_BOOK.n_train} examples at book, few enough for a VAE to memorise); {_PAIRED}.",
          PAPER["memorise"],
          Greater("AIS train − test (nats)", "VAE", "GAN and GMMN", z=Z, paired=True, min_seeds=MIN_SEEDS)),
    Claim("iwae-below-ais", FINDING,
          f"The IWAE bound is below AIS for the VAE: the IWAE bound with k = {_BOOK.iwae_k} vs AIS on the same "
          f"test examples, {_PAIRED}.",
          PAPER["iwae"],
          Greater("test log-likelihood (nats)", "AIS", f"IWAE bound (k={_BOOK.iwae_k})", z=Z, paired=True,
                  min_seeds=MIN_SEEDS)),
    Claim("hmc-acceptance", CHECK,
          "The adaptive HMC settles near its 65% target: mean acceptance over the last quarter of the Table 2 "
          "AIS runs within 0.45-0.9 for every ensemble.",
          "step size adapted toward 0.65 acceptance (×1.02 / ×0.98, clipped to [1e-4, 0.5])",
          Holds("acceptance in [0.45, 0.9]")),
    Claim("sigma-inside-grid", CHECK,
          "The observation variance chosen on validation data is not at an edge of sigma2_grid for any model "
          "(otherwise the grid should be widened).",
          "one sigma² per model, chosen on validation data (the paper's code)",
          Holds("chosen sigma² strictly inside the grid")),
)
