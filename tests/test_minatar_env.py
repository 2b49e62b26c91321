"""MinAtar as the book uses it (repro.rl.envs.minatar_env): channels-first uint8 observations,
the minimal action set, seeding, the time limit, and vector envs (seeded, picklable)."""
from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from repro.rl.envs import MINATAR_GAMES, MinAtarEnv, env_factory, make_vector_env, minatar_env
from repro.seed import seed_env


def _play(env, seed, n=300, action_seed=0):
    """Observations, rewards and ends of ``n`` steps of random actions (fixed by ``action_seed``)
    from ``reset(seed=seed)``, resetting without a seed when an episode ends."""
    actions = np.random.default_rng(action_seed).integers(env.action_space.n, size=n)
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for a in actions:
        obs, r, term, trunc, _ = env.step(a)
        out.append(np.append(obs.ravel(), [r, term, trunc]))
        if term or trunc:
            obs, _ = env.reset()
            out.append(obs)
    return np.concatenate([o.ravel() for o in out])


@pytest.mark.parametrize("name", sorted(MINATAR_GAMES))
def test_observations_are_channels_first_uint8_binary(name):
    env = env_factory(f"MinAtar/{name}-v1")()
    obs, _ = env.reset(seed=0)
    C = env.unwrapped.n_channels
    assert env.observation_space.shape == (C, 10, 10) == obs.shape and obs.dtype == np.uint8
    assert len(env.unwrapped.channel_names) == C
    assert env.unwrapped.action_set[0] == 0 and env.unwrapped.action_names[0] == "n"  # index 0 = no-op
    for a in np.random.default_rng(0).integers(env.action_space.n, size=50):
        obs, _, term, trunc, _ = env.step(a)
        assert env.observation_space.contains(obs) and set(np.unique(obs)) <= {0, 1}
        if term or trunc:
            env.reset()


def test_breakout_minimal_and_full_action_sets():
    env = minatar_env("breakout")
    assert env.action_space.n == 3 and env.action_set == [0, 1, 3] and env.action_names == ("n", "l", "r")
    assert env.channel_names == ("paddle", "ball", "trail", "brick")
    assert env_factory("MinAtar/Breakout-v0")().action_space.n == 6
    assert env_factory("MinAtar/SpaceInvaders-v1")().unwrapped.game_name == "space_invaders"
    with pytest.raises(ValueError):
        env_factory("MinAtar/Pong-v1")
    with pytest.raises(ValueError):
        minatar_env("pong")


def test_check_env_passes():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(minatar_env("breakout"), skip_render_check=True)


def test_same_seed_same_episodes_different_seed_different_episodes():
    a = _play(minatar_env("breakout"), seed=3)
    b = _play(minatar_env("breakout"), seed=3)
    c = _play(minatar_env("breakout"), seed=4)
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_reseeding_the_same_env_repeats_the_episode():
    """Reset also clears MinAtar's sticky-action memory, which it keeps across episodes."""
    env = minatar_env("asterix")
    first = _play(env, seed=11, action_seed=1)
    _play(env, seed=5, action_seed=2)  # leave other state behind
    np.testing.assert_array_equal(first, _play(env, seed=11, action_seed=1))


def test_time_limit_truncates():
    env = minatar_env("freeway", max_steps=7)  # Freeway ends on its own only after 2500 steps
    env.reset(seed=0)
    ends = [env.step(0)[2:4] for _ in range(7)]
    assert ends[:-1] == [(False, False)] * 6 and ends[-1] == (False, True)
    assert MinAtarEnv().max_steps == 5000


def _vector_rollout(venv, steps=40, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        obs, r, term, trunc, _ = venv.step(rng.integers(venv.single_action_space.n, size=venv.num_envs))
        out.append(np.concatenate([obs.ravel(), r, term, trunc]))
    return np.stack(out)


def test_vector_env_is_seeded_and_picklable():
    make = env_factory("MinAtar/Breakout-v1", max_steps=30)
    a = make_vector_env(make, 3, "sync", seed=7)
    b = make_vector_env(make, 3, "sync")
    seed_env(b, 7)
    np.testing.assert_array_equal(_vector_rollout(a), _vector_rollout(b))
    c = pickle.loads(pickle.dumps(a))  # the trainer checkpoints sync vector envs by pickling
    np.testing.assert_array_equal(_vector_rollout(a, seed=1), _vector_rollout(c, seed=1))
    d = make_vector_env(make, 3, "sync", seed=8)
    assert not np.array_equal(_vector_rollout(make_vector_env(make, 3, "sync", seed=7)), _vector_rollout(d))
