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

Equation labels in comments, e.g. ``(raise-path)``, are the labels of
``book/raise.md``.  This module holds the algorithm only; the RAISE chapter's
config, experiment runs and claims live in :mod:`repro.chapters.raise_rbm`.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.nn.functional import softplus

from . import ais as ais_mod
from .checkpoint import load_checkpoint, make_identity, save_checkpoint
from .progress import Progress
from .seed import generator

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
        """V, the number of visible units."""
        return self.W.shape[0]

    @property
    def n_hidden(self) -> int:
        """H, the number of hidden units."""
        return self.W.shape[1]

    def to(self, device=None, dtype=None) -> "RBM":
        """The same RBM with its tensors moved to ``device`` / cast to ``dtype``."""
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
    # (raise-free-energy): log f(v) = b.v + sum_j softplus(c_j + (v W)_j)
    return v @ rbm.b + softplus(v @ rbm.W + rbm.c).sum(-1)


def free_energy(rbm: RBM, v: torch.Tensor) -> torch.Tensor:
    """``F(v) = -log f(v)``, [B, V] -> [B]."""
    return -log_f(rbm, v)


def log_f_hidden(rbm: RBM, h: torch.Tensor) -> torch.Tensor:
    """Unnormalised log-marginal of hidden states, visible units summed out: [B, H] -> [B]."""
    return h @ rbm.c + softplus(h @ rbm.W.T + rbm.b).sum(-1)


