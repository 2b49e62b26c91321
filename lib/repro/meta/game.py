"""RoboSumo as a task family for continuous adaptation: opponents as tasks, self-play, the iterated game.

Al-Shedivat et al. (2018, section 4.2) make competition a nonstationary environment: an agent
meets an opponent that keeps learning, over a sequence of rounds, and must adapt from the few
bouts of one round to do better in the next.  This module gives RoboSumo
(:mod:`repro.meta.sumo`) the single-agent, fixed-horizon vector-env interface of the
environment-agnostic meta-learner (:mod:`repro.meta.adapt`), with the *opponent* as the task:

* :class:`SumoVsOpponents` - we play side ``a``; side ``b`` is played by one of K recorded
  opponent policies (snapshots of a ``GaussianActorCritic``); ``set_tasks(params [N, 1])``
  picks each arena's snapshot index.  Every arena plays exactly one bout per episode of
  ``episode_steps`` steps: a bout decided early (a win or a loss) freezes its arena for the
  rest of the episode (reward 0, observation held), and the time limit is the draw.
* :func:`selfplay_snapshots` - PPO self-play (one policy plays both sides, both sides'
  experience trains it), saving snapshots along the way: a recorded learning trajectory, so
  opponent version k+1 is opponent k after more learning ("an opponent that keeps learning").
* :func:`iterated_game` - R rounds against an opponent that improves from round to round; in
  each round our agent plays ``episodes_per_round`` episodes (every arena in parallel, so
  ``episodes_per_round * N`` bouts) and a *strategy* then adapts on the round's experience.
  Strategies: :class:`NoAdaptation`, :class:`Tracking` (continued fine-tuning) and
  :class:`MetaAdaptation` (the paper's test-time step, :func:`repro.meta.adapt.adapt`).

Rewards: the sumo reward of side ``a`` (outcome +2000 / -2000, draw -1000, plus shaping; see
:mod:`repro.meta.sumo`) times ``reward_scale`` (default ``REWARD_SCALE = 1e-3``, so a win is
+2, a loss -2, a draw -1: value functions and Adam see numbers of order one; the scale is a
constant, so it changes no policy ordering).

Parameters are dicts of tensors named like ``GaussianActorCritic``'s actor (``actor.1.weight``,
..., ``log_std``), used through :func:`torch.func.functional_call` on
:class:`repro.meta.adapt.MetaPolicy` (the same layout, so a snapshot's actor is a theta for
the meta-learner).

Shapes: N arenas, K snapshots, T = ``episode_steps``, D observation size, A action size,
M = ``episodes_per_round * N`` bouts of a round, R rounds.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
from torch.func import functional_call, vmap

from ..checkpoint import load_checkpoint, make_identity, save_checkpoint
from ..progress import Progress
from ..rl.ppo import GaussianActorCritic, PPOSettings, diag_gaussian_logprob, gae, ppo_update
from .adapt import MetaPolicy, MetaSettings, Trajectories, actor_parameters, adapt, tracking_update
from .sumo import A_WINS, B_WINS, DRAW, ONGOING, SumoArenas

Params = dict[str, torch.Tensor]
REWARD_SCALE = 1e-3  # sumo reward units -> learning units: win +2, loss -2, draw -1
WIN, LOSS = A_WINS, B_WINS  # outcome codes from side a's view (DRAW, ONGOING as in repro.meta.sumo)

# PPO for self-play: one reward stream, episodic, discount 0.99 (our defaults, not the paper's).
SELFPLAY_PPO = PPOSettings(lr=3e-4, gammas=(0.99,), episodic=(True,), adv_coefs=(1.0,), gae_lambda=0.95,
                           epochs=4, minibatches=4, clip_coef=0.2, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5)


# ---------------------------------------------------------------------------
# Policies as parameter dicts
# ---------------------------------------------------------------------------


def outcome_rates(outcomes: np.ndarray) -> dict[str, float]:
    """Fractions of wins, losses and draws (side a's view) among decided ``outcomes`` codes."""
    o = np.asarray(outcomes).ravel()
    if o.size == 0 or np.any(o == ONGOING):
        raise ValueError("outcome_rates needs decided outcomes (no ONGOING)")
    return {"win": float(np.mean(o == WIN)), "loss": float(np.mean(o == LOSS)), "draw": float(np.mean(o == DRAW))}


# ---------------------------------------------------------------------------
# The single-agent env: side a against recorded opponents
# ---------------------------------------------------------------------------


class SumoVsOpponents(gym.vector.VectorEnv):
    """RoboSumo for side ``a`` against opponents picked per arena from K snapshots; fixed horizon.

    ``snapshots``: K state dicts of ``GaussianActorCritic((D,), A, hidden=hidden)`` (only the
    actor's entries are used; None: one opponent, a fresh network initialised from ``seed``).
    ``set_tasks(params [N, 1] or [N])`` sets arena n's opponent to snapshot ``int(params[n, 0])``
    (integers in 0..K-1, else ValueError); it takes effect at the next ``reset`` and every reset
    keeps it.  Initially every arena meets snapshot 0.

    The opponent *samples* its actions, ``mu + sigma * eps``, from its own Gaussian (the policy
    it was trained as; its ``log_std`` is learned in self-play), with ``eps`` from this env's
    torch generator (reseeded by ``reset(seed)``); ``opponent_mode="mean"`` makes it play its
    mean action instead.  All N opponents act in one vmapped functional call over the arena
    axis on parameters gathered per arena at ``reset``, or, with at most ``GROUPED_MAX`` distinct
    opponents in play, in one call per opponent (no Python loop over arenas).

    ``reset(seed=None) -> (obs [N, D] float32, info)`` starts one bout in every arena.
    ``step(actions [N, A]) -> (obs, reward [N], terminated [N], truncated [N], info)``:
    ``reward`` is side a's sumo reward times ``reward_scale`` while its bout goes on and on the
    step that decides it, 0 afterwards; ``terminated[n]`` is True from the deciding step on
    (at step ``episode_steps`` every bout is decided: the time limit is the draw); ``truncated``
    is always False.  A decided arena is frozen: its observation is the one that ended its bout,
    held; the simulator keeps running there (SumoArenas resets it by itself) but nothing of it
    is seen.  ``info``: ``outcome`` [N] - the code (``WIN``/``LOSS``/``DRAW``, side a's view)
    on the step that decided the arena's bout and ``ONGOING`` on every other step, so every
    arena reports exactly once per episode; ``reward_raw`` [N] (unscaled); ``opponent`` [N]; and
    on the last step ``episode_outcome`` [N] and ``episode_return`` [N] (scaled).  After the
    last step, ``last_outcomes`` [N] and ``last_returns`` [N] hold them until the next episode
    ends; ``outcomes`` [N] is the running record (``ONGOING`` until decided).  Stepping past
    ``episode_steps`` without a reset raises RuntimeError.
    """

    metadata = {"render_modes": [], "autoreset_mode": gym.vector.AutoresetMode.DISABLED}
    GROUPED_MAX = 2  # up to this many distinct opponents in play: one call per opponent, else vmap

    def __init__(self, n_arenas: int, body: str = "disc", episode_steps: int = 100,
                 snapshots: list[dict[str, torch.Tensor]] | None = None, hidden: int = 64, seed: int = 0,
                 reward_scale: float = REWARD_SCALE, opponent_mode: str = "sample", **sumo_kwargs: Any):
        if opponent_mode not in ("sample", "mean"):
            raise ValueError(f"opponent_mode must be 'sample' or 'mean', got {opponent_mode!r}")
        if not (isinstance(reward_scale, (int, float)) and math.isfinite(reward_scale) and reward_scale > 0):
            raise ValueError(f"reward_scale must be a finite number > 0, got {reward_scale!r}")
        self.arenas = SumoArenas(n_arenas, body, episode_steps, seed=seed, **sumo_kwargs)
        self.num_envs, self.episode_steps, self.body = self.arenas.num_envs, self.arenas.episode_steps, body
        self.obs_dim, self.n_actions = self.arenas.obs_dim, self.arenas.n_actions
        self.single_observation_space = self.arenas.single_observation_space
        self.single_action_space = self.arenas.single_action_space
        self.observation_space = self.arenas.observation_space
        self.action_space = self.arenas.action_space
        self.reward_scale, self.opponent_mode, self.hidden = float(reward_scale), opponent_mode, int(hidden)
        self.skeleton = MetaPolicy(self.obs_dim, self.n_actions, self.hidden)
        if snapshots is None:
            torch_state = torch.random.get_rng_state()
            try:  # a fresh opponent from `seed` without touching torch's global stream
                torch.manual_seed(seed)
                snapshots = [GaussianActorCritic((self.obs_dim,), self.n_actions, 1, self.hidden).state_dict()]
            finally:
                torch.random.set_rng_state(torch_state)
        self.set_snapshots(snapshots)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.tasks = np.zeros(self.num_envs, np.int64)
        self.last_outcomes = np.full(self.num_envs, ONGOING, np.int64)
        self.last_returns = np.zeros(self.num_envs)
        self.reset(seed=seed)

    # -- opponents -------------------------------------------------------------------
    @property
    def n_snapshots(self) -> int:
        return len(self.snapshots)

    def set_snapshots(self, snapshots: list[dict[str, torch.Tensor]]) -> None:
        """Replace the K opponents (state dicts of ``GaussianActorCritic``); arenas keep their indices."""
        if len(snapshots) == 0:
            raise ValueError("need at least one opponent snapshot")
        names = dict(self.skeleton.named_parameters())
        params = [actor_parameters(s) for s in snapshots]
        for k, p in enumerate(params):
            if set(p) != set(names) or any(p[n].shape != names[n].shape for n in names):
                raise ValueError(f"snapshot {k} is not a GaussianActorCritic actor of obs {self.obs_dim}, "
                                 f"actions {self.n_actions}, hidden {self.hidden}")
        self.snapshots = params
        self._stacked = {n: torch.stack([p[n] for p in params]) for n in names}  # [K, ...]
        if hasattr(self, "tasks") and np.any(self.tasks >= len(params)):
            raise ValueError(f"an arena's opponent index is >= the new number of snapshots {len(params)}")
        if hasattr(self, "tasks"):
            self._gather()

    def set_tasks(self, params: np.ndarray) -> None:
        """Opponent snapshot index per arena: ``params`` [N, 1] (or [N]) of integers in 0..K-1."""
        p = np.asarray(params, dtype=np.float64)
        if p.ndim == 2 and p.shape[1] == 1:
            p = p[:, 0]
        if p.shape != (self.num_envs,):
            raise ValueError(f"tasks must have shape [{self.num_envs}, 1], got {np.shape(params)}")
        if not np.all(np.isfinite(p)) or np.any(p != np.round(p)) or np.any(p < 0) or np.any(p >= self.n_snapshots):
            raise ValueError(f"opponent indices must be integers in 0..{self.n_snapshots - 1}, got {np.unique(p)}")
        self.tasks = p.astype(np.int64)

    def _gather(self) -> None:
        self._opp_tasks = self.tasks.copy()                          # the opponents of this episode
        idx = torch.as_tensor(self._opp_tasks)
        self._present = np.unique(self._opp_tasks)
        self._opp = {n: v[idx] for n, v in self._stacked.items()}  # [N, ...] per tensor

    def opponent_actions(self, obs_b: np.ndarray, sample: bool | None = None) -> np.ndarray:
        """Actions [N, A] of every arena's opponent for its observations ``obs_b`` [N, D].

        When at most ``GROUPED_MAX`` snapshots are in play, one batched call per snapshot on its
        arenas (the iterated game's case: one opponent everywhere); otherwise one call vmapped over
        the arena axis on the per-arena parameters.  No Python loop over arenas; both paths draw
        the same noise ``eps`` [N, A].
        """
        sample = self.opponent_mode == "sample" if sample is None else sample
        with torch.no_grad():
            obs = torch.as_tensor(obs_b, dtype=torch.float32)                        # [N, D]
            if len(self._present) <= self.GROUPED_MAX:
                mean = torch.empty(self.num_envs, self.n_actions)
                log_std = torch.empty(self.num_envs, self.n_actions)
                for k in self._present:
                    rows = torch.as_tensor(np.flatnonzero(self._opp_tasks == k))
                    mean[rows], log_std[rows] = functional_call(self.skeleton, self.snapshots[k], (obs[rows],))
            else:
                mean, log_std = vmap(lambda p, o: functional_call(self.skeleton, p, (o,)))(self._opp, obs[:, None])
                mean, log_std = mean[:, 0], log_std[:, 0]                            # [N, 1, A] -> [N, A]
            if sample:
                mean = mean + log_std.exp() * torch.randn(mean.shape, generator=self.generator)
        return mean.numpy().astype(np.float64)

    # -- episodes --------------------------------------------------------------------
    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.generator.manual_seed(int(seed))
        self._gather()
        obs_a, self._obs_b = self.arenas.reset(seed=seed)
        self._t = 0
        self.outcomes = np.full(self.num_envs, ONGOING, np.int64)
        self._returns = np.zeros(self.num_envs)
        self._held = obs_a.copy()
        return obs_a.copy(), {"opponent": self._opp_tasks.copy()}

    def step(self, actions: np.ndarray):
        if self._t >= self.episode_steps:
            raise RuntimeError(f"the episode ended after {self.episode_steps} steps: call reset")
        a = np.asarray(actions, dtype=np.float64)
        if a.size != self.num_envs * self.n_actions:
            raise ValueError(f"actions must have shape [{self.num_envs}, {self.n_actions}], got {a.shape}")
        live = self.outcomes == ONGOING
        act_b = self.opponent_actions(self._obs_b)
        obs_a, self._obs_b, rew_a, _, done, info = self.arenas.step(a.reshape(self.num_envs, -1), act_b)
        self._t += 1
        decided = live & done
        outcome = np.where(decided, info["outcome"], ONGOING)
        self.outcomes[decided] = info["outcome"][decided]
        raw = np.where(live, rew_a, 0.0)
        reward = raw * self.reward_scale
        self._returns += reward
        # the observation that ended a bout is held from then on
        self._held = np.where(live[:, None], np.where(done[:, None], info["final_obs_a"], obs_a), self._held)
        terminated = self.outcomes != ONGOING
        out = {"outcome": outcome, "reward_raw": raw, "opponent": self._opp_tasks.copy()}
        if self._t == self.episode_steps:
            if np.any(self.outcomes == ONGOING):  # SumoArenas declares the draw at its time limit
                raise RuntimeError("a bout is undecided at the time limit")
            self.last_outcomes, self.last_returns = self.outcomes.copy(), self._returns.copy()
            out["episode_outcome"], out["episode_return"] = self.last_outcomes.copy(), self.last_returns.copy()
        return self._held.copy(), reward, terminated, np.zeros(self.num_envs, bool), out

    def close(self) -> None:
        self.arenas.close()
        self.closed = True


# ---------------------------------------------------------------------------
# Self-play: an opponent that keeps learning, recorded as snapshots
# ---------------------------------------------------------------------------


def selfplay_snapshots(n_arenas: int = 64, body: str = "disc", episode_steps: int = 100, iters: int = 100,
                       snapshot_every: int = 10, hidden: int = 64, seed: int = 0,
                       settings: PPOSettings = SELFPLAY_PPO, reward_scale: float = REWARD_SCALE,
                       checkpoint: str | Path | None = None, checkpoint_every: int = 10,
                       label: str = "self-play", **sumo_kwargs: Any
                       ) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]], dict[str, list]]:
    """PPO self-play: one ``GaussianActorCritic`` plays both sides; returns (final state dict,
    snapshots, history columns).

    Each iteration resets every arena (start positions from the seed's numpy generator), plays
    ``episode_steps`` steps with both sides sampling from the current policy (SumoArenas
    restarts a decided bout at once, and the bout limit is ``episode_steps``, so the first bout
    of every arena ends by the last step; later ones are cut there and bootstrapped with the
    value), and updates the network with :func:`repro.rl.ppo.ppo_update` on both sides'
    2 N T transitions (GAE per side, rewards times ``reward_scale``).  ``settings`` needs one
    reward stream.  Snapshots (state dicts, cloned): the initial network and the network after
    every ``snapshot_every`` iterations, so snapshot k+1 is snapshot k after more learning.

    History columns (per iteration): ``iteration``, ``bouts`` (bouts decided in the iteration),
    ``decided_rate`` (fraction of them won by a side, not drawn), ``a_win_rate`` (fraction won by
    side a; ~1/2 in symmetric self-play), ``mean_bout_steps``, ``return`` (mean per-step reward
    times T, both sides), ``pg_loss``, ``v_loss``, ``entropy``, ``approx_kl``, ``log_std``
    (mean), ``wall_time`` (cumulative seconds).

    Speed and learning (disc, one CPU thread): 64 arenas x 100 steps run at ~4 iterations/s
    (~55k agent-steps/s, both sides).  With the default ring and shaping, the policy beats its
    initial self only after ~150-200 such iterations (snapshot 10 of 200: 81% wins, 0% losses
    against snapshot 0); with ``ring_radius=1.0`` and 10x approach/push shaping
    (``rewards=SumoRewardWeights(approach=10, push=10)``), 32 x 60 at ``lr=1e-3`` gets there in
    ~20 iterations (the pilot test).

    Randomness: actions from a torch generator seeded with ``seed``; PPO's minibatch order from
    torch's global stream inside ``torch.random.fork_rng`` seeded per iteration from the numpy
    generator (the global stream is left as it was).  With ``checkpoint`` the state (network,
    Adam, generators, snapshots, history) is saved every ``checkpoint_every`` iterations and at
    the end, and a rerun resumes to the identical result.
    """
    if settings.n_streams != 1:
        raise ValueError("self-play uses one reward stream: settings.gammas must have length 1")
    if iters < 0 or snapshot_every < 1 or checkpoint_every < 1:
        raise ValueError("iters must be >= 0, snapshot_every and checkpoint_every >= 1")
    env = SumoArenas(n_arenas, body, episode_steps, seed=seed, **sumo_kwargs)
    n, T, D, A = env.num_envs, env.episode_steps, env.obs_dim, env.n_actions
    gen = torch.Generator().manual_seed(int(seed))
    torch_state = torch.random.get_rng_state()
    try:  # the initial network from `seed`, leaving torch's global stream as it was
        torch.manual_seed(seed)
        net = GaussianActorCritic((D,), A, 1, hidden)
    finally:
        torch.random.set_rng_state(torch_state)
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr, eps=1e-5)
    rng = np.random.default_rng(seed)
    columns = ("iteration", "bouts", "decided_rate", "a_win_rate", "mean_bout_steps", "return", "pg_loss",
               "v_loss", "entropy", "approx_kl", "log_std", "wall_time")
    history: dict[str, list] = {c: [] for c in columns}
    snapshots = [{k: v.detach().clone() for k, v in net.state_dict().items()}]
    it, wall = 0, 0.0
    identity = make_identity("selfplay_snapshots", asdict(settings), n_arenas=n, body=body, episode_steps=T,
                             snapshot_every=snapshot_every, hidden=hidden, seed=int(seed), reward_scale=reward_scale,
                             sumo=sumo_kwargs)
    saved = load_checkpoint(checkpoint, identity)
    if saved is not None:
        net.load_state_dict(saved["net"])
        opt.load_state_dict(saved["optimizer"])
        gen.set_state(saved["torch_rng"])
        rng.bit_generator.state = saved["numpy_rng"]
        snapshots, history = saved["snapshots"], {k: list(v) for k, v in saved["history"].items()}
        it, wall = saved["iteration"], saved["wall"]
    gammas, episodic = torch.tensor(settings.gammas), torch.tensor(settings.episodic)

    def state() -> dict:
        return {"net": net.state_dict(), "optimizer": opt.state_dict(), "torch_rng": gen.get_state(),
                "numpy_rng": rng.bit_generator.state, "snapshots": snapshots, "history": history,
                "iteration": it, "wall": wall}

    with Progress(iters, label, unit="iteration", start=min(it, iters)) as bar:
        while it < iters:
            t0 = time.perf_counter()
            obs_a, obs_b = env.reset(seed=int(rng.integers(2**31)))
            obs_buf = torch.zeros(T, 2 * n, D)
            act_buf = torch.zeros(T, 2 * n, A)
            logp_buf, rew_buf, done_buf = torch.zeros(T, 2 * n), torch.zeros(T, 2 * n), torch.zeros(T, 2 * n)
            val_buf = torch.zeros(T, 2 * n, 1)
            outcomes, lengths = [], []
            with torch.no_grad():
                for t in range(T):
                    obs = torch.as_tensor(np.concatenate([obs_a, obs_b]))             # [2N, D]: a then b
                    mean, value = net(obs)
                    actions = mean + net.log_std.exp() * torch.randn(mean.shape, generator=gen)
                    obs_buf[t], act_buf[t], val_buf[t] = obs, actions, value
                    logp_buf[t] = diag_gaussian_logprob(mean, net.log_std, actions)
                    act_np = actions.numpy().astype(np.float64)
                    obs_a, obs_b, rew_a, rew_b, done, info = env.step(act_np[:n], act_np[n:])
                    rew_buf[t] = torch.as_tensor(np.concatenate([rew_a, rew_b]) * reward_scale, dtype=torch.float32)
                    done_buf[t] = torch.as_tensor(np.concatenate([done, done]), dtype=torch.float32)
                    outcomes.append(info["outcome"][done])
                    lengths.append(info["episode_length"][done])
                _, last_value = net(torch.as_tensor(np.concatenate([obs_a, obs_b])))
            adv, ret = gae(rew_buf.unsqueeze(-1), val_buf, done_buf, last_value, gammas, settings.gae_lambda, episodic)
            batch = {"obs": obs_buf.reshape(-1, D), "actions": act_buf.reshape(-1, A),
                     "logprobs": logp_buf.reshape(-1), "values": val_buf.reshape(-1, 1),
                     "returns": ret.reshape(-1, 1), "advantages": adv.reshape(-1, 1)}
            for group in opt.param_groups:
                group["lr"] = settings.lr_at(it + 1, iters)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(rng.integers(2**31)))
                stats = ppo_update(net, opt, batch, settings)
            it += 1
            wall += time.perf_counter() - t0
            o, steps = np.concatenate(outcomes), np.concatenate(lengths)
            row = {"iteration": it, "bouts": int(o.size),
                   "decided_rate": float(np.mean(o != DRAW)) if o.size else float("nan"),
                   "a_win_rate": float(np.mean(o == A_WINS)) if o.size else float("nan"),
                   "mean_bout_steps": float(steps.mean()) if steps.size else float("nan"),
                   "return": float(rew_buf.mean() * T), "pg_loss": stats["pg_loss"], "v_loss": stats["v_loss"],
                   "entropy": stats["entropy"], "approx_kl": stats["approx_kl"],
                   "log_std": float(net.log_std.detach().mean()), "wall_time": wall}
            for k in columns:
                history[k].append(row[k])
            if it % snapshot_every == 0:
                snapshots.append({k: v.detach().clone() for k, v in net.state_dict().items()})
            bar.update(it, decided=row["decided_rate"], ret=row["return"])
            if checkpoint is not None and (it % checkpoint_every == 0 or it == iters):
                save_checkpoint(checkpoint, state(), identity)
    final = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return final, snapshots, history


