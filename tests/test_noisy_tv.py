"""The noisy TV (repro.rl.noisy_tv.NoisyTV) on the rooms gridworld and MinAtar: spaces,
the remote (a no-op that shows a random picture), seeding, uniform pictures, vector envs."""
from __future__ import annotations

import pickle
import warnings
from functools import partial

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from repro.rl.envs import env_factory, info_array, make_vector_env, minatar_env, rooms_env
from repro.rl.noisy_tv import NoisyTV


def _presses(env, n, seed):
    """The picture indices shown by ``n`` presses of the remote after ``reset(seed=seed)``."""
    env.reset(seed=seed)
    shown = []
    for _ in range(n):
        obs, _, term, trunc, info = env.step(env.tv_action)
        shown.append(info["tv_image"])
        if term or trunc:
            env.reset()
    return np.array(shown)


@pytest.mark.parametrize("make", [partial(rooms_env), partial(minatar_env, "breakout")], ids=["rooms", "minatar"])
def test_check_env_passes(make):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "different from the unwrapped version": expected for a wrapper
        check_env(NoisyTV(make(), n_images=4), skip_render_check=True)


def test_spaces():
    env = NoisyTV(rooms_env(), n_images=5)
    assert env.action_space.n == 4 and env.tv_action == 3 and env.noop_action == 6
    assert env.observation_space.shape == (4, 19, 19) and env.observation_space.dtype == np.uint8
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and not obs[3].any() and info["tv"] == 0
    assert env.images.shape == (5, 19, 19) and all(im.any() for im in env.images)
    m = NoisyTV(minatar_env("breakout"), n_images=3)
    assert m.action_space.n == 4 and m.noop_action == 0 and m.observation_space.shape == (5, 10, 10)
    m.reset(seed=0)
    assert set(np.unique(m.images)) == {0, 1} and m.observation_space.high.max() == 1


def test_minigrid_done_action_is_a_noop():
    env = rooms_env()
    env.reset(seed=0)
    env.step(2)  # forward: off the start cell
    before = (env.agent_pos, env.agent_dir, env.step_count, env.gen_obs().copy())
    obs, reward, term, trunc, info = env.step(6)  # minigrid's "done"
    assert (env.agent_pos, env.agent_dir) == before[:2] and env.step_count == before[2] + 1
    np.testing.assert_array_equal(obs, before[3])
    assert reward == 0 and not term and not trunc


def test_remote_leaves_the_agent_and_shows_a_picture():
    env = NoisyTV(rooms_env(), n_images=6)
    obs, info = env.reset(seed=1)
    obs, *_, info = env.step(2)
    assert info["tv"] == 0 and not obs[3].any() and {"cell", "room"} <= info.keys()
    for move in [0, 2, 2, 1, 2, 2, 2, 1, 2, 0] * 2:
        cell, room, grid = info["cell"], info["room"], obs[:3].copy()
        obs, reward, term, trunc, info = env.step(3)
        assert info["tv"] == 1 and info["cell"] == cell and info["room"] == room and reward == 0
        np.testing.assert_array_equal(obs[:3], grid)
        assert obs[3].any()
        np.testing.assert_array_equal(obs[3], env.images[info["tv_image"]])
        obs, *_, info = env.step(move)
        assert info["tv"] == 0 and info["tv_image"] == -1 and not obs[3].any()


def test_minatar_remote_is_the_noop():
    """Without sticky actions, pressing the remote is stepping the game with its no-op."""
    tv, base = NoisyTV(minatar_env("breakout", sticky=0.0), n_images=4), minatar_env("breakout", sticky=0.0)
    o1, _ = tv.reset(seed=2)
    o2, _ = base.reset(seed=2)
    actions = np.random.default_rng(0).integers(4, size=200)
    for a in actions:
        o1, r1, t1, u1, info = tv.step(a)
        o2, r2, t2, u2, _ = base.step(0 if a == 3 else a)
        np.testing.assert_array_equal(o1[:4], o2)
        assert (r1, t1, u1) == (r2, t2, u2) and info["tv"] == int(a == 3) and o1[4].any() == (a == 3)
        if t1 or u1:
            o1, _ = tv.reset()
            o2, _ = base.reset()


