"""The meta-adaptation chapter's runs: pretraining, meta-training, the fade on held-out legs, the oracle.

:func:`run_seed` does one seed end to end (built from :mod:`repro.meta.adapt` and
:mod:`repro.meta.locomotion`):

1. **pretraining**: plain PPO on the training tasks (a random training leg pair
   at a random episode of its fade, per group of arenas): the meta-learner's
   start;
2. **meta-training** from the pretrained policy: consecutive task pairs
   (episode i and i + 1 of a training pair's fade), three inner
   policy-gradient steps with learned step sizes, PPO through them; and, from
   the same start, **more PPO** for as many arena-steps: the policy that
   *tracking* and *no adaptation* play (an equal budget of experience);
3. **the fade on held-out pairs**: ``eval_sequences`` sequences of 7 episodes
   (the three held-out pairs in turn, ``arenas`` parallel trajectories per
   episode = the experience one adaptation sees), played by meta-learned
   adaptation, tracking and no adaptation;
4. **the oracle**: for each held-out pair, the baselines' policy fine-tuned by
   PPO on the fully faded task, evaluated there against the unadapted policy
   on the same sequences: the gap is the most any adaptation could gain.

:func:`run_all` spreads the seeds over one-thread worker processes.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from ...meta.adapt import MetaSettings, evaluate_sequences, make_policy, meta_train, train_fixed
from ...meta.locomotion import (HELD_OUT_PAIRS, N_EPISODES, TRAIN_PAIRS, LocomotionArenas, fade_scales,
                                fade_sequence)
from ...workers import run_jobs
from .config import LATE, MetaAdaptationConfig

METHODS = ("meta", "tracking", "none")
LABELS = {"meta": "meta-learned adaptation", "tracking": "tracking (continued fine-tuning)",
          "none": "no adaptation", "oracle": "oracle (fine-tuned on the faded task)",
          "meta_theta": "meta-learned θ, not adapted", "none_pretrained": "pretraining only, not adapted"}


def meta_settings(cfg: MetaAdaptationConfig) -> MetaSettings:
    """The library's settings from the chapter config (tracking: Adam at ``tracking_lr``, 3 steps per episode,
    as many steps as the meta-learner's inner loop)."""
    return MetaSettings(hidden=cfg.hidden, groups=cfg.meta_tasks, inner_steps=cfg.inner_steps,
                        alpha_init=cfg.alpha_init, outer_lr=cfg.meta_lr, alpha_lr=cfg.alpha_lr,
                        meta_grad_clip=cfg.meta_grad_clip, tracking_steps=cfg.inner_steps,
                        tracking_lr=cfg.tracking_lr, tracking_optimizer="adam")


def training_tasks(groups: int, rng: np.random.Generator) -> np.ndarray:
    """[G, n_legs]: a random training pair at a random episode of its fade, per group."""
    return np.stack([fade_scales(TRAIN_PAIRS[rng.integers(len(TRAIN_PAIRS))], int(rng.integers(1, N_EPISODES + 1)))
                     for _ in range(groups)])


