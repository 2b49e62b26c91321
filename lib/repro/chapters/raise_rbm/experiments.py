"""The RAISE chapter's experiment runs: data, the RBMs it trains, AIS and RAISE curves against K, and the
values its scorecard rows are fed.

Built on the algorithm modules :mod:`repro.rbm` and :mod:`repro.ais`; the
notebook ``book/raise.md`` calls :func:`run_experiments`, the ``*_values``
helpers and the three implementation checks.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from repro import ais as ais_mod
from repro import rbm
from repro.checkpoint import make_identity
from repro.config import ConfigError
from repro.device import get_device
from repro.scorecard import mean_se
from repro.seed import generator

from .config import CHECK_SE, RaiseConfig

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def torch_dtype(cfg: RaiseConfig) -> torch.dtype:
    """The torch dtype named by ``cfg.dtype``."""
    return DTYPES[cfg.dtype]


# ---------------------------------------------------------------------------
# Data (binarised scikit-learn digits; MNIST for the paper profile)
# ---------------------------------------------------------------------------


def binarise(x: torch.Tensor, how: str, seed: int = 0) -> torch.Tensor:
    """Intensities in [0, 1] -> binary float64: ``threshold`` (x >= 0.5) or one seeded ``bernoulli`` draw."""
    from repro import data as data_mod

    if how == "threshold":
        return (x >= 0.5).to(torch.float64)
    if how == "bernoulli":
        return data_mod.fixed_binarise(x.to(torch.float64), seed=seed)
    raise ConfigError(f"unknown binarisation {how!r}: threshold or bernoulli")


def load_binary_data(dataset: str, data_root: str = "data", how: str = "threshold", seed: int = 0,
                     download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) binary float64 CPU tensors: ``digits`` (scikit-learn 8x8, the shared fixed split of
    ``repro.data``) or ``mnist`` (the IDX files in ``<data_root>/mnist``, as for every chapter)."""
    from repro import data as data_mod

    if dataset not in ("digits", "mnist"):
        raise ConfigError(f"unknown dataset {dataset!r}")
    d = data_mod.load_images(dataset, data_root, download=download)
    return binarise(d.train, how, seed), binarise(d.test, how, seed + 1)


# ---------------------------------------------------------------------------
# AIS and RAISE against K for one RBM
# ---------------------------------------------------------------------------


@dataclass
class EstimateCurve:
    """AIS and RAISE estimates of the average test log-likelihood of one RBM against K (plain data).

    ``ais[i][r]`` and ``raise_[i][r]``: repetition r at ``K[i]`` (nats per
    example); ``exact`` is None when log Z cannot be enumerated.
    """

    name: str
    method: str
    n_hidden: int
    K: list[int]
    ais: list[list[float]]
    raise_: list[list[float]]
    exact: float | None
    ais_ess: list[float]
    wall_s: float
    train_history: rbm.TrainHistory | None = None
    ais_bias_runs: list[float] | None = None  # a separate, larger sample of AIS runs at K[0] (the bias test)

    def rows(self, which: str) -> list[list[float]]:
        """Per-K lists of repetitions of ``"ais"`` or ``"raise"``."""
        if which not in ("ais", "raise"):
            raise ValueError(f"which must be 'ais' or 'raise', got {which!r}")
        return self.ais if which == "ais" else self.raise_

    def mean(self, which: str) -> list[float]:
        """Mean over repetitions at every K."""
        return [sum(r) / len(r) for r in self.rows(which)]

    def std(self, which: str) -> list[float]:
        """Sample standard deviation over repetitions at every K (the spread of one run)."""
        out = []
        for r in self.rows(which):
            m = sum(r) / len(r)
            out.append(math.sqrt(sum((x - m) ** 2 for x in r) / max(1, len(r) - 1)))
        return out

    def se(self, which: str) -> list[float]:
        """Standard error of the mean over repetitions at every K."""
        return [s / math.sqrt(len(r)) for s, r in zip(self.std(which), self.rows(which))]

    def summary(self) -> dict:
        """Plain numbers for metrics.json."""
        out = {"K": self.K, "exact": self.exact, "ais_mean": self.mean("ais"), "ais_std": self.std("ais"),
               "raise_mean": self.mean("raise"), "raise_std": self.std("raise"), "ais_ess": self.ais_ess}
        if self.ais_bias_runs:
            m, se, n = mean_se(self.ais_bias_runs)
            out.update(ais_bias_K=self.K[0], ais_bias_mean=m, ais_bias_se=se, ais_bias_n=n)
        return out


