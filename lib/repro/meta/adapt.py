"""Continuous adaptation via meta-learning (Al-Shedivat et al., ICLR 2018), environment-agnostic.

Nonstationarity is a sequence of tasks T_1, T_2, ...; the meta-learner learns a policy
initialisation ``theta`` and per-tensor step sizes ``alpha`` such that a few policy-gradient
steps from ``theta`` on an episode of T_i give a policy ``phi`` that does well on T_{i+1}
(MAML on consecutive task pairs):

    A_t       = R_t - b_t,  R_t = sum_{s>=t} gamma^(s-t) r_s,  b_t = mean_M R_t     (book: meta-adv)
    L(phi; tau ~ q) = -mean[ pi_phi(a|s) / q(a|s) * A ]                            (book: meta-iw)
    phi_0 = theta,  phi_{k+1} = phi_k - alpha (.) grad_phi L(phi_k; tau_i)           (book: meta-inner)
    min_{theta, alpha}  -E[ min(r A, clip(r, 1 -+ eps) A) ],
                        r = pi_{phi(theta, alpha)}(a|s) / pi_{phi_old}(a|s), tau ~ T_{i+1} (book: meta-outer)

with PPO through the inner steps (second-order meta-gradients, clipped to [-0.1, 0.1]) and Adam
over ``theta`` and ``alpha``.  At test time the policy for episode i+1 is the inner steps from
``theta`` on episode i, played by the previous adapted policy ``phi_i`` (the importance weights
pi_theta / pi_{phi_i} correct for it; book: meta-test).  Baselines: *tracking* (keep fine-tuning
phi with a fixed step size; book: meta-tracking) and *no adaptation* (always theta).

Parameters are dicts of tensors used through :func:`torch.func.functional_call` on a skeleton
module (:class:`MetaPolicy`: an MLP mean and a state-independent ``log_std``, laid out like
``repro.rl.ppo.GaussianActorCritic``'s actor so :func:`actor_parameters` can take theta from one).
Per-group parameters carry a leading group axis G and are evaluated with :func:`torch.func.vmap`.

Environments: a vector env with N = G * M arenas that all reset together, each episode exactly
``envs.episode_steps`` long; ``envs.set_tasks(params [N, P])`` gives every arena its task; arena
n plays for group n // M.

Shapes: G groups (task pairs, or sequences at evaluation), M arenas per group, T steps,
D observation size, A action size, P task-vector size, S sequences of K episodes.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn as nn
from torch.func import functional_call, vmap

from ..checkpoint import load_checkpoint, make_identity, save_checkpoint
from ..progress import Progress
from ..rl.ppo import diag_gaussian_entropy, diag_gaussian_logprob

Params = dict[str, torch.Tensor]
METHODS = ("meta", "tracking", "none")

# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MetaSettings:
    """Settings of the meta-learner, its baselines and the plain PPO trainer.

    The paper fixes ``inner_steps=3``, ``alpha_init=1e-3``, ``meta_grad_clip=0.1`` and PPO in
    the outer loop; the rest are small defaults of ours.  ``alpha_per`` is ``"tensor"`` (one
    learned step size per parameter tensor) or ``"element"`` (one per parameter, Meta-SGD
    style); Adam updates alpha with ``alpha_lr`` (None: ``outer_lr``; Adam moves a tensor by about
    its learning rate per step, so with the paper's alpha_init = 1e-3 a smaller ``alpha_lr`` keeps
    alpha's relative changes moderate).  ``groups`` is G: task pairs per meta-iteration (the
    env's N arenas are split into G groups of M = N / G; M >= 2, since the baseline is the mean
    over a group's M trajectories).  ``tracking_*`` configure the continued fine-tuning baseline
    (``tracking_optimizer`` "sgd" or "adam").  ``meta_grad_clip`` clips every gradient element
    to [-clip, clip], in meta-training and in :func:`train_fixed`.
    """

    hidden: int = 64
    init_log_std: float = -0.5
    groups: int = 8
    gamma: float = 0.99
    normalise_advantages: bool = True
    inner_steps: int = 3
    alpha_init: float = 1e-3
    alpha_per: str = "tensor"
    learn_alpha: bool = True
    outer_lr: float = 1e-3
    alpha_lr: float | None = None
    outer_epochs: int = 5
    clip_coef: float = 0.2
    ent_coef: float = 0.0
    meta_grad_clip: float = 0.1
    tracking_steps: int = 3
    tracking_lr: float = 1e-3
    tracking_optimizer: str = "sgd"
    device: str = "cpu"

    def __post_init__(self):
        positive_ints = ("hidden", "groups", "outer_epochs", "tracking_steps")
        for name in positive_ints:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"MetaSettings.{name} must be an int >= 1, got {v!r}")
        if not isinstance(self.inner_steps, int) or isinstance(self.inner_steps, bool) or self.inner_steps < 0:
            raise ValueError(f"MetaSettings.inner_steps must be an int >= 0, got {self.inner_steps!r}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"MetaSettings.gamma must lie in [0, 1], got {self.gamma!r}")
        for name in ("outer_lr", "clip_coef", "meta_grad_clip"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"MetaSettings.{name} must be a finite number > 0, got {v!r}")
        for name in ("alpha_init", "init_log_std", "ent_coef", "tracking_lr"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ValueError(f"MetaSettings.{name} must be a finite number, got {v!r}")
        if self.ent_coef < 0 or self.tracking_lr < 0:
            raise ValueError("MetaSettings.ent_coef and tracking_lr must be >= 0")
        if self.alpha_lr is not None and not (isinstance(self.alpha_lr, (int, float)) and math.isfinite(self.alpha_lr)
                                              and self.alpha_lr >= 0):
            raise ValueError(f"MetaSettings.alpha_lr must be None or a finite number >= 0, got {self.alpha_lr!r}")
        if self.alpha_per not in ("tensor", "element"):
            raise ValueError(f"MetaSettings.alpha_per must be 'tensor' or 'element', got {self.alpha_per!r}")
        if self.tracking_optimizer not in ("sgd", "adam"):
            raise ValueError(f"MetaSettings.tracking_optimizer must be 'sgd' or 'adam', "
                             f"got {self.tracking_optimizer!r}")


# ---------------------------------------------------------------------------
# The policy: a skeleton module and parameter dicts
# ---------------------------------------------------------------------------


class MetaPolicy(nn.Module):
    """Diagonal Gaussian policy pi(a|s) = N(mu(s), diag(exp(log_std))^2) for functional use.

    ``actor`` is (Identity, Linear, tanh, Linear, tanh, Linear): obs [..., D] -> mu [..., A], the
    layout of ``GaussianActorCritic.actor`` (so its ``actor.*`` and ``log_std`` parameters are a
    valid theta here); ``log_std`` [A] is state-independent.  ``forward(obs)`` returns
    ``(mu [..., A], log_std [..., A])`` (log_std expanded, so a vmapped call stacks it per group).
    Initialisation: orthogonal weights (gain sqrt 2, the mean layer 0.01), zero biases, drawn from
    ``generator`` so building a policy leaves torch's global stream alone.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 64, init_log_std: float = -0.5,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.actor = nn.Sequential(nn.Identity(), nn.Linear(obs_dim, hidden), nn.Tanh(),
                                   nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, act_dim))
        with torch.no_grad():
            for layer, gain in ((self.actor[1], math.sqrt(2)), (self.actor[3], math.sqrt(2)), (self.actor[5], 0.01)):
                nn.init.orthogonal_(layer.weight, gain, generator=generator)
                layer.bias.zero_()
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.actor(obs)
        return mean, self.log_std.expand_as(mean)

    def policy(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log_std), as ``GaussianActorCritic.policy``."""
        return self(obs)


def make_policy(envs, settings: MetaSettings, seed: int = 0) -> MetaPolicy:
    """A :class:`MetaPolicy` for ``envs``' observation and action sizes, initialised from ``seed``."""
    obs_dim = int(envs.observation_space.shape[-1])  # batched [N, D] or single [D] spaces
    act_dim = int(envs.action_space.shape[-1])
    gen = torch.Generator().manual_seed(int(seed))
    return MetaPolicy(obs_dim, act_dim, settings.hidden, settings.init_log_std, gen).to(settings.device)


