"""The PPO training loop with an optional intrinsic bonus, checkpoint and resume.

One :class:`Trainer` owns everything a run needs: the vector env, the
actor-critic (built from the registry :data:`repro.rl.ppo.NETWORKS`), the
optional intrinsic bonus (any :class:`repro.rl.bonus.IntrinsicBonus`, built
from the run's :class:`~repro.rl.bonus.BonusSettings`: RND, curiosity, ...),
the optimiser, the normalisers, the preallocated rollout storage, the trackers
(:mod:`repro.rl.tracking`: visit counts and the like) and the history.  Its
phases are explicit methods:

1. :meth:`Trainer.random_walk` - a uniformly random agent steps every env
   (for every method, so all agents start from the same displaced positions);
   with a bonus its observations initialise the bonus's observation
   statistics {eq}`rnd-obs-norm`;
2. :meth:`Trainer.collect` - T steps of N envs into the storage;
3. :meth:`Trainer.learn` - intrinsic rewards (e.g. {eq}`rnd-bonus`) normalised
   by the running std of the discounted intrinsic return {eq}`rnd-rew-norm`,
   GAE per stream {eq}`rnd-gae`, PPO epochs {eq}`rnd-ppo` with the bonus's own
   loss on the same minibatches.

:func:`train` runs updates until ``num_updates``, reports through
:class:`repro.progress.Progress`, saves a checkpoint every
``checkpoint_every`` updates with :func:`repro.checkpoint.save_checkpoint` and
resumes from one if it exists (a checkpoint written by another run raises
:class:`repro.checkpoint.CheckpointMismatch`).  The state saved is the whole
training state (networks, optimiser, normalisers, reward filter, step
counters, the current observations, the RNG states, the history and, for
synchronous vector envs, the environments themselves), so a resumed run
continues with exactly the update an uninterrupted one would have made.

Gridworld/Montezuma bookkeeping (distinct cells and rooms, the share of
steps at a noisy TV) lives in trackers (:mod:`repro.rl.tracking`), so the
loop itself knows nothing about any environment.
"""
from __future__ import annotations

import dataclasses
import math
import pickle
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..checkpoint import load_checkpoint, make_identity, save_checkpoint
from ..progress import Progress
from ..seed import seed_env, seed_everything
from .bonus import BonusSettings, IntrinsicBonus
from .envs import env_factory, make_vector_env
from .normalise import RewardForwardFilter, RunningMeanStd
from .ppo import PPOSettings, act, build_network, gae, ppo_update
from .storage import RolloutStorage
from .tracking import DEFAULT_TRACKERS


@dataclass(frozen=True)
class RLRun:
    """What one training run is: task, scale, networks, bonus and trackers.

    ``net`` names an actor-critic in :data:`repro.rl.ppo.NETWORKS` (``mlp``,
    ``grid``, ``minatar``, ``atari``); ``hidden`` and ``obs_scale`` are its
    settings.  ``ppo.gammas`` has one entry per reward stream: ``("ext",)``
    for plain PPO, ``("ext", "int")`` with a ``bonus`` (e.g.
    :class:`repro.rl.rnd.RNDSettings`, :class:`repro.rl.curiosity.CuriositySettings`).
    The PPO settings give each stream's discount, episodic flag and advantage
    weight (pure curiosity: extrinsic weight 0; infinite horizon: intrinsic
    stream not episodic, see :mod:`repro.rl.bonus`).  ``random_walk_steps``
    random-agent steps per env precede training whatever the method (a bonus
    initialises its observation statistics from them; trackers do not count
    them).  ``trackers`` are :mod:`repro.rl.tracking` settings.
    """

    env: str = "rooms"
    env_kwargs: tuple[tuple[str, object], ...] = ()
    num_envs: int = 8
    num_steps: int = 128
    vector_mode: str = "sync"
    seed: int = 0
    net: str = "mlp"               # a name in repro.rl.ppo.NETWORKS
    hidden: int = 64
    obs_scale: float = 1.0
    ppo: PPOSettings = field(default_factory=PPOSettings)
    bonus: BonusSettings | None = None
    random_walk_steps: int = 0     # random-agent steps per env before training (all methods)
    clip_ext_reward: bool = False
    trackers: tuple = DEFAULT_TRACKERS