# ---------------------------------------------------------------------------
# Strategies and the iterated game
# ---------------------------------------------------------------------------


class RoundBatch(NamedTuple):
    """A round's experience, M = ``episodes_per_round * N`` bouts of T steps: obs [M, T, D],
    actions [M, T, A], rewards [M, T] (scaled; 0 after a bout was decided), logprobs [M, T]
    (log q(a|s) of the policy that played, detached), outcomes [M] (int codes, side a's view).
    Bout m is arena ``m % N`` of episode ``m // N``."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    logprobs: torch.Tensor
    outcomes: torch.Tensor

    def grouped(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(obs, actions, rewards, logprobs) with a leading group axis of 1, as
        ``repro.meta.adapt.Trajectories(*batch.grouped())`` takes them: [1, M, T, ...]."""
        return self.obs[None], self.actions[None], self.rewards[None], self.logprobs[None]


class Strategy(Protocol):
    """What the iterated game asks of an adapting agent.

    ``params()`` - the parameter dict (``MetaPolicy`` names) the agent plays the next round
    with; ``observe(batch: RoundBatch)`` - adapt on the round just played (with the parameters
    ``params()`` returned before it).
    """

    def params(self) -> Params: ...

    def observe(self, batch: RoundBatch) -> None: ...


def _copy(theta: Params) -> Params:
    return {k: v.detach().clone().float() for k, v in theta.items()}


