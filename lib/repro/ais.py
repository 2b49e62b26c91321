"""Annealed importance sampling (Neal, 2001), its reverse, and their bookkeeping.

This module knows nothing about any particular model.  A model enters through
an :class:`AnnealingPath`: a family of unnormalised densities

    f_beta(x),  beta in [0, 1],  f_0 = a tractable base, f_1 = the target,

together with a transition operator ``T_beta`` that leaves
``p_beta = f_beta / Z_beta`` invariant.  The RBM module (``repro.rbm``, used
by the RAISE chapter) anneals from a base-rate RBM to a trained RBM with Gibbs
transitions; the chapter on decoder-based models anneals from a prior to a
posterior with HMC.

A state ``x`` is whatever the path says it is (a tensor, or a tuple of
tensors when the path caches something); this module never looks inside it.
The batch axis of the state is the only axis AIS sees: callers lay out
``chains x examples`` (or ``repetitions x chains``) as one flat batch and
reshape the returned log-weights, so there is never a Python loop over chains.

Log-weights are accumulated in float64 whatever the model's dtype: an
estimate at K = 10^5 sums 10^5 small increments.

Notation (Neal 2001; Burda, Grosse & Salakhutdinov 2015):

* schedule ``0 = beta_0 < beta_1 < ... < beta_K = 1`` (K intermediate steps);
* forward AIS: ``x_0 ~ p_0``, and for k = 1..K
  ``log w += log f_k(x_{k-1}) - log f_{k-1}(x_{k-1})``, then ``x_k ~ T_k(.|x_{k-1})``;
  ``E[w] = Z_1 / Z_0``;
* reverse annealing: ``x_K`` given, and for k = K..1
  ``x_{k-1} ~ T~_k(.|x_k)``, ``log w += log f_{k-1}(x_{k-1}) - log f_k(x_{k-1})``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

SCHEDULES = ("linear", "sigmoidal", "piecewise")

# ---------------------------------------------------------------------------
# Annealing schedules: K + 1 inverse temperatures from 0 to 1
# ---------------------------------------------------------------------------


def linear_schedule(K: int, *, device=None, dtype=torch.float64) -> torch.Tensor:
    """``beta_k = k / K``, shape [K + 1]."""
    _check_K(K)
    return torch.linspace(0.0, 1.0, K + 1, device=device, dtype=dtype)


def sigmoidal_schedule(K: int, delta: float = 4.0, *, device=None, dtype=torch.float64) -> torch.Tensor:
    """Wu et al. (2017): ``beta_t = sigma(delta (2t/K - 1))`` rescaled to start at 0 and end at 1.

    Shape [K + 1].  Large ``delta`` spends more steps near both ends.
    """
    _check_K(K)
    t = torch.linspace(-1.0, 1.0, K + 1, device=device, dtype=torch.float64)
    s = torch.sigmoid(delta * t)
    beta = (s - s[0]) / (s[-1] - s[0])
    beta[0], beta[-1] = 0.0, 1.0
    return beta.to(dtype)


def piecewise_schedule(K: int, knots: Sequence[float] = (0.0, 0.5, 0.9, 1.0),
                       weights: Sequence[float] = (500, 4000, 10000), *, device=None,
                       dtype=torch.float64) -> torch.Tensor:
    """Piecewise-linear schedule in the style of Salakhutdinov & Murray (2008).

    Segment ``[knots[i], knots[i+1]]`` gets a share ``weights[i] / sum(weights)``
    of the K steps (their MNIST schedule: 500 steps on [0, 0.5], 4,000 on
    [0.5, 0.9], 10,000 on [0.9, 1]).  Every segment gets at least one step, so
    ``K >= len(weights)``.  Shape [K + 1].
    """
    _check_K(K)
    knots, weights = list(map(float, knots)), list(map(float, weights))
    if len(knots) != len(weights) + 1 or knots[0] != 0.0 or knots[-1] != 1.0:
        raise ValueError("knots must run from 0 to 1 with one more entry than weights")
    if any(b <= a for a, b in zip(knots, knots[1:])) or any(w <= 0 for w in weights):
        raise ValueError("knots must increase and weights must be positive")
    if K < len(weights):
        raise ValueError(f"a {len(weights)}-segment piecewise schedule needs K >= {len(weights)}, got {K}")
    # integer step counts per segment: largest-remainder rounding, at least one each
    total = sum(weights)
    raw = [K * w / total for w in weights]
    counts = [max(1, int(math.floor(r))) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: raw[i] - math.floor(raw[i]), reverse=True)
    i = 0
    while sum(counts) < K:
        counts[order[i % len(order)]] += 1
        i += 1
    while sum(counts) > K:
        j = max(range(len(counts)), key=lambda m: counts[m])
        counts[j] -= 1
    parts = [torch.linspace(a, b, n + 1, dtype=torch.float64)[:-1] for a, b, n in zip(knots, knots[1:], counts)]
    beta = torch.cat(parts + [torch.ones(1, dtype=torch.float64)])
    return beta.to(device=device, dtype=dtype)


def make_schedule(name: str, K: int, *, device=None, dtype=torch.float64, **kwargs) -> torch.Tensor:
    """The schedule called ``name`` (one of :data:`SCHEDULES`) with K steps."""
    fns = {"linear": linear_schedule, "sigmoidal": sigmoidal_schedule, "piecewise": piecewise_schedule}
    if name not in fns:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    return fns[name](K, device=device, dtype=dtype, **kwargs)


def _check_K(K: int) -> None:
    if int(K) != K or K < 1:
        raise ValueError(f"the number of intermediate distributions K must be a positive integer, got {K!r}")


# ---------------------------------------------------------------------------
# The model interface
# ---------------------------------------------------------------------------


class AnnealingPath:
    """A path of unnormalised densities ``f_beta`` with invariant transitions.

    Subclasses implement :meth:`log_f` and :meth:`transition`.  They may
    override :meth:`log_weight_increment` when the difference of two ``log_f``
    calls can be computed more cheaply or more accurately in one go, and
    :meth:`reverse_transition` when ``T_beta`` is not reversible (for a
    reversible kernel, e.g. the RBM's v -> h -> v Gibbs step or HMC with a
    momentum refresh, the reversal is the kernel itself).
    """

    def log_f(self, x: Any, beta: float) -> torch.Tensor:
        """``log f_beta(x)`` for a batch of states, shape [B]."""
        raise NotImplementedError

    def transition(self, x: Any, beta: float) -> Any:
        """One draw ``x' ~ T_beta(.|x)`` for every state of the batch."""
        raise NotImplementedError

    def reverse_transition(self, x: Any, beta: float) -> Any:
        """One draw from the reversal ``T~_beta``; the kernel itself when it is reversible."""
        return self.transition(x, beta)

    def log_weight_increment(self, x: Any, beta_prev: float, beta_next: float) -> torch.Tensor:
        """``log f_{beta_next}(x) - log f_{beta_prev}(x)``, shape [B]."""
        return self.log_f(x, beta_next) - self.log_f(x, beta_prev)


