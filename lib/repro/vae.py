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

Equation labels in the comments are the IWAE chapter's (``book/iwae.md``):
``iwae-bound`` (L_k), ``iwae-grad`` (its gradient with the normalised weights),
``iwae-monotone`` (L_k <= L_{k+1}, proved in the paper), ``iwae-active`` (active units).
This module holds the algorithm only; the chapter's config, claims and
experiment runs are in :mod:`repro.chapters.iwae`.

Shapes: M models, k importance samples, B data points, D pixels,
H hidden units, d latent units of one stochastic layer.
"""
from __future__ import annotations

import io
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from .ais import log_mean_exp  # the one stable log-mean-exp, shared with AIS
from .checkpoint import load_checkpoint, make_identity, save_checkpoint
from .progress import Progress
from .seed import generator

LOG_2PI = math.log(2 * math.pi)

# ---------------------------------------------------------------------------
# The bound and the two gradient estimators, as functions of log-weights
# ---------------------------------------------------------------------------


def iwae_bound(log_w: torch.Tensor, dim: int = -2) -> torch.Tensor:
    """Monte Carlo estimate of L_k, one per data point.

    eq. iwae-bound: L_k = E[ log (1/k) sum_i w_i ],  w_i = p(x, h_i) / q(h_i | x).
    ``log_w`` holds the k samples along ``dim`` (default: [..., k, B] -> [..., B]).
    With k = 1 this is the ELBO.
    """
    return log_mean_exp(log_w, dim)


def vae_bound(log_w: torch.Tensor, dim: int = -2) -> torch.Tensor:
    """The "VAE with k samples" estimate: (1/k) sum_i log w_i, an unbiased estimate of L_1."""
    return log_w.mean(dim)


def importance_weights(log_w: torch.Tensor, dim: int = -2) -> torch.Tensor:
    """The normalised importance weights w~_i = w_i / sum_j w_j (eq. iwae-grad)."""
    return torch.softmax(log_w, dim)


def iwae_surrogate(log_w: torch.Tensor, dim: int = -2) -> torch.Tensor:
    """A surrogate whose gradient is the IWAE estimator  sum_i w~_i grad log w_i  (eq. iwae-grad).

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
    and the generative network (the paper's nets, as in its experiments section).
    """

    x_dim: int
    hidden: tuple[int | tuple[int, ...], ...]   # per stochastic layer: one width (two layers) or the widths
    latent: tuple[int, ...]

    def __post_init__(self):
        if len(self.hidden) != len(self.latent) or not self.latent:
            raise ValueError("hidden and latent need one entry per stochastic layer")

    @property
    def n_layers(self) -> int:
        """The number of stochastic layers L."""
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
        """x W_m + b_m for every model m: [M, N, n_in] -> [M, N, n_out]."""
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleMLP(nn.Module):
    """n_in -> H -> H -> n_out with tanh hidden units, one per model.

    ``hidden`` is one width H (two hidden layers, the IWAE paper's nets) or a
    tuple of widths, one per hidden layer (e.g. Wu et al.'s decoder
    10-64-256-256-1024-784 is ``EnsembleMLP(M, 10, (64, 256, 256, 1024), 784)``).
    """

    def __init__(self, n_models: int, n_in: int, hidden: int | tuple[int, ...], n_out: int):
        super().__init__()
        widths = (n_in, *((hidden, hidden) if isinstance(hidden, int) else tuple(hidden)), n_out)
        self.layers = nn.ModuleList([EnsembleLinear(n_models, a, b) for a, b in zip(widths, widths[1:])])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[M, ..., n_in] -> [M, ..., n_out] (any leading sample / batch axes after the model axis)."""
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
    return torch.nn.functional.logsigmoid((2 * x - 1) * logits).sum(-1)


OBSERVATIONS = ("bernoulli", "gaussian")


def spherical_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_sigma2: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, sigma^2 I) summed over the last axis; ``log_sigma2`` broadcasts against the sum ([M, 1, ...])."""
    d = x.shape[-1]
    return -0.5 * (((x - mean) ** 2).sum(-1) * torch.exp(-log_sigma2) + d * (log_sigma2 + LOG_2PI))


class IWAE(nn.Module):
    """M VAE/IWAE networks of one architecture (the objective is chosen at training time).

    Recognition:  q(h1|x) q(h2|h1) ...   Gaussian, variance = exp(net output)
    Generative:   p(hL) = N(0, I),  p(h_{l-1}|h_l) Gaussian,  p(x|h1) the observation model:
    ``"bernoulli"`` (logits = decoder output; binary x) or ``"gaussian"``
    (mean = sigmoid(decoder output), fixed variance sigma^2 per model, the
    buffer ``log_sigma2`` [M]; continuous x in [0, 1]).

    The decoder's densities live in one place: :meth:`log_prior`,
    :meth:`log_likelihood` and :meth:`log_joint` (their sum), which the IWAE
    bound (:meth:`log_weights`) and AIS over the latents both call.
    """

    def __init__(self, arch: Architecture, n_models: int = 1, seeds: Sequence[int] | None = None,
                 x_mean: torch.Tensor | None = None, observation: str = "bernoulli", sigma2: float = 1.0):
        super().__init__()
        if observation not in OBSERVATIONS:
            raise ValueError(f"observation must be one of {OBSERVATIONS}, got {observation!r}")
        if not sigma2 > 0:
            raise ValueError(f"sigma2 must be positive, got {sigma2}")
        self.arch, self.n_models, self.observation = arch, n_models, observation
        self.register_buffer("log_sigma2", torch.full((n_models,), math.log(sigma2)))
        ins = (arch.x_dim,) + arch.latent[:-1]
        # a tuple of widths is the decoder's (latent -> ... -> x); the encoder mirrors it (x -> ... -> latent)
        enc_hidden = [h if isinstance(h, int) else tuple(reversed(h)) for h in arch.hidden]
        self.encoders = nn.ModuleList([EnsembleMLP(n_models, ins[l], enc_hidden[l], 2 * arch.latent[l])
                                       for l in range(arch.n_layers)])
        outs = (arch.x_dim,) + tuple(2 * d for d in arch.latent[:-1])
        self.decoders = nn.ModuleList([EnsembleMLP(n_models, arch.latent[l], arch.hidden[l], outs[l])
                                       for l in range(arch.n_layers)])
        self.reset_parameters(seeds if seeds is not None else range(n_models), x_mean)

    @torch.no_grad()
    def reset_parameters(self, seeds: Sequence[int], x_mean: torch.Tensor | None = None) -> None:
        """Per-model init from its own seed: weights ~ N(0, 1/fan_in), biases 0.

        The output bias is the logit of the training-set pixel means (as in the paper).
        """
        seeds = list(seeds)
        if len(seeds) != self.n_models:
            raise ValueError(f"need {self.n_models} seeds, got {len(seeds)}")
        linears = [m for m in self.modules() if isinstance(m, EnsembleLinear)]
        for r, seed in enumerate(seeds):  # init only: one generator per model
            g = generator(seed)
            for lin in linears:
                n_in, n_out = lin.weight.shape[1:]
                lin.weight[r].copy_(torch.randn(n_in, n_out, generator=g) / math.sqrt(n_in))
                lin.bias[r].zero_()
        if x_mean is not None:
            p = x_mean.clamp(1e-3, 1 - 1e-3)
            self.decoders[0].layers[-1].bias.copy_(torch.log(p / (1 - p)).expand_as(self.decoders[0].layers[-1].bias))

    @staticmethod
    def _split(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A Gaussian layer's output [..., 2d] -> (mean, log variance), each [..., d]."""
        mean, log_var = out.chunk(2, dim=-1)
        return mean, log_var

    def _per_model(self, x: torch.Tensor) -> torch.Tensor:
        """[B, D] (shared by all models) or [M, B, D] -> [M, B, D]."""
        return x.expand(self.n_models, *x.shape) if x.dim() == 2 else x

    def log_weights(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """log w = log p(x, h) - log q(h | x) for k reparameterised samples h ~ q(h | x): [M, k, B].

        The weights of eq. iwae-bound: sample the recognition network
        (:meth:`sample_posterior`), then score the samples under the
        generative model (:meth:`log_joint`).
        """
        x = self._per_model(x)                                               # [M, B, D]
        hs, log_q = self.sample_posterior(x, k, generator)
        return self.log_joint(x, hs) - log_q                                 # [M, k, B]

    def sample_posterior(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None
                         ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """k samples of q(h_1 | x) q(h_2 | h_1) ... and their log-density.

        Returns ([h_1, ..., h_L], each [M, k, B, d_l]; log q(h | x) [M, k, B]).
        Each layer is reparameterised, h_l = mean + exp(log_var / 2) * eps.
        """
        x = self._per_model(x)
        M, B, _ = x.shape
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
        return hs, log_q

    def log_prior(self, hs: Sequence[torch.Tensor]) -> torch.Tensor:
        """log p(h) = log p(h_L) + sum_l log p(h_{l-1} | h_l), with p(h_L) = N(0, I): [M, ...].

        ``hs`` = [h_1, ..., h_L], each [M, *lead, d_l] with the same leading axes.
        """
        log_p = -0.5 * (hs[-1] ** 2 + LOG_2PI).sum(-1)                       # prior N(0, I) on h_L
        for l in range(self.arch.n_layers - 1, 0, -1):
            mean, log_var = self._split(self.decoders[l](hs[l]))
            log_p = log_p + gaussian_log_density(hs[l - 1], mean, log_var)
        return log_p

    def log_likelihood(self, x: torch.Tensor, hs: Sequence[torch.Tensor]) -> torch.Tensor:
        """The observation model log p(x | h_1): [M, *lead, B] for ``x`` [M, B, D] (or [B, D]).

        ``hs[0]`` is [M, *lead, B, d_1]; ``x`` is broadcast over the axes
        between the model axis and the batch axis (samples, chains).
        """
        x = self._per_model(x)
        out = self.decoders[0](hs[0])                                        # [M, *lead, B, D]
        xb = x.reshape(x.shape[0], *([1] * (out.dim() - 3)), *x.shape[1:])  # [M, 1.., B, D]
        if self.observation == "bernoulli":
            return bernoulli_log_likelihood(xb, out)
        log_s2 = self.log_sigma2.reshape(-1, *([1] * (out.dim() - 2)))      # [M, 1.., 1]
        return spherical_gaussian_log_likelihood(xb, torch.sigmoid(out), log_s2)

    def log_joint(self, x: torch.Tensor, hs: Sequence[torch.Tensor]) -> torch.Tensor:
        """log p(x, h) = :meth:`log_prior` + :meth:`log_likelihood`: [M, k, B].

        ``x`` [M, B, D] (or [B, D]); ``hs`` as returned by :meth:`sample_posterior`.
        """
        return self.log_prior(hs) + self.log_likelihood(x, hs)

    def decode_mean(self, h1: torch.Tensor) -> torch.Tensor:
        """E[x | h_1] under the observation model (sigmoid of the decoder output for both): [M, ..., D]."""
        return torch.sigmoid(self.decoders[0](h1))

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
        new = IWAE(self.arch, len(index), seeds=list(range(len(index))), observation=self.observation)
        with torch.no_grad():
            for p_new, p in zip(new.parameters(), self.parameters()):
                p_new.copy_(p[index])
            new.log_sigma2.copy_(self.log_sigma2[index])
        return new.to(next(self.parameters()).device)


def concat_models(models: Sequence[IWAE]) -> IWAE:
    """One ensemble from several ensembles of the same architecture."""
    arch, observation = models[0].arch, models[0].observation
    if any(m.arch != arch or m.observation != observation for m in models):
        raise ValueError("concat_models needs one architecture and one observation model")
    new = IWAE(arch, sum(m.n_models for m in models), seeds=list(range(sum(m.n_models for m in models))),
               observation=observation)
    with torch.no_grad():
        for p_new, *ps in zip(new.parameters(), *(m.parameters() for m in models)):
            p_new.copy_(torch.cat(list(ps), 0))
        new.log_sigma2.copy_(torch.cat([m.log_sigma2 for m in models]))
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
    """A_u = Cov_x(E_q[u | x]) for each unit (eq. iwae-active): the variance over data points of the posterior mean.

    ``means`` [M, N, d] -> [M, d].
    """
    return means.var(1, unbiased=False)


def active_units(model: IWAE, x: torch.Tensor, threshold: float = 1e-2, n_samples: int = 100,
                 generator: torch.Generator | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(A_u per layer [M, d_l], number of units with A_u > threshold per layer [M])."""
    acts = [unit_activity(m) for m in model.posterior_means(x, n_samples, generator)]
    return acts, [(a > threshold).sum(-1) for a in acts]



def ordered_within_error(estimates: Sequence[torch.Tensor], n_se: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Are per-data-point estimates [M, N] of L_{k_1}, L_{k_2}, ... (k increasing) non-decreasing?

    The numerical check of eq. iwae-monotone.  For each consecutive pair the
    paired difference is averaged over the N data points; its z-score is
    mean / standard error.  Returns (ok [M]: every z > -n_se, i.e. no decrease
    beyond Monte Carlo error; the smallest z [M]).
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


# ---------------------------------------------------------------------------
# Training: the paper's schedule, checkpointed at stage ends
# ---------------------------------------------------------------------------


def paper_schedule(n_stages: int = 8, lr: float = 1e-3, base: int = 3, decay_stages: float = 7.0) -> list[tuple[int, float]]:
    """[(passes, learning rate)] per stage: stage i runs base^i passes at lr * 10^(-i / decay_stages)."""
    return [(base ** i, lr * 10 ** (-i / decay_stages)) for i in range(n_stages)]


@dataclass(frozen=True)
class AdamSettings:
    """Adam's constants (the paper: beta1 0.9, beta2 0.999, eps 1e-4)."""

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-4


def train(model: IWAE, train_x: torch.Tensor, k: int, iwae: Sequence[bool], schedule: Sequence[tuple[int, float]],
          batch_size: int = 20, adam: AdamSettings = AdamSettings(), seed: int = 0,
          checkpoint: str | Path | None = None, checkpoint_every: int = 0, identity: dict | None = None,
          max_passes: int | None = None, label: str = "train", progress: bool = True) -> dict:
    """Train the M models of ``model`` for the whole ``schedule``; return the history.

    Model m maximises L_k (eq. iwae-bound, gradient eq. iwae-grad) if
    ``iwae[m]`` else the k-sample ELBO.  Every model gets its own minibatch
    order, dynamic binarisation and noise (one [M, B, D] batch per step, all
    drawn from one generator seeded by ``seed``).

    With ``checkpoint`` set, the state (model, Adam, random stream, history)
    is saved with :func:`repro.checkpoint.save_checkpoint` at every stage end
    and every ``checkpoint_every`` passes, and a rerun resumes exactly where
    the last save left off.  The checkpoint's identity is ``identity`` (the
    caller's experiment name and config, from ``make_identity``) plus this
    call's training settings; a checkpoint written by another run raises
    :class:`repro.checkpoint.CheckpointMismatch`.  ``max_passes`` stops after
    that many passes in all (a session of a longer run; rerun to continue).

    Returns a plain history: ``k``, ``iwae`` (flags), per pass ``epoch``,
    ``stage``, ``lr`` and ``train_bound`` (the mean objective per model), and
    the training ``seconds``.
    """
    device = next(model.parameters()).device
    mask = _objective_flags(iwae, model.n_models, device)
    train_x = train_x.to(device)
    if len(train_x) < batch_size:
        raise ValueError(f"training set ({len(train_x)}) smaller than one batch ({batch_size})")
    gen = generator(seed, device)
    opt = torch.optim.Adam(model.parameters(), lr=schedule[0][1], betas=(adam.beta1, adam.beta2), eps=adam.eps)
    history = {"k": k, "iwae": [bool(b) for b in mask.tolist()], "epoch": [], "stage": [], "lr": [],
               "train_bound": [], "seconds": 0.0}
    ident = None
    if checkpoint is not None:
        settings = dict(k=k, iwae=history["iwae"], schedule=[list(s) for s in schedule], batch_size=batch_size,
                        adam=asdict(adam), seed=seed, arch=asdict(model.arch), n_train=len(train_x))
        ident = _train_identity(identity, settings)
        history = _resume(checkpoint, ident, model, opt, gen, device) or history
    stop = sum(p for p, _ in schedule) if max_passes is None else min(max_passes, sum(p for p, _ in schedule))
    bar = Progress(sum(p for p, _ in schedule), label, unit="epoch", start=len(history["epoch"]),
                   **({} if progress else dict(stream=io.StringIO(), interactive=False)))
    if history["epoch"]:
        bar.log(f"resumed from {checkpoint} after {len(history['epoch'])} passes")
    with bar:
        _run_schedule(model, opt, gen, train_x, k, mask, schedule, batch_size, history, stop, bar,
                      lambda epoch, last: _maybe_save(checkpoint, ident, checkpoint_every, epoch, last,
                                                      model, opt, gen, history))
    if history["train_bound"]:
        mean_bound = sum(history["train_bound"][-1]) / model.n_models
        bar.log(f"{len(history['epoch'])} passes, final train bound {mean_bound:.2f} (mean of {model.n_models} "
                f"models), {history['seconds']:.0f}s")
    return history


def _objective_flags(iwae: Sequence[bool], n_models: int, device: torch.device) -> torch.Tensor:
    """The per-model objective as a bool tensor [M] (True: IWAE), checked against the ensemble size."""
    mask = torch.tensor(list(iwae), dtype=torch.bool, device=device)
    if mask.numel() != n_models:
        raise ValueError(f"need one objective flag per model ({n_models}), got {mask.numel()}")
    return mask


def _train_identity(identity: dict | None, settings: dict) -> dict:
    """The caller's identity (experiment + config) with this call's training settings added."""
    base = identity or make_identity("repro.vae.train")
    extra = {key: v for key, v in base.items() if key not in ("experiment", "config")}
    return make_identity(base["experiment"], base.get("config"), **extra, train=settings)


def _resume(path: str | Path, identity: dict, model: IWAE, opt: torch.optim.Optimizer, gen: torch.Generator,
            device: torch.device) -> dict | None:
    """Load model, Adam, random stream and history from ``path`` (None if there is no checkpoint yet)."""
    state = load_checkpoint(path, identity, map_location=device)
    if state is None:
        return None
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"].cpu())
    return state["history"]


def _maybe_save(path: str | Path | None, identity: dict | None, every: int, epoch: int, last: int, model: IWAE,
                opt: torch.optim.Optimizer, gen: torch.Generator, history: dict) -> None:
    """Save the training state at a stage end (``epoch == last``) and every ``every`` passes."""
    if path is not None and (epoch == last or (every and epoch % every == 0)):
        save_checkpoint(path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                               "generator": gen.get_state(), "history": history}, identity)


def _run_schedule(model: IWAE, opt: torch.optim.Optimizer, gen: torch.Generator, train_x: torch.Tensor, k: int,
                  mask: torch.Tensor, schedule: Sequence[tuple[int, float]], batch_size: int, history: dict,
                  stop: int, bar: Progress, after_pass: Callable[[int, int], None]) -> None:
    """The stages of ``schedule`` from the pass the history has reached up to pass ``stop``."""
    epoch = len(history["epoch"])   # passes already done (resume point)
    elapsed, t0 = history["seconds"], time.time()
    first = 0
    for stage, (passes, lr) in enumerate(schedule):
        last = first + passes    # this stage covers passes first+1 .. last
        if epoch < last and epoch < stop:
            for group in opt.param_groups:
                group["lr"] = lr
            while epoch < min(last, stop):
                bound = _train_pass(model, opt, gen, train_x, k, mask, batch_size)      # [M]
                epoch += 1
                for key, v in (("epoch", epoch), ("stage", stage), ("lr", lr), ("train_bound", bound.tolist())):
                    history[key].append(v)
                history["seconds"] = elapsed + time.time() - t0
                bar.update(epoch, stage=stage + 1, bound=float(bound.mean()))
                after_pass(epoch, last)
        first = last


def _train_pass(model: IWAE, opt: torch.optim.Optimizer, gen: torch.Generator, train_x: torch.Tensor, k: int,
                mask: torch.Tensor, batch_size: int) -> torch.Tensor:
    """One pass over the training set: a fresh permutation and dynamic binarisation per model.

    Returns the mean training objective of each model over the pass, [M].
    """
    M, N = model.n_models, len(train_x)
    steps = N // batch_size
    order = torch.argsort(torch.rand((M, N), generator=gen, device=train_x.device), dim=1)   # [M, N]
    total = torch.zeros(M, device=train_x.device)
    for s in range(steps):
        idx = order[:, s * batch_size:(s + 1) * batch_size]                      # [M, B]
        x = torch.bernoulli(train_x[idx], generator=gen)                         # [M, B, D]
        bound = objective(model.log_weights(x, k, gen), mask)                   # [M]
        opt.zero_grad(set_to_none=True)
        (-bound.sum()).backward()
        opt.step()
        total += bound.detach()
    return total / steps
