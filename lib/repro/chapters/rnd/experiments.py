"""The RND chapter's experiments: PPO vs PPO+RND (episodic / non-episodic intrinsic return).

At ``smoke`` and ``book`` the task is the ``rooms`` gridworld (3 x 3 rooms,
sparse reward in the far corner, see :mod:`repro.rl.envs`); at ``paper`` it is
``ALE/MontezumaRevenge-v5`` with the paper's preprocessing, networks and
Table 5 hyperparameters.  :func:`rl_run` turns the chapter config into one
training run (:class:`repro.rl.trainer.RLRun`), :func:`run_method` trains one
(method, seed) pair and returns plain data, :func:`run_all` runs the grid of
methods x seeds, and the remaining functions compute the per-seed numbers the
scorecard's rules are fed.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch

from ...checkpoint import make_identity
from ...distributed import DistContext, run_parallel
from ...rl.distributed import DistributedTrainer
from ...rl.envs import rooms_all_states
from ...rl.ppo import PPOSettings
from ...rl.rnd import RNDSettings
from ...rl.trainer import RLRun, Trainer, recent_return, train
from .config import BONUS_QUANTILE, RETURN_TAIL, RNDConfig


def ppo_settings(cfg: RNDConfig, method: str) -> PPOSettings:
    """PPO's settings for ``method``: one extrinsic stream for PPO, (extrinsic, intrinsic) with RND."""
    rnd = method != "ppo"
    return PPOSettings(
        lr=cfg.lr, anneal_lr=cfg.anneal_lr,
        gammas=(cfg.gamma_ext, cfg.gamma_int) if rnd else (cfg.gamma_ext,),
        episodic=(True, method == "rnd_episodic") if rnd else (True,),
        adv_coefs=(cfg.ext_coef, cfg.int_coef) if rnd else (1.0,),
        gae_lambda=cfg.gae_lambda, epochs=cfg.epochs, minibatches=cfg.minibatches,
        clip_coef=cfg.clip_coef, ent_coef=cfg.ent_coef, vf_coef=cfg.vf_coef,
        max_grad_norm=cfg.max_grad_norm, clip_value_loss=cfg.clip_value_loss, norm_adv=True)


def rl_run(cfg: RNDConfig, method: str, seed: int) -> RLRun:
    """The training run of ``method`` (``ppo``, ``rnd_episodic``, ``rnd``) with ``seed``.

    Every method gets the same random walk (``cfg.random_walk_steps``), so no
    agent starts from a displaced position the others lack.
    """
    rnd = method != "ppo"
    common = dict(num_envs=cfg.num_envs, num_steps=cfg.num_steps, vector_mode=cfg.vector_mode, seed=seed,
                  ppo=ppo_settings(cfg, method), random_walk_steps=cfg.random_walk_steps,
                  clip_ext_reward=cfg.clip_ext_reward)
    if cfg.is_atari:  # RND sees the last frame of the stack
        bonus = RNDSettings(channels=(-1,), net="atari", proportion=cfg.update_proportion) if rnd else None
        return RLRun(env=cfg.env, net="atari", bonus=bonus, **common)
    env_kwargs = (("room_size", cfg.room_size), ("rooms_per_side", cfg.rooms_per_side),
                  ("max_steps", cfg.max_episode_steps))
    bonus = RNDSettings(channels=(0,), net="mlp", hidden=cfg.rnd_hidden, proportion=cfg.update_proportion) \
        if rnd else None  # the rooms' object codes
    return RLRun(env="rooms", env_kwargs=env_kwargs, net="grid", hidden=cfg.hidden, bonus=bonus, **common)


# ---------------------------------------------------------------------------
# Intrinsic-reward maps (rooms task)
# ---------------------------------------------------------------------------