class FunctionalPath(AnnealingPath):
    """An :class:`AnnealingPath` from two plain functions.

    ``log_f(x, beta) -> [B]`` and ``transition(x, beta) -> x'`` (any transition
    operator that leaves ``p_beta`` invariant; ``reverse`` defaults to it).
    """

    def __init__(self, log_f: Callable[[Any, float], torch.Tensor], transition: Callable[[Any, float], Any],
                 reverse: Callable[[Any, float], Any] | None = None):
        self._log_f, self._transition, self._reverse = log_f, transition, reverse

    def log_f(self, x, beta):
        return self._log_f(x, beta)

    def transition(self, x, beta):
        return self._transition(x, beta)

    def reverse_transition(self, x, beta):
        return (self._reverse or self._transition)(x, beta)


# ---------------------------------------------------------------------------
# Forward AIS and reverse annealing
# ---------------------------------------------------------------------------


@dataclass
class AnnealResult:
    """What one annealing run returns.

    ``log_w`` [B] float64: the accumulated log-weights.  ``x``: the final
    states (approximate samples of ``p_1`` for forward AIS, of ``p_0`` for
    reverse annealing).  ``trace`` [len(record), B]: ``log_w`` after each
    recorded step (None when nothing was recorded).
    """

    log_w: torch.Tensor
    x: Any
    trace: torch.Tensor | None = None


def _betas_list(betas: torch.Tensor | Sequence[float]) -> list[float]:
    b = [float(v) for v in (betas.tolist() if isinstance(betas, torch.Tensor) else betas)]
    if len(b) < 2 or b[0] != 0.0 or b[-1] != 1.0 or any(y < x for x, y in zip(b, b[1:])):
        raise ValueError("a schedule must be non-decreasing from 0 to 1 with at least two entries")
    return b


