"""Nonstationary locomotion: the fade schedule, many arenas in one MjModel, the gymnasium view."""
from __future__ import annotations

import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from repro.meta.locomotion import (HELD_OUT_PAIRS, LEG_PAIRS, TRAIN_PAIRS, LocomotionArenas, LocomotionEnv,
                                   fade_scales, fade_sequence)


def test_fade_schedule_is_linear_from_one_to_zero_over_seven_episodes():
    assert len(LEG_PAIRS) == 15 and len(TRAIN_PAIRS) == 12 and len(HELD_OUT_PAIRS) == 3
    assert not set(TRAIN_PAIRS) & set(HELD_OUT_PAIRS)
    seq = fade_sequence((1, 4))
    assert seq.shape == (7, 6)
    np.testing.assert_allclose(seq[:, 1], [1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0])
    np.testing.assert_allclose(seq[:, 4], seq[:, 1])
    np.testing.assert_array_equal(np.delete(seq, [1, 4], axis=1), 1.0)
    with pytest.raises(ValueError, match="episode"):
        fade_scales((0, 1), 8)
    with pytest.raises(ValueError, match="pair"):
        fade_scales((2, 2), 1)


def test_many_arenas_step_exactly_as_each_arena_alone():
    rng = np.random.default_rng(0)
    many = LocomotionArenas(4, episode_steps=20, seed=3)
    scales = np.stack([fade_scales(p, k) for p, k in zip(LEG_PAIRS[:4], (1, 3, 5, 7))])
    many.set_tasks(scales)
    obs, _ = many.reset(seed=3)
    qpos0, qvel0 = many._qpos().copy(), many._qvel().copy()
    actions = rng.uniform(-1, 1, (20, 4, 6))
    traj = [many.step(a) for a in actions]
    for k in range(4):
        one = LocomotionArenas(1, episode_steps=20)
        one.set_tasks(scales[k:k + 1])
        one.reset()
        one._qpos()[:] = qpos0[k]   # joint coordinates are relative to each arena's own origin
        one._qvel()[:] = qvel0[k]
        mujoco.mj_forward(one.model, one.data)
        for t in range(20):
            o, r, term, trunc, _ = one.step(actions[t, k:k + 1])
            np.testing.assert_allclose(o[0], traj[t][0][k], atol=1e-9)
            assert r[0] == pytest.approx(traj[t][1][k], abs=1e-9)
        assert trunc[0] and traj[-1][3].all()


def test_a_faded_pair_leaves_a_torque_that_turns_the_body():
    env = LocomotionArenas(2, episode_steps=30, init_noise=0.0)
    env.set_tasks(np.stack([np.ones(6), fade_scales((0, 1), 7)]))
    env.reset(seed=0)
    for _ in range(30):
        obs, r, *_ = env.step(np.ones((2, 6)))
    assert abs(obs[0, 2]) < 1e-6            # all legs: no yaw rate
    assert abs(obs[1, 2]) > 1.0             # two legs off on one side: it spins
    assert r[0] > 3 * r[1]


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="n_arenas"):
        LocomotionArenas(0)
    with pytest.raises(ValueError, match="body"):
        LocomotionArenas(1, body="octopus")
    env = LocomotionArenas(2)
    with pytest.raises(ValueError, match="scales"):
        env.set_tasks(np.full((2, 6), 1.5))


def test_single_arena_view_passes_the_env_checker():
    env = LocomotionEnv(pair=HELD_OUT_PAIRS[0], episode=4, episode_steps=10)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=1)
    again, _ = env.reset(seed=1)
    np.testing.assert_array_equal(obs, again)
    np.testing.assert_allclose(env.arenas.scales[0, list(HELD_OUT_PAIRS[0])], 0.5)


def test_render_shows_the_crawler():
    env = LocomotionArenas(1)
    env.reset(seed=0)
    try:
        img = env.render(width=96, height=64)
    except Exception as exc:  # pragma: no cover - no EGL on this machine
        pytest.skip(f"MuJoCo cannot render headless here: {exc}")
    assert img.shape == (64, 96, 3) and img.dtype == np.uint8
    assert img.std() > 5  # not a blank frame
    env.close()


def test_the_paper_body_fades_both_motors_of_a_leg_and_steps():
    env = LocomotionArenas(3, body="bug", episode_steps=5)
    assert env.act_per_arena == 18  # six legs x (hip yaw, hip pitch, knee)
    env.set_tasks(np.stack([fade_scales((0, 5), 7), fade_scales((2, 3), 4), np.ones(6)]))
    faded = env._ctrl_scale
    for leg in range(6):
        cols = env.leg_of_actuator == leg
        assert cols.sum() == 3
        want0 = 0.0 if leg in (0, 5) else 1.0
        want1 = 0.5 if leg in (2, 3) else 1.0
        np.testing.assert_allclose(faded[0, cols], want0)
        np.testing.assert_allclose(faded[1, cols], want1)
    obs, _ = env.reset(seed=0)
    for _ in range(5):
        obs, r, term, trunc, _ = env.step(np.random.default_rng(0).uniform(-1, 1, (3, 18)))
    assert np.isfinite(obs).all() and np.isfinite(r).all() and trunc.all()