def test_pictures_are_reproducible_and_uniform():
    K = 8
    a, b = NoisyTV(rooms_env(max_steps=10**6), n_images=K), NoisyTV(rooms_env(max_steps=10**6), n_images=K)
    seq = _presses(a, 4000, seed=5)
    np.testing.assert_array_equal(seq, _presses(b, 4000, seed=5))
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(seq[:50], _presses(b, 50, seed=6)) and not np.array_equal(a.images, b.images)
    counts = np.bincount(seq, minlength=K)
    expected = len(seq) / K
    assert counts.min() > 0 and ((counts - expected) ** 2 / expected).sum() < 24.3  # chi2(7) 0.999 quantile


def test_reset_without_seed_keeps_the_pictures_image_seed_shares_them():
    env = NoisyTV(rooms_env(), n_images=3)
    env.reset(seed=0)
    images = env.images.copy()
    env.reset()
    np.testing.assert_array_equal(env.images, images)
    s1, s2 = NoisyTV(rooms_env(), 3, image_seed=9), NoisyTV(rooms_env(), 3, image_seed=9)
    s1.reset(seed=0)
    s2.reset(seed=1)
    np.testing.assert_array_equal(s1.images, s2.images)


def test_wrapper_is_picklable_mid_episode():
    env = NoisyTV(minatar_env("asterix"), n_images=4)
    env.reset(seed=3)
    for a in (4, 1, 4):
        env.step(a)
    copy = pickle.loads(pickle.dumps(env))
    for a in np.random.default_rng(1).integers(6, size=30):
        x, y = env.step(a), copy.step(a)
        np.testing.assert_array_equal(x[0], y[0])
        assert x[1:4] == y[1:4] and x[4]["tv_image"] == y[4]["tv_image"]
        if x[2] or x[3]:
            break


def test_env_factory_and_vector_env():
    plain = env_factory("rooms", max_steps=20)
    assert plain.func is rooms_env and plain.keywords == {"max_steps": 20}  # unchanged without a TV
    assert isinstance(plain(), type(rooms_env()))
    with pytest.raises(ValueError):
        env_factory("CartPole-v1", noisy_tv=4)
    make = env_factory("rooms", noisy_tv=4, max_steps=20)

    def rollout(venv):
        rng, out = np.random.default_rng(0), []
        for _ in range(40):
            a = rng.integers(4, size=venv.num_envs)
            obs, _, term, trunc, info = venv.step(a)
            done = term | trunc  # SAME_STEP autoreset: the ended episode's info is in final_info
            tv = np.where(done, info_array(info.get("final_info", {}), "tv", venv.num_envs), info_array(info, "tv", venv.num_envs))
            np.testing.assert_array_equal(tv, a == 3)
            np.testing.assert_array_equal(obs[:, 3].reshape(venv.num_envs, -1).any(1), (a == 3) & ~done)
            out.append(np.concatenate([obs.ravel(), tv, info_array(info, "cell", venv.num_envs)]))
        return np.stack(out)

    a = make_vector_env(make, 3, "sync", seed=7)
    assert a.single_action_space.n == 4 and a.single_observation_space.shape == (4, 19, 19)
    ra = rollout(a)
    np.testing.assert_array_equal(ra, rollout(make_vector_env(make, 3, "sync", seed=7)))
    c = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(rollout(a), rollout(c))
    images = [e.images for e in a.envs]
    assert not np.array_equal(images[0], images[1])  # per-copy pictures from seed + i
    shared = make_vector_env(env_factory("MinAtar/Breakout-v1", noisy_tv=4, tv_image_seed=0), 2, "sync", seed=7)
    np.testing.assert_array_equal(shared.envs[0].images, shared.envs[1].images)


def test_async_vector_env_matches_sync():
    make = env_factory("MinAtar/Breakout-v1", noisy_tv=4, max_steps=25)

    def rollout(mode):
        venv = make_vector_env(make, 2, mode, seed=3)
        rng, out = np.random.default_rng(0), []
        for _ in range(60):
            obs, r, term, trunc, info = venv.step(rng.integers(4, size=2))
            out.append(np.concatenate([obs.ravel(), r, term, trunc, info_array(info, "tv_image", 2)]))
        venv.close()
        return np.stack(out)

    np.testing.assert_array_equal(rollout("sync"), rollout("async"))