def consecutive_pairs(groups: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """([G, n_legs], [G, n_legs]): episodes i and i + 1 (i in 1..6) of a random training pair's fade."""
    pairs = [TRAIN_PAIRS[rng.integers(len(TRAIN_PAIRS))] for _ in range(groups)]
    eps = rng.integers(1, N_EPISODES, size=groups)
    return (np.stack([fade_scales(p, int(i)) for p, i in zip(pairs, eps)]),
            np.stack([fade_scales(p, int(i) + 1) for p, i in zip(pairs, eps)]))


def held_out_sequences(n: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """[n, 7, n_legs]: the fades of the held-out pairs in turn, and the pair of each sequence."""
    pairs = [HELD_OUT_PAIRS[s % len(HELD_OUT_PAIRS)] for s in range(n)]
    return np.stack([fade_sequence(p) for p in pairs]), pairs


def checkpointing(cfg: MetaAdaptationConfig, folder: str | Path | None, name: str) -> dict:
    """Keyword arguments that make a trainer checkpoint to ``<folder>/<name>.pt`` (none without
    ``cfg.checkpoint_every`` or a folder): the trainers resume from there to the identical result."""
    if not cfg.checkpoint_every or folder is None:
        return {}
    return {"checkpoint": Path(folder) / f"{name}.pt", "checkpoint_every": cfg.checkpoint_every}


def run_seed(cfg: MetaAdaptationConfig, seed: int, folder: str | Path | None = None,
             threads: int | None = None) -> dict:
    """One seed (see the module docstring); plain data (numpy arrays and floats).  With
    ``cfg.checkpoint_every`` every training run checkpoints in ``folder`` and resumes from there."""
    if threads is not None:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    s = meta_settings(cfg)
    train_env = LocomotionArenas(cfg.meta_tasks * cfg.meta_arenas, body=cfg.body, episode_steps=cfg.episode_steps,
                                 seed=seed)
    pre_env = LocomotionArenas(cfg.pretrain_arenas, body=cfg.body, episode_steps=cfg.episode_steps, seed=seed)
    policy = make_policy(train_env, s, seed)
    pre_hist, theta0 = train_fixed(pre_env, training_tasks, s, cfg.pretrain_iters, seed, policy=policy,
                                   label=f"pretrain seed {seed}", **checkpointing(cfg, folder, f"pretrain_{seed}"))
    t_pre = time.perf_counter() - t0
    meta_hist, theta, alpha = meta_train(train_env, consecutive_pairs, s, cfg.meta_iters, seed + 1000,
                                         init_theta=theta0, policy=policy, label=f"meta-train seed {seed}",
                                         **checkpointing(cfg, folder, f"meta_{seed}"))
    t_meta = time.perf_counter() - t0 - t_pre
    # the baselines' policy: PPO continued from the same start for as many arena-steps as meta-training took,
    # so no method has seen more of the training tasks than another
    base_hist, theta_base = train_fixed(pre_env, training_tasks, s, baseline_extra_iters(cfg), seed + 1500,
                                        init_theta=theta0, policy=policy, label=f"baseline PPO seed {seed}",
                                        **checkpointing(cfg, folder, f"baseline_{seed}"))
    # the fade on held-out pairs: every method plays the same sequences with the same seeds
    seqs, pairs = held_out_sequences(cfg.eval_sequences)
    eval_env = LocomotionArenas(cfg.eval_sequences * cfg.meta_arenas, body=cfg.body, episode_steps=cfg.episode_steps,
                                seed=seed + 2000)
    curves = {}
    for method in METHODS:
        start = theta if method == "meta" else theta_base
        curves[method] = evaluate_sequences(eval_env, start, alpha if method == "meta" else None, method, seqs, s,
                                            seed + 3000, policy=policy)               # [S, 7]
    # ablation: the meta-learned theta without adaptation separates what adaptation adds from what the
    # extra meta-training did to theta itself
    curves["meta_theta"] = evaluate_sequences(eval_env, theta, None, "none", seqs, s, seed + 3000, policy=policy)
    # and the pretrained policy alone: what the baselines would score with less training than the meta-learner
    curves["none_pretrained"] = evaluate_sequences(eval_env, theta0, None, "none", seqs, s, seed + 3000,
                                                   policy=policy)
    # the oracle on each fully faded held-out pair, against the unadapted policy on the same sequences
    faded = seqs[:, -1:]                                                                # [S, 1, n_legs]
    unadapted = evaluate_sequences(eval_env, theta_base, None, "none", faded, s, seed + 4000, policy=policy)[:, 0]
    oracle = np.zeros(cfg.eval_sequences)
    oracle_env = LocomotionArenas(cfg.meta_tasks * cfg.meta_arenas, body=cfg.body, episode_steps=cfg.episode_steps,
                                  seed=seed + 5000)
    for k, pair in enumerate(HELD_OUT_PAIRS):
        mine = [i for i, p in enumerate(pairs) if p == pair]
        if not mine:  # fewer sequences than held-out pairs: no oracle needed for this one
            continue
        _, theta_pair = train_fixed(oracle_env, fade_scales(pair, N_EPISODES), s, cfg.oracle_iters, seed + 6000 + k,
                                    init_theta=theta_base, policy=policy, label=f"oracle {pair} seed {seed}",
                                    **checkpointing(cfg, folder, f"oracle_{k}_{seed}"))
        got = evaluate_sequences(eval_env, theta_pair, None, "none", faded, s, seed + 4000, policy=policy)[:, 0]
        oracle[mine] = got[mine]
    return {"seed": seed, "curves": curves, "pairs": pairs, "oracle": oracle, "unadapted": unadapted,
            "theta0": {k: v.detach().cpu() for k, v in theta_base.items()}, "pretrain": pre_hist,
            "baseline": base_hist, "meta": meta_hist, "alpha": {k: float(v.mean()) for k, v in alpha.items()},
            "seconds": time.perf_counter() - t0, "pretrain_s": t_pre, "meta_s": t_meta,
            "env_steps": env_steps(cfg)}


def baseline_extra_iters(cfg: MetaAdaptationConfig) -> int:
    """PPO iterations after pretraining that simulate as many arena-steps as meta-training
    (each meta-iteration plays two episodes in ``meta_tasks * meta_arenas`` arenas)."""
    return max(1, round(2 * cfg.meta_iters * cfg.meta_tasks * cfg.meta_arenas / cfg.pretrain_arenas))


def env_steps(cfg: MetaAdaptationConfig) -> int:
    """Arena-steps one seed simulates (training, evaluation and the oracles)."""
    T = cfg.episode_steps
    pre = cfg.pretrain_iters * cfg.pretrain_arenas * T
    meta = cfg.meta_iters * 2 * cfg.meta_tasks * cfg.meta_arenas * T
    base = baseline_extra_iters(cfg) * cfg.pretrain_arenas * T
    ev = ((len(METHODS) + 2) * N_EPISODES + 1 + len(HELD_OUT_PAIRS)) * cfg.eval_sequences * cfg.meta_arenas * T
    oracle = len(HELD_OUT_PAIRS) * cfg.oracle_iters * cfg.meta_tasks * cfg.meta_arenas * T
    return pre + meta + base + ev + oracle


def run_job(kind: str, cfg: MetaAdaptationConfig, seed: int, folder: str | None = None,
            threads: int | None = None) -> dict:
    """One job of :func:`run_all`: ``locomotion`` (:func:`run_seed`) or ``sumo`` (:func:`sumo_seed`)."""
    return {"locomotion": run_seed, "sumo": sumo_seed}[kind](cfg, seed, folder, threads=threads) | {"kind": kind}


def run_all(cfg: MetaAdaptationConfig, device: torch.device, run_dir: str | Path | None = None
            ) -> tuple[list[dict], list[dict]]:
    """Every locomotion seed and every sumo seed, in ``cfg.workers`` one-thread processes on CPU (or in
    turn); a summary line per job.  Returns (locomotion results, sumo results).  Checkpoints (with
    ``cfg.checkpoint_every``) go to ``cfg.checkpoint_dir`` or ``<run_dir>/checkpoints``."""
    folder = None
    if cfg.checkpoint_every:
        folder = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else Path(run_dir or ".") / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        folder = str(folder)
    jobs = [("locomotion", cfg, cfg.seed + r, folder) for r in range(cfg.n_seeds)] + \
           [("sumo", cfg, cfg.seed + r, folder) for r in range(cfg.sumo_seeds)]

    def report(res: dict) -> dict:
        if res["kind"] == "sumo":
            wins = {m: last_quarter_wins(g) for m, g in res["games"].items()}
            print(f"[meta_adaptation] sumo seed {res['seed']} done in {res['seconds']:.0f}s: last-quarter win rate "
                  + ", ".join(f"{m} {w:.2f}" for m, w in wins.items()), flush=True)
            return res
        late = {m: late_return(res, m) for m in METHODS}
        print(f"[meta_adaptation] seed {res['seed']} done in {res['seconds']:.0f}s (pretrain {res['pretrain_s']:.0f}s, "
              f"meta {res['meta_s']:.0f}s): episodes 6-7 meta {late['meta']:.1f}, tracking {late['tracking']:.1f}, "
              f"none {late['none']:.1f}; oracle gap {oracle_gap(res):.1f}", flush=True)
        return res

    out = [report(r) for r in run_jobs(run_job, jobs, cfg.workers, device)]
    return [r for r in out if r["kind"] == "locomotion"], [r for r in out if r["kind"] == "sumo"]


def late_return(res: dict, method: str) -> float:
    """Mean return of episodes 6-7 over the held-out sequences of one seed."""
    return float(res["curves"][method][:, LATE[0] - 1:LATE[1]].mean())


def oracle_gap(res: dict) -> float:
    """Oracle minus unadapted return on the fully faded held-out pairs, mean over the sequences of one seed."""
    return float((res["oracle"] - res["unadapted"]).mean())


def per_seed(results: list[dict], fn) -> list[float]:
    """``fn(result)`` per seed, in seed order."""
    return [float(fn(r)) for r in sorted(results, key=lambda r: r["seed"])]


def frames(cfg: MetaAdaptationConfig, width: int = 360, height: int = 270) -> list[tuple[str, np.ndarray]]:
    """Rendered frames: the crawler with a faded pair, the paper's six-legged body, the sumo ring."""
    from ...meta.sumo import SumoArenas

    out = []
    rng = np.random.default_rng(cfg.seed)
    crawler = LocomotionArenas(1, body="crawler", episode_steps=30, seed=cfg.seed)
    crawler.set_tasks(fade_scales(HELD_OUT_PAIRS[0], N_EPISODES)[None])
    crawler.reset()
    for _ in range(15):
        crawler.step(np.ones((1, crawler.act_per_arena)))
    out.append((f"crawler, legs {HELD_OUT_PAIRS[0]} faded out", crawler.render(0, width, height)))
    crawler.close()
    bug = LocomotionArenas(1, body="bug", episode_steps=30, seed=cfg.seed)
    bug.reset()
    for _ in range(10):
        bug.step(rng.uniform(-1, 1, (1, bug.act_per_arena)))
    out.append(("six-legged body (paper profile)", bug.render(0, width, height)))
    bug.close()
    for body in dict.fromkeys((cfg.sumo_body, "ant")):
        ring = SumoArenas(1, body=body, episode_steps=50, seed=cfg.seed)
        ring.reset()
        zero = np.zeros((1, ring.single_action_space.shape[0]))
        for _ in range(5):
            ring.step(zero, zero)
        out.append((f"RoboSumo ring, {body} vs {body}", ring.render(0, width, height)))
        ring.close()
    return out


def legged_probe(n_arenas: int = 4, steps: int = 20, seed: int = 0) -> dict:
    """The paper profile's bodies in many-arena models: step them with random actions, time them."""
    from ...meta.sumo import SumoArenas

    rng = np.random.default_rng(seed)
    finite, parts = True, []
    loco = LocomotionArenas(n_arenas, body="bug", episode_steps=steps, seed=seed)
    loco.set_tasks(np.stack([fade_scales(HELD_OUT_PAIRS[k % 3], 1 + k % N_EPISODES) for k in range(n_arenas)]))
    obs, _ = loco.reset()
    t = time.perf_counter()
    for _ in range(steps):
        obs, r, *_ = loco.step(rng.uniform(-1, 1, (n_arenas, loco.act_per_arena)))
        finite &= bool(np.isfinite(obs).all() and np.isfinite(r).all())
    parts.append(f"six-legged locomotion: {n_arenas} arenas, {n_arenas * steps / (time.perf_counter() - t):,.0f} "
                 f"arena-steps/s")
    sumo = SumoArenas(n_arenas, body="ant", episode_steps=steps, seed=seed)
    oa, ob = sumo.reset()
    t = time.perf_counter()
    a_dim = sumo.single_action_space.shape[0]
    for _ in range(steps):
        oa, ob, ra, rb, done, info = sumo.step(rng.uniform(-1, 1, (n_arenas, a_dim)), rng.uniform(-1, 1, (n_arenas, a_dim)))
        finite &= bool(np.isfinite(oa).all() and np.isfinite(ob).all() and np.isfinite(ra).all())
    parts.append(f"Ant RoboSumo: {n_arenas} rings, {n_arenas * steps / (time.perf_counter() - t):,.0f} ring-steps/s")
    loco.close()
    sumo.close()
    return {"finite": finite, "summary": "; ".join(parts)}


# ---------------------------------------------------------------------------
# RoboSumo: an iterated game against an opponent that keeps learning
# ---------------------------------------------------------------------------


def sumo_rewards(cfg: MetaAdaptationConfig):
    """The sumo reward weights: the paper's outcome values, our shaping times ``sumo_shaping``."""
    from ...meta.sumo import SumoRewardWeights

    base = SumoRewardWeights()
    return SumoRewardWeights(approach=base.approach * cfg.sumo_shaping, push=base.push * cfg.sumo_shaping,
                             control=base.control)


def sumo_seed(cfg: MetaAdaptationConfig, seed: int, folder: str | Path | None = None,
              threads: int | None = None) -> dict:
    """One seed of the iterated RoboSumo game (book: a demonstration; paper: the finding).

    1. Two independent self-play runs (A: seed, B: seed + 500) record a learning trajectory of
       snapshots each: snapshot k + 1 is snapshot k after ``sumo_snapshot_every`` more PPO
       iterations.
    2. Our agent starts from A's middle snapshot k0 (none and tracking play it; meta-training
       starts from it), and is meta-trained on consecutive pairs of A's later snapshots
       (opponent k, then opponent k + 1): adapt on a round against k, be good against k + 1.
    3. The iterated game is played against *B*'s trajectory (opponents the agent never met):
       ``sumo_rounds`` rounds of 3 episodes, every arena a bout, the opponent moving one snapshot
       on every ``rounds / (K - k0)`` rounds from B's k0 to B's last.
    """
    from ...meta.game import (MetaAdaptation, NoAdaptation, SumoVsOpponents, Tracking, actor_parameters,
                              iterated_game, selfplay_snapshots)

    if threads is not None:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    kw = dict(n_arenas=cfg.sumo_arenas, body=cfg.sumo_body, episode_steps=cfg.sumo_episode_steps,
              iters=cfg.sumo_selfplay_iters, snapshot_every=cfg.sumo_snapshot_every, hidden=cfg.hidden,
              rewards=sumo_rewards(cfg))
    _, snaps_a, hist_a = selfplay_snapshots(seed=seed, label=f"self-play A seed {seed}", **kw,
                                            **checkpointing(cfg, folder, f"selfplay_a_{seed}"))
    _, snaps_b, hist_b = selfplay_snapshots(seed=seed + 500, label=f"self-play B seed {seed}", **kw,
                                            **checkpointing(cfg, folder, f"selfplay_b_{seed}"))
    n_snap = len(snaps_a)
    k0 = n_snap // 2
    theta0 = actor_parameters(snaps_a[k0])
    s = meta_settings(cfg)
    s = dataclasses.replace(s, groups=cfg.sumo_meta_tasks)
    env_a = SumoVsOpponents(cfg.sumo_meta_tasks * cfg.meta_arenas, cfg.sumo_body, cfg.sumo_episode_steps,
                            snapshots=snaps_a, hidden=cfg.hidden, seed=seed, rewards=sumo_rewards(cfg))
    later = np.arange(k0, n_snap - 1)

    def opponent_pairs(groups: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        k = rng.choice(later, size=groups)
        return k[:, None].astype(float), (k + 1)[:, None].astype(float)

    _, theta, alpha = meta_train(env_a, opponent_pairs, s, cfg.sumo_meta_iters, seed + 700, init_theta=theta0,
                                 label=f"sumo meta-train seed {seed}", **checkpointing(cfg, folder, f"sumo_meta_{seed}"))
    env_b = SumoVsOpponents(cfg.sumo_arenas, cfg.sumo_body, cfg.sumo_episode_steps, snapshots=snaps_b,
                            hidden=cfg.hidden, seed=seed + 900, rewards=sumo_rewards(cfg))
    schedule = np.minimum(k0 + np.arange(cfg.sumo_rounds) * (n_snap - k0) // max(cfg.sumo_rounds, 1), n_snap - 1)
    strategies = {"meta": MetaAdaptation(theta, alpha, s), "tracking": Tracking(theta0, lr=cfg.sumo_tracking_lr,
                                                                               steps=cfg.inner_steps),
                  "none": NoAdaptation(theta0)}
    games = {m: iterated_game(env_b, st, cfg.sumo_rounds, 3, seed + 1100, schedule=schedule)
             for m, st in strategies.items()}
    return {"seed": seed, "games": games, "schedule": schedule, "k0": k0, "snapshots": n_snap,
            "selfplay": {"A": hist_a, "B": hist_b}, "seconds": time.perf_counter() - t0}


def last_quarter_wins(game: dict) -> float:
    """Win rate over the last quarter of the rounds (at least one round)."""
    w = np.asarray(game["win"])
    return float(w[-max(1, len(w) // 4):].mean())
