"""AIS over the latent variables of a decoder-based generative model (Wu et al. 2017).

A decoder defines ``p(x) = ∫ p(z) p(x|z) dz``.  Annealing from the prior to
the posterior along

    log f_β(z) = log p(z) + β log p(x|z)                           (decoders-path)

gives ``Z_0 = 1`` and ``Z_1 = p(x)``, so AIS (:func:`repro.ais.ais`) estimates
``log p(x)`` with one extra decoder call per intermediate distribution for
the weight and one HMC trajectory (:class:`repro.ais.HMC`) per step.  With an
encoder ``q(z|x)`` the path can start from it instead ("AIS+encoder"):
``log f_β(z) = (1 − β) log q(z|x) + β (log p(z) + log p(x|z))``.

Layout: a state is ``z`` of shape ``[M, C, B, d]`` (models × chains ×
examples × latent), flattened to ``[M·C·B, d]`` for the generic AIS code, so
one batched decoder call serves every model, chain and example; each chain has
its own HMC step size.  The model enters as two functions of ``z`` [M, C, B, d]
returning ``[M, C, B]``: ``log_prior`` and ``log_likelihood`` (``x`` bound,
e.g. ``lambda z: vae.log_likelihood(x, [z])``).

BDMC (Grosse et al. 2015) on data simulated from the model: forward AIS from
the prior gives a stochastic lower bound on ``log p(x)``, reverse AIS from the
exact ``z`` that generated ``x`` a stochastic upper bound.  The forward run
adapts each chain's HMC step size; an adaptive kernel run backwards is not the
reversal of the forward kernel, so the reverse run *replays* the forward
chain's step size at every intermediate distribution with adaptation off
(:class:`ReplayHMC`), which makes it a fixed sequence of valid HMC kernels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .ais import HMC, AnnealingPath, ais, log_mean_exp, reverse_anneal
from .vae import gaussian_log_density

LatentFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class HMCSettings:
    """The paper's HMC: 10 leapfrog steps, start 0.01, ×1.02 / ×0.98 toward 65% acceptance, clip [1e-4, 0.5]."""

    n_leapfrog: int = 10
    step_size: float = 0.01
    target_accept: float = 0.65
    min_step: float = 1e-4
    max_step: float = 0.5
    up: float = 1.02
    down: float = 0.98

    def make(self, log_f, *, adapt: bool, generator: torch.Generator | None) -> "ReplayHMC":
        return ReplayHMC(log_f, n_leapfrog=self.n_leapfrog, step_size=self.step_size,
                         target_accept=self.target_accept, adapt=adapt, min_step=self.min_step,
                         max_step=self.max_step, up=self.up, down=self.down, generator=generator,
                         keep_history=adapt)


class ReplayHMC(HMC):
    """:class:`repro.ais.HMC` that records its per-chain step sizes, or replays a given sequence.

    ``replay``: a list of per-chain step-size tensors, one per call, used in
    order with adaptation off.  The mean acceptance probability and step size
    of every call are kept in ``accept_trace`` / ``step_trace`` for reports.
    """

    def __init__(self, *args, replay: list[torch.Tensor] | None = None, **kw):
        super().__init__(*args, **kw)
        self.replay = list(replay) if replay is not None else None
        self.calls = 0
        self._accept: list[torch.Tensor] = []   # kept on the device; read once at the end
        self._step: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, beta: float) -> torch.Tensor:
        B = x.shape[0]
        if self.replay is not None:
            if self.calls >= len(self.replay):
                raise RuntimeError("the replayed step-size sequence is shorter than the annealing run")
            self.step = self.replay[self.calls].to(x.device, x.dtype)
            if self.step.shape != (B,):
                raise ValueError(f"replayed step sizes have shape {tuple(self.step.shape)}, the chains {(B,)}")
        elif self.step is None or self.step.shape[0] != B:
            self.step = torch.full((B,), self.step_size0, dtype=x.dtype, device=x.device)
        self._step.append(self.step.mean())
        out = super().__call__(x, beta)
        self.calls += 1
        self._accept.append(self.accept_rate)
        return out

    @property
    def accept_trace(self) -> list[float]:
        """Mean acceptance (over chains) of every call so far."""
        return torch.stack(self._accept).tolist() if self._accept else []

    @property
    def step_trace(self) -> list[float]:
        """Mean step size (over chains) used by every call so far."""
        return torch.stack(self._step).tolist() if self._step else []


class LatentPath(AnnealingPath):
    """The annealing path over ``z`` [M, C, B, d] (see the module docstring), flattened for :func:`ais`."""

    def __init__(self, shape: tuple[int, int, int, int], log_prior: LatentFn, log_likelihood: LatentFn,
                 hmc: HMCSettings = HMCSettings(), *, log_proposal: LatentFn | None = None,
                 adapt: bool = True, replay: list[torch.Tensor] | None = None,
                 generator: torch.Generator | None = None):
        self.shape = tuple(shape)
        self.log_prior, self.log_lik, self.log_q = log_prior, log_likelihood, log_proposal
        self.hmc = hmc.make(self.log_f, adapt=adapt and replay is None, generator=generator)
        if replay is not None:
            self.hmc.replay = list(replay)

    def _z(self, flat: torch.Tensor) -> torch.Tensor:
        return flat.view(self.shape)

    def log_f(self, x: torch.Tensor, beta: float) -> torch.Tensor:
        """``log f_β(z)`` of eq. (decoders-path), or the AIS+encoder path: [M·C·B]."""
        z = self._z(x)
        target = self.log_prior(z) + beta * self.log_lik(z) if self.log_q is None else \
            (1.0 - beta) * self.log_q(z) + beta * (self.log_prior(z) + self.log_lik(z))
        return target.reshape(-1)

    def log_weight_increment(self, x: torch.Tensor, beta_prev: float, beta_next: float) -> torch.Tensor:
        """``(β' − β) log p(x|z)`` from the prior (one decoder call), or ``(β' − β) log [p(z)p(x|z)/q(z|x)]``."""
        with torch.no_grad():
            z = self._z(x)
            ratio = self.log_lik(z) if self.log_q is None else self.log_prior(z) + self.log_lik(z) - self.log_q(z)
        return ((beta_next - beta_prev) * ratio).reshape(-1)

    def transition(self, x: torch.Tensor, beta: float) -> torch.Tensor:
        """One HMC trajectory per chain, invariant for ``p_β``."""
        return self.hmc(x, beta)


