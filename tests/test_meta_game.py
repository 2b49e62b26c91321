"""RoboSumo against recorded opponents (repro.meta.game): the fixed-horizon env, batched opponents,
self-play snapshots, the iterated game and its strategies."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from repro.meta.game import (DRAW, LOSS, ONGOING, SELFPLAY_PPO, WIN, MetaAdaptation, NoAdaptation,
                             SumoVsOpponents, Tracking, actor_parameters, iterated_game, outcome_rates, selfplay_snapshots)
from repro.rl.ppo import GaussianActorCritic

D, A = 14, 4  # the disc's observation and action sizes



def _snapshot(seed: int, hidden: int = 16, still: bool = False) -> dict:
    torch.manual_seed(seed)
    net = GaussianActorCritic((D,), A, 1, hidden)
    if still:  # mean action 0 everywhere
        with torch.no_grad():
            net.actor[-1].weight.zero_()
            net.actor[-1].bias.zero_()
    return net.state_dict()


def test_fixed_horizon_freezes_decided_arenas_and_reports_each_outcome_once():
    env = SumoVsOpponents(3, episode_steps=8, snapshots=[_snapshot(0, still=True)], hidden=16, seed=0,
                          opponent_mode="mean", start_noise=0.0)
    obs, _ = env.reset(seed=1)
    radius = env.arenas.ring_radius
    zero = np.zeros((3, A))
    reported = np.zeros(3, int)
    held = {}
    for t in range(1, 9):
        if t == 1:
            env.arenas.place(1, "b", (radius + 0.1, 0.0))            # arena 1: b is out -> we win at step 1
        if t == 3:
            env.arenas.place(2, "a", (0.0, -radius - 0.2))           # arena 2: we are out -> we lose at step 3
        obs, reward, terminated, truncated, info = env.step(zero)
        reported += info["outcome"] != ONGOING
        assert not truncated.any()
        if t == 1:
            assert info["outcome"].tolist() == [ONGOING, WIN, ONGOING] and reward[1] > 1.9
            assert terminated.tolist() == [False, True, False]
            held[1] = obs[1].copy()
            assert obs[1, env.arenas.obs_slices["opp_edge"]][0] < 0, "the observation that ended the bout"
        if t == 3:
            assert info["outcome"][2] == LOSS and reward[2] < -1.9
            held[2] = obs[2].copy()
        for k, o in held.items():
            np.testing.assert_array_equal(obs[k], o)                 # frozen: observation held ...
            if (k, t) not in ((1, 1), (2, 3)):
                assert reward[k] == 0.0 and info["reward_raw"][k] == 0.0   # ... and no reward
        if t < 8:
            assert "episode_outcome" not in info and env.outcomes[0] == ONGOING
    assert terminated.all() and info["outcome"][0] == DRAW and reward[0] == pytest.approx(-1.0, abs=0.01)
    assert reported.tolist() == [1, 1, 1]
    assert env.last_outcomes.tolist() == [DRAW, WIN, LOSS] == info["episode_outcome"].tolist()
    np.testing.assert_allclose(env.last_returns[1], info["episode_return"][1])
    assert env.last_returns[1] > 1.9 and env.last_returns[2] < -1.9
    with pytest.raises(RuntimeError, match="reset"):
        env.step(zero)
    env.reset()
    assert (env.outcomes == ONGOING).all() and env.last_outcomes.tolist() == [DRAW, WIN, LOSS]
    assert outcome_rates(env.last_outcomes) == pytest.approx({"win": 1 / 3, "loss": 1 / 3, "draw": 1 / 3})


@pytest.mark.parametrize("tasks", [[0, 2, 1, 2, 0], [1, 0, 1, 1, 0]], ids=["vmapped", "grouped"])
def test_batched_opponents_equal_each_snapshot_alone(tasks):
    snaps = [_snapshot(s) for s in range(3)]
    env = SumoVsOpponents(5, episode_steps=5, snapshots=snaps, hidden=16, seed=0)
    env.set_tasks(np.array(tasks)[:, None])
    env.reset(seed=0)
    obs = np.random.default_rng(0).normal(size=(5, D)).astype(np.float32)
    got = env.opponent_actions(obs, sample=False)
    for n, k in enumerate(tasks):
        net = GaussianActorCritic((D,), A, 1, 16)
        net.load_state_dict(snaps[k])
        mean, _ = net.policy(torch.as_tensor(obs[n:n + 1]))
        np.testing.assert_allclose(got[n], mean[0].detach().numpy(), atol=1e-5, rtol=0)
    sampled = env.opponent_actions(obs)                              # opponent_mode "sample"
    eps = torch.randn((5, A), generator=torch.Generator().manual_seed(0)).numpy()
    np.testing.assert_allclose(sampled, got + np.exp(-0.5) * eps, atol=1e-5)  # sigma = exp(log_std_init)
    z = (np.stack([env.opponent_actions(obs) for _ in range(400)]) - got) / np.exp(-0.5)
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05


def test_set_tasks_validates_indices():
    env = SumoVsOpponents(3, episode_steps=5, snapshots=[_snapshot(0), _snapshot(1)], hidden=16)
    env.set_tasks(np.array([1, 0, 1]))
    env.set_tasks(np.array([[1.0], [0.0], [1.0]]))
    assert env.tasks.tolist() == [1, 0, 1]
    for bad in ([[0], [1], [2]], [[0], [-1], [1]], [[0], [0.5], [1]], [[0], [1]], [[0, 1], [1, 0], [0, 0]],
                [[0], [np.nan], [1]]):
        with pytest.raises(ValueError):
            env.set_tasks(np.array(bad))
    assert env.tasks.tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="snapshot 0"):
        SumoVsOpponents(2, snapshots=[_snapshot(0, hidden=8)], hidden=16)
    with pytest.raises(ValueError, match="opponent_mode"):
        SumoVsOpponents(2, opponent_mode="greedy")


def test_selfplay_snapshots_differ_and_resume_to_the_same_result(tmp_path, one_thread):
    kw = dict(n_arenas=4, body="disc", episode_steps=10, snapshot_every=2, hidden=16, seed=3)
    before = torch.random.get_rng_state()
    final, snaps, hist = selfplay_snapshots(iters=4, **kw)
    assert torch.equal(before, torch.random.get_rng_state()), "torch's global stream is left alone"
    assert len(snaps) == 3 and len(hist["iteration"]) == 4 and hist["iteration"] == [1, 2, 3, 4]
    assert all(h > 0 for h in hist["bouts"])
    for a, b in zip(snaps, snaps[1:]):
        assert any(not torch.equal(a[k], b[k]) for k in a), "consecutive snapshots differ"
    assert all(torch.equal(final[k], snaps[-1][k]) for k in final)
    ckpt = tmp_path / "sp.pt"
    selfplay_snapshots(iters=2, checkpoint=ckpt, **kw)                # "interrupted" after 2 iterations
    final2, snaps2, hist2 = selfplay_snapshots(iters=4, checkpoint=ckpt, **kw)
    assert all(torch.equal(final[k], final2[k]) for k in final) and len(snaps2) == 3
    assert hist2["return"] == hist["return"]


def test_iterated_game_rates_and_strategies():
    snaps = [_snapshot(0), _snapshot(1)]
    env = SumoVsOpponents(4, episode_steps=6, snapshots=snaps, hidden=16, seed=0)
    theta = actor_parameters(_snapshot(5))
    none = NoAdaptation(theta)
    res = iterated_game(env, none, rounds=3, episodes_per_round=2, seed=0)
    np.testing.assert_allclose(res["win"] + res["loss"] + res["draw"], 1.0)
    assert res["opponent"].tolist() == [0, 1, 1] and res["return"].shape == (3,)
    assert all(torch.equal(none.params()[k], theta[k]) for k in theta)
    again = iterated_game(env, NoAdaptation(theta), rounds=3, episodes_per_round=2, seed=0)
    np.testing.assert_array_equal(again["return"], res["return"])  # seeded
    track = Tracking(theta, lr=0.05, steps=2)
    res = iterated_game(env, track, rounds=2, episodes_per_round=2, seed=0, schedule=np.array([1, 0]))
    assert res["opponent"].tolist() == [1, 0]
    assert any(not torch.allclose(track.params()[k], theta[k]) for k in theta), "tracking moved phi"
    from repro.meta.adapt import MetaSettings, init_alpha
    settings = MetaSettings(hidden=16, inner_steps=1)
    meta = MetaAdaptation(theta, init_alpha(theta, settings), settings)
    iterated_game(env, meta, rounds=2, episodes_per_round=1, seed=0)
    assert any(not torch.allclose(meta.params()[k], theta[k]) for k in theta), "adaptation moved phi"
    with pytest.raises(ValueError, match="schedule"):
        iterated_game(env, none, rounds=2, schedule=np.array([0]))


def test_pilot_selfplay_beats_its_initial_policy(one_thread):
    """24 PPO self-play iterations (32 discs, 60 steps, a 1 m ring, 10x approach/push shaping: with
    the default shaping and ring, 64 x 100-step self-play needs ~150-200 iterations) give a policy
    that beats the initial one (which draws ~80% against itself)."""
    from repro.meta.sumo import SumoRewardWeights
    kw = dict(ring_radius=1.0, rewards=SumoRewardWeights(approach=10.0, push=10.0))
    settings = dataclasses.replace(SELFPLAY_PPO, lr=1e-3)
    final, snaps, _ = selfplay_snapshots(32, "disc", 60, iters=24, snapshot_every=24, hidden=64, seed=1,
                                         settings=settings, **kw)
    env = SumoVsOpponents(64, episode_steps=60, snapshots=snaps[:1], hidden=64, seed=1, **kw)
    trained = iterated_game(env, NoAdaptation(final), rounds=1, episodes_per_round=1, seed=5)
    initial = iterated_game(env, NoAdaptation(snaps[0]), rounds=1, episodes_per_round=1, seed=5)
    assert trained["win"][0] > 0.6 and trained["loss"][0] < 0.1, trained
    assert trained["win"][0] - trained["loss"][0] > initial["win"][0] - initial["loss"][0] + 0.4


def test_meta_learner_trains_and_evaluates_on_the_opponent_tasks(one_thread):
    """SumoVsOpponents is an env of repro.meta.adapt: opponents k -> k + 1 are consecutive tasks."""
    from repro.meta.adapt import MetaSettings, evaluate_sequences, meta_train
    env = SumoVsOpponents(4, episode_steps=6, snapshots=[_snapshot(0), _snapshot(1), _snapshot(2)], hidden=16)
    settings = MetaSettings(hidden=16, groups=2, outer_epochs=1, inner_steps=1)

    def pairs(g, rng):
        k = rng.integers(0, 2, size=(g, 1))
        return k, k + 1

    history, theta, alpha = meta_train(env, pairs, settings, iterations=2, seed=0)
    assert len(history["return_after"]) == 2 and np.isfinite(history["return_after"]).all()
    seqs = np.array([[[0], [1], [2]], [[1], [2], [2]]])            # [S, K, P]
    returns = evaluate_sequences(env, theta, alpha, "meta", seqs, settings, seed=0)
    assert returns.shape == (2, 3) and np.isfinite(returns).all()