def ais_runs(model: rbm.RBM, base: rbm.RBM, test: torch.Tensor, K: int, *, schedule: str, n_chains: int,
             n_reps: int, generator: torch.Generator | None = None) -> list[float]:
    """``n_reps`` independent AIS estimates (``n_chains`` chains each) of the mean test log-likelihood at one K."""
    path = rbm.RBMAnnealingPath(base, model, generator)
    mean_log_f = float(rbm.log_f(model, test).mean())
    betas = ais_mod.make_schedule(schedule, K, device=model.W.device, dtype=torch.float64)
    log_Z, _ = rbm.ais_log_Z(path, betas, n_chains, n_reps)  # [R]
    return [mean_log_f - float(z) for z in log_Z.cpu()]


def estimate_curve(model: rbm.RBM, base: rbm.RBM, test: torch.Tensor, K_grid: Sequence[int], *, schedule: str,
                   n_chains: int, ais_reps: int, raise_reps: int, exact: bool,
                   generator: torch.Generator | None = None, name: str = "", method: str = "") -> EstimateCurve:
    """AIS and RAISE estimates of the mean test log-likelihood of ``model`` at every K of ``K_grid``."""
    t0 = time.time()
    path = rbm.RBMAnnealingPath(base, model, generator)
    mean_log_f = float(rbm.log_f(model, test).mean())
    ais_rows, raise_rows, ess = [], [], []
    for K in K_grid:
        betas = ais_mod.make_schedule(schedule, K, device=model.W.device, dtype=torch.float64)
        # AIS: log p_hat(v) = log f(v) - log Z_hat, one Z_hat per repetition
        log_Z, log_w = rbm.ais_log_Z(path, betas, n_chains, ais_reps)  # [R], [R, M]
        ais_rows.append([mean_log_f - float(z) for z in log_Z.cpu()])
        ess.append(float(ais_mod.effective_sample_size(log_w, dim=1).mean()))
        # RAISE: reverse annealing from every test example, R repetitions in one batch
        lp = rbm.raise_log_likelihood(path, test, betas, raise_reps)  # [R, N]
        raise_rows.append(lp.mean(1).cpu().tolist())
    ex = float(rbm.log_likelihood_exact(model, test).mean()) if exact else None
    return EstimateCurve(name, method, model.n_hidden, list(K_grid), ais_rows, raise_rows, ex, ess, time.time() - t0)


# ---------------------------------------------------------------------------
# The chapter's runs
# ---------------------------------------------------------------------------


def train_settings(cfg: RaiseConfig, n_hidden: int, method: str, seed_offset: int = 0) -> rbm.TrainSettings:
    """The training hyperparameters of one RBM of the chapter (seed = cfg.seed + seed_offset)."""
    return rbm.TrainSettings(n_hidden=n_hidden, method=method, epochs=cfg.epochs, batch_size=cfg.batch_size,
                             lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                             seed=cfg.seed + seed_offset)


def train_one(cfg: RaiseConfig, train: torch.Tensor, group: str, n_hidden: int, method: str,
              seed_offset: int) -> tuple[rbm.RBM, rbm.TrainHistory]:
    """Phase 1: train one RBM, checkpointed under ``cfg.checkpoint_dir`` when it is set."""
    s = train_settings(cfg, n_hidden, method, seed_offset)
    path = identity = None
    if cfg.checkpoint_dir:
        path = Path(cfg.checkpoint_dir) / f"raise-{group}-{method}-{n_hidden}h.pt"
        identity = make_identity("raise-rbm-training", asdict(s), dataset=cfg.dataset, binarise=cfg.binarise,
                                 dtype=cfg.dtype, n_train=int(train.shape[0]))
    return rbm.train_rbm(train, s, checkpoint=path, checkpoint_every=cfg.checkpoint_every, identity=identity,
                         label=f"raise {group} {rbm.method_label(method)} {n_hidden}h")


def _subset(x: torch.Tensor, n: int) -> torch.Tensor:
    return x if n <= 0 or n >= x.shape[0] else x[:n]


