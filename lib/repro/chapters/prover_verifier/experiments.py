"""The prover–verifier chapter's runs: the toy game's rounds and the correctness-only baseline, per seed.

:func:`play_seed` plays one seed of the toy game end to end (built from
:mod:`repro.pvg.game`):

1. a problem pool for the seed, split into a prover half and a verifier half,
   and held-out evaluation problems;
2. the supervised prover (both roles), evaluated;
3. rounds r = 0..R-1: the prover writes solutions (both roles) to
   verifier-half problems; the verifier is retrained from its initial weights
   on all solutions so far; the attacker probe measures its robustness; the
   prover trains ``rl_steps`` REINFORCE steps against it with the chosen
   reward; the new prover is evaluated against this round's verifier;
4. the correctness-only baseline: the supervised prover, helpful role only,
   trained for as many RL steps as all rounds together, evaluated after each
   round's worth of steps.

:func:`run_all` spreads the seeds over one-thread worker processes.
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch

from ...pvg.game import (GameSettings, attacker_steps, evaluate, helpful_reference_score, rl_steps,
                         train_prover_sft, train_verifier, verifier_data)
from ...pvg.task import DigitTokeniser, make_problems, split_pool
from ...workers import run_jobs
from .config import ProverVerifierConfig


def game_settings(cfg: ProverVerifierConfig) -> GameSettings:
    """The library's settings from the chapter config."""
    return GameSettings(prover=(cfg.prover_d, cfg.prover_layers, 4), verifier=(cfg.verifier_d, cfg.verifier_layers, 2),
                        sft_steps=cfg.sft_steps, verifier_steps=cfg.verifier_steps,
                        verifier_samples=cfg.verifier_samples, rl_steps=cfg.rl_steps, rl_batch=cfg.rl_batch,
                        rl_lr=cfg.rl_lr, kl_coef=cfg.kl_coef, attacker_steps=cfg.attacker_steps,
                        checker_budget=cfg.checker_budget, eval_problems=cfg.eval_problems)


def problems_for(cfg: ProverVerifierConfig, seed: int):
    """(prover half, verifier half, held-out evaluation problems) for ``seed``."""
    ops = tuple(cfg.operators)
    pool = make_problems(cfg.pool, 1000 + seed, cfg.min_ops, cfg.max_ops, operators=ops)
    prover_half, verifier_half = split_pool(pool)
    seen = {p.text for p in pool}
    held_out = [p for p in make_problems(4 * cfg.eval_problems, 50_000 + seed, cfg.min_ops, cfg.max_ops,
                                         operators=ops) if p.text not in seen][:cfg.eval_problems]
    return prover_half, verifier_half, held_out


def play_seed(cfg: ProverVerifierConfig, seed: int, threads: int | None = None) -> dict:
    """One seed of the toy game (see the module docstring); plain data."""
    if threads is not None:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    s = game_settings(cfg)
    tok = DigitTokeniser()
    prover_half, verifier_half, held_out = problems_for(cfg, seed)
    sft = train_prover_sft(tok, prover_half, s, seed)
    out: dict = {"seed": seed, "sft_s": time.perf_counter() - t0, "rounds": [], "correctness": []}
    data: list = []
    prover = copy.deepcopy(sft)
    for r in range(cfg.rounds):
        data += verifier_data(prover, tok, verifier_half, s, seed * 100 + r)
        verifier = train_verifier(tok, data, s, seed)       # the same initial weights every round
        if r == 0:  # the supervised prover against the first verifier
            out["sft_eval"] = evaluate(sft, verifier, tok, held_out, s, seed + 7)
        ref = helpful_reference_score(prover, verifier, tok, held_out, s, seed + 11 + r)
        robustness = attacker_steps(sft, verifier, tok, prover_half, ref, s, seed * 100 + 50 + r)
        recs = rl_steps(prover, sft, verifier, tok, prover_half, s, cfg.reward, s.rl_steps, seed * 100 + 70 + r)
        ev = evaluate(prover, verifier, tok, held_out, s, seed + 7)
        out["rounds"].append({"round": r, "attacker_steps": robustness, "verifier_data": len(data),
                              "rl_reward": float(np.mean([x["reward"] for x in recs])),
                              "rl_kl": recs[-1]["kl"], **ev})
    baseline = copy.deepcopy(sft)
    for r in range(cfg.rounds):
        rl_steps(baseline, sft, None, tok, prover_half, s, "correctness", s.rl_steps, seed * 100 + 90 + r,
                 roles="helpful")
        out["correctness"].append(evaluate(baseline, None, tok, held_out, s, seed + 7, roles=("helpful",)))
    out["seconds"] = time.perf_counter() - t0
    return out


def run_all(cfg: ProverVerifierConfig, device: torch.device) -> list[dict]:
    """Every seed, in ``cfg.workers`` one-thread processes on CPU (or in turn); a summary line per seed."""
    seeds = [cfg.seed + r for r in range(cfg.n_seeds)]

    def report(res: dict) -> dict:
        last = res["rounds"][-1]
        print(f"[prover_verifier] seed {res['seed']} done in {res['seconds']:.0f}s (SFT {res['sft_s']:.0f}s): "
              f"helpful accuracy {res['sft_eval']['helpful_accuracy']:.2f} -> {last['helpful_accuracy']:.2f}, "
              f"attacker steps {res['rounds'][0]['attacker_steps']} -> {last['attacker_steps']}", flush=True)
        return res

    return [report(r) for r in run_jobs(play_seed, [(cfg, seed) for seed in seeds], cfg.workers, device)]


def per_seed(results: list[dict], key: str, where: str = "last") -> list[float]:
    """``key`` per seed from ``where``: ``sft`` (the supervised prover), ``first``/``last`` round, or
    ``correctness`` (the correctness-only baseline at the end)."""
    pick = {"sft": lambda r: r["sft_eval"], "first": lambda r: r["rounds"][0], "last": lambda r: r["rounds"][-1],
            "correctness": lambda r: r["correctness"][-1]}[where]
    return [float(pick(r)[key]) for r in sorted(results, key=lambda r: r["seed"])]


def fooled(ev: dict) -> float:
    """Share of the sneaky role's incorrect solutions the checker accepts."""
    return ev["sneaky_accepts_incorrect"]


def hf_rounds(cfg: ProverVerifierConfig, run_dir, device: torch.device) -> list[dict]:
    """The paper profile's rounds on real language models (:mod:`repro.pvg.hf`), checkpointed."""
    from pathlib import Path

    from ...pvg.hf import HFGameSettings, play_rounds
    settings = HFGameSettings(prover_path=cfg.hf_prover, verifier_path=cfg.hf_verifier, data_path=cfg.data_path,
                              rounds=cfg.rounds, reward=cfg.reward, kl_coef=cfg.kl_coef, seed=cfg.seed,
                              rl_steps=cfg.hf_rl_steps, batch=cfg.hf_batch, max_new_tokens=cfg.hf_max_new_tokens,
                              verifier_samples=cfg.hf_verifier_samples, verifier_steps=cfg.hf_verifier_steps,
                              eval_problems=cfg.hf_eval_problems, device=str(device))
    folder = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else Path(run_dir) / "checkpoints"
    return play_rounds(settings, folder)