def policy_params(policy: nn.Module) -> Params:
    """theta: detached copies of ``policy``'s parameters, by name."""
    return {k: v.detach().clone() for k, v in policy.named_parameters()}


def actor_parameters(net: nn.Module | dict[str, torch.Tensor]) -> Params:
    """theta from a ``GaussianActorCritic`` or its ``state_dict`` (its ``actor.*`` and ``log_std``, detached
    float32 copies), for a MetaPolicy of the same sizes."""
    state = dict(net.named_parameters()) if isinstance(net, nn.Module) else net
    return {k: v.detach().clone().float() for k, v in state.items() if k.startswith("actor.") or k == "log_std"}


def stack_params(theta: Params, groups: int) -> Params:
    """theta repeated along a new leading group axis: [...] -> [G, ...] (a view; gradients flow to theta)."""
    return {k: v.unsqueeze(0).expand(groups, *v.shape) for k, v in theta.items()}


def init_alpha(theta: Params, settings: MetaSettings) -> Params:
    """The inner step sizes alpha, all ``alpha_init``: one scalar per tensor, or one per element."""
    return {k: torch.full(() if settings.alpha_per == "tensor" else v.shape, float(settings.alpha_init),
                          dtype=v.dtype, device=v.device) for k, v in theta.items()}