def run_experiments(cfg: RaiseConfig, *, data: tuple[torch.Tensor, torch.Tensor] | None = None,
                    log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Train every RBM of the config and estimate its test log-likelihood with AIS and RAISE.

    Returns ``{"small": [EstimateCurve...], "large": [EstimateCurve...], "n_train", "n_test", "wall_s"}``.
    """
    t0 = time.time()
    dev, dt = get_device(cfg.device), torch_dtype(cfg)
    if data is None:
        data = load_binary_data(cfg.dataset, cfg.data_root, cfg.binarise, download=cfg.download)
    train, test = data
    train, test = train.to(dev, dt), test.to(dev, dt)
    g = generator(cfg.seed + 1000, dev)  # one stream for every estimate, in the order below
    g_bias = generator(cfg.seed + 2000, dev)  # the AIS bias test's own stream (leaves g's draws unchanged)
    out: dict[str, Any] = {"small": [], "large": [], "n_train": train.shape[0], "n_test": test.shape[0]}
    for group, n_hidden, methods, K_grid, n_test, exact in (
            ("small", cfg.small_hidden, cfg.small_methods, cfg.K_grid, cfg.n_test, True),
            ("large", cfg.large_hidden, cfg.large_methods, cfg.large_K_grid, cfg.large_n_test, False)):
        for i, method in enumerate(methods):
            model, hist = train_one(cfg, train, group, n_hidden, method, seed_offset=i)
            base = rbm.base_rate_rbm(train, n_hidden)
            # phase 2: AIS and RAISE at every K
            curve = estimate_curve(model, base, _subset(test, n_test), K_grid, schedule=cfg.schedule,
                                   n_chains=cfg.ais_chains, ais_reps=cfg.ais_reps, raise_reps=cfg.raise_reps,
                                   exact=exact, generator=g,
                                   name=f"{rbm.method_label(method)} ({n_hidden}h)", method=method)
            curve.train_history = hist
            if exact:
                curve.ais_bias_runs = ais_runs(model, base, _subset(test, n_test), K_grid[0], schedule=cfg.schedule,
                                               n_chains=cfg.ais_chains, n_reps=cfg.bias_reps, generator=g_bias)
            out[group].append(curve)
            log(f"[raise] {curve.name}: trained in {hist.wall_s:.1f}s, estimates in {curve.wall_s:.1f}s; "
                f"exact={curve.exact}, AIS={[round(x, 2) for x in curve.mean('ais')]}, "
                f"RAISE={[round(x, 2) for x in curve.mean('raise')]}")
    out["wall_s"] = time.time() - t0
    return out


# ---------------------------------------------------------------------------
# Values for the scorecard rows (the rules in config.CLAIMS decide)
# ---------------------------------------------------------------------------


def margin_in_se(values: Sequence[float], distance: Callable[[float], float]) -> float:
    """``distance(mean) / s.e.``: how many standard errors a case clears its threshold by (negative: misses).

    ``distance`` maps the mean to its signed distance from the threshold in
    the claimed direction (e.g. ``lambda m: m`` for "above 0",
    ``lambda m: tol - abs(m)`` for "within tol of 0").  For Above, Below and
    Within rules the case with the smallest margin has the worst verdict of
    all cases, so feeding the rule that case is the same as requiring every case.
    """
    m, se, _ = mean_se(values)
    d = distance(m)
    if se > 0:
        return d / se
    return math.inf if d > 0 else (-math.inf if d < 0 else 0.0)


def weakest(cases: dict[str, list[float]], distance: Callable[[float], float]) -> tuple[str, list[float]]:
    """The (name, values) of the case with the smallest :func:`margin_in_se`."""
    name = min(cases, key=lambda k: margin_in_se(cases[k], distance))
    return name, cases[name]


def small_K_values(small: Sequence[EstimateCurve], which: str) -> tuple[str, list[float]]:
    """Per-run ``estimate − exact`` at the smallest K for the small RBM where the claimed sign is weakest.

    AIS is claimed above the exact value (tested on the separate bias sample
    ``ais_bias_runs`` when there is one), RAISE below it.
    """
    sign = 1.0 if which == "ais" else -1.0

    def runs(c: EstimateCurve) -> list[float]:
        return c.ais_bias_runs if which == "ais" and c.ais_bias_runs else c.rows(which)[0]

    cases = {c.name: [x - c.exact for x in runs(c)] for c in small}
    return weakest(cases, lambda m: sign * m)


def converge_values(small: Sequence[EstimateCurve], tol: float) -> tuple[str, list[float]]:
    """Per-run ``estimate − exact`` at the largest K for the (RBM, estimator) case with the smallest margin."""
    cases = {f"{c.name} {which.upper()}": [x - c.exact for x in c.rows(which)[-1]]
             for c in small for which in ("ais", "raise")}
    return weakest(cases, lambda m: tol - abs(m))


def bracket_values(small: Sequence[EstimateCurve], z: float) -> tuple[list[bool], list[float], list[str]]:
    """For every (small RBM, K): passes when exact − AIS < z s.e. and RAISE − exact < z s.e.

    Returns (passed, violation, labels) with ``violation`` the larger of
    (exact − AIS)/s.e.(AIS) and (RAISE − exact)/s.e.(RAISE), over independent runs.
    """
    passed, violation, labels = [], [], []
    for c in small:
        for i, K in enumerate(c.K):
            v_ais = -margin_in_se([x - c.exact for x in c.ais[i]], lambda m: m)
            v_raise = -margin_in_se([c.exact - x for x in c.raise_[i]], lambda m: m)
            worst = max(v_ais, v_raise)
            passed.append(worst < z)
            violation.append(worst)
            labels.append(f"{c.name} K={K}")
    return passed, violation, labels


def agreement_values(large: Sequence[EstimateCurve], tol: float) -> tuple[str, list[float]]:
    """Paired per-run gaps ``AIS_r − RAISE_r`` at the largest K (r < min(ais_reps, raise_reps); the runs are
    independent, so each difference is an independent replicate) for the large RBM with the smallest margin
    to ``tol``."""
    cases = {c.name: [x - y for x, y in zip(c.ais[-1], c.raise_[-1])] for c in large}
    return weakest(cases, lambda m: tol - abs(m))


# ---------------------------------------------------------------------------
# Implementation checks (tiny RBMs, exact answers)
# ---------------------------------------------------------------------------


def random_rbm(V: int, H: int, scale: float, g: torch.Generator) -> rbm.RBM:
    """An RBM with N(0, scale²) weights and biases, float64."""
    d = torch.float64
    return rbm.RBM(torch.randn(V, H, generator=g, dtype=d) * scale, torch.randn(V, generator=g, dtype=d) * scale,
                   torch.randn(H, generator=g, dtype=d) * scale)


def brute_force_log_Z(model: rbm.RBM) -> float:
    """log Z by summing exp(-E(v, h)) over every joint state, both layers enumerated (tiny RBMs)."""
    V, H = model.n_visible, model.n_hidden
    v = rbm.binary_states(0, 2**V, V)  # [2^V, V]
    h = rbm.binary_states(0, 2**H, H)  # [2^H, H]
    neg_E = (v @ model.b)[:, None] + (h @ model.c)[None, :] + v @ model.W @ h.T  # [2^V, 2^H]
    return float(torch.logsumexp(neg_E.reshape(-1), 0))


def check_enumeration(seed: int) -> tuple[bool, str]:
    """Exact log Z by enumeration against brute force on 9×7 and 7×9 RBMs (chunked and not)."""
    g = generator(seed)
    worst = 0.0
    for V, H in ((9, 7), (7, 9)):
        model = random_rbm(V, H, 0.8, g)
        want = brute_force_log_Z(model)
        for chunk in (None, 7):
            worst = max(worst, abs(float(rbm.log_partition_exact(model, chunk_rows=chunk)) - want))
    return worst < 1e-9, f"max |enumeration − brute force| = {worst:.1e} nats"


def _tiny_path(V: int, H: int, scale: float, g: torch.Generator, every: int) -> rbm.RBMAnnealingPath:
    target = random_rbm(V, H, scale, g)
    base = rbm.base_rate_rbm(rbm.binary_states(0, 2**V, V)[::every], H)
    return rbm.RBMAnnealingPath(base, target, g)


def check_ais_unbiased(seed: int, n_chains: int = 100_000, K: int = 5) -> tuple[bool, str]:
    """E[Ẑ/Z] = 1 for forward AIS on a 6×4 RBM: mean of single-chain Ẑ/Z within CHECK_SE s.e. of 1."""
    g = generator(seed)
    path = _tiny_path(6, 4, 1.0, g, every=3)
    log_Z = float(rbm.log_partition_exact(path.target))
    res = ais_mod.ais(path, path.sample_base(n_chains), ais_mod.linear_schedule(K))
    ratio = torch.exp(res.log_w + float(path.log_Z0) - log_Z)  # Ẑ/Z per chain
    m, s = float(ratio.mean()), float(ratio.std() / math.sqrt(n_chains))
    z = abs(m - 1.0) / s
    return z < CHECK_SE, f"mean Ẑ/Z = {m:.4f} ± {s:.4f} ({z:.1f} s.e. from 1; {n_chains} chains, K={K})"


def check_raise_unbiased(seed: int, n_reps: int = 5_000, K: int = 4) -> tuple[bool, str]:
    """E[p̂(v)] = p_ann(v) for RAISE on a 5×4 RBM, every visible state, p_ann exact."""
    g = generator(seed)
    path = _tiny_path(5, 4, 2.0, g, every=2)
    betas = ais_mod.linear_schedule(K)
    v_all = rbm.binary_states(0, 32, 5)
    p_ann = rbm.annealing_marginal_exact(path, betas)
    p_hat = rbm.raise_log_likelihood(path, v_all, betas, n_reps=n_reps).exp()  # [reps, 32]
    ratio = p_hat.mean(0) / p_ann
    se = p_hat.std(0) / math.sqrt(n_reps) / p_ann
    z = float(((ratio - 1).abs() / se).max())
    return z < CHECK_SE, f"max over 32 states: {z:.1f} s.e. ({n_reps} runs, K={K})"
