"""The curiosity chapter's config, runs, per-seed numbers, checkpoint/resume and the paper profile's pipeline."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from repro.chapters.curiosity.config import CLAIMS, MIN_SEEDS, PAPER_SETUP, TV_CHANCE, CuriosityConfig
from repro.chapters.curiosity.experiments import (atari_probe, game_run, job_name, jobs, per_seed, random_policy,
                                                  run_all, run_job, summarise, tv_run)
from repro.checkpoint import load_checkpoint, save_checkpoint
from repro.config import ConfigError
from repro.rl.trainer import Trainer, train
from repro.scorecard import FINDING

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny ops: see conftest


def test_config_validation_and_profiles():
    with pytest.raises(ConfigError):
        CuriosityConfig.for_profile("book", features=("rf", "vae"))
    with pytest.raises(ConfigError, match="divisible"):
        CuriosityConfig.for_profile("book", num_envs=3, num_steps=3, minibatches=4)
    with pytest.raises(ConfigError, match="env_sweep"):
        CuriosityConfig.for_profile("book", env_sweep=(16,))
    with pytest.raises(ConfigError, match="repeat"):
        CuriosityConfig.for_profile("book", tv_methods=("rnd_tv", "rnd_tv"))
    paper = CuriosityConfig.for_profile("paper")
    assert paper.is_atari and paper.num_envs == PAPER_SETUP["envs"] and paper.num_steps == PAPER_SETUP["rollout"]
    assert (paper.lr, paper.epochs, paper.minibatches, paper.clip_coef, paper.ent_coef) == (
        PAPER_SETUP["lr"], PAPER_SETUP["epochs"], PAPER_SETUP["minibatches"], PAPER_SETUP["clip"],
        PAPER_SETUP["entropy"])
    assert paper.feat_dim == PAPER_SETUP["feature_dim"] and paper.n_residual == PAPER_SETUP["residual_blocks"]
    assert paper.total_steps == PAPER_SETUP["steps_per_game"] and paper.checkpoint_every > 0
    book = CuriosityConfig.for_profile("book")
    assert book.n_seeds >= MIN_SEEDS and book.env_sweep_seeds >= MIN_SEEDS  # every finding can be scored


def test_runs_are_pure_curiosity_with_an_infinite_horizon():
    cfg = CuriosityConfig.for_profile("book")
    spec = game_run(cfg, "idf", 3)
    assert spec.ppo.adv_coefs == (0.0, 1.0) and spec.ppo.episodic == (True, False)
    assert spec.bonus.kind == "curiosity" and spec.bonus.features == "idf" and spec.bonus.net == "minatar"
    assert spec.net == "minatar" and spec.env == cfg.env and spec.seed == 3
    tv = tv_run(cfg, "rnd_tv", 1)
    assert tv.bonus.kind == "rnd" and tv.bonus.channels == (0, -1) and dict(tv.env_kwargs)["noisy_tv"] == cfg.tv_images
    assert tv.ppo.adv_coefs == (0.0, 1.0)
    plain = tv_run(cfg, "curiosity", 1)
    assert plain.bonus.channels == (0,) and "noisy_tv" not in dict(plain.env_kwargs)
    assert {t.key for t in tv.trackers} == {"cell", "tv"}


def test_jobs_cover_every_agent_and_seed():
    cfg = CuriosityConfig.for_profile("book")
    js = jobs(cfg)
    assert len(js) == len(set(js))
    games = [j for j in js if j[0] == "game"]
    assert len(games) == len(cfg.features) * cfg.n_seeds + len(cfg.env_sweep) * cfg.env_sweep_seeds
    assert sum(j[0] == "random" for j in js) == cfg.n_seeds
    assert sum(j[0] == "tv" for j in js) == len(cfg.tv_methods) * cfg.n_seeds
    assert len({job_name(j) for j in js}) == len(js)


def test_random_policy_is_seeded():
    cfg = CuriosityConfig.for_profile("smoke", total_steps=4 * 16 * 40)
    a, b, c = random_policy(cfg, 0), random_policy(cfg, 0), random_policy(cfg, 1)
    assert a == b and a != c and len(a["returns"]) > 0
    assert all(r >= 0 for r in a["returns"])  # Breakout: a point per brick


def test_summaries_from_a_known_history():
    h = {"episodes": np.array([2.0, 0, 1, 1]), "return_mean": np.array([9.0, np.nan, 1.0, 3.0]),
         "share_tv": np.array([0.1, 0.2, 0.5, 0.9]), "distinct_cells": np.array([10.0, 20, 30, 40])}
    s = summarise({"kind": "tv", "history": h, "global_step": 400, "wall_s": 2.0})
    assert s["final_return"] == 3.0 and s["tv_share"] == 0.9   # last 25% of 4 updates = 1 update
    assert s["coverage"] == 25.0 and s["distinct_cells"] == 40 and s["sps"] == 200.0
    r = summarise({"kind": "random", "returns": [1.0, 2.0, 6.0]})
    assert r["final_return"] == 3.0
    res = [{"job": ("random", 1), "kind": "random", "returns": [4.0]},
           {"job": ("random", 0), "kind": "random", "returns": [2.0]}]
    assert per_seed(res, "final_return", "random") == [2.0, 4.0]  # seed order


def test_claims_state_their_rules():
    ids = [c.id for c in CLAIMS]
    assert len(ids) == len(set(ids))
    traps = next(c for c in CLAIMS if c.id == "tv-traps-curiosity")
    assert traps.rule.threshold == TV_CHANCE and f"{TV_CHANCE:g}" in traps.statement
    for c in CLAIMS:
        if c.kind == FINDING:
            assert f"≥ {MIN_SEEDS} seeds" in c.statement and c.rule.min_seeds == MIN_SEEDS


def test_a_curiosity_run_resumes_with_the_identical_next_update(tmp_path):
    """Interrupt an IDF run (trained features, random minibatch draws) after 2 updates; resume in a fresh
    trainer after scrambling the RNG: update 3 equals the uninterrupted run's, to the bit."""
    cfg = CuriosityConfig.for_profile("smoke", total_steps=4 * 16 * 3)
    spec = dataclasses.replace(game_run(cfg, "idf", 5), bonus=dataclasses.replace(game_run(cfg, "idf", 5).bonus,
                                                                                 proportion=0.5))
    full = Trainer(spec, torch.device("cpu"), 3)
    train(full, progress=False)
    first = Trainer(spec, torch.device("cpu"), 3)
    first.random_walk()
    first.step()
    first.step()
    ckpt = tmp_path / "idf.pt"
    save_checkpoint(ckpt, first.state_dict(), full.identity())
    first.close()
    torch.manual_seed(123)
    np.random.seed(123)
    resumed = Trainer(spec, torch.device("cpu"), 3)
    train(resumed, checkpoint=ckpt, progress=False)
    untimed = lambda h: [{k: v for k, v in r.items() if not k.startswith("sps")} for r in h]  # noqa: E731
    np.testing.assert_equal(untimed(full.history), untimed(resumed.history))
    for (k, a), b in zip(full.net.state_dict().items(), resumed.net.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    for (k, a), b in zip(full.bonus.state_dict()["nets"].items(), resumed.bonus.state_dict()["nets"].values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    full.close()
    resumed.close()


def test_run_job_checkpoints_and_resumes_a_noisy_tv_run(tmp_path):
    cfg = CuriosityConfig.for_profile("smoke", checkpoint_every=1)
    job = ("tv", "curiosity_tv", 0)
    a = run_job(cfg, job, str(tmp_path))
    ckpt = tmp_path / f"{job_name(job)}.pt"
    assert ckpt.exists()
    b = run_job(cfg, job, str(tmp_path))  # finds the finished checkpoint: the same run, not a new one
    np.testing.assert_equal(a["history"]["share_tv"], b["history"]["share_tv"])
    other = CuriosityConfig.for_profile("smoke", checkpoint_every=1, tv_images=3)
    from repro.checkpoint import CheckpointMismatch
    with pytest.raises(CheckpointMismatch):
        run_job(other, job, str(tmp_path))


def test_smoke_run_all_in_two_worker_processes(tmp_path):
    cfg = CuriosityConfig.for_profile("smoke", n_seeds=1, env_sweep=(), tv_methods=("curiosity_tv",),
                                      features=("rf",), workers=2)
    res = run_all(cfg, torch.device("cpu"), tmp_path)
    assert sorted(r["kind"] for r in res) == ["game", "random", "tv"]
    for r in res:
        if r["kind"] != "random":
            assert all(math.isfinite(v) for v in r["history"]["int_reward_raw"])


def test_paper_profile_pipeline_on_tiny_inputs():
    """ALE preprocessing, the RND paper's policy net, the curiosity paper's RF/IDF/pixel models at 512 wide."""
    probe = atari_probe(steps=4, num_envs=2)
    assert probe["loss_finite"]
    cfg = CuriosityConfig.for_profile("paper", num_envs=2, num_steps=4, total_steps=8, random_walk_steps=2,
                                      minibatches=2, env_sweep=(), progress_every_s=0.0)
    for f in cfg.features:
        spec = dataclasses.replace(game_run(cfg, f, 0), vector_mode="sync")
        tr = Trainer(spec, torch.device("cpu"), 1)
        tr.random_walk()
        rec = tr.step()
        tr.close()
        assert spec.bonus.feat_dim == 512 and tr.obs_shape == (4, 84, 84)
        assert all(math.isfinite(v) for k, v in rec.items() if isinstance(v, float) and k != "return_mean"), f
