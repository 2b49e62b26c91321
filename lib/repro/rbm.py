"""Binary restricted Boltzmann machines, exact partition functions, AIS and RAISE.

Shapes: B a batch of states, V visible units, H hidden units, R repetitions,
M AIS chains, N test examples.

The RBM energy is ``E(v, h) = -b.v - c.h - v^T W h`` with ``W`` [V, H].
Summing the hidden units out gives the unnormalised visible marginal

    log f(v) = b.v + sum_j softplus(c_j + (v W)_j)          (free energy: -log f)

Annealing path (Salakhutdinov & Murray, 2008) from a *base-rate* RBM A
(``W = 0``, ``c = 0``, visible biases ``b_A`` fitted to the data marginals) to
the trained RBM B:

    log f_beta(v) = (1 - beta) b_A.v + beta b_B.v + sum_j softplus(beta (c + v W)_j)

which is itself an RBM with visible bias ``(1-beta) b_A + beta b_B``, weights
``beta W`` and hidden bias ``beta c``, so ``Z_0 = 2^H prod_i (1 + exp(b_A,i))``
and the v -> h -> v Gibbs step of that RBM leaves ``p_beta`` invariant (and is
reversible, so RAISE uses the same kernel in reverse).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from . import ais as ais_mod
from .config import ConfigError, ProfileConfig, param
from .device import get_device

DTYPES = {"float64": torch.float64, "float32": torch.float32}

# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------


@dataclass
class RBM:
    """Parameters of a binary RBM: ``W`` [V, H], visible bias ``b`` [V], hidden bias ``c`` [H]."""

    W: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor

    @property
    def n_visible(self) -> int:
        return self.W.shape[0]

    @property
    def n_hidden(self) -> int:
        return self.W.shape[1]

    def to(self, device=None, dtype=None) -> "RBM":
        return RBM(*(t.to(device=device, dtype=dtype) for t in (self.W, self.b, self.c)))

    @staticmethod
    def init(n_visible: int, n_hidden: int, *, std: float = 0.01, visible_bias: torch.Tensor | None = None,
             generator: torch.Generator | None = None, device=None, dtype=torch.float64) -> "RBM":
        """Small random weights, zero hidden biases, visible biases as given (default 0)."""
        W = torch.randn(n_visible, n_hidden, generator=generator, dtype=dtype, device=device) * std
        b = (torch.zeros(n_visible, dtype=dtype, device=device) if visible_bias is None
             else visible_bias.to(device=device, dtype=dtype).clone())
        return RBM(W, b, torch.zeros(n_hidden, dtype=dtype, device=device))


def base_rate_rbm(data: torch.Tensor, n_hidden: int, smoothing: float = 1.0) -> RBM:
    """The base-rate RBM: zero weights, zero hidden biases, visible biases = logit of the data marginals.

    ``smoothing`` pseudo-counts keep the marginals away from 0 and 1.
    """
    n = data.shape[0]
    p = (data.sum(0) + smoothing) / (n + 2.0 * smoothing)  # [V]
    b = torch.log(p) - torch.log1p(-p)
    zeros_w = torch.zeros(data.shape[1], n_hidden, dtype=data.dtype, device=data.device)
    return RBM(zeros_w, b, torch.zeros(n_hidden, dtype=data.dtype, device=data.device))


def log_f(rbm: RBM, v: torch.Tensor) -> torch.Tensor:
    """Unnormalised log-marginal of visible states, hidden units summed out: [B, V] -> [B]."""
    return v @ rbm.b + F.softplus(v @ rbm.W + rbm.c).sum(-1)


def free_energy(rbm: RBM, v: torch.Tensor) -> torch.Tensor:
    """``F(v) = -log f(v)``, [B, V] -> [B]."""
    return -log_f(rbm, v)


def log_f_hidden(rbm: RBM, h: torch.Tensor) -> torch.Tensor:
    """Unnormalised log-marginal of hidden states, visible units summed out: [B, H] -> [B]."""
    return h @ rbm.c + F.softplus(h @ rbm.W.T + rbm.b).sum(-1)


def bernoulli(p: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Binary samples with success probabilities ``p`` (same shape, dtype and device)."""
    # float32 uniforms are ~1.5x cheaper to draw than float64 ones on CPU; 2^-24 resolution is plenty
    return (torch.rand(p.shape, generator=generator, device=p.device, dtype=torch.float32) < p).to(p.dtype)