class Trainer:
    """PPO with K reward streams (and an intrinsic bonus when ``run.bonus`` is set) on a vector env.

    ``Trainer(run, device, num_updates)`` seeds python/numpy/torch and the envs
    with ``run.seed`` and builds everything; :func:`train` drives it (or call
    :meth:`random_walk` once, then :meth:`step` per update).  ``history`` holds
    one plain dict per update (losses, episode returns, visit counts, steps/s).
    """

    def __init__(self, run: RLRun, device: torch.device, num_updates: int):
        self.spec, self.device, self.num_updates = run, device, num_updates
        if (run.bonus is not None) != (run.ppo.n_streams == 2):
            raise ValueError("an intrinsic bonus needs exactly two reward streams (ext, int); plain PPO one")
        seed_everything(run.seed)
        self.envs = make_vector_env(env_factory(run.env, **dict(run.env_kwargs)), run.num_envs,
                                    run.vector_mode, run.seed)
        obs, info = self.envs.reset(seed=run.seed)
        obs_space = self.envs.single_observation_space
        self.obs_shape = tuple(obs_space.shape)
        self.obs_dtype = torch.uint8 if obs_space.dtype == np.uint8 else torch.float32
        self.next_obs = torch.as_tensor(obs, device=device)
        self._build_learner(int(self.envs.single_action_space.n))
        self.update = 0
        self.global_step = 0
        self.ep_return = np.zeros(run.num_envs)
        self.ep_length = np.zeros(run.num_envs, np.int64)
        self.trackers = [t.build() for t in run.trackers]
        self._track(info, reset=True)
        self.history: list[dict] = []

    def _build_learner(self, n_actions: int) -> None:
        """Actor-critic, bonus (and its reward normaliser), optimiser and rollout storage."""
        run, device, K = self.spec, self.device, self.spec.ppo.n_streams
        self.net = build_network(run.net, self.obs_shape, n_actions, K, run.hidden, run.obs_scale).to(device)
        params = list(self.net.parameters())
        self.bonus: IntrinsicBonus | None = None
        if run.bonus is not None:
            self.bonus = run.bonus.build(self.obs_shape, n_actions, device)
            params += list(self.bonus.parameters())
            self.int_rms = RunningMeanStd((), device)
            self.int_filter = RewardForwardFilter(run.ppo.gammas[1], run.num_envs, device)
        self.optimizer = torch.optim.Adam(params, lr=run.ppo.lr, eps=1e-5)
        self.storage = RolloutStorage(run.num_steps, run.num_envs, self.obs_shape, K, device, self.obs_dtype,
                                      self.bonus.view_shape if self.bonus is not None else None)

    def identity(self, experiment: str = "rl") -> dict:
        """The checkpoint identity of this run: ``experiment``, the :class:`RLRun` and ``num_updates``."""
        return make_identity(experiment, dataclasses.asdict(self.spec), num_updates=self.num_updates)

    # -- bookkeeping ---------------------------------------------------------

    def _track(self, info: dict, reset: bool = False) -> None:
        """Feed the vector env's ``info`` to every tracker (host side: envs live there)."""
        for t in self.trackers:
            t.update(info, self.spec.num_envs, reset)

    def tracker(self, key: str):
        """The tracker of ``info[key]`` (e.g. ``trainer.tracker("cell").counts``)."""
        for t in self.trackers:
            if t.key == key:
                return t
        raise KeyError(f"no tracker for {key!r}; this run tracks {[t.key for t in self.trackers]}")

    # -- phase 1: a random walk (and the bonus's observation statistics) -----

    def random_walk(self) -> None:
        """Step a uniformly random agent ``random_walk_steps`` steps per env, for every method.

        The steps count as experience (``global_step``) but not as visits.
        With a bonus the observations initialise its observation statistics
        ({eq}`rnd-obs-norm` for RND, as in the papers); without one the walk
        only moves the agents, so PPO starts from the same displaced
        positions and episode clocks as the bonus agents with the same seed.
        """
        if self.spec.random_walk_steps == 0:
            return
        buf = []
        for _ in range(self.spec.random_walk_steps):
            obs, _, _, _, info = self.envs.step(self.envs.action_space.sample())
            self.global_step += self.spec.num_envs
            if self.bonus is None:
                continue
            buf.append(torch.as_tensor(obs, device=self.device))
            if len(buf) == self.spec.num_steps:
                self.bonus.observe(self.bonus.view(torch.cat(buf)), random_walk=True)
                buf = []
        if buf:
            self.bonus.observe(self.bonus.view(torch.cat(buf)), random_walk=True)
        self.next_obs = torch.as_tensor(obs, device=self.device)
        self.ep_return[:] = 0
        self.ep_length[:] = 0

    # -- phase 2: a rollout ---------------------------------------------------

    @torch.no_grad()
    def collect(self) -> dict:
        """T steps of all envs into the storage; returns the episodes that finished (returns, lengths)."""
        st, T = self.storage, self.spec.num_steps
        returns, lengths = [], []
        for t in range(T):
            st.obs[t] = self.next_obs
            a, logp, v = act(self.net, self.next_obs)
            st.actions[t], st.logprobs[t], st.values[t] = a, logp, v
            obs, r, term, trunc, info = self.envs.step(a.cpu().numpy())
            done = np.logical_or(term, trunc)
            self._episode_ends(r, done, returns, lengths)
            r = np.clip(r, -1, 1) if self.spec.clip_ext_reward else r
            st.rewards[t, :, 0] = torch.as_tensor(r, device=self.device, dtype=torch.float32)
            st.dones[t] = torch.as_tensor(done, device=self.device, dtype=torch.float32)
            self.next_obs = torch.as_tensor(obs, device=self.device)
            if st.next_obs is not None:
                st.next_obs[t] = self.bonus.view(self.next_obs)
            self._track(info)
        self.global_step += T * self.spec.num_envs
        return {"returns": returns, "lengths": lengths}

    def _episode_ends(self, r: np.ndarray, done: np.ndarray, returns: list, lengths: list) -> None:
        """Accumulate the (unclipped) episodic extrinsic return; move finished episodes to the lists."""
        self.ep_return += r
        self.ep_length += 1
        if done.any():
            returns += self.ep_return[done].tolist()
            lengths += self.ep_length[done].tolist()
            self.ep_return[done] = 0
            self.ep_length[done] = 0

    # -- phase 3: bonus, advantages, PPO -------------------------------------

    def intrinsic_rewards(self, batch: dict) -> dict:
        """Fill the storage's intrinsic stream with the bonus (e.g. {eq}`rnd-bonus`) / std of the intrinsic return {eq}`rnd-rew-norm`."""
        st = self.storage
        T, N = st.T, st.N
        i_raw = self.bonus.bonus(batch["bonus_obs"], batch["actions"], batch["next_obs"]).reshape(T, N)
        # rnd-rew-norm: divide by the running std of the discounted intrinsic return (the forward filter)
        self.int_rms.update(self.int_filter.run(i_raw).reshape(-1))
        st.rewards[:, :, 1] = i_raw / self.int_rms.std.float()
        self.bonus.observe(batch["next_obs"], random_walk=False)  # rnd-obs-norm: RND's statistics keep tracking
        return {"int_reward_raw": i_raw.mean(), "int_reward": st.rewards[:, :, 1].mean()}

    def learn(self) -> dict:
        """Bonus, GAE per stream, then PPO epochs with the bonus's own loss on the same minibatches."""
        s = self.spec.ppo
        stats, transitions, batch = self._rollout_batch()
        for g in self.optimizer.param_groups:
            g["lr"] = s.lr_at(self.update + 1, self.num_updates)
        aux = None
        if self.bonus is not None:
            def aux(idx: torch.Tensor) -> torch.Tensor:  # e.g. rnd-loss, on PPO's minibatch indices
                return self.bonus.loss(transitions["bonus_obs"][idx], batch["actions"][idx], batch["next_obs"][idx])
        stats.update(ppo_update(self.net, self.optimizer, batch, s, aux))  # rnd-ppo
        return {k: float(v) for k, v in stats.items()}

    def _rollout_batch(self) -> tuple[dict, dict, dict]:
        """The rollout ready for PPO: (intrinsic-reward statistics, transitions, flat batch with advantages)."""
        st, s = self.storage, self.spec.ppo
        stats: dict = {}
        transitions: dict = {}
        if self.bonus is not None:
            transitions = st.transitions()
            transitions["bonus_obs"] = self.bonus.view(transitions["obs"])
            stats = self.intrinsic_rewards(transitions)
        with torch.no_grad():
            _, last_v = self.net(self.next_obs)
        # rnd-gae: one GAE per stream, episode ends cut only the episodic ones
        adv, ret = gae(st.rewards, st.values, st.dones, last_v,
                       torch.tensor(s.gammas, device=self.device), s.gae_lambda,
                       torch.tensor(s.episodic, device=self.device))
        return stats, transitions, st.flat(adv, ret)

    def step(self) -> dict:
        """One collect + learn; appends and returns the update's record."""
        t0 = time.perf_counter()
        eps = self.collect()
        t1 = time.perf_counter()
        rec = self.learn()
        t2 = time.perf_counter()
        self.update += 1
        rec = self._record(rec, eps["returns"], t1 - t0, t2 - t0)
        self.history.append(rec)
        return rec

    def _record(self, rec: dict, rets: list, collect_s: float, update_s: float) -> dict:
        """The update's history record: ``rec`` (losses) + episodes, trackers, steps/s."""
        n = self.spec.num_steps * self.spec.num_envs
        rec.update({
            "update": self.update, "global_step": self.global_step,
            "episodes": len(rets),
            "return_mean": float(np.mean(rets)) if rets else math.nan,
            "successes": int(np.sum(np.asarray(rets) > 0)),
        })
        for t in self.trackers:
            rec.update(t.record())
        rec.update({"sps_env": n / collect_s, "sps": n / update_s})
        return rec

    # -- checkpoint ----------------------------------------------------------

    def read_checkpoint(self, path: str | Path, identity: dict) -> dict | None:
        """The state saved at ``path`` by the run ``identity`` (None if none; see :func:`repro.checkpoint.load_checkpoint`)."""
        return load_checkpoint(path, identity)

    def write_checkpoint(self, path: str | Path, identity: dict) -> None:
        """Save :meth:`state_dict` to ``path`` with ``identity``."""
        save_checkpoint(path, self.state_dict(), identity)

    def state_dict(self) -> dict:
        """The whole training state (see the module docstring)."""
        state = {
            "update": self.update, "global_step": self.global_step,
            "net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
            "next_obs": self.next_obs.clone(),
            "ep_return": self.ep_return.copy(), "ep_length": self.ep_length.copy(),
            "trackers": [t.state_dict() for t in self.trackers],
            "history": list(self.history), "rng": rng_state(),
            "envs": env_state(self.envs),
        }
        if self.bonus is not None:
            state["bonus"] = self.bonus.state_dict()
            state["int_rms"] = self.int_rms.state_dict()
            state["int_filter"] = self.int_filter.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; envs that could not be pickled start fresh episodes."""
        self.update, self.global_step = state["update"], state["global_step"]
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.ep_return, self.ep_length = state["ep_return"].copy(), state["ep_length"].copy()
        for t, ts in zip(self.trackers, state["trackers"], strict=True):
            t.load_state_dict(ts)
        self.history = list(state["history"])
        if self.bonus is not None:
            self.bonus.load_state_dict(state["bonus"])
            self.int_rms.load_state_dict(state["int_rms"])
            self.int_filter.load_state_dict(state["int_filter"])
        if state["envs"] is not None:
            self.envs.close()
            self.envs = pickle.loads(state["envs"])
            self.next_obs = state["next_obs"].to(self.device)
        else:  # envs that cannot be pickled (subprocesses, emulators) start fresh episodes
            seed = self.spec.seed + 7919 * self.update
            seed_env(self.envs, seed)
            obs, _ = self.envs.reset(seed=seed)
            self.next_obs = torch.as_tensor(obs, device=self.device)
            self.ep_return[:] = 0
            self.ep_length[:] = 0
        set_rng_state(state["rng"])

    def close(self) -> None:
        """Close the environments (subprocesses, emulators)."""
        self.envs.close()


# ---------------------------------------------------------------------------
# RNG and environment state
# ---------------------------------------------------------------------------


def rng_state() -> dict:
    """The global python / numpy / torch (and CUDA) RNG states, for a checkpoint."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def env_state(envs) -> bytes | None:
    """A pickle of a synchronous vector env (its episodes and RNGs), or None if it cannot be pickled."""
    if not isinstance(envs, __import__("gymnasium").vector.SyncVectorEnv):
        return None
    try:
        return pickle.dumps(envs)
    except Exception:  # e.g. an emulator handle
        return None


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------


