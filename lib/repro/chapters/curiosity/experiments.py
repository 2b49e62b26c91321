"""The curiosity chapter's experiments: purely curious agents, the noisy TV, the batch-size sweep.

Three kinds of run (a *job* each), spread over ``cfg.workers`` one-thread
processes on CPU:

* ``game``: a purely curious PPO agent (extrinsic advantage weight 0, the
  intrinsic stream non-episodic: "infinite horizon") on a MinAtar game at
  ``smoke``/``book`` or an ALE game at ``paper``, with the forward-dynamics
  bonus in one feature space (RF, IDF, pixels; :mod:`repro.rl.curiosity`);
  the game's score is measured, never optimised.  The sweep over the number
  of parallel environments uses the same job with another ``num_envs``;
* ``random``: a uniformly random policy on the same game, the baseline score;
* ``tv``: the rooms gridworld with or without a noisy TV
  (:class:`repro.rl.noisy_tv.NoisyTV`), explored by dynamics curiosity or RND
  alone (no extrinsic advantage either), with the share of steps at the TV
  and the cells visited tracked (:mod:`repro.rl.tracking`).

:func:`run_all` returns one plain dict per job; the remaining functions
compute the per-seed numbers the scorecard's rules are fed.
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
from ...rl.curiosity import CuriositySettings
from ...rl.distributed import DistributedTrainer
from ...rl.envs import env_factory, make_vector_env
from ...rl.ppo import PPOSettings
from ...rl.rnd import RNDSettings
from ...rl.tracking import StepShare, VisitCounts
from ...rl.trainer import RLRun, Trainer, recent_return, train
from ...workers import run_jobs
from .config import RETURN_TAIL, CuriosityConfig

# ---------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------


def pure_curiosity(cfg: CuriosityConfig, lr: float, ent_coef: float) -> PPOSettings:
    """PPO with the extrinsic stream measured, never optimised (weight 0), and a non-episodic intrinsic stream."""
    return PPOSettings(lr=lr, gammas=(cfg.gamma, cfg.gamma), episodic=(True, False), adv_coefs=(0.0, 1.0),
                       gae_lambda=cfg.gae_lambda, epochs=cfg.epochs, minibatches=cfg.minibatches,
                       clip_coef=cfg.clip_coef, ent_coef=ent_coef, vf_coef=cfg.vf_coef, max_grad_norm=0.5,
                       clip_value_loss=False, norm_adv=True)


def game_run(cfg: CuriosityConfig, feature: str, seed: int, num_envs: int | None = None) -> RLRun:
    """A purely curious agent with ``feature`` (rf, idf, pixels) on ``cfg.env``."""
    net = "atari" if cfg.is_atari else "minatar"
    bonus = CuriositySettings(features=feature, net=net, feat_dim=cfg.feat_dim, hidden=cfg.dyn_hidden,
                              n_residual=cfg.n_residual)
    env_kwargs = () if cfg.is_atari else (("sticky", cfg.sticky),)
    return RLRun(env=cfg.env, env_kwargs=env_kwargs, num_envs=num_envs or cfg.num_envs, num_steps=cfg.num_steps,
                 vector_mode="async" if cfg.is_atari else "sync", seed=seed, net=net, hidden=cfg.policy_hidden,
                 ppo=pure_curiosity(cfg, cfg.lr, cfg.ent_coef), bonus=bonus,
                 random_walk_steps=cfg.random_walk_steps, trackers=())


def tv_run(cfg: CuriosityConfig, method: str, seed: int) -> RLRun:
    """``curiosity`` (no TV), ``curiosity_tv`` or ``rnd_tv`` exploring the rooms gridworld on its bonus alone.

    The bonus sees the grid's object layer and, with the TV, the screen (the
    last channel); the TV's pictures are drawn once per run from ``seed``.
    """
    tv = method.endswith("_tv")
    channels = (0, -1) if tv else (0,)
    if method.startswith("curiosity"):
        bonus = CuriositySettings(channels=channels, features="rf", net="mlp", feat_dim=cfg.feat_dim,
                                  hidden=cfg.dyn_hidden, n_residual=cfg.n_residual)
    else:
        bonus = RNDSettings(channels=channels, net="mlp", hidden=cfg.dyn_hidden, proportion=0.25)
    env_kwargs = (("room_size", cfg.room_size), ("rooms_per_side", cfg.rooms_per_side),
                  ("max_steps", cfg.max_episode_steps))
    if tv:
        env_kwargs += (("noisy_tv", cfg.tv_images), ("tv_image_seed", seed))
    return RLRun(env="rooms", env_kwargs=env_kwargs, num_envs=cfg.tv_num_envs, num_steps=cfg.tv_num_steps,
                 seed=seed, net="grid", hidden=64, ppo=pure_curiosity(cfg, cfg.tv_lr, cfg.tv_ent_coef), bonus=bonus,
                 random_walk_steps=cfg.random_walk_steps, trackers=(VisitCounts("cell"), StepShare("tv")))


def jobs(cfg: CuriosityConfig) -> list[tuple]:
    """Every run of the chapter: ("game", feature, seed, num_envs), ("random", seed), ("tv", method, seed)."""
    seeds = [cfg.seed + r for r in range(cfg.n_seeds)]
    out: list[tuple] = [("game", f, s, cfg.num_envs) for f in cfg.features for s in seeds]
    if "rf" in cfg.features:
        out += [("game", "rf", cfg.seed + r, n) for n in cfg.env_sweep for r in range(cfg.env_sweep_seeds)]
    out += [("random", s) for s in seeds]
    out += [("tv", m, s) for m in cfg.tv_methods for s in seeds]
    # longest first, so two workers finish together
    cost = {"game": 3.0, "tv": 1.0, "random": 0.05}
    return sorted(out, key=lambda j: -cost[j[0]])


def job_name(job: tuple) -> str:
    """A file-name-safe label: game-rf-s0-n16, random-s0, tv-rnd_tv-s0."""
    if job[0] == "game":
        return f"game-{job[1]}-s{job[2]}-n{job[3]}"
    if job[0] == "random":
        return f"random-s{job[1]}"
    return f"tv-{job[1]}-s{job[2]}"


def random_policy(cfg: CuriosityConfig, seed: int) -> dict:
    """A uniformly random policy on ``cfg.env`` for ``RETURN_TAIL * total_steps`` steps: its episodes' returns."""
    kwargs = {} if cfg.is_atari else {"sticky": cfg.sticky}
    envs = make_vector_env(env_factory(cfg.env, **kwargs), cfg.num_envs, "sync", seed)
    envs.reset(seed=seed)
    ep_ret, returns = np.zeros(cfg.num_envs), []
    for _ in range(max(1, math.ceil(cfg.total_steps * RETURN_TAIL / cfg.num_envs))):
        _, r, term, trunc, _ = envs.step(envs.action_space.sample())
        ep_ret += r
        done = np.logical_or(term, trunc)
        returns += ep_ret[done].tolist()
        ep_ret[done] = 0
    envs.close()
    return {"returns": returns}