def ais(path: AnnealingPath, x0: Any, betas: torch.Tensor | Sequence[float], *,
        final_transition: bool = False, record: Sequence[int] = ()) -> AnnealResult:
    """Forward AIS from states ``x0 ~ p_0`` along ``betas`` (shape [K + 1]).

    For k = 1..K: ``log w += log f_k(x) - log f_{k-1}(x)`` then ``x <- T_k(x)``
    (the last transition does not change the weight and is skipped unless
    ``final_transition``, e.g. to hand approximate target samples on).
    With K = 1 and no transition this is plain importance sampling from p_0.
    ``record``: steps k whose running log-weight is stored in ``trace``.
    ``E[exp(log_w)] = Z_1 / Z_0``.
    """
    b = _betas_list(betas)
    K = len(b) - 1
    x, log_w = x0, None
    rec = sorted(set(int(k) for k in record))
    trace = []
    for k in range(1, K + 1):
        # Neal (2001) eq. 6: w = prod_k f_k(x_{k-1}) / f_{k-1}(x_{k-1})
        inc = path.log_weight_increment(x, b[k - 1], b[k]).to(torch.float64)
        log_w = inc if log_w is None else log_w + inc
        if k in rec:
            trace.append(log_w.clone())
        if k < K or final_transition:
            x = path.transition(x, b[k])  # x_k ~ T_k(. | x_{k-1}), invariant for p_k
    return AnnealResult(log_w, x, torch.stack(trace) if trace else None)


def reverse_anneal(path: AnnealingPath, xK: Any, betas: torch.Tensor | Sequence[float], *,
                   record: Sequence[int] = ()) -> AnnealResult:
    """Reverse annealing from states ``x_K`` (a data point, or an exact target sample).

    For k = K..1: ``x_{k-1} ~ T~_k(.|x_k)`` then
    ``log w += log f_{k-1}(x_{k-1}) - log f_k(x_{k-1})``.  The result is
    ``log [q_fwd(x_{0:K}) / q_rev(x_{0:K-1} | x_K)] - log f_K(x_K) + log Z_0``,
    i.e. ``log p_hat = log f_K(x_K) - log Z_0 + log_w`` is RAISE's estimate of
    the annealing model's marginal; when ``x_K ~ p_1`` exactly,
    ``E[exp(log_w)] = Z_0 / Z_1`` (the reverse half of BDMC).
    ``record``: numbers of reverse steps taken (1..K) whose running log-weight is stored.
    """
    b = _betas_list(betas)
    K = len(b) - 1
    x, log_w = xK, None
    rec = sorted(set(int(k) for k in record))
    trace = []
    for k in range(K, 0, -1):
        x = path.reverse_transition(x, b[k])  # x_{k-1} ~ T~_k(. | x_k)
        # Burda et al. (2015), RAISE estimator: sum_k log f_{k-1}(x_{k-1}) - log f_k(x_{k-1})
        inc = -path.log_weight_increment(x, b[k - 1], b[k]).to(torch.float64)
        log_w = inc if log_w is None else log_w + inc
        if K - k + 1 in rec:
            trace.append(log_w.clone())
    return AnnealResult(log_w, x, torch.stack(trace) if trace else None)


# ---------------------------------------------------------------------------
# Log-weight bookkeeping
# ---------------------------------------------------------------------------


