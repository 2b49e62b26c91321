"""The RND chapter's experiments: PPO vs PPO+RND (episodic / non-episodic intrinsic return).

At ``smoke`` and ``book`` the task is the ``rooms`` gridworld (3 x 3 rooms,
sparse reward in the far corner, see :mod:`repro.rl.envs`); at ``paper`` it is
``ALE/MontezumaRevenge-v5`` with the paper's preprocessing, networks and
Table 5 hyperparameters.  :func:`run_method` trains one (method, seed) pair and
returns plain data; :func:`run_all` runs the whole grid of methods x seeds.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError, ProfileConfig, param
from .envs import rooms_all_states
from .ppo import PPOSettings
from .trainer import RunSpec, Trainer, train

METHODS = ("ppo", "rnd_episodic", "rnd")
METHOD_LABELS = {"ppo": "PPO", "rnd_episodic": "PPO+RND (episodic int.)", "rnd": "PPO+RND (non-episodic int.)"}
ENVS = ("rooms", "ALE/MontezumaRevenge-v5")

# The paper's Table 1 (mean episodic return), from the fact sheet.
PAPER_TABLE1 = {
    "Montezuma's Revenge": {"RND": 8152, "PPO": 2497, "dynamics": 400, "human": 4753},
    "Gravitar": {"RND": 3906, "PPO": 3426, "dynamics": 3371, "human": 3351},
    "Pitfall!": {"RND": -3, "PPO": 0, "dynamics": 0, "human": 6464},
    "Private Eye": {"RND": 8666, "PPO": 105, "dynamics": 33, "human": 69571},
    "Solaris": {"RND": 3282, "PPO": 3387, "dynamics": 3246, "human": 12327},
    "Venture": {"RND": 1859, "PPO": 0, "dynamics": 1712, "human": 1188},
}


@dataclass(frozen=True)
class RNDConfig(ProfileConfig):
    env: str = param("rooms", "task: the rooms gridworld or an Atari game", choices=ENVS)
    room_size: int = param(5, "rooms task: cells per room side", min=2)
    rooms_per_side: int = param(3, "rooms task: rooms per side of the square layout", min=2)
    max_episode_steps: int = param(400, "rooms task: steps before an episode is truncated", min=10)
    methods: tuple[str, ...] = param(METHODS, "which agents to train", choices=METHODS)
    n_seeds: int = param(3, "seeds per method (seed, seed+1, ...)", min=1)
    num_envs: int = param(16, "parallel environments N", min=1)
    num_steps: int = param(128, "rollout length T per update", min=2)
    total_steps: int = param(122880, "agent steps per run (all envs together, excluding the random-agent init)", min=1)
    vector_mode: str = param("sync", "gymnasium vector env: one process or a subprocess per env", choices=("sync", "async"))
    hidden: int = param(64, "policy MLP width (gridworld)", min=1)
    rnd_hidden: int = param(128, "RND network width (gridworld)", min=1)
    lr: float = param(1e-3, "Adam learning rate", min=0.0)
    anneal_lr: bool = param(False, "decay the learning rate linearly to 0")
    gamma_ext: float = param(0.999, "extrinsic discount gamma_E", min=0.0, max=1.0)
    gamma_int: float = param(0.99, "intrinsic discount gamma_I", min=0.0, max=1.0)
    gae_lambda: float = param(0.95, "GAE lambda", min=0.0, max=1.0)
    epochs: int = param(4, "PPO epochs per update", min=1)
    minibatches: int = param(4, "minibatches per epoch", min=1)
    clip_coef: float = param(0.2, "PPO clip range epsilon", min=0.0)
    ent_coef: float = param(0.01, "entropy bonus coefficient", min=0.0)
    vf_coef: float = param(0.5, "value loss coefficient", min=0.0)
    max_grad_norm: float = param(0.5, "global gradient-norm clip", min=0.0)
    clip_value_loss: bool = param(True, "clip the value loss like the policy ratio")
    ext_coef: float = param(2.0, "weight of the extrinsic advantage", min=0.0)
    int_coef: float = param(1.0, "weight of the intrinsic advantage", min=0.0)
    update_proportion: float = param(0.25, "fraction of each batch the RND predictor trains on", min=0.0, max=1.0)
    obs_norm_init_steps: int = param(128, "random-agent steps per env that initialise the RND obs statistics", min=0)
    clip_ext_reward: bool = param(False, "clip extrinsic rewards to [-1, 1] (Atari)")
    n_maps: int = param(4, "snapshots of the intrinsic-reward map per RND run (rooms task)", min=0)
    checkpoint_every: int = param(0, "save the training state every this many updates (0: never)", min=0)
    checkpoint_dir: str = param("", "where checkpoints live; a run finding its checkpoint there resumes "
                                "('' = <run folder>/checkpoints)")
    log_every: int = param(20, "progress line every this many updates (0: silent)", min=0)
    probe_montezuma_steps: int = param(0, "steps of a Montezuma steps/s probe with the paper's nets (0: skip)", min=0)

    PROFILES = {
        "smoke": dict(n_seeds=2, num_envs=8, num_steps=64, total_steps=2048, max_episode_steps=100,
                      obs_norm_init_steps=16, n_maps=2, log_every=0, probe_montezuma_steps=0),
        "book": dict(probe_montezuma_steps=64),
        "paper": dict(env="ALE/MontezumaRevenge-v5", methods=("ppo", "rnd"), n_seeds=1, num_envs=128,
                      num_steps=128, total_steps=30_000 * 128 * 128, vector_mode="async", lr=1e-4,
                      clip_coef=0.1, ent_coef=1e-3, vf_coef=1.0, clip_value_loss=False, gamma_ext=0.999,
                      gamma_int=0.99, update_proportion=0.25, obs_norm_init_steps=50 * 128,
                      clip_ext_reward=True, n_maps=0, checkpoint_every=100, log_every=10),
    }

    def check(self) -> None:
        if (self.num_envs * self.num_steps) % self.minibatches:
            raise ConfigError("num_envs * num_steps must be divisible by minibatches")
        if self.total_steps < self.num_envs * self.num_steps:
            raise ConfigError("total_steps must cover at least one rollout (num_envs * num_steps)")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError("methods must not repeat")

    @property
    def num_updates(self) -> int:
        return self.total_steps // (self.num_envs * self.num_steps)

    @property
    def is_atari(self) -> bool:
        return self.env.startswith("ALE/")

    def spec(self, method: str, seed: int) -> RunSpec:
        """The training run for ``method`` with ``seed``."""
        rnd = method != "ppo"
        ppo = PPOSettings(
            lr=self.lr, anneal_lr=self.anneal_lr,
            gammas=(self.gamma_ext, self.gamma_int) if rnd else (self.gamma_ext,),
            episodic=(True, method == "rnd_episodic") if rnd else (True,),
            adv_coefs=(self.ext_coef, self.int_coef) if rnd else (1.0,),
            gae_lambda=self.gae_lambda, epochs=self.epochs, minibatches=self.minibatches,
            clip_coef=self.clip_coef, ent_coef=self.ent_coef, vf_coef=self.vf_coef,
            max_grad_norm=self.max_grad_norm, clip_value_loss=self.clip_value_loss, norm_adv=True)
        if self.is_atari:
            return RunSpec(env=self.env, num_envs=self.num_envs, num_steps=self.num_steps,
                           vector_mode=self.vector_mode, seed=seed, net="atari", ppo=ppo, use_rnd=rnd,
                           rnd_net="atari", rnd_proportion=self.update_proportion, rnd_channels=(-1,),
                           obs_norm_init_steps=self.obs_norm_init_steps if rnd else 0,
                           clip_ext_reward=self.clip_ext_reward)
        env_kwargs = (("room_size", self.room_size), ("rooms_per_side", self.rooms_per_side),
                      ("max_steps", self.max_episode_steps))
        return RunSpec(env="rooms", env_kwargs=env_kwargs, num_envs=self.num_envs, num_steps=self.num_steps,
                       vector_mode=self.vector_mode, seed=seed, net="grid", hidden=self.hidden, ppo=ppo,
                       use_rnd=rnd, rnd_net="mlp", rnd_hidden=self.rnd_hidden, rnd_channels=(0,),
                       rnd_proportion=self.update_proportion,
                       obs_norm_init_steps=self.obs_norm_init_steps if rnd else 0,
                       clip_ext_reward=self.clip_ext_reward)


# ---------------------------------------------------------------------------
# Intrinsic-reward maps (rooms task)
# ---------------------------------------------------------------------------


def intrinsic_map(trainer: Trainer, states: torch.Tensor, cells: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The raw bonus i of every free cell (mean over the 4 headings) as an [H, W] map, NaN on walls."""
    bonus = trainer.rnd.bonus(trainer.rnd_view(states)).reshape(-1, 4).mean(1).cpu().numpy()  # [F*4] -> [F, 4] -> [F]
    out = np.full(shape, np.nan)
    out[cells[:, 1], cells[:, 0]] = bonus
    return out