def intrinsic_map(trainer: Trainer, states: torch.Tensor, cells: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The raw bonus i of every free cell (mean over the 4 headings) as an [H, W] map, NaN on walls."""
    bonus = trainer.bonus.novelty(trainer.bonus.view(states)).reshape(-1, 4).mean(1).cpu().numpy()  # [F*4] -> [F, 4] -> [F]
    out = np.full(shape, np.nan)
    out[cells[:, 1], cells[:, 0]] = bonus
    return out


def visit_map(counts: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Cell visit counts (cell id = y * W + x) as an [H, W] array."""
    H, W = shape
    full = np.zeros(H * W, np.int64)
    full[:min(len(counts), H * W)] = counts[:H * W]
    return full.reshape(H, W)


def map_snapshotter(trainer: Trainer, n_maps: int, maps: list):
    """An ``on_update`` callback appending ``n_maps`` bonus/visit maps to ``maps`` over training (rooms + RND).

    The first snapshot is taken after update 1, the last after the final update.
    """
    if trainer.bonus is None or n_maps == 0 or not hasattr(trainer.envs, "envs"):
        return None
    states_np, cells = rooms_all_states(trainer.envs.envs[0])
    states = torch.as_tensor(states_np, device=trainer.device)
    shape = states_np.shape[2:]
    n = trainer.num_updates
    snap_at = {max(1, round(n * k / max(n_maps - 1, 1))) for k in range(n_maps)}

    def snapshot(tr: Trainer, rec: dict) -> None:
        if tr.update in snap_at:
            maps.append({"update": tr.update, "global_step": tr.global_step,
                         "bonus": intrinsic_map(tr, states, cells, shape),
                         "visits": visit_map(tr.tracker("cell").counts, shape)})

    return snapshot


# ---------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------


def run_identity(cfg: RNDConfig, method: str, seed: int) -> dict:
    """Checkpoint identity of one run: experiment ``rnd/<method>`` + the training run's settings + updates."""
    return make_identity(f"rnd/{method}", dataclasses.asdict(rl_run(cfg, method, seed)),
                         num_updates=cfg.num_updates)


def run_method(cfg: RNDConfig, method: str, seed: int, device: torch.device,
               checkpoint: str | Path | None = None, ctx: DistContext | None = None,
               stop_after: int | None = None) -> dict:
    """Train one agent; return its history, visit counts, and (rooms + RND) intrinsic-reward maps.

    With ``checkpoint`` the run saves there every ``cfg.checkpoint_every``
    updates and resumes from it if it exists (a checkpoint of another run
    raises :class:`repro.checkpoint.CheckpointMismatch`).  With ``ctx`` this
    process is one rank of a data-parallel run (:mod:`repro.rl.distributed`):
    it steps its share of the environments, and the returned numbers describe
    all of them.  ``stop_after`` ends training after that update (tests).
    """
    spec = rl_run(cfg, method, seed)
    trainer = Trainer(spec, device, cfg.num_updates) if ctx is None else DistributedTrainer(spec, ctx, cfg.num_updates)
    main = ctx is None or ctx.is_main
    maps: list[dict] = []
    snapshot = map_snapshotter(trainer, 0 if cfg.is_atari or not main else cfg.n_maps, maps)
    t0 = time.perf_counter()
    history = train(trainer, checkpoint=checkpoint, checkpoint_every=cfg.checkpoint_every,
                    identity=run_identity(cfg, method, seed), on_update=snapshot,
                    label=f"rnd {method} seed {seed}", progress=cfg.progress_every_s > 0 and main,
                    progress_every_s=cfg.progress_every_s, stop_after=stop_after)
    wall = time.perf_counter() - t0
    out = {"method": method, "seed": seed, "history": history, "maps": maps, "wall_s": wall,
           "cell_counts": trainer.tracker("cell").counts.copy(), "room_counts": trainer.tracker("room").counts.copy(),
           "global_step": trainer.global_step}
    trainer.close()
    return out


def run_all(cfg: RNDConfig, device: torch.device, run_dir: str | Path | None = None) -> list[dict]:
    """Every method x seed, in order; seeds are cfg.seed, cfg.seed + 1, ...

    With ``cfg.checkpoint_every`` > 0 each run checkpoints to
    ``<checkpoint_dir>/<method>-seed<seed>.pt`` and resumes from that file if it exists.
    With ``cfg.nproc * cfg.nnodes`` > 1 the runs train data-parallel under
    torchrun (:func:`train_parallel`) and this returns rank 0's results, the
    same data as a one-process run's.  Prints one summary line per run.
    """
    ckdir = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else Path(run_dir or ".") / "checkpoints"
    if cfg.world_size > 1:
        results = run_parallel("repro.chapters.rnd.experiments:train_parallel", cfg, ckdir)
        for res in results:
            _report(res)
        return results
    results = []
    for method in cfg.methods:
        for r in range(cfg.n_seeds):
            seed = cfg.seed + r
            res = run_method(cfg, method, seed, device, checkpoint=_checkpoint(ckdir, cfg, method, seed))
            _report(res)
            results.append(res)
    return results


def _checkpoint(folder: Path, cfg: RNDConfig, method: str, seed: int) -> Path | None:
    return folder / f"{method}-seed{seed}.pt" if cfg.checkpoint_every else None


def _report(res: dict) -> None:
    s = summarise(res)
    print(f"[rnd] {res['method']} seed {res['seed']}: {res['global_step']} steps in {res['wall_s']:.1f}s, "
          f"{s['distinct_cells']} cells, {s['successes']} goal episodes, "
          f"final return {s['final_return']:.3f}", flush=True)


def train_parallel(cfg: RNDConfig, ctx: DistContext, folder: Path, stop_after: int | None = None) -> list[dict] | None:
    """One rank of the data-parallel run of every method x seed (started by :func:`run_all` through torchrun).

    Each run is spread over all ranks (each steps ``num_envs / world``
    environments, :class:`repro.rl.distributed.DistributedTrainer`) and
    checkpoints as in a one-process run; returns the results on rank 0.
    """
    results = [run_method(cfg, method, seed, ctx.device, checkpoint=_checkpoint(folder, cfg, method, seed), ctx=ctx,
                          stop_after=stop_after)
               for method in cfg.methods for seed in range(cfg.seed, cfg.seed + cfg.n_seeds)]
    return results if ctx.is_main else None


# ---------------------------------------------------------------------------
# Per-run numbers
# ---------------------------------------------------------------------------


def tail_start(history: dict) -> int:
    """Index of the first update in the last ``RETURN_TAIL`` of a history (columns, see ``rl.trainer.columns``)."""
    n = len(history["episodes"])
    return n - max(1, math.ceil(n * RETURN_TAIL))


def tail_return(history: dict, tail: float = RETURN_TAIL) -> float:
    """Mean extrinsic return of the episodes that ended in the last ``tail`` of the updates (NaN if none)."""
    return recent_return(history, max(1, math.ceil(len(history["episodes"]) * tail)))


def summarise(res: dict) -> dict:
    """Per-run numbers: distinct cells/rooms at the end, coverage, goal episodes, final (tail) return, steps/s.

    ``coverage`` is the number of distinct cells visited so far, averaged over
    the updates (the area under the coverage curve divided by its length): it
    rewards exploring early, where the count at the end saturates once every
    agent has seen the whole grid.
    """
    h = res["history"]
    return {"distinct_cells": int(h["distinct_cells"][-1]), "distinct_rooms": int(h["distinct_rooms"][-1]),
            "coverage": float(np.mean(h["distinct_cells"])),
            "successes": int(np.sum(h["successes"])),
            "final_return": tail_return(h),
            "sps": (res["global_step"] / res["wall_s"]) if res["wall_s"] > 0 else math.nan}


def per_seed(results: list[dict], method: str, key: str) -> list[float]:
    """``summarise(run)[key]`` for every seed of ``method``, in seed order."""
    runs = sorted((r for r in results if r["method"] == method), key=lambda r: r["seed"])
    return [float(summarise(r)[key]) for r in runs]


def frequent_cell_bonus_ratio(res: dict, quantile: float = BONUS_QUANTILE) -> float:
    """Bonus on the most-visited cells (top ``quantile`` by final visits) at the last map / first map."""
    first, last = res["maps"][0], res["maps"][-1]
    v = last["visits"].astype(float)
    free = ~np.isnan(last["bonus"])
    thresh = np.quantile(v[free], 1 - quantile)
    top = free & (v >= thresh)
    return float(np.nanmean(last["bonus"][top]) / np.nanmean(first["bonus"][top]))


def rare_vs_frequent_bonus(res: dict, quantile: float = BONUS_QUANTILE) -> float:
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

    Returns env steps/s for collection alone and including the update, the
    rooms seen, and whether every loss and statistic was finite.
    """
    cfg = RNDConfig.for_profile("paper", num_envs=num_envs, num_steps=steps, total_steps=num_envs * steps,
                                random_walk_steps=min(steps, 8), vector_mode=vector_mode, methods=("rnd",),
                                progress_every_s=0.0, checkpoint_every=0)
    trainer = Trainer(rl_run(cfg, "rnd", cfg.seed), device or torch.device("cpu"), cfg.num_updates)
    trainer.random_walk()
    rec = trainer.step()
    trainer.close()
    return {"sps_collect": rec["sps_env"], "sps_total": rec["sps"], "rooms": rec["distinct_rooms"],
            "num_envs": num_envs, "steps": steps, "loss_finite": all(
                math.isfinite(v) for k, v in rec.items() if isinstance(v, float) and k != "return_mean")}
