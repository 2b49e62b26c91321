"""The PPO (+ optional RND) training loop, with checkpoint and resume.

One :class:`Trainer` owns everything a run needs: the vector env, the
actor-critic, the optional :class:`~repro.rl.rnd.RND` bonus, the optimiser,
the normalisers, the preallocated rollout storage, the visit counts and the
history.  Its phases are explicit methods:

1. :meth:`Trainer.init_obs_norm` - a random agent initialises the RND observation statistics;
2. :meth:`Trainer.collect` - T steps of N envs into the storage;
3. :meth:`Trainer.learn` - intrinsic rewards, GAE per stream, PPO epochs.

:func:`train` runs updates until ``num_updates``, prints progress, saves a
checkpoint every ``checkpoint_every`` updates and resumes from one if it
exists.  The state saved is the whole training state (networks, optimiser,
normalisers, reward filter, step counters, the current observations, the RNG
states, the history and, for synchronous vector envs, the environments
themselves), so a resumed run continues with exactly the update an
uninterrupted one would have made.
"""
from __future__ import annotations

import io
import math
import os
import pickle
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .envs import env_factory, info_array, make_vector_env
from .normalize import RewardForwardFilter, RunningMeanStd
from .ppo import AtariActorCritic, GridActorCritic, MLPActorCritic, PPOSettings, act, gae, ppo_update
from .rnd import RND
from .storage import RolloutStorage


@dataclass(frozen=True)
class RunSpec:
    """What one training run is: task, scale, networks and bonus.

    ``streams``: ``("ext",)`` for plain PPO, ``("ext", "int")`` with RND.  The
    PPO settings give each stream's discount, episodic flag and advantage weight.
    """

    env: str = "rooms"
    env_kwargs: tuple[tuple[str, object], ...] = ()
    num_envs: int = 8
    num_steps: int = 128
    vector_mode: str = "sync"
    seed: int = 0
    net: str = "mlp"               # mlp | grid | atari
    hidden: int = 64
    obs_scale: float = 1.0
    ppo: PPOSettings = field(default_factory=PPOSettings)
    use_rnd: bool = False
    rnd_net: str = "mlp"           # mlp | atari
    rnd_hidden: int = 256
    rnd_proportion: float = 0.25
    rnd_channels: tuple[int, ...] | None = None  # channels RND sees (Atari: the last frame; None: all)
    obs_norm_init_steps: int = 0   # random-agent steps per env to initialise the RND obs statistics
    clip_ext_reward: bool = False