def policy_logprob(policy: nn.Module, params: Params, obs: torch.Tensor, actions: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi_{phi_g}(a|s) for every group g at once, and each group's log_std.

    params: [G, ...] per tensor; obs [G, ..., D], actions [G, ..., A] -> (logp [G, ...], log_std [G, ..., A]).
    One vmapped functional call over the group axis (no Python loop over groups or arenas).
    """
    mean, log_std = vmap(lambda p, o: functional_call(policy, p, (o,)))(params, obs)
    return diag_gaussian_logprob(mean, log_std, actions), log_std


# ---------------------------------------------------------------------------
# Data: one fixed-horizon episode per arena, arenas grouped by parameters
# ---------------------------------------------------------------------------


class Trajectories(NamedTuple):
    """One episode of every arena, grouped: obs [G, M, T, D], actions [G, M, T, A], rewards [G, M, T],
    logprobs [G, M, T] (the behaviour policy's log q(a|s), detached)."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    logprobs: torch.Tensor

    def returns(self) -> torch.Tensor:
        """Undiscounted episode returns [G, M]."""
        return self.rewards.sum(-1)


def arenas_per_group(envs, groups: int) -> int:
    """M = N / G; ValueError unless the env's N arenas split evenly into ``groups`` groups."""
    n = int(envs.num_envs)
    if groups < 1 or n % groups:
        raise ValueError(f"{n} arenas do not split into {groups} equal groups")
    return n // groups


def collect(envs, params_per_group: Params, groups: int, policy: nn.Module, *,
            generator: torch.Generator | None = None, reset_seed: int | None = None) -> Trajectories:
    """Play one episode in every arena, arena n acting under ``params_per_group`` of group n // M.

    params_per_group: [G, ...] per tensor.  Each step evaluates all groups in one vmapped call on
    obs [G, M, D], samples a = mu + sigma * eps (eps from ``generator``) and records log q(a|s).
    Returns :class:`Trajectories` in the params' dtype and device.
    """
    m = arenas_per_group(envs, groups)
    ref = next(iter(params_per_group.values()))
    dtype, device = ref.dtype, ref.device
    n_steps = int(envs.episode_steps)
    obs_np, _ = envs.reset(seed=reset_seed)
    obs_l, act_l, rew_l, logq_l = [], [], [], []
    with torch.no_grad():
        for _ in range(n_steps):
            obs = torch.as_tensor(np.asarray(obs_np), dtype=dtype, device=device)
            obs = obs.reshape(groups, m, *obs.shape[1:])  # [N, D] -> [G, M, D]
            mean, log_std = vmap(lambda p, o: functional_call(policy, p, (o,)))(params_per_group, obs)
            eps = torch.randn(mean.shape, generator=generator, dtype=dtype, device=device)
            actions = mean + log_std.exp() * eps  # [G, M, A]
            logq = diag_gaussian_logprob(mean, log_std, actions)  # [G, M]
            obs_np, reward, _, _, _ = envs.step(actions.reshape(groups * m, -1).cpu().numpy())
            obs_l.append(obs)
            act_l.append(actions)
            rew_l.append(torch.as_tensor(np.asarray(reward), dtype=dtype, device=device).reshape(groups, m))
            logq_l.append(logq)
    # T x [G, M, ...] -> [G, M, T, ...]
    return Trajectories(torch.stack(obs_l, 2), torch.stack(act_l, 2), torch.stack(rew_l, 2), torch.stack(logq_l, 2))


# ---------------------------------------------------------------------------
# Advantages and the losses
# ---------------------------------------------------------------------------


def rewards_to_go(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """R_t = sum_{s >= t} gamma^(s-t) r_s over the last axis: [..., T] -> [..., T]."""
    n = rewards.shape[-1]
    idx = torch.arange(n, device=rewards.device)
    power = (idx.unsqueeze(0) - idx.unsqueeze(1)).to(rewards.dtype)  # [t, s] = s - t
    discount = torch.where(power >= 0, torch.as_tensor(gamma, dtype=rewards.dtype) ** power.clamp(min=0),
                           torch.zeros((), dtype=rewards.dtype))  # [T, T] upper triangular
    return torch.einsum("...s,ts->...t", rewards, discount)


def advantages(rewards: torch.Tensor, gamma: float, normalise: bool = True) -> torch.Tensor:
    """A = R_t - b_t for rewards [G, M, T] -> [G, M, T]  (book: meta-adv).

    b_t is the per-time-step baseline: the mean of R_t over the M trajectories of the same group
    (same task, same policy), so no critic is learned.  With ``normalise`` each group's advantages
    are divided by their standard deviation over its M x T samples (the baseline already centres
    them), which makes the inner step's size comparable across tasks with different reward scales.
    """
    ret = rewards_to_go(rewards, gamma)
    adv = ret - ret.mean(1, keepdim=True)  # [G, M, T] - [G, 1, T]
    if normalise:
        adv = adv / (adv.std(dim=(1, 2), keepdim=True, correction=0) + 1e-8)
    return adv


def importance_weights(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """w = pi_phi(a|s) / q(a|s) = exp(log pi - log q), elementwise."""
    return torch.exp(logp - logq)


def importance_weighted_pg_loss(logp: torch.Tensor, logq: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """L(phi; tau ~ q) = -mean[w A] per group: [G, M, T] -> [G]  (book: meta-iw).

    When phi = q the weights are 1 and grad L = -mean[A grad log pi], plain REINFORCE.
    """
    return -(importance_weights(logp, logq) * adv).flatten(1).mean(1)


def ppo_clip_objective(logp: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor, clip_coef: float
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate L^CLIP = mean[min(r A, clip(r, 1-eps, 1+eps) A)] (to maximise) and stats."""
    log_ratio = logp - logp_old
    ratio = log_ratio.exp()
    surrogate = torch.min(ratio * adv, ratio.clamp(1 - clip_coef, 1 + clip_coef) * adv).mean()
    with torch.no_grad():
        stats = {"approx_kl": ((ratio - 1) - log_ratio).mean(),
                 "clipfrac": ((ratio - 1).abs() > clip_coef).to(adv.dtype).mean()}
    return surrogate, stats


# ---------------------------------------------------------------------------
# The inner loop and the meta-objective
# ---------------------------------------------------------------------------


def adapt(policy: nn.Module, theta: Params, alpha: Params, traj: Trajectories, settings: MetaSettings,
          create_graph: bool = False) -> Params:
    """phi(theta, alpha; tau): ``inner_steps`` importance-weighted PG steps from theta, per group.

    phi_0 = theta (stacked to [G, ...]); phi_{k+1} = phi_k - alpha (.) grad L(phi_k; tau)
    (book: meta-inner), every step on the same trajectories ``traj`` (whose behaviour log-probs
    give the weights).  Each group's loss depends only on its own phi_g, so the gradient of
    their sum is every group's own gradient.  With ``create_graph`` the result is differentiable
    in theta and alpha (second order: meta-training); without, it is detached (collection, test time).
    Returns phi [G, ...] per tensor.
    """
    groups = traj.rewards.shape[0]
    adv = advantages(traj.rewards, settings.gamma, settings.normalise_advantages)
    phi = stack_params(theta, groups)
    if not create_graph:
        alpha = {k: a.detach() for k, a in alpha.items()}
    phi = {k: v if (create_graph and v.requires_grad) else v.detach().clone().requires_grad_() for k, v in phi.items()}
    names = list(phi)
    with torch.enable_grad():
        for _ in range(settings.inner_steps):
            logp, _ = policy_logprob(policy, phi, traj.obs, traj.actions)
            loss = importance_weighted_pg_loss(logp, traj.logprobs, adv).sum()  # sum over groups
            grads = torch.autograd.grad(loss, [phi[k] for k in names], create_graph=create_graph)
            phi = {k: phi[k] - alpha[k] * g for k, g in zip(names, grads)}  # (book: meta-inner)
            if not create_graph:
                phi = {k: v.detach().requires_grad_() for k, v in phi.items()}
    if not create_graph:
        phi = {k: v.detach() for k, v in phi.items()}
    return phi


def meta_objective(policy: nn.Module, theta: Params, alpha: Params, tau_i: Trajectories, tau_next: Trajectories,
                   settings: MetaSettings) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The outer loss of one PPO epoch: -L^CLIP(phi(theta, alpha; tau_i); tau_{i+1}) - c_ent H[pi_phi]
    (book: meta-outer).

    phi is recomputed from tau_i with ``create_graph`` (second order); the ratio's denominator is
    tau_{i+1}'s behaviour log-probs (phi_old); advantages of tau_{i+1} as :func:`advantages`.
    Returns (loss, stats) with the mean inner loss at theta, the entropy, approx KL, clip fraction.
    """
    phi = adapt(policy, theta, alpha, tau_i, settings, create_graph=True)
    logp, log_std = policy_logprob(policy, phi, tau_next.obs, tau_next.actions)
    adv = advantages(tau_next.rewards, settings.gamma, settings.normalise_advantages)
    surrogate, stats = ppo_clip_objective(logp, tau_next.logprobs, adv, settings.clip_coef)
    entropy = diag_gaussian_entropy(log_std).mean()
    loss = -surrogate - settings.ent_coef * entropy
    stats = dict(stats, entropy=entropy.detach(), surrogate=surrogate.detach())
    return loss, stats


def clipped_gradients(loss: torch.Tensor, tensors: Params, clip: float) -> Params:
    """d loss / d tensor for every tensor that requires grad, each element clipped to [-clip, clip]."""
    names = [k for k, v in tensors.items() if v.requires_grad]
    grads = torch.autograd.grad(loss, [tensors[k] for k in names])
    return {k: g.clamp(-clip, clip) for k, g in zip(names, grads)}


def meta_gradients(policy: nn.Module, theta: Params, alpha: Params, tau_i: Trajectories, tau_next: Trajectories,
                   settings: MetaSettings) -> tuple[Params, Params, torch.Tensor, dict[str, torch.Tensor]]:
    """(grad theta, grad alpha, loss, stats) of :func:`meta_objective`, clipped to +-``meta_grad_clip``.

    Only tensors that require grad get a gradient (alpha's dict is empty when alpha is not learned).
    """
    loss, stats = meta_objective(policy, theta, alpha, tau_i, tau_next, settings)
    both = {("theta", k): v for k, v in theta.items()} | {("alpha", k): v for k, v in alpha.items()}
    grads = clipped_gradients(loss, both, settings.meta_grad_clip)
    g_theta = {k: g for (kind, k), g in grads.items() if kind == "theta"}
    g_alpha = {k: g for (kind, k), g in grads.items() if kind == "alpha"}
    return g_theta, g_alpha, loss.detach(), stats


# ---------------------------------------------------------------------------
# Test time and the tracking baseline
# ---------------------------------------------------------------------------


def tracking_update(policy: nn.Module, phi: Params, traj: Trajectories, settings: MetaSettings,
                    state: dict | None = None) -> tuple[Params, dict]:
    """Continued fine-tuning (book: meta-tracking): phi [G, ...] plus ``tracking_steps`` PG steps on tau.

    tau was played by phi, so the first step is REINFORCE and later ones importance weighted;
    the step is plain SGD with ``tracking_lr`` or Adam (its moments kept per group in ``state``
    across episodes).  Returns (new phi, state).
    """
    adv = advantages(traj.rewards, settings.gamma, settings.normalise_advantages)
    state = state if state is not None else {"t": 0, "m": {k: torch.zeros_like(v) for k, v in phi.items()},
                                               "v": {k: torch.zeros_like(v) for k, v in phi.items()}}
    lr, b1, b2 = settings.tracking_lr, 0.9, 0.999
    names = list(phi)
    for _ in range(settings.tracking_steps):
        phi = {k: v.detach().requires_grad_() for k, v in phi.items()}
        with torch.enable_grad():
            logp, _ = policy_logprob(policy, phi, traj.obs, traj.actions)
            loss = importance_weighted_pg_loss(logp, traj.logprobs, adv).sum()
            grads = dict(zip(names, torch.autograd.grad(loss, [phi[k] for k in names])))
        with torch.no_grad():
            if settings.tracking_optimizer == "sgd":
                phi = {k: phi[k] - lr * grads[k] for k in names}
            else:
                state["t"] += 1
                t = state["t"]
                new = {}
                for k in names:
                    state["m"][k] = b1 * state["m"][k] + (1 - b1) * grads[k]
                    state["v"][k] = b2 * state["v"][k] + (1 - b2) * grads[k].square()
                    m_hat = state["m"][k] / (1 - b1 ** t)
                    v_hat = state["v"][k] / (1 - b2 ** t)
                    new[k] = phi[k] - lr * m_hat / (v_hat.sqrt() + 1e-8)
                phi = new
    return {k: v.detach() for k, v in phi.items()}, state


def evaluate_sequences(envs, theta: Params, alpha: Params | None, method: str, task_sequences: np.ndarray,
                       settings: MetaSettings, seed: int, policy: nn.Module | None = None) -> np.ndarray:
    """Play S sequences of K consecutive episodes, adapting between episodes; returns [S, K].

    task_sequences [S, K, P]: the env's N arenas split into S groups of M = N / S, one per
    sequence.  Episode 1 is played by theta for every method; then
      ``meta``:     phi_{i+1} = adapt(theta, alpha; tau_i), tau_i played by phi_i (book: meta-test);
      ``tracking``: phi_{i+1} = tracking_update(phi_i; tau_i) (book: meta-tracking);
      ``none``:     phi_{i+1} = theta.
    Returns each episode's undiscounted return, the mean over its sequence's arenas, float64 [S, K].
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    task_sequences = np.asarray(task_sequences)
    if task_sequences.ndim != 3:
        raise ValueError(f"task_sequences must be [S, K, P], got shape {task_sequences.shape}")
    n_seq, n_episodes = task_sequences.shape[:2]
    m = arenas_per_group(envs, n_seq)
    if method == "meta" and alpha is None:
        raise ValueError("method 'meta' needs the learned step sizes alpha")
    policy = policy if policy is not None else make_policy(envs, settings)
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=settings.device).manual_seed(int(seed))
    theta = {k: v.detach().to(settings.device) for k, v in theta.items()}
    alpha = {k: a.detach().to(settings.device) for k, a in alpha.items()} if alpha is not None else None
    phi = {k: v.clone() for k, v in stack_params(theta, n_seq).items()}
    state = None
    returns = np.zeros((n_seq, n_episodes))
    for k in range(n_episodes):
        envs.set_tasks(np.repeat(task_sequences[:, k], m, axis=0))  # [S, P] -> [N, P]
        traj = collect(envs, phi, n_seq, policy, generator=gen, reset_seed=int(rng.integers(2**31)))
        returns[:, k] = traj.returns().mean(1).double().cpu().numpy()
        if k == n_episodes - 1:
            break
        if method == "meta":
            phi = adapt(policy, theta, alpha, traj, settings)  # (book: meta-test)
        elif method == "tracking":
            phi, state = tracking_update(policy, phi, traj, settings, state)
    return returns


# ---------------------------------------------------------------------------
# Training drivers
# ---------------------------------------------------------------------------


def _digest(params: Params | None) -> str | None:
    if params is None:
        return None
    h = hashlib.sha256()
    for k in sorted(params):
        h.update(k.encode())
        h.update(params[k].detach().cpu().double().numpy().tobytes())
    return h.hexdigest()[:16]


class _Loop:
    """The state every training driver checkpoints: theta, alpha, Adam, both RNGs, the history."""

    def __init__(self, theta: Params, alpha: Params, settings: MetaSettings, seed: int, columns: tuple[str, ...]):
        self.theta, self.alpha = theta, alpha
        learned = [a for a in alpha.values() if a.requires_grad]
        groups = [{"params": list(theta.values())}]
        if learned:
            alpha_lr = settings.outer_lr if settings.alpha_lr is None else settings.alpha_lr
            groups.append({"params": learned, "lr": alpha_lr})
        self.optimizer = torch.optim.Adam(groups, lr=settings.outer_lr)
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator(device=settings.device).manual_seed(int(seed))
        self.history: dict[str, list] = {c: [] for c in columns}
        self.iteration, self.wall = 0, 0.0

    def state(self) -> dict:
        return {"iteration": self.iteration, "wall": self.wall,
                "theta": {k: v.detach().clone() for k, v in self.theta.items()},
                "alpha": {k: v.detach().clone() for k, v in self.alpha.items()},
                "optimizer": self.optimizer.state_dict(), "torch_rng": self.gen.get_state(),
                "numpy_rng": self.rng.bit_generator.state, "history": {k: list(v) for k, v in self.history.items()}}

    def restore(self, state: dict) -> None:
        with torch.no_grad():
            for k, v in state["theta"].items():
                self.theta[k].copy_(v)
            for k, v in state["alpha"].items():
                self.alpha[k].copy_(v)
        self.optimizer.load_state_dict(state["optimizer"])
        self.gen.set_state(state["torch_rng"])
        self.rng.bit_generator.state = state["numpy_rng"]
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.iteration, self.wall = state["iteration"], state["wall"]

    def apply(self, grads: dict[int, torch.Tensor]) -> None:
        """One Adam step with the given (already clipped) gradients, keyed by tensor identity."""
        self.optimizer.zero_grad(set_to_none=True)
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                p.grad = grads.get(id(p))
        self.optimizer.step()

    def run(self, iterations: int, label: str, identity: dict, checkpoint, checkpoint_every: int,
            one_iteration: Callable[[], dict]) -> None:
        saved = load_checkpoint(checkpoint, identity)
        if saved is not None:
            self.restore(saved)
        with Progress(iterations, label, unit="iteration", start=min(self.iteration, iterations)) as bar:
            if saved is not None:
                bar.log(f"resumed from {checkpoint} at iteration {self.iteration}")
            while self.iteration < iterations:
                t0 = time.perf_counter()
                row = one_iteration()
                self.wall += time.perf_counter() - t0
                self.iteration += 1
                row = {"iteration": self.iteration, **row, "wall_time": self.wall}
                for k, v in row.items():
                    self.history[k].append(v)
                bar.update(self.iteration, **{k: v for k, v in row.items() if k.startswith("return")})
                if checkpoint is not None and (self.iteration % checkpoint_every == 0 or self.iteration == iterations):
                    save_checkpoint(checkpoint, self.state(), identity)


def _initial_theta(policy: nn.Module, init_theta: Params | None, device: str) -> Params:
    src = init_theta if init_theta is not None else dict(policy.named_parameters())
    return {k: v.detach().to(device).clone().requires_grad_() for k, v in src.items()}


def meta_train(envs, sample_task_pairs: Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]],
               settings: MetaSettings, iterations: int, seed: int, checkpoint: str | Path | None = None,
               checkpoint_every: int = 10, init_theta: Params | None = None, policy: nn.Module | None = None,
               label: str = "meta-train") -> tuple[dict[str, list], Params, Params]:
    """Meta-train theta and alpha on consecutive task pairs; returns (history, theta, alpha).

    Each iteration: (tasks_i, tasks_next) = sample_task_pairs(G, rng), both [G, P]; tau_i under
    theta on T_i; phi = adapt(theta, alpha; tau_i); tau_{i+1} under phi on T_{i+1}; then
    ``outer_epochs`` full-batch PPO epochs on tau_{i+1} through the inner steps (phi recomputed
    from tau_i every epoch), gradients clipped elementwise to +-``meta_grad_clip``, Adam over
    theta and alpha (book: meta-outer).

    History columns (one entry per iteration): ``iteration``, ``return_before`` (mean return of
    tau_i, under theta), ``return_after`` (of tau_{i+1}, under phi), ``outer_loss`` (the last
    epoch's, before its step; the first epoch's is -c_ent H by construction: ratio 1, centred
    advantages),
    ``approx_kl``, ``clipfrac`` (last epoch),
    ``alpha_mean`` and ``alpha/<tensor>`` (each tensor's mean step size, after the update),
    ``wall_time`` (cumulative seconds).  Randomness: tasks and env reset seeds from
    ``np.random.default_rng(seed)``, actions from a torch generator seeded with ``seed``; both are
    checkpointed (every ``checkpoint_every`` iterations and at the end), so an interrupted run
    resumes to the identical result.  ``init_theta`` starts from given parameters (e.g. a
    pretrained policy); ``policy`` replaces the default :func:`make_policy` skeleton.
    """
    if iterations < 0 or checkpoint_every < 1:
        raise ValueError("iterations must be >= 0 and checkpoint_every >= 1")
    groups = settings.groups
    m = arenas_per_group(envs, groups)
    if m < 2:
        raise ValueError(f"each of the {groups} groups needs >= 2 arenas for its baseline; the env has {envs.num_envs}")
    policy = policy if policy is not None else make_policy(envs, settings, seed)
    theta = _initial_theta(policy, init_theta, settings.device)
    alpha = {k: a.requires_grad_(settings.learn_alpha) for k, a in init_alpha(theta, settings).items()}
    columns = ("iteration", "return_before", "return_after", "outer_loss", "approx_kl", "clipfrac",
               "alpha_mean", *(f"alpha/{k}" for k in theta), "wall_time")
    loop = _Loop(theta, alpha, settings, seed, columns)
    identity = make_identity("meta_train", asdict(settings), seed=int(seed), num_envs=int(envs.num_envs),
                             init_theta=_digest(init_theta))

    def one_iteration() -> dict:
        tasks_i, tasks_next = sample_task_pairs(groups, loop.rng)
        envs.set_tasks(np.repeat(np.asarray(tasks_i), m, axis=0))  # [G, P] -> [N, P]
        theta_g = {k: v.detach() for k, v in stack_params(theta, groups).items()}
        tau_i = collect(envs, theta_g, groups, policy, generator=loop.gen, reset_seed=int(loop.rng.integers(2**31)))
        phi = adapt(policy, theta, alpha, tau_i, settings)
        envs.set_tasks(np.repeat(np.asarray(tasks_next), m, axis=0))
        tau_next = collect(envs, phi, groups, policy, generator=loop.gen, reset_seed=int(loop.rng.integers(2**31)))
        for _ in range(settings.outer_epochs):
            g_theta, g_alpha, loss, stats = meta_gradients(policy, theta, alpha, tau_i, tau_next, settings)
            loop.apply({id(theta[k]): g for k, g in g_theta.items()} | {id(alpha[k]): g for k, g in g_alpha.items()})
        row = {"return_before": float(tau_i.returns().mean()), "return_after": float(tau_next.returns().mean()),
               "outer_loss": float(loss),
               "approx_kl": float(stats["approx_kl"]), "clipfrac": float(stats["clipfrac"]),
               "alpha_mean": float(torch.cat([a.detach().flatten() for a in alpha.values()]).mean())}
        row |= {f"alpha/{k}": float(a.detach().mean()) for k, a in alpha.items()}
        return row

    loop.run(iterations, label, identity, checkpoint, checkpoint_every, one_iteration)
    return (loop.history, {k: v.detach().clone() for k, v in theta.items()},
            {k: v.detach().clone() for k, v in alpha.items()})


def train_fixed(envs, tasks: np.ndarray | Callable[[int, np.random.Generator], np.ndarray], settings: MetaSettings,
                iterations: int, seed: int, checkpoint: str | Path | None = None, checkpoint_every: int = 10,
                init_theta: Params | None = None, policy: nn.Module | None = None,
                label: str = "ppo") -> tuple[dict[str, list], Params]:
    """Plain PPO (no inner loop) on fixed tasks; returns (history, theta).

    ``tasks``: one task [P] for every arena, one per group [G, P], or a sampler
    ``tasks(G, rng) -> [G, P]`` called every iteration (pretraining on a task distribution);
    G = ``settings.groups`` unless given by the array.  Each iteration plays one episode per
    arena under theta and takes ``outer_epochs`` full-batch PPO epochs (the clipped objective of
    :func:`ppo_clip_objective` with the group-baseline advantages, entropy bonus ``ent_coef``,
    gradients clipped elementwise to +-``meta_grad_clip``, Adam with ``outer_lr``).  With
    ``init_theta`` it fine-tunes given parameters (the "oracle": fine-tune on the final task).
    History columns: ``iteration``, ``return`` (mean episode return), ``loss`` (the last epoch's),
    ``approx_kl``, ``clipfrac``, ``wall_time``.  Checkpointing as :func:`meta_train`.
    """
    if iterations < 0 or checkpoint_every < 1:
        raise ValueError("iterations must be >= 0 and checkpoint_every >= 1")
    if callable(tasks):
        groups, fixed = settings.groups, None
    else:
        fixed = np.asarray(tasks, dtype=np.float64)
        if fixed.ndim == 1:
            groups, fixed = settings.groups, np.broadcast_to(fixed, (settings.groups, fixed.shape[0]))
        elif fixed.ndim == 2:
            groups = fixed.shape[0]
        else:
            raise ValueError(f"tasks must be [P], [G, P] or a sampler, got shape {fixed.shape}")
    m = arenas_per_group(envs, groups)
    if m < 2:
        raise ValueError(f"each of the {groups} groups needs >= 2 arenas for its baseline; the env has {envs.num_envs}")
    policy = policy if policy is not None else make_policy(envs, settings, seed)
    theta = _initial_theta(policy, init_theta, settings.device)
    loop = _Loop(theta, {}, settings, seed, ("iteration", "return", "loss", "approx_kl", "clipfrac", "wall_time"))
    identity = make_identity("train_fixed", asdict(settings), seed=int(seed), num_envs=int(envs.num_envs),
                             init_theta=_digest(init_theta),
                             tasks=None if fixed is None else hashlib.sha256(fixed.tobytes()).hexdigest()[:16])

    def one_iteration() -> dict:
        task = np.asarray(tasks(groups, loop.rng)) if fixed is None else fixed
        envs.set_tasks(np.repeat(task, m, axis=0))
        theta_g = {k: v.detach() for k, v in stack_params(theta, groups).items()}
        traj = collect(envs, theta_g, groups, policy, generator=loop.gen, reset_seed=int(loop.rng.integers(2**31)))
        adv = advantages(traj.rewards, settings.gamma, settings.normalise_advantages)
        for _ in range(settings.outer_epochs):
            logp, log_std = policy_logprob(policy, stack_params(theta, groups), traj.obs, traj.actions)
            surrogate, stats = ppo_clip_objective(logp, traj.logprobs, adv, settings.clip_coef)
            loss = -surrogate - settings.ent_coef * diag_gaussian_entropy(log_std).mean()
            grads = clipped_gradients(loss, theta, settings.meta_grad_clip)
            loop.apply({id(theta[k]): g for k, g in grads.items()})
        return {"return": float(traj.returns().mean()), "loss": float(loss.detach()),
                "approx_kl": float(stats["approx_kl"]), "clipfrac": float(stats["clipfrac"])}

    loop.run(iterations, label, identity, checkpoint, checkpoint_every, one_iteration)
    return loop.history, {k: v.detach().clone() for k, v in theta.items()}