def run_job(cfg: CuriosityConfig, job: tuple, folder: str, device: str = "cpu", threads: int | None = None,
            ctx: DistContext | None = None) -> dict:
    """One job (see :func:`jobs`); with ``cfg.checkpoint_every`` a training run checkpoints to and resumes from
    ``<folder>/<job name>.pt``.  Returns plain data: the job, its history (training runs), wall time.  With
    ``ctx`` a training run is one rank's part of a data-parallel run (:mod:`repro.rl.distributed`)."""
    if threads is not None:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    out: dict = {"job": job, "kind": job[0]}
    if job[0] == "random":
        out.update(random_policy(cfg, job[1]))
        out["wall_s"] = time.perf_counter() - t0
        return out
    if job[0] == "game":
        _, feature, seed, num_envs = job
        spec = game_run(cfg, feature, seed, num_envs)
    else:
        _, method, seed = job
        spec = tv_run(cfg, method, seed)
    n_updates = cfg.updates(cfg.total_steps if job[0] == "game" else cfg.tv_total_steps, spec.num_envs,
                            spec.num_steps)
    trainer = (Trainer(spec, torch.device(device), n_updates) if ctx is None
               else DistributedTrainer(spec, ctx, n_updates))
    ident = make_identity(f"curiosity/{job_name(job)}", dataclasses.asdict(spec), num_updates=n_updates)
    ckpt = Path(folder) / f"{job_name(job)}.pt" if cfg.checkpoint_every else None
    out["history"] = train(trainer, checkpoint=ckpt, checkpoint_every=cfg.checkpoint_every, identity=ident,
                           label=f"curiosity {job_name(job)}",
                           progress=cfg.progress_every_s > 0 and (ctx is None or ctx.is_main),
                           progress_every_s=cfg.progress_every_s)
    out["global_step"] = trainer.global_step
    if job[0] == "tv":
        out["cell_counts"] = trainer.tracker("cell").counts.copy()
    trainer.close()
    out["wall_s"] = time.perf_counter() - t0
    return out