def bernoulli(p: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Binary samples with success probabilities ``p`` (same shape, dtype and device)."""
    # float32 uniforms are ~1.5x cheaper to draw than float64 ones on CPU; 2^-24 resolution is plenty
    return (torch.rand(p.shape, generator=generator, device=p.device, dtype=torch.float32) < p).to(p.dtype)


def p_h_given_v(rbm: RBM, v: torch.Tensor) -> torch.Tensor:
    """``p(h_j = 1 | v) = sigmoid(c_j + (v W)_j)``, [B, V] -> [B, H]."""
    return torch.sigmoid(v @ rbm.W + rbm.c)


def p_v_given_h(rbm: RBM, h: torch.Tensor) -> torch.Tensor:
    """``p(v_i = 1 | h) = sigmoid(b_i + (W h)_i)``, [B, H] -> [B, V]."""
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
    """Display name of a training method: ``cd25`` -> ``CD-25``, ``pcd`` -> ``PCD``."""
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
    """Per-epoch mean squared reconstruction error of a training run, and its wall time (plain data)."""

    method: str
    n_hidden: int
    recon_error: list[float] = field(default_factory=list)
    wall_s: float = 0.0


@dataclass
class _TrainState:
    """Everything a training run carries from one epoch to the next (what a checkpoint stores)."""

    rbm: RBM
    velocity: list[torch.Tensor]  # momentum buffers of W, b, c
    fantasy: torch.Tensor | None  # PCD's persistent chains [batch_size, V]; None for CD
    epoch: int = 0  # epochs completed
    step: int = 0  # minibatch updates completed

    def to_dict(self, generator: torch.Generator, history: TrainHistory) -> dict:
        return {"W": self.rbm.W, "b": self.rbm.b, "c": self.rbm.c, "velocity": self.velocity,
                "fantasy": self.fantasy, "epoch": self.epoch, "step": self.step,
                "generator": generator.get_state(), "recon_error": list(history.recon_error),
                "wall_s": history.wall_s}

    @staticmethod
    def from_dict(d: dict, generator: torch.Generator, history: TrainHistory, device, dtype) -> "_TrainState":
        def put(t):
            return None if t is None else t.to(device=device, dtype=dtype)

        generator.set_state(d["generator"])
        history.recon_error[:] = list(d["recon_error"])
        history.wall_s = float(d["wall_s"])
        return _TrainState(RBM(put(d["W"]), put(d["b"]), put(d["c"])), [put(v) for v in d["velocity"]],
                           put(d["fantasy"]), int(d["epoch"]), int(d["step"]))


def cd_gradients(rbm: RBM, v0: torch.Tensor, v_neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positive minus negative statistics, averaged over the batch (hidden probabilities, not samples)."""
    ph0, phn = p_h_given_v(rbm, v0), p_h_given_v(rbm, v_neg)
    B = v0.shape[0]
    dW = (v0.T @ ph0 - v_neg.T @ phn) / B
    db = (v0 - v_neg).mean(0)
    dc = (ph0 - phn).mean(0)
    return dW, db, dc


def _init_training(data: torch.Tensor, s: TrainSettings, g: torch.Generator) -> _TrainState:
    """Phase 1: small random weights, visible biases at the data's log-odds, PCD chains at random examples."""
    persistent, _ = parse_method(s.method)
    n, V = data.shape
    dev, dt = data.device, data.dtype
    rbm = RBM.init(V, s.n_hidden, visible_bias=base_rate_rbm(data, s.n_hidden).b, generator=g, device=dev, dtype=dt)
    velocity = [torch.zeros_like(t) for t in (rbm.W, rbm.b, rbm.c)]
    fantasy = data[torch.randint(0, n, (s.batch_size,), generator=g, device=dev)].clone() if persistent else None
    return _TrainState(rbm, velocity, fantasy)


def _sgd_momentum_step(st: _TrainState, grads, lr: float, momentum: float, weight_decay: float) -> None:
    """``velocity <- momentum velocity + lr (grad - weight_decay W)``; parameters += velocity (in place)."""
    rbm = st.rbm
    for p, v, gr in zip((rbm.W, rbm.b, rbm.c), st.velocity, grads):
        decay = weight_decay * p if p is rbm.W else 0.0
        v.mul_(momentum).add_(lr * (gr - decay))
        p.add_(v)


def _train_epoch(st: _TrainState, data: torch.Tensor, s: TrainSettings, g: torch.Generator,
                 total_steps: int) -> float:
    """Phase 2, one epoch: a random permutation, then one CD-k / PCD-k update per minibatch.

    Returns the epoch's mean squared reconstruction error per example.
    """
    persistent, k = parse_method(s.method)
    n = data.shape[0]
    n_batches = max(1, n // s.batch_size)
    perm = torch.randperm(n, generator=g, device=data.device)
    err = torch.zeros((), dtype=data.dtype, device=data.device)
    mom = 0.5 if st.epoch < 5 else s.momentum
    for i in range(n_batches):
        v0 = data[perm[i * s.batch_size:(i + 1) * s.batch_size]]
        # negative phase: k Gibbs steps from the data (CD) or from the persistent chains (PCD)
        vk = st.fantasy if persistent else v0
        for _ in range(k):
            vk = gibbs_vhv(st.rbm, vk, g)
        if persistent:
            st.fantasy = vk
        lr = s.lr * (1.0 - st.step / total_steps)
        _sgd_momentum_step(st, cd_gradients(st.rbm, v0, vk), lr, mom, s.weight_decay)
        err += ((v0 - p_v_given_h(st.rbm, p_h_given_v(st.rbm, v0))) ** 2).sum(1).mean()
        st.step += 1
    st.epoch += 1
    return float(err) / n_batches


def train_rbm(data: torch.Tensor, s: TrainSettings, *, checkpoint: str | Path | None = None,
              checkpoint_every: int = 10, identity: dict | None = None,
              label: str | None = None) -> tuple[RBM, TrainHistory]:
    """Train a binary RBM on ``data`` [n, V] with CD-k or PCD-k (SGD with momentum, linear lr decay).

    Visible biases start at the data's log-odds; the learning rate decays
    linearly to zero over training; momentum starts at 0.5 for the first 5
    epochs.  PCD keeps ``batch_size`` persistent fantasy chains initialised at
    random training examples.

    With ``checkpoint`` (a file path) the state, including the random
    generator's, is saved every ``checkpoint_every`` epochs and at the end
    through :mod:`repro.checkpoint`, and a run finds and resumes it: an
    interrupted run resumed gives the same RBM as an uninterrupted one.
    ``identity`` (default: the settings and the data's shape) must match the
    checkpoint's, else :class:`repro.checkpoint.CheckpointMismatch`.
    """
    g = generator(s.seed, data.device)
    hist = TrainHistory(s.method, s.n_hidden)
    n_batches = max(1, data.shape[0] // s.batch_size)
    total_steps = s.epochs * n_batches
    if checkpoint is not None and identity is None:
        identity = make_identity("rbm-training", asdict(s), data_shape=list(data.shape), dtype=str(data.dtype))
    saved = load_checkpoint(checkpoint, identity) if checkpoint is not None else None
    if saved is None:
        st = _init_training(data, s, g)
    else:
        st = _TrainState.from_dict(saved, g, hist, data.device, data.dtype)
    t0 = time.time() - hist.wall_s
    with Progress(s.epochs, label or f"rbm {method_label(s.method)} {s.n_hidden}h", unit="epoch",
                  start=st.epoch) as bar:
        if saved is not None:
            bar.log(f"resumed from {checkpoint} at epoch {st.epoch}")
        while st.epoch < s.epochs:
            hist.recon_error.append(_train_epoch(st, data, s, g, total_steps))
            bar.update(st.epoch, recon=hist.recon_error[-1])
            if checkpoint is not None and (st.epoch % checkpoint_every == 0 or st.epoch == s.epochs):
                hist.wall_s = time.time() - t0
                save_checkpoint(checkpoint, st.to_dict(g, hist), identity)
    hist.wall_s = time.time() - t0
    return st.rbm, hist


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
        return self.base.n_hidden * math.log(2.0) + softplus(self.base.b).sum()

    def state(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The path's state for visible vectors ``v`` [B, V]: ``(v, v W + c)``."""
        return v, v @ self.target.W + self.target.c

    def sample_base(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` exact samples of p_0 (independent Bernoullis with the base rates)."""
        p = torch.sigmoid(self.base.b).expand(n, -1)
        return self.state(bernoulli(p, self.generator))

    def log_f(self, x, beta):
        """``log f_beta(v)`` of eq. (raise-path), [B]."""
        v, a = x
        # (raise-path): log f_beta(v) = (1-beta) b_A.v + beta b_B.v + sum_j softplus(beta a_j)
        return v @ self.base.b + beta * (v @ self.db) + softplus(beta * a).sum(-1)

    def log_weight_increment(self, x, beta_prev, beta_next):
        """``log f_next(v) - log f_prev(v)`` in one go (the base terms cancel), [B]."""
        v, a = x
        return (beta_next - beta_prev) * (v @ self.db) + (
            softplus(beta_next * a) - softplus(beta_prev * a)).sum(-1)

    def transition(self, x, beta):
        """One v -> h -> v Gibbs step of the intermediate RBM p_beta (reversible, so also RAISE's kernel)."""
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
    # (raise-ais): log Z_hat = log Z_0 + log mean_m w_m, one per repetition
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
    # (raise-raise): reverse annealing from x_K = v with the same (reversible) kernels
    res = ais_mod.reverse_anneal(path, xK, betas)
    log_fK = path.log_f(xK, 1.0).to(torch.float64)
    log_p = log_fK - path.log_Z0.to(torch.float64) + res.log_w
    return log_p.view(n_reps, N)  # [R*N] -> [R, N]


# ---------------------------------------------------------------------------
# Exact transition matrices and the annealing model, for tiny RBMs (checks)
# ---------------------------------------------------------------------------


def gibbs_transition_matrix(rbm: RBM) -> torch.Tensor:
    """Exact v -> h -> v transition matrix ``T[v, v'] = sum_h p(h|v) p(v'|h)``: [2^V, 2^V] (tiny RBMs only).

    Rows and columns are visible states in :func:`binary_states` order.
    """
    V, H = rbm.n_visible, rbm.n_hidden
    v = binary_states(0, 2**V, V, device=rbm.W.device, dtype=rbm.W.dtype)
    h = binary_states(0, 2**H, H, device=rbm.W.device, dtype=rbm.W.dtype)
    ph = p_h_given_v(rbm, v)  # [2^V, H]
    P_h = torch.exp((h[None] * ph[:, None].log() + (1 - h[None]) * (1 - ph[:, None]).log()).sum(-1))  # [2^V, 2^H]
    pv = p_v_given_h(rbm, h)  # [2^H, V]
    P_v = torch.exp((v[None] * pv[:, None].log() + (1 - v[None]) * (1 - pv[:, None]).log()).sum(-1))  # [2^H, 2^V]
    return P_h @ P_v


def intermediate_rbm(path: RBMAnnealingPath, beta: float) -> RBM:
    """p_beta of the annealing path (raise-path) written as an ordinary RBM."""
    base, target = path.base, path.target
    return RBM(beta * target.W, (1 - beta) * base.b + beta * target.b, beta * target.c)


def annealing_marginal_exact(path: RBMAnnealingPath, betas) -> torch.Tensor:
    """Exact visible marginal of the annealing model, ``p_0 T_1 ... T_{K-1} T_K`` (raise-pann): [2^V].

    The forward chain read as a directed model of x_K; tiny RBMs only.
    """
    V = path.target.n_visible
    v = binary_states(0, 2**V, V, device=path.target.W.device, dtype=path.target.W.dtype)
    p = torch.softmax(log_f(path.base, v), 0)
    for beta in [float(b) for b in betas][1:]:
        p = p @ gibbs_transition_matrix(intermediate_rbm(path, beta))
    return p