@dataclass
class LatentAIS:
    """One AIS run: per (model, chain, example) log-weights and the estimate of ``log p(x)`` per (model, example).

    ``log_w`` [M, C, B]; ``log_px`` [M, B] = log mean over chains of exp(log_w)
    (``Z_0 = 1``: the prior and the encoder are normalised); ``accept`` and
    ``step`` the mean HMC acceptance probability and step size per step;
    ``z`` the final states [M, C, B, d] (approximate posterior samples).
    """

    log_w: torch.Tensor
    log_px: torch.Tensor
    accept: list[float]
    step: list[float]
    z: torch.Tensor
    history: list[torch.Tensor] = field(default_factory=list, repr=False)


def ais_latent(log_prior: LatentFn, log_likelihood: LatentFn, z0: torch.Tensor, betas,
               hmc: HMCSettings = HMCSettings(), *, log_proposal: LatentFn | None = None,
               generator: torch.Generator | None = None, keep_history: bool = False) -> LatentAIS:
    """Forward AIS from ``z0`` [M, C, B, d] drawn from the prior (or from ``q(z|x)`` with ``log_proposal``)."""
    path = LatentPath(tuple(z0.shape), log_prior, log_likelihood, hmc, log_proposal=log_proposal,
                      generator=generator)
    res = ais(path, z0.reshape(-1, z0.shape[-1]), betas, final_transition=True)
    log_w = res.log_w.view(z0.shape[:-1])
    return LatentAIS(log_w, log_mean_exp(log_w, dim=1), path.hmc.accept_trace, path.hmc.step_trace,
                     res.x.view(z0.shape), path.hmc.history if keep_history else [])


@dataclass
class LatentBDMC:
    """Forward and reverse AIS on simulated data: per (model, chain, example) bounds on ``log p(x)``.

    ``lower`` [M, C, B] (forward, E ≤ log p(x)) and ``upper`` [M, C, B] (reverse,
    E ≥ log p(x) by Jensen on the reverse weight); ``gap`` their difference of
    means per (model, example): [M, B].
    """

    lower: torch.Tensor
    upper: torch.Tensor
    forward: LatentAIS

    @property
    def gap(self) -> torch.Tensor:
        return self.upper.mean(1) - self.lower.mean(1)


def replay_schedule(history: list[torch.Tensor], K: int) -> list[torch.Tensor]:
    """The forward run's step sizes in the order the reverse run calls its kernels.

    Forward AIS (with its final transition) calls T_1 .. T_K, recording the
    step each used; reverse annealing calls T_K .. T_1.  Chain c of the reverse
    run uses chain c's forward step at the same intermediate distribution.
    """
    if len(history) != K:
        raise ValueError(f"need one recorded step size per intermediate distribution ({K}), got {len(history)}")
    return [history[k] for k in range(K - 1, -1, -1)]


def bdmc_latent(log_prior: LatentFn, log_likelihood: LatentFn, z_exact: torch.Tensor, betas,
                hmc: HMCSettings = HMCSettings(), *, generator: torch.Generator | None = None) -> LatentBDMC:
    """BDMC for data simulated from the model: ``z_exact`` [M, C, B, d] generated ``x`` (bound in ``log_likelihood``).

    Forward AIS starts from fresh prior draws (adaptive HMC, step sizes
    recorded); reverse AIS starts from ``z_exact`` and replays those step
    sizes (:func:`replay_schedule`).  Reverse log-weights estimate
    ``log Z_0 − log Z_1``, so ``upper = −log_w_rev``.
    """
    z0 = torch.randn(z_exact.shape, generator=generator, dtype=z_exact.dtype, device=z_exact.device)
    fwd = ais_latent(log_prior, log_likelihood, z0, betas, hmc, generator=generator, keep_history=True)
    K = len(betas) - 1
    path = LatentPath(tuple(z_exact.shape), log_prior, log_likelihood, hmc,
                      replay=replay_schedule(fwd.history, K), generator=generator)
    rev = reverse_anneal(path, z_exact.reshape(-1, z_exact.shape[-1]), betas)
    return LatentBDMC(fwd.log_w, -rev.log_w.view(z_exact.shape[:-1]), fwd)


def gaussian_posterior_log_density(mean: torch.Tensor, log_var: torch.Tensor) -> LatentFn:
    """``log q(z|x)`` of a diagonal Gaussian encoder with ``mean``/``log_var`` [M, 1, B, d], as a function of z."""
    return lambda z: gaussian_log_density(z, mean, log_var)