def run_all(cfg: CuriosityConfig, device: torch.device, run_dir: str | Path) -> list[dict]:
    """Every job, in ``cfg.workers`` one-thread processes (CPU) or in turn; one summary line per job."""
    folder = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    todo = jobs(cfg)

    def report(res: dict) -> dict:
        line = f"[curiosity] {job_name(res['job'])} done in {res['wall_s']:.1f}s"
        if res["kind"] != "random":
            s = summarise(res)
            line += f", final return {s['final_return']:.2f}"
            if res["kind"] == "tv":
                line += f", TV share {s['tv_share']:.2f}, coverage {s['coverage']:.0f} cells"
        print(line, flush=True)
        return res

    if cfg.world_size > 1:
        return [report(r) for r in run_parallel("repro.chapters.curiosity.experiments:train_parallel", cfg, folder)]
    return [report(r) for r in run_jobs(run_job, [(cfg, job, str(folder), str(device)) for job in todo],
                                        cfg.workers, device)]


def train_parallel(cfg: CuriosityConfig, ctx: DistContext, folder: Path) -> list[dict] | None:
    """One rank of the chapter's data-parallel run (started by :func:`run_all` through torchrun).

    Every training run (game, noisy TV) is spread over all ranks, each
    stepping ``num_envs / world`` environments; the random-policy baselines
    (no training) are dealt out to the ranks whole.  Returns every job's result
    on rank 0, in :func:`jobs` order.
    """
    todo = jobs(cfg)
    mine = {i: run_job(cfg, job, str(folder), str(ctx.device)) for i, job in enumerate(todo)
            if job[0] == "random" and i % ctx.world == ctx.rank}
    shared = {i: run_job(cfg, job, str(folder), str(ctx.device), ctx=ctx) for i, job in enumerate(todo)
              if job[0] != "random"}
    everyone = ctx.all_gather(mine)
    if not ctx.is_main:
        return None
    done = {**shared, **{i: r for part in everyone for i, r in part.items()}}
    return [done[i] for i in range(len(todo))]


# ---------------------------------------------------------------------------
# Per-run numbers
# ---------------------------------------------------------------------------


def tail_updates(history: dict) -> int:
    """Number of updates in the last ``RETURN_TAIL`` of a history."""
    return max(1, math.ceil(len(history["episodes"]) * RETURN_TAIL))


def summarise(res: dict) -> dict:
    """Per-run numbers: final (tail) return; for gridworld runs the tail TV share, coverage and distinct cells."""
    if res["kind"] == "random":
        r = res["returns"]
        return {"final_return": float(np.mean(r)) if r else math.nan, "episodes": len(r)}
    h = res["history"]
    k = tail_updates(h)
    out = {"final_return": recent_return(h, k), "sps": res["global_step"] / res["wall_s"]}
    if res["kind"] == "tv":
        out.update(tv_share=float(np.mean(h["share_tv"][-k:])), coverage=float(np.mean(h["distinct_cells"])),
                   distinct_cells=int(h["distinct_cells"][-1]))
    return out


def select(results: list[dict], kind: str, what: str | None = None, num_envs: int | None = None) -> list[dict]:
    """The runs of one agent in seed order: ``("game", feature, num_envs)``, ``("random",)``, ``("tv", method)``."""
    def match(r: dict) -> bool:
        j = r["job"]
        if j[0] != kind:
            return False
        if kind == "game":
            return j[1] == what and j[3] == num_envs
        return kind == "random" or j[1] == what
    seed_of = lambda r: r["job"][1] if kind == "random" else r["job"][2]  # noqa: E731
    return sorted((r for r in results if match(r)), key=seed_of)


def per_seed(results: list[dict], key: str, kind: str, what: str | None = None,
             num_envs: int | None = None) -> list[float]:
    """``summarise(run)[key]`` for every seed of one agent (see :func:`select`)."""
    return [float(summarise(r)[key]) for r in select(results, kind, what, num_envs)]


# ---------------------------------------------------------------------------
# The paper profile's pipeline on this machine
# ---------------------------------------------------------------------------


def atari_probe(steps: int, num_envs: int = 2, device: torch.device | None = None) -> dict:
    """Time ``steps`` rollout steps of ``num_envs`` ALE envs with the paper profile's networks, then one update."""
    cfg = CuriosityConfig.for_profile("paper", num_envs=num_envs, num_steps=steps, total_steps=num_envs * steps,
                                      random_walk_steps=min(steps, 8), minibatches=2, progress_every_s=0.0, env_sweep=(),
                                      checkpoint_every=0)
    spec = dataclasses.replace(game_run(cfg, "rf", cfg.seed), vector_mode="sync")
    trainer = Trainer(spec, device or torch.device("cpu"), 1)
    trainer.random_walk()
    rec = trainer.step()
    trainer.close()
    return {"sps_collect": rec["sps_env"], "sps_total": rec["sps"], "num_envs": num_envs, "steps": steps,
            "loss_finite": all(math.isfinite(v) for k, v in rec.items()
                               if isinstance(v, float) and k != "return_mean")}
