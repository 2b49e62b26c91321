"""Importance Weighted Autoencoders (Burda, Grosse & Salakhutdinov, 2016) and the VAE baseline.

The maths lives in small pure functions of the *log-weights*

    log w_i = log p(x, h_i) - log q(h_i | x),      h_i ~ q(h | x),  i = 1..k,

namely the bound L_k (:func:`iwae_bound`), the k-sample ELBO of the
"VAE with k samples" baseline (:func:`vae_bound`), the normalised importance
weights and the explicit gradient surrogate of the IWAE estimator.

The networks are an *ensemble*: every weight has a leading model axis ``M``
so that several seeds (and the VAE and IWAE objectives at the same k) train
as one set of batched matrix multiplies.  Adam is elementwise, so one Adam
over the stacked parameters is exactly M independent Adams.

Shapes: M models, k importance samples, B data points, D pixels,
H hidden units, d latent units of one stochastic layer.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .ais import log_mean_exp  # the one stable log-mean-exp, shared with AIS
from .config import ConfigError, ProfileConfig, param

LOG_2PI = math.log(2 * math.pi)

# ---------------------------------------------------------------------------
# The bound and the two gradient estimators, as functions of log-weights
# ---------------------------------------------------------------------------


def iwae_bound(log_w: torch.Tensor, dim: int = -2) -> torch.Tensor:
    """Monte Carlo estimate of L_k, one per data point.

    Eq. (8): L_k = E[ log (1/k) sum_i w_i ],  w_i = p(x, h_i) / q(h_i | x).
    ``log_w`` holds the k samples along ``dim`` (default: [..., k, B] -> [..., B]).
    With k = 1 this is the ELBO (Eq. 3).
    """
    return log_mean_exp(log_w, dim)


def vae_bound(log_w: torch.Tensor, dim: int = -2) -> torch.Tensor:
    """The "VAE with k samples" estimate: (1/k) sum_i log w_i, an unbiased estimate of L_1."""
    return log_w.mean(dim)


def importance_weights(log_w: torch.Tensor, dim: int = -2) -> torch.Tensor:
    """The normalised importance weights w~_i = w_i / sum_j w_j (Eq. 14)."""
    return torch.softmax(log_w, dim)


def iwae_surrogate(log_w: torch.Tensor, dim: int = -2) -> torch.Tensor:
    """A surrogate whose gradient is the IWAE estimator  sum_i w~_i grad log w_i  (Eq. 14).

    Its value is not L_k; only its gradient matters.  Autograd of
    :func:`iwae_bound` gives the same gradient (tested); the VAE estimator is
    the same expression with w~_i replaced by the uniform 1/k.
    """
    return (importance_weights(log_w, dim).detach() * log_w).sum(dim)


def objective(log_w: torch.Tensor, iwae: torch.Tensor) -> torch.Tensor:
    """Per-model training objective: L_k for IWAE models, the k-sample ELBO for VAE models.

    ``log_w`` is [M, k, B]; ``iwae`` a bool [M]; returns [M] (mean over the batch).
    """
    return torch.where(iwae[:, None], iwae_bound(log_w, 1), vae_bound(log_w, 1)).mean(-1)


# ---------------------------------------------------------------------------
# Memory-bounded large-k estimates
# ---------------------------------------------------------------------------


def streaming_log_mean_exp(chunks: Iterable[torch.Tensor], dim: int) -> torch.Tensor:
    """log-mean-exp of the concatenation of ``chunks`` along ``dim`` without concatenating.

    Keeps a running (max, sum of exp) pair, so memory is one chunk.
    """
    total, n = None, 0
    for c in chunks:
        lse = torch.logsumexp(c, dim)
        total = lse if total is None else torch.logaddexp(total, lse)
        n += c.shape[dim]
    if total is None:
        raise ValueError("no chunks")
    return total - math.log(n)


def grouped_bound(draw: Callable[[int], torch.Tensor], k: int, n_groups: int, chunk: int) -> torch.Tensor:
    """Average of ``n_groups`` independent estimates of L_k, drawing at most ``chunk`` samples at a time.

    ``draw(n)`` returns fresh log-weights [..., n, B].  Small k: whole groups
    per draw, reshaped [..., g*k, B] -> [..., g, k, B].  Large k: each group
    streamed through :func:`streaming_log_mean_exp`.  Returns [..., B].
    """
    if k < 1 or n_groups < 1 or chunk < 1:
        raise ValueError("k, n_groups and chunk must be >= 1")
    acc, done = None, 0
    if k <= chunk:
        per = max(1, chunk // k)
        while done < n_groups:
            g = min(per, n_groups - done)
            lw = draw(g * k)
            lw = lw.reshape(*lw.shape[:-2], g, k, lw.shape[-1])  # [..., g*k, B] -> [..., g, k, B]
            s = iwae_bound(lw, -2).sum(-2)
            acc = s if acc is None else acc + s
            done += g
    else:
        for _ in range(n_groups):
            sizes = [chunk] * (k // chunk) + ([k % chunk] if k % chunk else [])
            s = streaming_log_mean_exp((draw(n) for n in sizes), -2)
            acc = s if acc is None else acc + s
    return acc / n_groups


# ---------------------------------------------------------------------------
# Networks with a leading model axis
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Architecture:
    """Widths of a VAE/IWAE with L stochastic layers.

    Stochastic layer l has ``latent[l]`` Gaussian units and is reached through
    two deterministic tanh layers of ``hidden[l]`` units in both the recognition
    and the generative network (the paper's nets; Section 5).
    """

    x_dim: int
    hidden: tuple[int, ...]
    latent: tuple[int, ...]

    def __post_init__(self):
        if len(self.hidden) != len(self.latent) or not self.latent:
            raise ValueError("hidden and latent need one entry per stochastic layer")

    @property
    def n_layers(self) -> int:
        return len(self.latent)


def paper_architecture(n_layers: int, x_dim: int = 784) -> Architecture:
    """The paper's MNIST nets: 784-200-200-50, or 784-200-200-100-100-100-50."""
    if n_layers == 1:
        return Architecture(x_dim, (200,), (50,))
    if n_layers == 2:
        return Architecture(x_dim, (200, 100), (100, 50))
    raise ValueError("the paper uses 1 or 2 stochastic layers")


class EnsembleLinear(nn.Module):
    """M independent affine maps: [M, N, n_in] -> [M, N, n_out]."""

    def __init__(self, n_models: int, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_models, n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_models, 1, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleMLP(nn.Module):
    """n_in -> H -> H -> n_out with tanh hidden units, one per model."""

    def __init__(self, n_models: int, n_in: int, hidden: int, n_out: int):
        super().__init__()
        self.layers = nn.ModuleList([EnsembleLinear(n_models, n_in, hidden),
                                     EnsembleLinear(n_models, hidden, hidden),
                                     EnsembleLinear(n_models, hidden, n_out)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[1:-1]
        h = x.reshape(x.shape[0], -1, x.shape[-1])  # [M, *lead, n_in] -> [M, N, n_in]
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = torch.tanh(h)
        return h.reshape(x.shape[0], *lead, h.shape[-1])


def gaussian_log_density(h: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log N(h; mean, diag(exp(log_var))), summed over the last axis."""
    return -0.5 * (((h - mean) ** 2) * torch.exp(-log_var) + log_var + LOG_2PI).sum(-1)


def bernoulli_log_likelihood(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log Bernoulli(x; sigmoid(logits)) for binary x, summed over pixels.

    x*logits - softplus(logits) equals log sigmoid((2x - 1) * logits) when x is 0 or 1
    (two elementwise passes instead of three: this is the hot spot of large-k estimates).
    """
    return F.logsigmoid((2 * x - 1) * logits).sum(-1)


class IWAE(nn.Module):
    """M VAE/IWAE networks of one architecture (the objective is chosen at training time).

    Recognition:  q(h1|x) q(h2|h1) ...   Gaussian, variance = exp(net output)
    Generative:   p(hL) = N(0, I),  p(h_{l-1}|h_l) Gaussian,  p(x|h1) Bernoulli.
    """

    def __init__(self, arch: Architecture, n_models: int = 1, seeds: Sequence[int] | None = None,
                 x_mean: torch.Tensor | None = None):
        super().__init__()
        self.arch, self.n_models = arch, n_models
        ins = (arch.x_dim,) + arch.latent[:-1]
        self.encoders = nn.ModuleList([EnsembleMLP(n_models, ins[l], arch.hidden[l], 2 * arch.latent[l])
                                       for l in range(arch.n_layers)])
        outs = (arch.x_dim,) + tuple(2 * d for d in arch.latent[:-1])
        self.decoders = nn.ModuleList([EnsembleMLP(n_models, arch.latent[l], arch.hidden[l], outs[l])
                                       for l in range(arch.n_layers)])
        self.reset_parameters(seeds if seeds is not None else range(n_models), x_mean)

    @torch.no_grad()
    def reset_parameters(self, seeds: Sequence[int], x_mean: torch.Tensor | None = None) -> None:
        """Per-model init from its own seed: weights ~ N(0, 1/fan_in), biases 0.

        The output bias is the logit of the training-set pixel means (Section 5).
        """
        seeds = list(seeds)
        if len(seeds) != self.n_models:
            raise ValueError(f"need {self.n_models} seeds, got {len(seeds)}")
        linears = [m for m in self.modules() if isinstance(m, EnsembleLinear)]
        for r, seed in enumerate(seeds):  # init only: one generator per model
            g = torch.Generator().manual_seed(int(seed))
            for lin in linears:
                n_in, n_out = lin.weight.shape[1:]
                lin.weight[r].copy_(torch.randn(n_in, n_out, generator=g) / math.sqrt(n_in))
                lin.bias[r].zero_()
        if x_mean is not None:
            p = x_mean.clamp(1e-3, 1 - 1e-3)
            self.decoders[0].layers[-1].bias.copy_(torch.log(p / (1 - p)).expand_as(self.decoders[0].layers[-1].bias))

    @staticmethod
    def _split(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = out.chunk(2, dim=-1)
        return mean, log_var

    def _per_model(self, x: torch.Tensor) -> torch.Tensor:
        """[B, D] (shared by all models) or [M, B, D] -> [M, B, D]."""
        return x.expand(self.n_models, *x.shape) if x.dim() == 2 else x

    def log_weights(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """log w = log p(x, h) - log q(h | x) for k reparameterised samples: [M, k, B]."""
        x = self._per_model(x)
        M, B, _ = x.shape
        # recognition pass: h_l = mean + exp(log_var / 2) * eps, sampled layer by layer
        mean, log_var = self._split(self.encoders[0](x))                     # [M, B, d1]
        mean, log_var = mean[:, None], log_var[:, None]                      # [M, 1, B, d1]
        hs, log_q = [], 0.0
        for l in range(self.arch.n_layers):
            if l > 0:
                mean, log_var = self._split(self.encoders[l](hs[-1]))        # [M, k, B, d_l]
            eps = torch.randn((M, k, B, self.arch.latent[l]), generator=generator, device=x.device)
            h = mean + torch.exp(0.5 * log_var) * eps                        # [M, k, B, d_l]
            # log N(h; mean, exp(log_var)) with (h - mean) / sigma = eps: the same function of the
            # parameters (hence the same gradient) as gaussian_log_density(h, mean, log_var), fewer ops
            log_q = log_q - 0.5 * (eps ** 2 + log_var + LOG_2PI).sum(-1)
            hs.append(h)
        # generative pass: p(h_L) p(h_{L-1} | h_L) ... p(x | h_1)
        log_p = -0.5 * (hs[-1] ** 2 + LOG_2PI).sum(-1)
        for l in range(self.arch.n_layers - 1, 0, -1):
            mean, log_var = self._split(self.decoders[l](hs[l]))
            log_p = log_p + gaussian_log_density(hs[l - 1], mean, log_var)
        logits = self.decoders[0](hs[0])                                     # [M, k, B, D]
        log_p = log_p + bernoulli_log_likelihood(x[:, None], logits)
        return log_p - log_q                                                 # [M, k, B]

    @torch.no_grad()
    def posterior_means(self, x: torch.Tensor, n_samples: int = 100,
                        generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """E_q[h_l | x] per stochastic layer: [M, B, d_l] each.

        Layer 1 is the encoder mean; deeper layers average the conditional
        mean over ``n_samples`` draws of the layer below.
        """
        x = self._per_model(x)
        mean, log_var = self._split(self.encoders[0](x))
        out = [mean]
        h = mean[:, None] + torch.exp(0.5 * log_var)[:, None] * torch.randn(
            (x.shape[0], n_samples, *mean.shape[1:]), generator=generator, device=x.device)
        for l in range(1, self.arch.n_layers):
            mean, log_var = self._split(self.encoders[l](h))                 # [M, S, B, d_l]
            out.append(mean.mean(1))
            h = mean + torch.exp(0.5 * log_var) * torch.randn(mean.shape, generator=generator, device=x.device)
        return out

    def select(self, index: Sequence[int]) -> "IWAE":
        """A new ensemble holding copies of the models at ``index``."""
        index = list(index)
        new = IWAE(self.arch, len(index), seeds=list(range(len(index))))
        with torch.no_grad():
            for p_new, p in zip(new.parameters(), self.parameters()):
                p_new.copy_(p[index])
        return new.to(next(self.parameters()).device)


def concat_models(models: Sequence[IWAE]) -> IWAE:
    """One ensemble from several ensembles of the same architecture."""
    arch = models[0].arch
    new = IWAE(arch, sum(m.n_models for m in models), seeds=list(range(sum(m.n_models for m in models))))
    with torch.no_grad():
        for p_new, *ps in zip(new.parameters(), *(m.parameters() for m in models)):
            p_new.copy_(torch.cat(list(ps), 0))
    return new.to(next(models[0].parameters()).device)


# ---------------------------------------------------------------------------
# Evaluation: large-k log-likelihood estimates and active units
# ---------------------------------------------------------------------------


@torch.no_grad()
def estimate_bound(model: IWAE, x: torch.Tensor, k: int, n_groups: int = 1, chunk: int = 500,
                   batch_size: int = 100, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-data-point estimate of L_k for every model: [M, N].

    The average of ``n_groups`` independent k-sample estimates; at most
    ``chunk`` samples x ``batch_size`` data points x M models are in memory.
    -L_5000 is the paper's test NLL.
    """
    outs = []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        outs.append(grouped_bound(lambda n: model.log_weights(xb, n, generator), k, n_groups, chunk))
    return torch.cat(outs, -1)


def unit_activity(means: torch.Tensor) -> torch.Tensor:
    """A_u = Cov_x(E_q[u | x]) for each unit: the variance over data points of the posterior mean.

    ``means`` [M, N, d] -> [M, d].
    """
    return means.var(1, unbiased=False)


def active_units(model: IWAE, x: torch.Tensor, threshold: float = 1e-2, n_samples: int = 100,
                 generator: torch.Generator | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(A_u per layer [M, d_l], number of units with A_u > threshold per layer [M])."""
    acts = [unit_activity(m) for m in model.posterior_means(x, n_samples, generator)]
    return acts, [(a > threshold).sum(-1) for a in acts]


# ---------------------------------------------------------------------------
# Training: the paper's schedule, checkpointed at stage ends
# ---------------------------------------------------------------------------


def paper_schedule(n_stages: int = 8, lr: float = 1e-3, base: int = 3, decay_stages: float = 7.0) -> list[tuple[int, float]]:
    """[(passes, learning rate)] per stage: stage i runs base^i passes at lr * 10^(-i / decay_stages)."""
    return [(base ** i, lr * 10 ** (-i / decay_stages)) for i in range(n_stages)]


@dataclass(frozen=True)
class AdamSettings:
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-4


def train(model: IWAE, train_x: torch.Tensor, k: int, iwae: Sequence[bool], schedule: Sequence[tuple[int, float]],
          batch_size: int = 20, adam: AdamSettings = AdamSettings(), seed: int = 0,
          checkpoint: str | Path | None = None, checkpoint_every: int = 0,
          log: Callable[[str], None] | None = None, label: str = "") -> dict:
    """Train the M models of ``model`` for the whole ``schedule``; return the history.

    Model m maximises L_k if ``iwae[m]`` else the k-sample ELBO.  Every model
    gets its own minibatch order, dynamic binarisation and noise (one [M, B, D]
    batch per step, all drawn from one generator seeded by ``seed``).  With
    ``checkpoint`` set, the state (model, Adam, random stream, history) is
    saved at every stage end and every ``checkpoint_every`` passes, and a rerun
    resumes exactly where the last save left off.
    """
    device = next(model.parameters()).device
    M = model.n_models
    mask = torch.tensor(list(iwae), dtype=torch.bool, device=device)
    if mask.numel() != M:
        raise ValueError(f"need one objective flag per model ({M}), got {mask.numel()}")
    gen = torch.Generator(device=device).manual_seed(int(seed))
    train_x = train_x.to(device)
    N = len(train_x)
    if N < batch_size:
        raise ValueError(f"training set ({N}) smaller than one batch ({batch_size})")
    steps = N // batch_size
    opt = torch.optim.Adam(model.parameters(), lr=schedule[0][1], betas=(adam.beta1, adam.beta2), eps=adam.eps)
    history = {"k": k, "iwae": [bool(b) for b in mask.tolist()], "epoch": [], "stage": [], "lr": [],
               "train_bound": [], "seconds": 0.0}
    ckpt = Path(checkpoint) if checkpoint else None
    elapsed = 0.0
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"].cpu())
        history = state["history"]
        elapsed = history["seconds"]
        if log:
            log(f"{label} resumed from {ckpt} after {len(history['epoch'])} passes")

    def save() -> None:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
                    "history": history}, tmp)
        tmp.replace(ckpt)   # atomic: an interruption never leaves a half-written checkpoint

    epoch = len(history["epoch"])   # passes already done (resume point)
    t0 = time.time()
    first = 0
    for stage, (passes, lr) in enumerate(schedule):
        last = first + passes    # this stage covers passes first+1 .. last
        if epoch >= last:
            first = last
            continue
        for group in opt.param_groups:
            group["lr"] = lr
        for _ in range(last - epoch):
            # ---- one pass: a fresh permutation per model, [M, N]
            order = torch.argsort(torch.rand((M, N), generator=gen, device=device), dim=1)
            total = torch.zeros(M, device=device)
            for s in range(steps):
                idx = order[:, s * batch_size:(s + 1) * batch_size]                      # [M, B]
                x = torch.bernoulli(train_x[idx], generator=gen)                         # [M, B, D]
                bound = objective(model.log_weights(x, k, gen), mask)                   # [M]
                opt.zero_grad(set_to_none=True)
                (-bound.sum()).backward()
                opt.step()
                total += bound.detach()
            epoch += 1
            history["epoch"].append(epoch)
            history["stage"].append(stage)
            history["lr"].append(lr)
            history["train_bound"].append((total / steps).tolist())
            history["seconds"] = elapsed + time.time() - t0
            if ckpt is not None and (epoch == last or (checkpoint_every and epoch % checkpoint_every == 0)):
                save()
        if log:
            mean_bound = sum(history["train_bound"][-1]) / M
            log(f"{label} stage {stage + 1}/{len(schedule)} done: {epoch} passes, lr {lr:.2e}, "
                f"train bound {mean_bound:.2f}, {history['seconds']:.0f}s")
        first = last
    return history


# ---------------------------------------------------------------------------
# Config of the chapter
# ---------------------------------------------------------------------------

DATASETS = ("digits", "mnist", "omniglot")


@dataclass(frozen=True)
class IWAEConfig(ProfileConfig):
    """All knobs of the IWAE chapter; see ``python -m repro params iwae``."""

    dataset: str = param("digits", "digits (scikit-learn 8x8, offline) | mnist | omniglot", choices=DATASETS)
    data_root: str = param("data", "folder holding mnist/ and omniglot/ (paper profile)")
    download: bool = param(False, "download MNIST / Omniglot if missing (needs internet)")
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
    continue_passes: int = param(13, "Table 2: extra passes with the other objective (paper: 3^8)", min=0)
    continue_k: int = param(50, "Table 2: k of the IWAE objective when continuing (paper: 50)", min=2)
    checkpoint_dir: str | None = param(None, "save each training group at stage ends here and resume from it")
    checkpoint_every: int = param(0, "also save every this many passes within a stage (0: stage ends only)", min=0)
    progress: bool = param(True, "print one line per finished stage")

    PROFILES = {
        "smoke": dict(layers=(1, 2), ks=(1, 5), n_seeds=2, hidden_1l=32, latent_1l=8, hidden_2l=(32, 16),
                      latent_2l=(16, 8), batch_size=100, n_stages=2, eval_k=200, max_test=60,
                      bound_ks=(1, 5, 50), bound_samples=100, curve_ks=(1, 5, 50, 200), curve_samples=200,
                      continue_passes=1, continue_k=5, active_samples=20),
        "book": {},
        "paper": dict(dataset="mnist", layers=(1, 2), n_seeds=1, hidden_1l=200, latent_1l=50,
                      hidden_2l=(200, 100), latent_2l=(100, 50), n_stages=8, eval_chunk=500, eval_batch=100,
                      curve_samples=5000, continue_passes=3 ** 8, checkpoint_dir="checkpoints/iwae",
                      checkpoint_every=27),
    }

    def check(self) -> None:
        if len(self.hidden_2l) != 2 or len(self.latent_2l) != 2:
            raise ConfigError("hidden_2l and latent_2l need two entries (one per stochastic layer)")
        if len(set(self.ks)) != len(self.ks) or len(set(self.layers)) != len(self.layers):
            raise ConfigError("ks and layers must not repeat")
        if self.dataset == "digits" and self.batch_size > 1797 - self.n_test:
            raise ConfigError("batch_size exceeds the digits training set")
        if self.continue_passes > 0 and not (1 in self.layers and 1 in self.ks and self.continue_k in self.ks):
            raise ConfigError("Table 2 (continue_passes > 0) continues the 1-layer models with k = 1 and "
                              "k = continue_k: both must be in ks and 1 in layers (or set continue_passes=0)")

    def architecture(self, n_layers: int, x_dim: int) -> Architecture:
        if n_layers == 1:
            return Architecture(x_dim, (self.hidden_1l,), (self.latent_1l,))
        return Architecture(x_dim, tuple(self.hidden_2l), tuple(self.latent_2l))

    @property
    def schedule(self) -> list[tuple[int, float]]:
        return paper_schedule(self.n_stages, self.lr)

    @property
    def total_passes(self) -> int:
        return sum(p for p, _ in self.schedule)

    @property
    def adam(self) -> AdamSettings:
        return AdamSettings(self.beta1, self.beta2, self.adam_eps)

    @property
    def seeds(self) -> list[int]:
        return [self.seed + r for r in range(self.n_seeds)]


# ---------------------------------------------------------------------------
# The chapter's experiments, returning plain data
# ---------------------------------------------------------------------------

TEST_BINARIZATION_SEED = 0   # one fixed binarised test set for every model and run


def load_data(cfg: IWAEConfig):
    """(ImageData on CPU, fixed-binarised test set [N_test, D]) for ``cfg``."""
    from .data import fixed_binarize, load_images

    kw = dict(n_test=cfg.n_test) if cfg.dataset == "digits" else {}
    data = load_images(cfg.dataset, cfg.data_root, cfg.download, **kw)
    test = fixed_binarize(data.test, TEST_BINARIZATION_SEED)
    if cfg.max_test:
        test = test[:cfg.max_test]
    return data, test


def _printer(cfg: IWAEConfig) -> Callable[[str], None] | None:
    return (lambda s: print(s, file=sys.stdout, flush=True)) if cfg.progress else None


def ordered_within_error(estimates: Sequence[torch.Tensor], n_se: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Are per-data-point estimates [M, N] of L_{k_1}, L_{k_2}, ... (k increasing) non-decreasing?

    For each consecutive pair the paired difference is averaged over the N
    data points; its z-score is mean / standard error.  Returns (ok [M]: every
    z > -n_se, i.e. no decrease beyond Monte Carlo error; the smallest z [M]).
    """
    if len(estimates) < 2:
        m = estimates[0].shape[0]
        return torch.ones(m, dtype=torch.bool), torch.full((m,), math.inf)
    zs = []
    for lo, hi in zip(estimates, estimates[1:]):
        d = hi - lo                                                            # [M, N]
        se = d.std(-1) / math.sqrt(d.shape[-1])
        zs.append(d.mean(-1) / se.clamp_min(1e-12))
    z = torch.stack(zs, -1).min(-1).values
    return z > -n_se, z


def evaluate(model: IWAE, x_test: torch.Tensor, cfg: IWAEConfig, seed: int, bounds: bool = True) -> dict:
    """Test NLL (-L_eval_k), L_k for ``bound_ks`` and their ordering test (if ``bounds``), active units."""
    device = next(model.parameters()).device
    x = x_test.to(device)
    g = torch.Generator(device=device).manual_seed(seed)
    ll = estimate_bound(model, x, cfg.eval_k, 1, cfg.eval_chunk, cfg.eval_batch, g)               # [M, N]
    ks = sorted(set(cfg.bound_ks) - {cfg.eval_k}) if bounds else []
    points = [estimate_bound(model, x, k, max(1, cfg.bound_samples // k), cfg.eval_chunk, cfg.eval_batch, g)
              for k in ks]
    ok, z = ordered_within_error([p for k, p in zip(ks, points) if k < cfg.eval_k] + [ll]
                                 + [p for k, p in zip(ks, points) if k > cfg.eval_k])
    acts, counts = active_units(model, x, cfg.active_threshold, cfg.active_samples, g)
    return {"nll": (-ll.mean(-1)).tolist(), "bounds": {k: p.mean(-1).tolist() for k, p in zip(ks, points)},
            "ordered": ok.tolist(), "order_z": z.tolist(),
            "activity": [a.tolist() for a in acts], "active": [c.tolist() for c in counts]}


def train_group(cfg: IWAEConfig, data, x_test: torch.Tensor, n_layers: int, k: int,
                device: torch.device) -> tuple[IWAE, list[dict], dict]:
    """Train and evaluate all models of one (layers, k): VAE and IWAE (only one objective at k = 1) x seeds.

    Returns (the ensemble, one record per model, the training history).  The
    VAE and IWAE models of one seed start from the same weights.
    """
    objectives = ("VAE", "IWAE") if k > 1 else ("VAE",)
    runs = [(obj, s) for obj in objectives for s in cfg.seeds]
    model = IWAE(cfg.architecture(n_layers, data.dim), len(runs), seeds=[s for _, s in runs],
                 x_mean=data.train.mean(0)).to(device)
    ckpt = Path(cfg.checkpoint_dir) / f"{data.name}-L{n_layers}-k{k}.pt" if cfg.checkpoint_dir else None
    hist = train(model, data.train, k, [obj == "IWAE" for obj, _ in runs], cfg.schedule, cfg.batch_size,
                 cfg.adam, seed=1_000_003 * cfg.seed + 7919 * k + n_layers, checkpoint=ckpt,
                 checkpoint_every=cfg.checkpoint_every, log=_printer(cfg),
                 label=f"[{n_layers} layer{'s' if n_layers > 1 else ''}, k={k}]")
    ev = evaluate(model, x_test, cfg, seed=cfg.seed + 101 * k + n_layers)
    records = []
    for m, (obj, s) in enumerate(runs):
        records.append({"layers": n_layers, "k": k, "objective": obj, "seed": s, "nll": ev["nll"][m],
                        "bounds": {kk: v[m] for kk, v in ev["bounds"].items()},
                        "ordered": ev["ordered"][m], "order_z": ev["order_z"][m],
                        "active": [c[m] for c in ev["active"]], "activity": [a[m] for a in ev["activity"]],
                        "train_seconds": hist["seconds"] / len(runs)})
    return model, records, hist


def run_table1(cfg: IWAEConfig, data, x_test: torch.Tensor, device: torch.device) -> tuple[list[dict], dict]:
    """Experiment 1: every (layers, k, objective, seed) of Table 1.

    Returns (records, {(layers, k): (ensemble, [(objective, seed), ...], history)}).
    """
    records, models = [], {}
    for n_layers in cfg.layers:
        for k in cfg.ks:
            model, recs, hist = train_group(cfg, data, x_test, n_layers, k, device)
            records += recs
            models[(n_layers, k)] = (model, [(r["objective"], r["seed"]) for r in recs], hist)
    return records, models


def bound_curve(model: IWAE, x_test: torch.Tensor, cfg: IWAEConfig, seed: int) -> dict:
    """Experiment 2: L_k of fixed models for every k in ``curve_ks``.

    Each point averages max(1, curve_samples // k) independent k-sample
    estimates; returns per-model means and standard errors over test images.
    """
    device = next(model.parameters()).device
    x = x_test.to(device)
    g = torch.Generator(device=device).manual_seed(seed)
    out = {"k": list(cfg.curve_ks), "mean": [], "sem": []}
    for k in cfg.curve_ks:
        b = estimate_bound(model, x, k, max(1, cfg.curve_samples // k), cfg.eval_chunk, cfg.eval_batch, g)  # [M, N]
        out["mean"].append(b.mean(-1).tolist())
        out["sem"].append((b.std(-1) / math.sqrt(b.shape[-1])).tolist())
    return out


def run_table2(cfg: IWAEConfig, models: dict, records: list[dict], data, x_test: torch.Tensor,
               n_layers: int = 1) -> list[dict]:
    """Experiment 4 (Table 2 in miniature): swap the objective of trained models and train on.

    The VAE models (k = 1) continue with the IWAE objective at ``continue_k``
    and the IWAE models (k = continue_k) with the VAE objective (k = 1), each
    next to a control that continues with its own objective for the same
    number of passes at the last stage's learning rate.  The "before" numbers
    are the Table 1 ``records`` of the same models.
    """
    vae, vae_runs, _ = models[(n_layers, 1)]
    iwae, iwae_runs, _ = models[(n_layers, cfg.continue_k)]
    vae_idx = [i for i, (o, _) in enumerate(vae_runs) if o == "VAE"]
    iwae_idx = [i for i, (o, _) in enumerate(iwae_runs) if o == "IWAE"]
    seeds = [vae_runs[i][1] for i in vae_idx]
    lr = cfg.schedule[-1][1]
    rows = []
    for k, tag in ((cfg.continue_k, "IWAE"), (1, "VAE")):
        # one ensemble per k: [VAE models..., IWAE models...], all continued with objective `tag`
        model = concat_models([vae.select(vae_idx), iwae.select(iwae_idx)])
        flags = [tag == "IWAE"] * model.n_models
        ckpt = (Path(cfg.checkpoint_dir) / f"{data.name}-L{n_layers}-continue-{tag}.pt"
                if cfg.checkpoint_dir else None)
        hist = train(model, data.train, k, flags, [(cfg.continue_passes, lr)], cfg.batch_size, cfg.adam,
                     seed=1_000_003 * cfg.seed + 17 * k + 5, checkpoint=ckpt,
                     checkpoint_every=cfg.checkpoint_every, log=_printer(cfg),
                     label=f"[continue with {tag}]")
        after = evaluate(model, x_test, cfg, seed=cfg.seed + 11, bounds=False)
        n = len(seeds)
        for j, start in enumerate(("VAE", "IWAE")):
            for r, s in enumerate(seeds):
                m = j * n + r
                first_k = 1 if start == "VAE" else cfg.continue_k
                (rec,) = [x for x in records if (x["layers"], x["k"], x["objective"], x["seed"])
                          == (n_layers, first_k, start, s)]
                rows.append({"first": start, "then": tag, "seed": s,
                             "nll_before": rec["nll"], "nll_after": after["nll"][m],
                             "active_before": rec["active"][0], "active_after": after["active"][0][m],
                             "passes": cfg.continue_passes, "seconds": hist["seconds"] / model.n_models})
    return rows


def summarize(records: list[dict], key: str = "nll") -> dict:
    """{(layers, k, objective): (mean, std over seeds, n)}; the k = 1 model counts for both objectives."""
    groups: dict = {}
    for r in records:
        objs = ("VAE", "IWAE") if r["k"] == 1 else (r["objective"],)
        for o in objs:
            val = r[key] if key != "active" else sum(r["active"])
            groups.setdefault((r["layers"], r["k"], o), []).append(val)
    out = {}
    for g, v in groups.items():
        t = torch.tensor(v, dtype=torch.float64)
        out[g] = (float(t.mean()), float(t.std()) if len(v) > 1 else 0.0, len(v))
    return out


# The paper's Table 1 (MNIST, test NLL in nats; active units) for the side-by-side.
PAPER_TABLE1 = {
    (1, 1, "VAE"): (86.76, "19"), (1, 1, "IWAE"): (86.76, "19"),
    (1, 5, "VAE"): (86.47, "20"), (1, 5, "IWAE"): (85.54, "22"),
    (1, 50, "VAE"): (86.35, "20"), (1, 50, "IWAE"): (84.78, "25"),
    (2, 1, "VAE"): (85.33, "16+5"), (2, 1, "IWAE"): (85.33, "16+5"),
    (2, 5, "VAE"): (85.01, "17+5"), (2, 5, "IWAE"): (83.89, "21+5"),
    (2, 50, "VAE"): (84.78, "17+5"), (2, 50, "IWAE"): (82.90, "26+7"),
}
PAPER_TABLE2 = {("VAE", "IWAE"): (86.76, 84.88), ("IWAE", "VAE"): (84.78, 86.02)}