class Trainer:
    def __init__(self, spec: RunSpec, device: torch.device, num_updates: int):
        self.spec, self.device, self.num_updates = spec, device, num_updates
        if spec.use_rnd != (spec.ppo.n_streams == 2):
            raise ValueError("RND needs exactly two reward streams (ext, int); plain PPO one")
        _seed_all(spec.seed)
        self.envs = make_vector_env(env_factory(spec.env, **dict(spec.env_kwargs)), spec.num_envs,
                                    spec.vector_mode, spec.seed)
        obs, info = self.envs.reset(seed=spec.seed)
        obs_space, n_actions = self.envs.single_observation_space, int(self.envs.single_action_space.n)
        self.obs_shape = tuple(obs_space.shape)
        self.obs_dtype = torch.uint8 if obs_space.dtype == np.uint8 else torch.float32
        self.next_obs = torch.as_tensor(obs, device=device)
        K = spec.ppo.n_streams
        if spec.net == "atari":
            self.net = AtariActorCritic(n_actions, K, frames=self.obs_shape[0]).to(device)
        elif spec.net == "grid":
            self.net = GridActorCritic(self.obs_shape, n_actions, K, spec.hidden).to(device)
        else:
            self.net = MLPActorCritic(self.obs_shape, n_actions, K, spec.hidden, spec.obs_scale).to(device)
        params = list(self.net.parameters())
        self.rnd_shape = self.obs_shape if spec.rnd_channels is None else \
            (len(spec.rnd_channels), *self.obs_shape[1:])
        self.rnd = None
        if spec.use_rnd:
            self.rnd = RND(self.rnd_shape, device, spec.rnd_net, spec.rnd_hidden, spec.rnd_proportion)
            params += list(self.rnd.nets.predictor.parameters())
            self.int_rms = RunningMeanStd((), device)
            self.int_filter = RewardForwardFilter(spec.ppo.gammas[1], spec.num_envs, device)
        self.optimizer = torch.optim.Adam(params, lr=spec.ppo.lr, eps=1e-5)
        self.storage = RolloutStorage(spec.num_steps, spec.num_envs, self.obs_shape, K, device,
                                      self.obs_dtype, self.rnd_shape if spec.use_rnd else None)
        self.update = 0
        self.global_step = 0
        self.ep_return = np.zeros(spec.num_envs)
        self.ep_length = np.zeros(spec.num_envs, np.int64)
        self.cell_counts = np.zeros(0, np.int64)
        self.room_counts = np.zeros(0, np.int64)
        self._count(info)
        self.history: list[dict] = []

    # -- bookkeeping ---------------------------------------------------------

    def _count(self, info: dict) -> None:
        """Add the agents' current cells and rooms to the visit counts (host side: envs live there)."""
        n = self.spec.num_envs
        for name in ("cell", "room"):
            ids = info_array(info, name, n)
            ids = ids[ids >= 0]
            if len(ids) == 0:
                continue
            counts = getattr(self, name + "_counts")
            if ids.max() >= len(counts):
                counts = np.concatenate([counts, np.zeros(ids.max() + 1 - len(counts), np.int64)])
            np.add.at(counts, ids, 1)
            setattr(self, name + "_counts", counts)

    def rnd_view(self, obs: torch.Tensor) -> torch.Tensor:
        """The channels of observations [B, C, ...] that the RND networks see."""
        c = self.spec.rnd_channels
        return obs if c is None else obs[:, list(c)]

    # -- phase 1: observation statistics from a random agent -----------------

    def init_obs_norm(self) -> None:
        """Step a uniformly random agent ``obs_norm_init_steps`` steps per env; feed the RND normaliser."""
        if self.rnd is None or self.spec.obs_norm_init_steps == 0:
            return
        buf = []
        for _ in range(self.spec.obs_norm_init_steps):
            obs, _, _, _, info = self.envs.step(self.envs.action_space.sample())
            buf.append(torch.as_tensor(obs, device=self.device))
            self.global_step += self.spec.num_envs  # counted as experience, not as visits
            if len(buf) == self.spec.num_steps:
                self.rnd.obs_rms.update(self.rnd_view(torch.cat(buf)).float())
                buf = []
        if buf:
            self.rnd.obs_rms.update(self.rnd_view(torch.cat(buf)).float())
        self.next_obs = torch.as_tensor(obs, device=self.device)
        self.ep_return[:] = 0
        self.ep_length[:] = 0

    # -- phase 2: a rollout ---------------------------------------------------

    @torch.no_grad()
    def collect(self) -> dict:
        """T steps of all envs; returns the episodes that finished (returns, lengths)."""
        st, T = self.storage, self.spec.num_steps
        returns, lengths = [], []
        for t in range(T):
            st.obs[t] = self.next_obs
            a, logp, v = act(self.net, self.next_obs)
            st.actions[t], st.logprobs[t], st.values[t] = a, logp, v
            obs, r, term, trunc, info = self.envs.step(a.cpu().numpy())
            done = np.logical_or(term, trunc)
            self.ep_return += r
            self.ep_length += 1
            if done.any():
                returns += self.ep_return[done].tolist()
                lengths += self.ep_length[done].tolist()
                self.ep_return[done] = 0
                self.ep_length[done] = 0
            r = np.clip(r, -1, 1) if self.spec.clip_ext_reward else r
            st.rewards[t, :, 0] = torch.as_tensor(r, device=self.device, dtype=torch.float32)
            st.dones[t] = torch.as_tensor(done, device=self.device, dtype=torch.float32)
            self.next_obs = torch.as_tensor(obs, device=self.device)
            if st.next_obs is not None:
                st.next_obs[t] = self.rnd_view(self.next_obs)
            self._count(info)
        self.global_step += T * self.spec.num_envs
        return {"returns": returns, "lengths": lengths}

    # -- phase 3: bonus, advantages, PPO -------------------------------------

    def learn(self) -> dict:
        st, s = self.storage, self.spec.ppo
        stats: dict = {}
        if self.rnd is not None:
            T, N = st.T, st.N
            flat_next = st.next_obs.reshape(T * N, *self.rnd_shape)
            i_raw = self.rnd.bonus(flat_next).reshape(T, N)
            # divide by the running std of the discounted intrinsic return (the forward filter)
            self.int_rms.update(self.int_filter.run(i_raw).reshape(-1))
            st.rewards[:, :, 1] = i_raw / self.int_rms.std.float()
            self.rnd.obs_rms.update(flat_next.float())
            stats["int_reward_raw"] = i_raw.mean()
            stats["int_reward"] = st.rewards[:, :, 1].mean()
        with torch.no_grad():
            _, last_v = self.net(self.next_obs)
        adv, ret = gae(st.rewards, st.values, st.dones, last_v,
                       torch.tensor(s.gammas, device=self.device), s.gae_lambda,
                       torch.tensor(s.episodic, device=self.device))
        batch = st.flat(adv, ret)
        for g in self.optimizer.param_groups:
            g["lr"] = s.lr_at(self.update + 1, self.num_updates)
        aux = None
        if self.rnd is not None:
            aux = lambda idx: self.rnd.loss(batch["next_obs"][idx])  # noqa: E731
        stats.update(ppo_update(self.net, self.optimizer, batch, s, aux))
        return {k: float(v) for k, v in stats.items()}

    def step(self) -> dict:
        """One collect + learn; appends and returns the update's record."""
        t0 = time.perf_counter()
        eps = self.collect()
        t1 = time.perf_counter()
        rec = self.learn()
        t2 = time.perf_counter()
        self.update += 1
        n = self.spec.num_steps * self.spec.num_envs
        rets = eps["returns"]
        rec.update({
            "update": self.update, "global_step": self.global_step,
            "episodes": len(rets),
            "return_mean": float(np.mean(rets)) if rets else math.nan,
            "successes": int(np.sum(np.asarray(rets) > 0)),
            "distinct_cells": int((self.cell_counts > 0).sum()),
            "distinct_rooms": int((self.room_counts > 0).sum()),
            "sps_env": n / (t1 - t0), "sps": n / (t2 - t0),
        })
        self.history.append(rec)
        return rec

    # -- checkpoint ----------------------------------------------------------

    def state_dict(self) -> dict:
        state = {
            "update": self.update, "global_step": self.global_step,
            "net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
            "next_obs": self.next_obs.clone(),
            "ep_return": self.ep_return.copy(), "ep_length": self.ep_length.copy(),
            "cell_counts": self.cell_counts.copy(), "room_counts": self.room_counts.copy(),
            "history": list(self.history), "rng": rng_state(),
            "envs": env_state(self.envs),
        }
        if self.rnd is not None:
            state["rnd"] = self.rnd.state_dict()
            state["int_rms"] = self.int_rms.state_dict()
            state["int_filter"] = self.int_filter.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.update, self.global_step = state["update"], state["global_step"]
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.ep_return, self.ep_length = state["ep_return"].copy(), state["ep_length"].copy()
        self.cell_counts, self.room_counts = state["cell_counts"].copy(), state["room_counts"].copy()
        self.history = list(state["history"])
        if self.rnd is not None:
            self.rnd.load_state_dict(state["rnd"])
            self.int_rms.load_state_dict(state["int_rms"])
            self.int_filter.load_state_dict(state["int_filter"])
        if state["envs"] is not None:
            self.envs.close()
            self.envs = pickle.loads(state["envs"])
            self.next_obs = state["next_obs"].to(self.device)
        else:  # envs that cannot be pickled (subprocesses, emulators) start fresh episodes
            obs, _ = self.envs.reset(seed=self.spec.seed + 7919 * self.update)
            self.next_obs = torch.as_tensor(obs, device=self.device)
            self.ep_return[:] = 0
            self.ep_length[:] = 0
        set_rng_state(state["rng"])

    def close(self) -> None:
        self.envs.close()


