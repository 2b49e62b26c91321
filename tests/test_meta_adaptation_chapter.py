"""The meta-adaptation chapter: its config, its task samplers, and the paper profile on tiny inputs."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from repro.chapters.meta_adaptation.config import CLAIMS, MIN_EVAL_SEQUENCES, MetaAdaptationConfig
from repro.chapters.meta_adaptation.experiments import (consecutive_pairs, held_out_sequences, late_return,
                                                       legged_probe, meta_settings, oracle_gap, run_seed,
                                                       sumo_seed, training_tasks)
from repro.config import ConfigError
from repro.meta.adapt import meta_train
from repro.meta.game import SumoVsOpponents
from repro.meta.locomotion import HELD_OUT_PAIRS, N_EPISODES, TRAIN_PAIRS, LocomotionArenas


def test_claims_and_config():
    ids = [c.id for c in CLAIMS]
    assert len(ids) == len(set(ids))
    with pytest.raises(ConfigError, match="evaluation sequences"):
        MetaAdaptationConfig.for_profile("book", eval_sequences=MIN_EVAL_SEQUENCES - 1)
    s = meta_settings(MetaAdaptationConfig.for_profile("book"))
    assert s.inner_steps == 3 and s.alpha_init == 1e-3 and s.meta_grad_clip == 0.1


def test_task_samplers_never_show_a_held_out_pair_during_training():
    rng = np.random.default_rng(0)
    for _ in range(50):
        t = training_tasks(8, rng)
        a, b = consecutive_pairs(8, rng)
        for scales in (t, a, b):
            faded = [tuple(np.flatnonzero(row < 1)) for row in scales]
            assert all(f == () or f in TRAIN_PAIRS for f in faded)
        # consecutive: the same pair, one episode later (scale down by 1/6), never past episode 7
        np.testing.assert_allclose(np.where(a < 1, a - b, 0), np.where(a < 1, 1 / 6, 0), atol=1e-12)
        assert (a.min(1) > 0).all()  # episode i <= 6 has a scale of at least 1/6
    seqs, pairs = held_out_sequences(7)
    assert seqs.shape == (7, N_EPISODES, 6) and set(pairs) == set(HELD_OUT_PAIRS)


def _tiny(profile: str = "smoke", **kw) -> MetaAdaptationConfig:
    return MetaAdaptationConfig.for_profile(profile, **kw)


def test_one_seed_gives_curves_for_every_method_and_an_oracle(one_thread):
    cfg = _tiny(episode_steps=8, pretrain_iters=2, meta_iters=2, oracle_iters=1, eval_sequences=3)
    res = run_seed(cfg, 0)
    for m in ("meta", "tracking", "none", "meta_theta"):
        assert res["curves"][m].shape == (3, N_EPISODES) and np.isfinite(res["curves"][m]).all()
        assert np.isfinite(late_return(res, m))
    # episode 1 of "tracking" and "none" is the same baseline policy on the same seeds
    np.testing.assert_allclose(res["curves"]["tracking"][:, 0], res["curves"]["none"][:, 0])
    assert res["oracle"].shape == (3,) and np.isfinite(oracle_gap(res))


def test_the_paper_profile_builds_and_steps_on_tiny_inputs(one_thread):
    cfg = MetaAdaptationConfig.for_profile("paper")
    assert cfg.body == "bug" and cfg.sumo_body == "ant" and cfg.sumo_rounds == 100
    s = dataclasses.replace(meta_settings(cfg), groups=2)
    env = LocomotionArenas(4, body=cfg.body, episode_steps=5, seed=0)
    hist, theta, alpha = meta_train(env, consecutive_pairs, s, 1, 0)
    assert np.isfinite(hist["return_after"]).all() and set(alpha) == set(theta)
    sumo = SumoVsOpponents(2, body=cfg.sumo_body, episode_steps=5, hidden=cfg.hidden, seed=0)
    obs, _ = sumo.reset(seed=0)
    for _ in range(5):
        obs, r, term, trunc, info = sumo.step(np.zeros((2, sumo.n_actions)))
    assert np.isfinite(obs).all() and term.all()
    probe = legged_probe(n_arenas=2, steps=5)
    assert probe["finite"] and "arena-steps/s" in probe["summary"]


def test_the_sumo_game_runs_for_every_method(one_thread):
    cfg = _tiny(sumo_episode_steps=10, sumo_rounds=3)
    res = sumo_seed(cfg, 0)
    for m, g in res["games"].items():
        assert g["win"].shape == (3,)
        np.testing.assert_allclose(g["win"] + g["loss"] + g["draw"], 1.0)
    assert (np.diff(res["schedule"]) >= 0).all() and res["schedule"][0] == res["k0"]



def test_a_seed_rerun_with_its_checkpoints_resumes_to_the_same_result(one_thread, tmp_path):
    cfg = _tiny(episode_steps=6, pretrain_iters=3, meta_iters=3, oracle_iters=2, eval_sequences=3,
                checkpoint_every=1)
    first = run_seed(cfg, 0, tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["pretrain_0.pt", "meta_0.pt", "baseline_0.pt", "oracle_0_0.pt", "oracle_1_0.pt",
                            "oracle_2_0.pt"])
    again = run_seed(cfg, 0, tmp_path)
    for m in ("meta", "tracking", "none"):
        np.testing.assert_array_equal(first["curves"][m], again["curves"][m])
    np.testing.assert_array_equal(first["oracle"], again["oracle"])
    assert first["meta"]["return_after"] == again["meta"]["return_after"]
    # another config must not pick up these checkpoints
    from repro.checkpoint import CheckpointMismatch
    with pytest.raises(CheckpointMismatch):
        run_seed(dataclasses.replace(cfg, hidden=8), 0, tmp_path)