class NoAdaptation:
    """Always theta (book: the "no adaptation" baseline)."""

    def __init__(self, theta: Params | dict[str, torch.Tensor]):
        self.theta = actor_parameters(theta)

    def params(self) -> Params:
        return self.theta

    def observe(self, batch: RoundBatch) -> None:
        pass


class Tracking:
    """Continued fine-tuning (book: meta-tracking): after every round, ``steps`` policy-gradient
    steps of plain SGD with step size ``lr`` on the round's experience, from the current phi.

    L(phi) = -mean_{M, T}[ pi_phi(a|s) / q(a|s) * A ] (the first step is REINFORCE: q is the
    policy that played), A the group-baseline advantages of :mod:`repro.meta.adapt` (reward to
    go with discount ``gamma`` minus its mean over the round's bouts, normalised) - the update
    :func:`repro.meta.adapt.tracking_update` makes with ``tracking_optimizer="sgd"``.
    """

    def __init__(self, theta: Params | dict[str, torch.Tensor], lr: float = 1e-3, steps: int = 3,
                 gamma: float = 0.99, hidden: int | None = None):
        if not lr >= 0 or steps < 1:
            raise ValueError("Tracking needs lr >= 0 and steps >= 1")
        self.phi = actor_parameters(theta)
        hidden = self.phi["actor.1.weight"].shape[0] if hidden is None else hidden
        self.settings = MetaSettings(hidden=hidden, gamma=float(gamma), tracking_steps=int(steps),
                                     tracking_lr=float(lr), tracking_optimizer="sgd")
        self.skeleton = MetaPolicy(self.phi["actor.1.weight"].shape[1], self.phi["log_std"].shape[0], hidden)

    def params(self) -> Params:
        return self.phi

    def observe(self, batch: RoundBatch) -> None:
        phi, _ = tracking_update(self.skeleton, {k: v[None] for k, v in self.phi.items()},
                                 Trajectories(*batch.grouped()), self.settings)
        self.phi = {k: v[0] for k, v in phi.items()}


