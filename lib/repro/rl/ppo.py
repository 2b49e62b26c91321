"""Proximal Policy Optimisation with several reward streams.

Symbols (Schulman et al. 2017, 2016): ``r_t(theta) = pi_theta(a_t|s_t) / pi_old(a_t|s_t)``
the probability ratio, ``A_t`` the advantage from generalised advantage
estimation (GAE) with discount ``gamma`` and trace decay ``lambda``, ``epsilon``
the clip range.  With K reward streams (the RND paper has extrinsic and
intrinsic), every stream k has its own value head ``V_k``, discount
``gamma_k`` and an *episodic* flag; a non-episodic stream ignores episode ends
(its return flows into the next episode).  The policy is trained on the
weighted advantage ``A = sum_k c_k A_k``.

Shapes: T steps, N envs, K streams, B = T*N samples, A actions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
from torch.distributions import Categorical

# ---------------------------------------------------------------------------
# GAE
# ---------------------------------------------------------------------------


def gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, last_values: torch.Tensor,
        gammas: torch.Tensor, lam: float, episodic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates for K streams at once.

    rewards, values [T, N, K]; dones [T, N] (transition t ended an episode);
    last_values [N, K] = V_k(s_T); gammas [K]; episodic [K] bool.
    Returns (advantages, returns), both [T, N, K], returns = advantages + values.

    delta_t = r_t + gamma * (1 - d_t) V(s_{t+1}) - V(s_t)     (book: rnd-gae; GAE eq. 10)
    A_t     = delta_t + gamma * lambda * (1 - d_t) A_{t+1}     (rnd-gae; GAE eq. 16, recursive form)
    where d_t is forced to 0 for non-episodic streams.
    """
    T = rewards.shape[0]
    # [T, N, 1] * [K] -> [T, N, K]: episode ends only cut episodic streams
    not_done = 1.0 - dones.unsqueeze(-1) * episodic.to(rewards.dtype)
    next_values = torch.cat([values[1:], last_values.unsqueeze(0)], 0)  # V(s_{t+1}), [T, N, K]
    deltas = rewards + gammas * not_done * next_values - values
    decay = gammas * lam * not_done  # [T, N, K]
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(last_values)
    for t in range(T - 1, -1, -1):  # the recursion is sequential in time, vectorised over N and K
        running = deltas[t] + decay[t] * running
        adv[t] = running
    return adv, adv + values


# ---------------------------------------------------------------------------
# The clipped surrogate objective
# ---------------------------------------------------------------------------