def train(trainer: Trainer, checkpoint: str | Path | None = None, checkpoint_every: int = 0,
          identity: dict | None = None, on_update: Callable[[Trainer, dict], None] | None = None,
          label: str = "rl", progress: bool = True, progress_every_s: float = 15.0,
          stop_after: int | None = None) -> dict[str, np.ndarray]:
    """Run updates until ``trainer.num_updates``; return the history as :func:`columns` (one array per field).

    If ``checkpoint`` exists the run resumes from it (its identity must equal
    ``identity``, by default :meth:`Trainer.identity`, else
    :class:`~repro.checkpoint.CheckpointMismatch`); otherwise the random walk
    runs first.  Every ``checkpoint_every`` updates the state is saved there.
    ``on_update(trainer, record)`` is called after every update (e.g. to
    snapshot intrinsic-reward maps).  With ``progress`` a
    :class:`~repro.progress.Progress` reports the updates.  ``stop_after``
    ends the loop after that update (to test resuming).  The trainer reads and
    writes the checkpoint (:meth:`Trainer.read_checkpoint`; a data-parallel
    trainer, :mod:`repro.rl.distributed`, does it on rank 0 only).
    """
    identity = identity if identity is not None else trainer.identity()
    state = trainer.read_checkpoint(checkpoint, identity) if checkpoint is not None else None
    if state is not None:
        trainer.load_state_dict(state)
    elif trainer.update == 0:
        trainer.random_walk()
    bar = Progress(trainer.num_updates, label, unit="update", every_s=progress_every_s,
                   start=trainer.update) if progress else None
    if bar is not None and state is not None:
        bar.log(f"resumed from {checkpoint} at update {trainer.update}")
    while trainer.update < (trainer.num_updates if stop_after is None else min(stop_after, trainer.num_updates)):
        rec = trainer.step()
        if on_update is not None:
            on_update(trainer, rec)
        if checkpoint is not None and checkpoint_every and trainer.update % checkpoint_every == 0:
            trainer.write_checkpoint(checkpoint, identity)
        if bar is not None:
            bar.update(trainer.update, steps=trainer.global_step, ret=rec["return_mean"],
                       **{k.removeprefix("distinct_"): rec[k] for k in rec if k.startswith(("distinct_", "share_"))})
    if bar is not None:
        bar.close()
    return columns(trainer.history)


def columns(records: list[dict]) -> dict[str, np.ndarray]:
    """Per-update records -> one float array per field, in update order (the shape every chapter plots).

    ``Trainer.history`` keeps one dict per update (what a checkpoint stores);
    training functions across the library return histories as columns, e.g.
    ``h["global_step"]`` against ``h["distinct_cells"]``.
    """
    keys = list(records[0]) if records else []
    return {k: np.array([r.get(k, math.nan) for r in records], dtype=float) for k in keys}


def recent_return(history: dict, last: int) -> float:
    """Episode-weighted mean extrinsic return of the episodes that ended in the last ``last`` updates (NaN if none).

    ``history`` is :func:`columns` output; each update's ``return_mean`` is
    weighted by its number of finished ``episodes``.
    """
    eps = np.asarray(history["episodes"], float)[-last:]
    ret = np.asarray(history["return_mean"], float)[-last:]
    ended = eps > 0
    n = eps[ended].sum()
    return float((ret[ended] * eps[ended]).sum() / n) if n else math.nan