class MetaAdaptation:
    """The paper's test-time adaptation (book: meta-test): the next round is played by
    ``phi = adapt(theta, alpha; round's experience)`` - :func:`repro.meta.adapt.adapt` from the
    meta-learned theta, with the learned step sizes alpha, on the bouts just played by the
    previous phi (its importance weights correct for that)."""

    def __init__(self, theta: Params, alpha: Params, settings, policy: nn.Module | None = None):
        self.theta, self.alpha, self.settings = _copy(theta), {k: a.detach() for k, a in alpha.items()}, settings
        if policy is None:
            obs_dim, act_dim = self.theta["actor.1.weight"].shape[1], self.theta["log_std"].shape[0]
            policy = MetaPolicy(obs_dim, act_dim, self.theta["actor.1.weight"].shape[0])
        self.policy, self.phi = policy, self.theta

    def params(self) -> Params:
        return self.phi

    def observe(self, batch: RoundBatch) -> None:
        phi = adapt(self.policy, self.theta, self.alpha, Trajectories(*batch.grouped()), self.settings)
        self.phi = {k: v[0] for k, v in phi.items()}


def play_episode(env: SumoVsOpponents, params: Params, generator: torch.Generator, reset_seed: int | None = None,
                 skeleton: nn.Module | None = None) -> RoundBatch:
    """One episode of every arena with side a sampling from ``params``; a :class:`RoundBatch` of N bouts."""
    skeleton = skeleton if skeleton is not None else MetaPolicy(env.obs_dim, env.n_actions, env.hidden)
    obs_np, _ = env.reset(seed=reset_seed)
    obs_l, act_l, rew_l, logq_l = [], [], [], []
    with torch.no_grad():
        for _ in range(env.episode_steps):
            obs = torch.as_tensor(obs_np, dtype=torch.float32)
            mean, log_std = functional_call(skeleton, params, (obs,))
            actions = mean + log_std.exp() * torch.randn(mean.shape, generator=generator)
            obs_l.append(obs)
            act_l.append(actions)
            logq_l.append(diag_gaussian_logprob(mean, log_std, actions))
            obs_np, reward, *_ = env.step(actions.numpy())
            rew_l.append(torch.as_tensor(reward, dtype=torch.float32))
    return RoundBatch(torch.stack(obs_l, 1), torch.stack(act_l, 1), torch.stack(rew_l, 1), torch.stack(logq_l, 1),
                      torch.as_tensor(env.last_outcomes))