def ppo_loss(new_logprob: torch.Tensor, old_logprob: torch.Tensor, entropy: torch.Tensor,
             new_values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
             advantages: torch.Tensor, clip_coef: float, vf_coef: float, ent_coef: float,
             clip_value_loss: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's loss for a minibatch of B samples; value tensors are [B, K], the rest [B].

    L^CLIP = E[min(r A, clip(r, 1-eps, 1+eps) A)]              (book: rnd-ppo; PPO eq. 7)
    L^VF   = 1/2 sum_k E[max((V_k - R_k)^2, (V_old,k + clip(V_k - V_old,k, +-eps) - R_k)^2)]
    loss   = -L^CLIP + vf_coef L^VF - ent_coef H[pi]                    (PPO eq. 9)
    """
    log_ratio = new_logprob - old_logprob
    ratio = log_ratio.exp()
    pg_loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip_coef, 1 + clip_coef)).mean()
    v_err = (new_values - returns).square()
    if clip_value_loss:
        v_clipped = old_values + (new_values - old_values).clamp(-clip_coef, clip_coef)
        v_err = torch.max(v_err, (v_clipped - returns).square())
    v_loss = 0.5 * v_err.mean(0).sum()  # mean over samples, sum over streams
    ent = entropy.mean()
    loss = pg_loss + vf_coef * v_loss - ent_coef * ent
    with torch.no_grad():
        stats = {"pg_loss": pg_loss.detach(), "v_loss": v_loss.detach(), "entropy": ent.detach(),
                 "approx_kl": ((ratio - 1) - log_ratio).mean(),
                 "clipfrac": ((ratio - 1).abs() > clip_coef).float().mean()}
    return loss, stats


# ---------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------


def layer_init(layer: nn.Module, gain: float = math.sqrt(2), bias: float = 0.0) -> nn.Module:
    """Orthogonal weights with ``gain`` and constant bias (the usual PPO initialisation)."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer


class MLPActorCritic(nn.Module):
    """Separate actor and critic for vector observations: each Flatten -> 2 x (Linear, tanh), then
    policy logits [B, A] from the actor and K value heads [B, K] from the critic.

    Separate bodies, not one shared body: with a shared tanh body the value
    loss (returns in the hundreds on CartPole) dominates the body's gradient
    and, through the global gradient-norm clip, shrinks the policy's share of
    every step; with CleanRL's `ppo.py` defaults on CartPole-v1 (100k steps,
    seeds 1-3) the shared body ended at a mean return of ~67 against ~245
    for separate bodies (``python -m repro.rl.benchmark``).
    ``scale`` divides integer observations (e.g. minigrid codes) into a small range.
    """

    def __init__(self, obs_shape: tuple[int, ...], n_actions: int, n_streams: int = 1,
                 hidden: int = 64, scale: float = 1.0):
        super().__init__()
        d = math.prod(obs_shape)
        self.scale = scale

        def body() -> nn.Sequential:
            return nn.Sequential(nn.Flatten(), layer_init(nn.Linear(d, hidden)), nn.Tanh(),
                                 layer_init(nn.Linear(hidden, hidden)), nn.Tanh())

        self.actor, self.critic = body(), body()
        self.pi = layer_init(nn.Linear(hidden, n_actions), 0.01)
        self.v = layer_init(nn.Linear(hidden, n_streams), 1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = obs.float() / self.scale
        return self.pi(self.actor(x)), self.v(self.critic(x))


class GridActorCritic(nn.Module):
    """Actor-critic for full-grid minigrid images uint8 [3, H, W] of a fixed layout.

    A fixed first layer reads the agent's column, row and heading off the image
    (object code ``agent`` in channel 0, heading in channel 2) as one-hot
    vectors [W + H + 4]; an MLP (2 x (Linear, tanh)) maps them to the policy
    logits [B, A] and K values [B, K].  Factored coordinates let the policy
    generalise across cells far better than the raw image would.
    """

    AGENT = 10  # minigrid's OBJECT_TO_IDX["agent"]

    def __init__(self, obs_shape: tuple[int, ...], n_actions: int, n_streams: int = 1, hidden: int = 64):
        super().__init__()
        _, H, W = obs_shape
        self.body = nn.Sequential(layer_init(nn.Linear(W + H + 4, hidden)), nn.Tanh(),
                                  layer_init(nn.Linear(hidden, hidden)), nn.Tanh())
        self.pi = layer_init(nn.Linear(hidden, n_actions), 0.01)
        self.v = layer_init(nn.Linear(hidden, n_streams), 1.0)

    @classmethod
    def features(cls, obs: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, W + H + 4]: one-hot column, row and heading of the agent."""
        here = obs[:, 0] == cls.AGENT                               # [B, H, W]
        col = here.any(1).float()                                   # [B, W]
        row = here.any(2).float()                                   # [B, H]
        heading = (obs[:, 2].long() * here).sum((1, 2))             # [B]
        return torch.cat([col, row, nn.functional.one_hot(heading, 4).float()], 1)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(self.features(obs))
        return self.pi(h), self.v(h)


class AtariActorCritic(nn.Module):
    """The RND paper's policy network for 4 x 84 x 84 frame stacks.

    conv 32 8x8/4, conv 64 4x4/2, conv 64 3x3/1 (ReLU) -> FC 256 -> FC 448;
    the policy adds an FC 448 (residual) before the logits, the values an FC 448
    (residual) before K linear heads.  Inputs are uint8 frames scaled by 1/255.
    """

    def __init__(self, n_actions: int, n_streams: int = 2, frames: int = 4):
        super().__init__()
        self.body = nn.Sequential(
            layer_init(nn.Conv2d(frames, 32, 8, stride=4)), nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU(), nn.Flatten(),
            layer_init(nn.Linear(64 * 7 * 7, 256)), nn.ReLU(),
            layer_init(nn.Linear(256, 448)), nn.ReLU())
        self.pi_extra = nn.Sequential(layer_init(nn.Linear(448, 448), 0.1), nn.ReLU())
        self.v_extra = nn.Sequential(layer_init(nn.Linear(448, 448), 0.1), nn.ReLU())
        self.pi = layer_init(nn.Linear(448, n_actions), 0.01)
        self.v = layer_init(nn.Linear(448, n_streams), 0.01)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(obs.float() / 255.0)
        return self.pi(h + self.pi_extra(h)), self.v(h + self.v_extra(h))


class MinAtarActorCritic(nn.Module):
    """Actor-critic for MinAtar frames [C, 10, 10] of 0/1 (Young & Tian 2019's network, two heads).

    conv 16 3x3/1 (ReLU) -> flatten -> FC ``hidden`` (ReLU) -> policy logits
    [B, A] and K values [B, K].
    """

    def __init__(self, obs_shape: tuple[int, ...], n_actions: int, n_streams: int = 1, hidden: int = 128):
        super().__init__()
        c, h, w = obs_shape
        self.body = nn.Sequential(layer_init(nn.Conv2d(c, 16, 3)), nn.ReLU(), nn.Flatten(),
                                  layer_init(nn.Linear(16 * (h - 2) * (w - 2), hidden)), nn.ReLU())
        self.pi = layer_init(nn.Linear(hidden, n_actions), 0.01)
        self.v = layer_init(nn.Linear(hidden, n_streams), 1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(obs.float())
        return self.pi(h), self.v(h)


# ---------------------------------------------------------------------------
# Continuous actions: a diagonal Gaussian policy
# ---------------------------------------------------------------------------

LOG_2PI = math.log(2 * math.pi)


def diag_gaussian_logprob(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log N(a; mu, diag(sigma^2)) summed over the action dimensions: [..., A] -> [...].

    log pi(a|s) = -sum_j [ (a_j - mu_j)^2 / (2 sigma_j^2) + log sigma_j + log(2 pi) / 2 ]
    (``log_std`` broadcasts: [A] for a state-independent sigma, or [..., A]).
    """
    z = (actions - mean) * torch.exp(-log_std)
    return -(0.5 * z.square() + log_std + 0.5 * LOG_2PI).sum(-1)


def diag_gaussian_entropy(log_std: torch.Tensor) -> torch.Tensor:
    """H[N(mu, diag(sigma^2))] = sum_j (log sigma_j + (1 + log 2 pi) / 2): [..., A] -> [...]."""
    return (log_std + 0.5 * (1.0 + LOG_2PI)).sum(-1)


class DiagGaussian:
    """The diagonal Gaussian pi(.|s) with the Categorical interface PPO uses: ``sample``,
    ``log_prob`` and ``entropy`` per sample (summed over the A action dimensions)."""

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor):
        self.mean = mean                                   # [B, A]
        self.log_std = log_std.expand_as(mean)             # [B, A]

    def sample(self) -> torch.Tensor:
        with torch.no_grad():
            return self.mean + torch.exp(self.log_std) * torch.randn_like(self.mean)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return diag_gaussian_logprob(self.mean, self.log_std, actions)

    def entropy(self) -> torch.Tensor:
        return diag_gaussian_entropy(self.log_std)


class GaussianActorCritic(nn.Module):
    """Actor-critic for continuous actions in R^A (e.g. MuJoCo torques): separate actor and
    critic MLPs (2 x (Linear, tanh), as ``MLPActorCritic``), the actor's output the mean mu(s)
    [B, A], a state-independent log standard deviation ``log_std`` [A] (initialised at
    ``log_std_init``), and K value heads [B, K].

    ``forward(obs) -> (mu [B, A], values [B, K])``; ``distribution(mu)`` is pi(.|s), so
    ``act``/``evaluate``/``ppo_update`` serve it unchanged; ``policy(obs) -> (mu, log_std)`` is
    what a functional caller (``torch.func.functional_call``) needs.  Actions are not squashed:
    the environment clips them to its range.
    """

    def __init__(self, obs_shape: tuple[int, ...], act_dim: int, n_streams: int = 1, hidden: int = 64,
                 log_std_init: float = -0.5):
        super().__init__()
        d = math.prod(obs_shape)

        def body() -> list[nn.Module]:
            return [nn.Flatten(-len(obs_shape)) if len(obs_shape) > 1 else nn.Identity(),
                    layer_init(nn.Linear(d, hidden)), nn.Tanh(), layer_init(nn.Linear(hidden, hidden)), nn.Tanh()]

        self.actor = nn.Sequential(*body(), layer_init(nn.Linear(hidden, act_dim), 0.01))
        self.critic = nn.Sequential(*body(), layer_init(nn.Linear(hidden, n_streams), 1.0))
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))

    def policy(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.actor(obs.float()), self.log_std

    def distribution(self, mean: torch.Tensor) -> DiagGaussian:
        return DiagGaussian(mean, self.log_std)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = obs.float()
        return self.actor(x), self.critic(x)


# ---------------------------------------------------------------------------
# The registry: a run names its network, the trainer builds it here
# ---------------------------------------------------------------------------

NETWORKS: dict[str, Callable[..., nn.Module]] = {}


def register_network(name: str):
    """Register ``builder(obs_shape, n_actions, n_streams, hidden, obs_scale) -> nn.Module`` as ``name``."""
    def deco(builder):
        if name in NETWORKS:
            raise ValueError(f"network {name!r} is already registered")
        NETWORKS[name] = builder
        return builder
    return deco


def build_network(name: str, obs_shape: tuple[int, ...], n_actions: int, n_streams: int,
                  hidden: int = 64, obs_scale: float = 1.0) -> nn.Module:
    """The actor-critic registered as ``name`` (``mlp``, ``grid``, ``minatar``, ``atari``, ...)."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}: registered are {', '.join(sorted(NETWORKS))}")
    return NETWORKS[name](tuple(obs_shape), n_actions, n_streams, hidden, obs_scale)


register_network("mlp")(lambda shape, n_act, k, hidden, scale: MLPActorCritic(shape, n_act, k, hidden, scale))
register_network("grid")(lambda shape, n_act, k, hidden, scale: GridActorCritic(shape, n_act, k, hidden))
register_network("minatar")(lambda shape, n_act, k, hidden, scale: MinAtarActorCritic(shape, n_act, k, hidden))
register_network("gaussian")(lambda shape, act_dim, k, hidden, scale: GaussianActorCritic(shape, act_dim, k, hidden))
register_network("atari")(lambda shape, n_act, k, hidden, scale: AtariActorCritic(n_act, k, frames=shape[0]))


def policy_distribution(net: nn.Module, head: torch.Tensor):
    """pi(.|s) from the policy head of ``net``'s output: the net's own ``distribution(head)`` if it
    has one (``GaussianActorCritic``: a diagonal Gaussian), else a categorical over logits [B, A]."""
    if hasattr(net, "distribution"):
        return net.distribution(head)
    return Categorical(logits=head)


def act(net: nn.Module, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample a ~ pi(.|s); return (actions [N] or [N, A], log pi(a|s) [N], values [N, K])."""
    head, values = net(obs)
    dist = policy_distribution(net, head)
    a = dist.sample()
    return a, dist.log_prob(a), values


def evaluate(net: nn.Module, obs: torch.Tensor, actions: torch.Tensor):
    """(log pi(a|s) [B], entropy [B], values [B, K]) under the current parameters."""
    head, values = net(obs)
    dist = policy_distribution(net, head)
    return dist.log_prob(actions), dist.entropy(), values


# ---------------------------------------------------------------------------
# The update
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PPOSettings:
    """PPO hyperparameters (the defaults are the RND paper's Table 5)."""

    lr: float = 1e-4
    anneal_lr: bool = False
    gammas: tuple[float, ...] = (0.999, 0.99)
    episodic: tuple[bool, ...] = (True, False)
    adv_coefs: tuple[float, ...] = (2.0, 1.0)
    gae_lambda: float = 0.95
    epochs: int = 4
    minibatches: int = 4
    clip_coef: float = 0.1
    ent_coef: float = 1e-3
    vf_coef: float = 1.0
    max_grad_norm: float = 0.5
    clip_value_loss: bool = False
    norm_adv: bool = True

    @property
    def n_streams(self) -> int:
        """K, the number of reward streams (one discount each)."""
        return len(self.gammas)

    def lr_at(self, update: int, num_updates: int) -> float:
        """Learning rate for update ``update`` (1-based): linear decay to 0 if annealing."""
        if not self.anneal_lr:
            return self.lr
        return self.lr * (1.0 - (update - 1) / max(num_updates, 1))


def ppo_update(net: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
               s: PPOSettings, aux_loss=None) -> dict[str, float]:
    """``s.epochs`` passes over the batch in ``s.minibatches`` shuffled minibatches.

    ``aux_loss(idx) -> scalar`` (e.g. the RND predictor's loss on the same
    minibatch indices) is added to the PPO loss; its parameters must be in
    ``optimizer``.  Gradients of everything in the optimiser are clipped to a
    global norm of ``s.max_grad_norm``.  Returns mean statistics (one host sync).
    """
    B = batch["actions"].shape[0]
    mb = B // s.minibatches
    coefs = torch.tensor(s.adv_coefs, device=batch["advantages"].device)
    combined = (batch["advantages"] * coefs).sum(-1)  # rnd-ppo: A = sum_k c_k A_k, [B]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    totals: dict[str, torch.Tensor] = {}
    n = 0
    for _ in range(s.epochs):
        perm = torch.randperm(B, device=combined.device)
        for i in range(s.minibatches):
            idx = perm[i * mb:(i + 1) * mb]
            adv = combined[idx]
            if s.norm_adv:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            logp, ent, v = evaluate(net, batch["obs"][idx], batch["actions"][idx])
            loss, stats = ppo_loss(logp, batch["logprobs"][idx], ent, v, batch["values"][idx],
                                   batch["returns"][idx], adv, s.clip_coef, s.vf_coef, s.ent_coef,
                                   s.clip_value_loss)
            if aux_loss is not None:
                aux = aux_loss(idx)
                loss = loss + aux
                stats["aux_loss"] = aux.detach()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            stats["grad_norm"] = nn.utils.clip_grad_norm_(params, s.max_grad_norm)
            optimizer.step()
            for k, val in stats.items():
                totals[k] = totals.get(k, 0.0) + val
            n += 1
    keys = list(totals)
    vals = torch.stack([totals[k] for k in keys]).div(n).tolist()
    return dict(zip(keys, vals))