# ---------------------------------------------------------------------------
# RNG and environment state
# ---------------------------------------------------------------------------


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
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


def save_checkpoint(trainer: Trainer, path: str | Path) -> Path:
    """Write the whole training state atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(trainer.state_dict(), buf)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)
    return path


def load_checkpoint(trainer: Trainer, path: str | Path) -> None:
    # load on the CPU (RNG states must stay CPU tensors); load_state_dict moves the rest to the device
    trainer.load_state_dict(torch.load(path, map_location="cpu", weights_only=False))


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------


def train(trainer: Trainer, checkpoint: str | Path | None = None, checkpoint_every: int = 0,
          log_every: int = 10, on_update: Callable[[Trainer, dict], None] | None = None,
          label: str = "", stream=sys.stdout) -> list[dict]:
    """Run updates until ``trainer.num_updates``; return the history (one dict per update).

    If ``checkpoint`` exists the run resumes from it; otherwise the RND
    observation statistics are initialised first.  ``on_update(trainer, record)``
    is called after every update (e.g. to snapshot intrinsic-reward maps).
    """
    if checkpoint is not None and Path(checkpoint).exists():
        load_checkpoint(trainer, checkpoint)
        print(f"[{label}] resumed from {checkpoint} at update {trainer.update}", file=stream, flush=True)
    elif trainer.update == 0:
        trainer.init_obs_norm()
    t0, step0 = time.perf_counter(), trainer.global_step
    while trainer.update < trainer.num_updates:
        rec = trainer.step()
        if on_update is not None:
            on_update(trainer, rec)
        if checkpoint is not None and checkpoint_every and trainer.update % checkpoint_every == 0:
            save_checkpoint(trainer, checkpoint)
        if log_every and (trainer.update % log_every == 0 or trainer.update == trainer.num_updates):
            sps = (trainer.global_step - step0) / (time.perf_counter() - t0)
            print(f"[{label}] update {trainer.update}/{trainer.num_updates} steps {trainer.global_step} "
                  f"sps {sps:.0f} return {rec['return_mean']:.3f} cells {rec['distinct_cells']} "
                  f"rooms {rec['distinct_rooms']}", file=stream, flush=True)
    return trainer.history