def iterated_game(env: SumoVsOpponents, strategy: Strategy, rounds: int, episodes_per_round: int = 3, seed: int = 0,
                  schedule: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """R rounds against an improving opponent; returns per-round columns.

    Round r's opponent is snapshot ``schedule[r]`` in every arena (default ``min(r, K - 1)``: a
    newer, more trained opponent each round until the last snapshot).  Our agent plays
    ``episodes_per_round`` episodes (each: one bout in each of the N arenas) with
    ``strategy.params()``, then ``strategy.observe`` gets the round's :class:`RoundBatch`.
    Returns float64 arrays [R]: ``win``, ``loss``, ``draw`` (rates over the round's bouts, side
    a's view; they sum to 1), ``return`` (mean scaled episode return), and ``opponent`` (int).
    Randomness: side a's actions from a torch generator seeded with ``seed``; each episode's
    reset seed (start positions, the opponent's action noise) from ``np.random.default_rng(seed)``.
    """
    if rounds < 1 or episodes_per_round < 1:
        raise ValueError("rounds and episodes_per_round must be >= 1")
    k = env.n_snapshots
    schedule = np.minimum(np.arange(rounds), k - 1) if schedule is None else np.asarray(schedule, np.int64)
    if schedule.shape != (rounds,):
        raise ValueError(f"schedule must have shape [{rounds}], got {schedule.shape}")
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(int(seed))
    skeleton = MetaPolicy(env.obs_dim, env.n_actions, env.hidden)
    cols = {c: np.zeros(rounds) for c in ("win", "loss", "draw", "return")}
    for r in range(rounds):
        env.set_tasks(np.full((env.num_envs, 1), schedule[r]))
        params = strategy.params()
        episodes = [play_episode(env, params, gen, int(rng.integers(2**31)), skeleton)
                    for _ in range(episodes_per_round)]
        batch = RoundBatch(*(torch.cat(parts) for parts in zip(*episodes)))
        rates = outcome_rates(batch.outcomes.numpy())
        for c in ("win", "loss", "draw"):
            cols[c][r] = rates[c]
        cols["return"][r] = float(batch.rewards.sum(1).mean())
        strategy.observe(batch)
    cols["opponent"] = schedule.copy()
    return cols