def p_h_given_v(rbm: RBM, v: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(v @ rbm.W + rbm.c)


def p_v_given_h(rbm: RBM, h: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(h @ rbm.W.T + rbm.b)


def gibbs_vhv(rbm: RBM, v: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One block-Gibbs step v -> h -> v'; reversible with respect to the visible marginal."""
    h = bernoulli(p_h_given_v(rbm, v), generator)
    return bernoulli(p_v_given_h(rbm, h), generator)


# ---------------------------------------------------------------------------
# Exact partition function by enumeration over the smaller layer
# ---------------------------------------------------------------------------

MAX_ENUMERATION_UNITS = 25


def binary_states(start: int, stop: int, n_bits: int, *, device=None, dtype=torch.float64) -> torch.Tensor:
    """Rows ``start..stop-1`` of the 2^n_bits binary table (bit i of the index in column i): [stop-start, n_bits]."""
    idx = torch.arange(start, stop, device=device, dtype=torch.int64)
    bits = torch.arange(n_bits, device=device, dtype=torch.int64)
    return ((idx[:, None] >> bits) & 1).to(dtype)


def log_partition_exact(rbm: RBM, *, chunk_rows: int | None = None,
                        max_units: int = MAX_ENUMERATION_UNITS) -> torch.Tensor:
    """``log Z`` by enumerating the smaller layer and summing the other out analytically.

    Works in chunks of ``chunk_rows`` states (default: about 2^22 numbers of the
    other layer per chunk) so memory stays bounded; vectorised on the RBM's
    device.  Feasible up to ``max_units`` units in the smaller layer.
    """
    V, H = rbm.n_visible, rbm.n_hidden
    over_hidden = H <= V
    n = H if over_hidden else V
    if n > max_units:
        raise ValueError(f"exact log Z needs the smaller layer to have at most {max_units} units; it has {n}")
    other = V if over_hidden else H
    if chunk_rows is None:
        chunk_rows = max(1, (1 << 22) // max(other, 1))
    total = 1 << n
    parts = []
    for start in range(0, total, chunk_rows):
        s = binary_states(start, min(total, start + chunk_rows), n, device=rbm.W.device, dtype=rbm.W.dtype)
        parts.append(torch.logsumexp(log_f_hidden(rbm, s) if over_hidden else log_f(rbm, s), dim=0))
    return torch.logsumexp(torch.stack(parts), dim=0)


def log_likelihood_exact(rbm: RBM, v: torch.Tensor, log_Z: torch.Tensor | None = None) -> torch.Tensor:
    """Exact ``log p(v)`` per example, [B, V] -> [B]."""
    if log_Z is None:
        log_Z = log_partition_exact(rbm)
    return log_f(rbm, v) - log_Z


# ---------------------------------------------------------------------------
# Training: CD-k and PCD
# ---------------------------------------------------------------------------


def parse_method(method: str) -> tuple[bool, int]:
    """``"cd1"``, ``"cd25"`` -> (persistent=False, k); ``"pcd"`` or ``"pcd5"`` -> (True, k)."""
    m = method.lower()
    for prefix, persistent in (("pcd", True), ("cd", False)):
        if m.startswith(prefix):
            rest = m[len(prefix):]
            if rest == "" and persistent:
                return True, 1
            if rest.isdigit() and int(rest) >= 1:
                return persistent, int(rest)
    raise ValueError(f"unknown training method {method!r}: use cdK (e.g. cd1, cd25) or pcd / pcdK")


def method_label(method: str) -> str:
    persistent, k = parse_method(method)
    return ("PCD" if k == 1 else f"PCD-{k}") if persistent else f"CD-{k}"


@dataclass
class TrainSettings:
    """Hyperparameters of one RBM training run."""

    n_hidden: int
    method: str = "cd1"
    epochs: int = 50
    batch_size: int = 100
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    seed: int = 0


@dataclass
class TrainHistory:
    """Per-epoch reconstruction error and pseudo-metrics of a training run (plain data)."""

    method: str
    n_hidden: int
    recon_error: list[float] = field(default_factory=list)
    wall_s: float = 0.0


def cd_gradients(rbm: RBM, v0: torch.Tensor, v_neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positive minus negative statistics, averaged over the batch (hidden probabilities, not samples)."""
    ph0, phn = p_h_given_v(rbm, v0), p_h_given_v(rbm, v_neg)
    B = v0.shape[0]
    dW = (v0.T @ ph0 - v_neg.T @ phn) / B
    db = (v0 - v_neg).mean(0)
    dc = (ph0 - phn).mean(0)
    return dW, db, dc


def train_rbm(data: torch.Tensor, s: TrainSettings) -> tuple[RBM, TrainHistory]:
    """Train a binary RBM on ``data`` [n, V] with CD-k or PCD-k (SGD with momentum, linear lr decay).

    Visible biases start at the data's log-odds; the learning rate decays
    linearly to zero over training; momentum starts at 0.5 for the first 5
    epochs.  PCD keeps ``batch_size`` persistent fantasy chains initialised at
    random training examples.
    """
    persistent, k = parse_method(s.method)
    dev, dt = data.device, data.dtype
    g = torch.Generator(device=dev).manual_seed(s.seed)
    n, V = data.shape
    rbm = RBM.init(V, s.n_hidden, visible_bias=base_rate_rbm(data, s.n_hidden).b, generator=g, device=dev, dtype=dt)
    vel = [torch.zeros_like(t) for t in (rbm.W, rbm.b, rbm.c)]
    n_batches = max(1, n // s.batch_size)
    total_steps = s.epochs * n_batches
    fantasy = data[torch.randint(0, n, (s.batch_size,), generator=g, device=dev)].clone() if persistent else None
    hist = TrainHistory(s.method, s.n_hidden)
    t0 = time.time()
    step = 0
    for epoch in range(s.epochs):
        perm = torch.randperm(n, generator=g, device=dev)
        err = torch.zeros((), dtype=dt, device=dev)
        mom = 0.5 if epoch < 5 else s.momentum
        for i in range(n_batches):
            v0 = data[perm[i * s.batch_size:(i + 1) * s.batch_size]]
            # negative phase: k Gibbs steps from the data (CD) or from the persistent chains (PCD)
            vk = fantasy if persistent else v0
            for _ in range(k):
                vk = gibbs_vhv(rbm, vk, g)
            if persistent:
                fantasy = vk
            grads = cd_gradients(rbm, v0, vk)
            lr = s.lr * (1.0 - step / total_steps)
            for p, v, gr in zip((rbm.W, rbm.b, rbm.c), vel, grads):
                decay = s.weight_decay * p if p is rbm.W else 0.0
                v.mul_(mom).add_(lr * (gr - decay))
                p.add_(v)
            err += ((v0 - p_v_given_h(rbm, p_h_given_v(rbm, v0))) ** 2).sum(1).mean()
            step += 1
        hist.recon_error.append(float(err) / n_batches)
    hist.wall_s = time.time() - t0
    return rbm, hist


# ---------------------------------------------------------------------------
# The annealing path from the base-rate RBM to a trained RBM
# ---------------------------------------------------------------------------


class RBMAnnealingPath(ais_mod.AnnealingPath):
    """Geometric path ``f_beta = f_A^(1-beta) f_B^beta`` between a base-rate RBM and a target RBM.

    State: the pair ``(v, a)`` with ``a = v W + c`` [B, H] cached, so one
    annealing step costs two matrix products (``h W^T`` and the new ``v W``).
    """

    def __init__(self, base: RBM, target: RBM, generator: torch.Generator | None = None):
        if base.n_visible != target.n_visible or base.n_hidden != target.n_hidden:
            raise ValueError("base and target RBMs must have the same shape")
        if bool(base.W.abs().max() > 0) or bool(base.c.abs().max() > 0):
            raise ValueError("the base RBM must have zero weights and hidden biases")
        self.base, self.target, self.generator = base, target, generator
        self.db = target.b - base.b  # [V]

    @property
    def log_Z0(self) -> torch.Tensor:
        """``log Z_A = H log 2 + sum_i softplus(b_A,i)``."""
        return self.base.n_hidden * math.log(2.0) + F.softplus(self.base.b).sum()

    def state(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return v, v @ self.target.W + self.target.c

    def sample_base(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` exact samples of p_0 (independent Bernoullis with the base rates)."""
        p = torch.sigmoid(self.base.b).expand(n, -1)
        return self.state(bernoulli(p, self.generator))

    def log_f(self, x, beta):
        v, a = x
        # log f_beta(v) = (1-beta) b_A.v + beta b_B.v + sum_j softplus(beta a_j)
        return v @ self.base.b + beta * (v @ self.db) + F.softplus(beta * a).sum(-1)

    def log_weight_increment(self, x, beta_prev, beta_next):
        v, a = x
        return (beta_next - beta_prev) * (v @ self.db) + (
            F.softplus(beta_next * a) - F.softplus(beta_prev * a)).sum(-1)

    def transition(self, x, beta):
        v, a = x
        h = bernoulli(torch.sigmoid(beta * a), self.generator)  # p_beta(h | v)
        pv = torch.sigmoid(self.base.b + beta * (self.db + h @ self.target.W.T))  # p_beta(v | h)
        return self.state(bernoulli(pv, self.generator))


def ais_log_Z(path: RBMAnnealingPath, betas: torch.Tensor, n_chains: int,
              n_reps: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """AIS estimates of ``log Z_B``, one per repetition: ([R], log-weights [R, M]).

    All R x M chains run as one batch.
    """
    x0 = path.sample_base(n_reps * n_chains)
    res = ais_mod.ais(path, x0, betas)
    log_w = res.log_w.view(n_reps, n_chains)  # [R*M] -> [R, M]
    return ais_mod.log_Z_estimate(log_w, path.log_Z0.to(torch.float64), dim=1), log_w


def raise_log_likelihood(path: RBMAnnealingPath, v: torch.Tensor, betas: torch.Tensor,
                         n_reps: int = 1) -> torch.Tensor:
    """RAISE estimates of ``log p_ann(v)``, one chain per example and repetition: [R, N].

    Reverse annealing starts at each test example (Burda et al., 2015):
    ``log p_hat(v) = log f_K(v) - log Z_0 + sum_k [log f_k(x_k) - log f_{k+1}(x_k)]``.
    """
    N = v.shape[0]
    vR = v.repeat(n_reps, 1)  # [N, V] -> [R*N, V], repetition-major
    xK = path.state(vR)
    res = ais_mod.reverse_anneal(path, xK, betas)
    log_fK = path.log_f(xK, 1.0).to(torch.float64)
    log_p = log_fK - path.log_Z0.to(torch.float64) + res.log_w
    return log_p.view(n_reps, N)  # [R*N] -> [R, N]


# ---------------------------------------------------------------------------
# Data (binarised scikit-learn digits; MNIST for the paper profile)
# ---------------------------------------------------------------------------


def binarize(x: torch.Tensor, how: str, seed: int = 0) -> torch.Tensor:
    """Intensities in [0, 1] -> binary float64: ``threshold`` (x >= 0.5) or one seeded ``bernoulli`` draw."""
    from . import data as data_mod

    if how == "threshold":
        return (x >= 0.5).to(torch.float64)
    if how == "bernoulli":
        return data_mod.fixed_binarize(x.to(torch.float64), seed=seed)
    raise ConfigError(f"unknown binarisation {how!r}: threshold or bernoulli")


def load_binary_data(dataset: str, root: str = "data/mnist", how: str = "threshold", seed: int = 0,
                     download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) binary float64 CPU tensors: ``digits`` (scikit-learn 8x8, the shared fixed split of
    ``repro.data``) or ``mnist`` (the IDX files in ``root``)."""
    from . import data as data_mod

    if dataset == "digits":
        d = data_mod.load_digits_binary()
    elif dataset == "mnist":
        d = data_mod.load_mnist(root, download=download)
    else:
        raise ConfigError(f"unknown dataset {dataset!r}")
    return binarize(d.train, how, seed), binarize(d.test, how, seed + 1)


# ---------------------------------------------------------------------------
# Chapter config and experiments
# ---------------------------------------------------------------------------

METHOD_CHOICES = ("cd1", "cd3", "cd10", "cd25", "pcd")


@dataclass(frozen=True)
class RaiseConfig(ProfileConfig):
    """All knobs of the RAISE chapter; see ``python -m repro params raise``."""

    dataset: str = param("digits", "binarised data: sklearn 8x8 digits or MNIST (paper)", choices=("digits", "mnist"))
    data_root: str = param("data/mnist", "folder holding the MNIST IDX files (dataset=mnist)")
    download: bool = param(False, "download MNIST into data_root if missing (needs internet)")
    binarize: str = param("threshold", "intensities -> bits: threshold at 0.5, or one seeded Bernoulli draw",
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
    schedule: str = param("linear", "annealing schedule", choices=ais_mod.SCHEDULES)
    ais_chains: int = param(16, "AIS chains per estimate of log Z", min=1)
    ais_reps: int = param(20, "independent AIS estimates of log Z at every K", min=1)
    raise_reps: int = param(3, "independent RAISE runs (one chain per test example) at every K", min=1)
    n_test: int = param(0, "test examples used (0: all) for the small RBMs", min=0)
    large_n_test: int = param(100, "test examples for RAISE on the large RBM (0: all)", min=0)
    tolerance: float = param(0.1, "nats: 'converged' means within this of the exact value", min=0.0)
    dtype: str = param("float64", "floating-point type of models and estimators", choices=tuple(DTYPES))

    PROFILES = {
        "smoke": dict(small_hidden=10, small_methods=("cd1", "pcd"), large_hidden=40, epochs=30,
                      K_grid=(10, 100, 1000), large_K_grid=(10, 100), ais_reps=10, raise_reps=3, n_test=120,
                      large_n_test=50),
        "book": {},
        "paper": dict(dataset="mnist", binarize="bernoulli", small_hidden=20, small_methods=("cd1", "pcd"),
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
        for m in self.small_methods + self.large_methods:
            parse_method(m)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def train_settings(self, n_hidden: int, method: str, seed_offset: int = 0) -> TrainSettings:
        return TrainSettings(n_hidden=n_hidden, method=method, epochs=self.epochs, batch_size=self.batch_size,
                             lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                             seed=self.seed + seed_offset)


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
    train_history: TrainHistory | None = None

    def mean(self, which: str) -> list[float]:
        rows = self.ais if which == "ais" else self.raise_
        return [sum(r) / len(r) for r in rows]

    def std(self, which: str) -> list[float]:
        rows = self.ais if which == "ais" else self.raise_
        out = []
        for r in rows:
            m = sum(r) / len(r)
            out.append(math.sqrt(sum((x - m) ** 2 for x in r) / max(1, len(r) - 1)))
        return out


def estimate_curve(rbm: RBM, base: RBM, test: torch.Tensor, K_grid: tuple[int, ...], *, schedule: str,
                   n_chains: int, ais_reps: int, raise_reps: int, exact: bool, generator: torch.Generator | None = None,
                   name: str = "", method: str = "") -> EstimateCurve:
    """AIS and RAISE estimates of the mean test log-likelihood at every K of ``K_grid``."""
    t0 = time.time()
    path = RBMAnnealingPath(base, rbm, generator)
    mean_log_f = float(log_f(rbm, test).mean())
    ais_rows, raise_rows, ess = [], [], []
    for K in K_grid:
        betas = ais_mod.make_schedule(schedule, K, device=rbm.W.device, dtype=torch.float64)
        # AIS: log p_hat(v) = log f(v) - log Z_hat, one Z_hat per repetition
        log_Z, log_w = ais_log_Z(path, betas, n_chains, ais_reps)  # [R], [R, M]
        ais_rows.append([mean_log_f - float(z) for z in log_Z.cpu()])
        ess.append(float(ais_mod.effective_sample_size(log_w, dim=1).mean()))
        # RAISE: reverse annealing from every test example, R repetitions in one batch
        lp = raise_log_likelihood(path, test, betas, raise_reps)  # [R, N]
        raise_rows.append(lp.mean(1).cpu().tolist())
    ex = float(log_likelihood_exact(rbm, test).mean()) if exact else None
    return EstimateCurve(name, method, rbm.n_hidden, list(K_grid), ais_rows, raise_rows, ex, ess, time.time() - t0)


def _subset(x: torch.Tensor, n: int) -> torch.Tensor:
    return x if n <= 0 or n >= x.shape[0] else x[:n]


def run_experiments(cfg: RaiseConfig, *, data: tuple[torch.Tensor, torch.Tensor] | None = None,
                    log=print) -> dict[str, Any]:
    """Train every RBM of the config and estimate its test log-likelihood with AIS and RAISE.

    Returns ``{"small": [EstimateCurve...], "large": [EstimateCurve...], "wall_s": float}``.
    """
    t0 = time.time()
    dev, dt = get_device(cfg.device), cfg.torch_dtype
    if data is None:
        data = load_binary_data(cfg.dataset, cfg.data_root, cfg.binarize, download=cfg.download)
    train, test = data
    train, test = train.to(dev, dt), test.to(dev, dt)
    g = torch.Generator(device=dev).manual_seed(cfg.seed + 1000)
    out: dict[str, Any] = {"small": [], "large": [], "n_train": train.shape[0], "n_test": test.shape[0]}
    for group, n_hidden, methods, K_grid, n_test, exact in (
            ("small", cfg.small_hidden, cfg.small_methods, cfg.K_grid, cfg.n_test, True),
            ("large", cfg.large_hidden, cfg.large_methods, cfg.large_K_grid, cfg.large_n_test, False)):
        for i, method in enumerate(methods):
            # phase 1: train
            rbm, hist = train_rbm(train, cfg.train_settings(n_hidden, method, seed_offset=i))
            base = base_rate_rbm(train, n_hidden)
            # phase 2: AIS and RAISE at every K
            curve = estimate_curve(rbm, base, _subset(test, n_test), K_grid, schedule=cfg.schedule,
                                   n_chains=cfg.ais_chains, ais_reps=cfg.ais_reps, raise_reps=cfg.raise_reps,
                                   exact=exact, generator=g,
                                   name=f"{method_label(method)} ({n_hidden}h)", method=method)
            curve.train_history = hist
            out[group].append(curve)
            log(f"[raise] {curve.name}: trained in {hist.wall_s:.1f}s, estimates in {curve.wall_s:.1f}s; "
                f"exact={curve.exact}, AIS={[round(x, 2) for x in curve.mean('ais')]}, "
                f"RAISE={[round(x, 2) for x in curve.mean('raise')]}")
    out["wall_s"] = time.time() - t0
    return out