def log_mean_exp(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``log mean_i exp(x_i)`` along ``dim``, computed stably."""
    return torch.logsumexp(x, dim=dim) - math.log(x.shape[dim])


def log_Z_estimate(log_w: torch.Tensor, log_Z0: float | torch.Tensor, dim: int = -1) -> torch.Tensor:
    """AIS estimate ``log Z_1 = log Z_0 + log mean exp(log w)`` over the chain axis ``dim``.

    Unbiased for Z_1, hence (Jensen) an underestimate of log Z_1 on average.
    """
    return log_Z0 + log_mean_exp(log_w, dim=dim)


def effective_sample_size(log_w: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Kish's ESS ``(sum w)^2 / sum w^2`` along ``dim``, from log-weights."""
    return torch.exp(2.0 * torch.logsumexp(log_w, dim=dim) - torch.logsumexp(2.0 * log_w, dim=dim))


def normalised_weights(log_w: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Self-normalised importance weights along ``dim``."""
    return torch.softmax(log_w, dim=dim)


@dataclass
class BDMCResult:
    """Bidirectional Monte Carlo (Grosse et al., 2015) on data simulated from the model.

    ``lower`` [B]: forward-AIS estimates of ``log Z_1`` (stochastic lower bounds);
    ``upper`` [B]: reverse-annealing estimates started from exact samples of
    ``p_1`` (stochastic upper bounds).  Their gap bounds the error of either.
    """

    lower: torch.Tensor
    upper: torch.Tensor

    @property
    def gap(self) -> torch.Tensor:
        """``upper - lower`` per state: a stochastic bound on the error of either estimate."""
        return self.upper - self.lower


def bdmc(path: AnnealingPath, x0: Any, x_exact: Any, betas, log_Z0: float | torch.Tensor) -> BDMCResult:
    """Forward AIS from ``x0 ~ p_0`` and reverse annealing from ``x_exact ~ p_1``.

    Returns per-state ``log Z_1`` estimates: forward ``log Z_0 + log w`` and
    reverse ``log Z_0 - log w_rev``; average or log-mean-exp them over chains as needed.
    """
    fwd = ais(path, x0, betas)
    rev = reverse_anneal(path, x_exact, betas)
    return BDMCResult(lower=log_Z0 + fwd.log_w, upper=log_Z0 - rev.log_w)


# ---------------------------------------------------------------------------
# A transition operator for continuous states: Hamiltonian Monte Carlo
# ---------------------------------------------------------------------------


class HMC:
    """One HMC trajectory per call, a p_beta-invariant transition for continuous states ``x`` [B, D].

    ``log_f(x, beta) -> [B]`` must be differentiable in ``x``.  Momentum is
    drawn fresh, ``n_leapfrog`` leapfrog steps follow, and each chain accepts
    or rejects by Metropolis-Hastings, so every call leaves ``p_beta``
    invariant and is reversible.  With ``adapt=True`` the step size (one per
    chain, on the device, no host round trip) grows by ``up`` when the chain's
    acceptance probability beats ``target_accept`` and shrinks by ``down``
    otherwise, as in Wu et al. (2017): start 0.01, factors 1.02 / 0.98, target
    0.65, clipped to [1e-4, 0.5].  Adaptation uses only the past, so forward AIS stays valid;
    for reverse annealing (BDMC) pass ``adapt=False`` or replay the forward
    run's step sizes (``history``) in reverse.
    """

    def __init__(self, log_f: Callable[[torch.Tensor, float], torch.Tensor], *, n_leapfrog: int = 10,
                 step_size: float = 0.01, target_accept: float = 0.65, adapt: bool = True,
                 min_step: float = 1e-4, max_step: float = 0.5, up: float = 1.02, down: float = 0.98,
                 generator: torch.Generator | None = None, keep_history: bool = False):
        self.log_f, self.n_leapfrog = log_f, int(n_leapfrog)
        self.step_size0, self.target_accept, self.adapt = float(step_size), float(target_accept), adapt
        self.min_step, self.max_step, self.up, self.down = min_step, max_step, up, down
        self.generator, self.keep_history = generator, keep_history
        self.step: torch.Tensor | None = None  # [B], created on first call on the states' device
        self.accept_rate: torch.Tensor | None = None  # running mean acceptance over the batch, per call
        self.history: list[torch.Tensor] = []

    def _grad_log_f(self, x: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            lf = self.log_f(x, beta)
            (g,) = torch.autograd.grad(lf.sum(), x)
        return lf.detach(), g

    def adapt_step(self, accept_prob: torch.Tensor) -> None:
        """Multiply each chain's step by ``up`` where its acceptance probability beats the target, else ``down``."""
        factor = torch.where(accept_prob > self.target_accept, torch.full_like(self.step, self.up),
                             torch.full_like(self.step, self.down))
        self.step = (self.step * factor).clamp(self.min_step, self.max_step)

    def __call__(self, x: torch.Tensor, beta: float) -> torch.Tensor:
        """One HMC transition of every chain of ``x`` [B, D] at inverse temperature ``beta``."""
        B = x.shape[0]
        if self.step is None or self.step.shape[0] != B:
            self.step = torch.full((B,), self.step_size0, dtype=x.dtype, device=x.device)
        eps = self.step.view(B, *([1] * (x.dim() - 1)))  # [B] -> [B, 1, ...] to broadcast over the state
        p0 = torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=x.device)
        lf0, g = self._grad_log_f(x, beta)
        # leapfrog: half momentum step, (L-1) full steps, half step
        xn, p = x.detach(), p0 + 0.5 * eps * g
        for i in range(self.n_leapfrog):
            xn = xn + eps * p
            lf1, g = self._grad_log_f(xn, beta)
            p = p + (eps if i < self.n_leapfrog - 1 else 0.5 * eps) * g
        dims = tuple(range(1, x.dim()))
        # Metropolis-Hastings on H(x, p) = -log f(x) + |p|^2 / 2
        log_accept = (lf1 - 0.5 * (p**2).sum(dims)) - (lf0 - 0.5 * (p0**2).sum(dims))
        accept_prob = log_accept.clamp(max=0.0).exp()
        u = torch.rand(B, generator=self.generator, dtype=x.dtype, device=x.device)
        accept = u < accept_prob
        out = torch.where(accept.view(B, *([1] * (x.dim() - 1))), xn, x.detach())
        self.accept_rate = accept.to(x.dtype).mean()
        if self.keep_history:
            self.history.append(self.step.clone())
        if self.adapt:
            self.adapt_step(accept_prob)
        return out