def visit_map(counts: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Cell visit counts (cell id = y * W + x) as an [H, W] array."""
    H, W = shape
    full = np.zeros(H * W, np.int64)
    full[:min(len(counts), H * W)] = counts[:H * W]
    return full.reshape(H, W)


# ---------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------


def run_method(cfg: RNDConfig, method: str, seed: int, device: torch.device,
               checkpoint: str | Path | None = None, stream=sys.stdout) -> dict:
    """Train one agent; return its history, visit counts, and (rooms + RND) intrinsic-reward maps."""
    trainer = Trainer(cfg.spec(method, seed), device, cfg.num_updates)
    maps: list[dict] = []
    snap_at: set[int] = set()
    if trainer.rnd is not None and not cfg.is_atari and cfg.n_maps > 0:
        states_np, cells = rooms_all_states(trainer.envs.envs[0])
        states = torch.as_tensor(states_np, device=device)
        shape = states_np.shape[2:]
        # the first snapshot after update 1, the last after the final update
        snap_at = {max(1, round(cfg.num_updates * k / max(cfg.n_maps - 1, 1))) for k in range(cfg.n_maps)}

    def snapshot(tr: Trainer, rec: dict) -> None:
        if tr.update in snap_at:
            maps.append({"update": tr.update, "global_step": tr.global_step,
                         "bonus": intrinsic_map(tr, states, cells, shape),
                         "visits": visit_map(tr.cell_counts, shape)})

    t0 = time.perf_counter()
    history = train(trainer, checkpoint=checkpoint, checkpoint_every=cfg.checkpoint_every,
                    log_every=cfg.log_every, on_update=snapshot, label=f"{method} seed {seed}", stream=stream)
    wall = time.perf_counter() - t0
    out = {"method": method, "seed": seed, "history": history, "maps": maps, "wall_s": wall,
           "cell_counts": trainer.cell_counts.copy(), "room_counts": trainer.room_counts.copy(),
           "global_step": trainer.global_step}
    trainer.close()
    return out


def run_all(cfg: RNDConfig, device: torch.device, run_dir: str | Path | None = None,
            stream=sys.stdout) -> list[dict]:
    """Every method x seed, in order; seeds are cfg.seed, cfg.seed + 1, ...

    With ``cfg.checkpoint_every`` > 0 each run checkpoints to
    ``<checkpoint_dir>/<method>-seed<seed>.pt`` and resumes from that file if it exists.
    """
    ckdir = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else Path(run_dir or ".") / "checkpoints"
    results = []
    for method in cfg.methods:
        for r in range(cfg.n_seeds):
            ckpt = ckdir / f"{method}-seed{cfg.seed + r}.pt" if cfg.checkpoint_every else None
            res = run_method(cfg, method, cfg.seed + r, device, checkpoint=ckpt, stream=stream)
            print(f"[rnd] {method} seed {cfg.seed + r}: {res['global_step']} steps in {res['wall_s']:.1f}s, "
                  f"{summarise(res)['distinct_cells']} cells, {summarise(res)['successes']} successes",
                  file=stream, flush=True)
            results.append(res)
    return results


def summarise(res: dict) -> dict:
    """Per-run numbers: distinct cells/rooms, episodes reaching the goal, mean return of the last 20%."""
    h = res["history"]
    tail = h[-max(1, len(h) // 5):]
    rets = [x["return_mean"] for x in tail if not math.isnan(x["return_mean"])]
    return {"distinct_cells": h[-1]["distinct_cells"], "distinct_rooms": h[-1]["distinct_rooms"],
            "successes": int(sum(x["successes"] for x in h)),
            "final_return": float(np.mean(rets)) if rets else 0.0,
            "sps": res["global_step"] / res["wall_s"]}


def frequent_cell_bonus_ratio(res: dict, quantile: float = 0.9) -> float:
    """Bonus on the most-visited cells (top ``1 - quantile`` by final visits) at the last map / first map."""
    first, last = res["maps"][0], res["maps"][-1]
    v = last["visits"].astype(float)
    free = ~np.isnan(last["bonus"])
    thresh = np.quantile(v[free], quantile)
    top = free & (v >= thresh)
    return float(np.nanmean(last["bonus"][top]) / np.nanmean(first["bonus"][top]))


def rare_vs_frequent_bonus(res: dict, quantile: float = 0.1) -> float:
    """At the last map: mean bonus on the least-visited cells / on the most-visited cells.

    Only cells visited at least once count (the goal, never trained on because
    reaching it ends the episode, is left out); the two groups are the bottom
    and top ``quantile`` of visit counts.
    """
    last = res["maps"][-1]
    v = last["visits"].astype(float)
    ok = ~np.isnan(last["bonus"]) & (v > 0)
    lo, hi = np.quantile(v[ok], quantile), np.quantile(v[ok], 1 - quantile)
    return float(np.mean(last["bonus"][ok & (v <= lo)]) / np.mean(last["bonus"][ok & (v >= hi)]))


# ---------------------------------------------------------------------------
# Montezuma's Revenge probe: steps per second with the paper's networks
# ---------------------------------------------------------------------------


def montezuma_probe(steps: int, num_envs: int = 2, vector_mode: str = "sync",
                    device: torch.device | None = None) -> dict:
    """Time ``steps`` rollout steps of ``num_envs`` Montezuma envs with the paper's policy and RND nets, then one update.

    Returns env steps/s for collection alone and including the update, and the rooms seen.
    """
    cfg = RNDConfig.for_profile("paper", num_envs=num_envs, num_steps=steps, total_steps=num_envs * steps,
                                obs_norm_init_steps=min(steps, 8), vector_mode=vector_mode, methods=("rnd",),
                                log_every=0, checkpoint_every=0)
    trainer = Trainer(cfg.spec("rnd", cfg.seed), device or torch.device("cpu"), cfg.num_updates)
    trainer.init_obs_norm()
    rec = trainer.step()
    trainer.close()
    return {"sps_collect": rec["sps_env"], "sps_total": rec["sps"], "rooms": rec["distinct_rooms"],
            "num_envs": num_envs, "steps": steps, "loss_finite": all(
                math.isfinite(v) for k, v in rec.items() if isinstance(v, float) and k != "return_mean")}
