"""RoboSumo (repro.meta.sumo) and its bodies (repro.meta.bodies): rules, shaping, isolation of arenas, rendering."""
from __future__ import annotations

import os
import warnings

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from gymnasium.utils.env_checker import check_env  # noqa: E402

from repro.meta import bodies  # noqa: E402
from repro.meta.sumo import A_WINS, B_WINS, DRAW, ONGOING, SumoArenas, SumoEnv, render_frames  # noqa: E402


def _toward_each_other(n: int, rng: np.random.Generator, n_actions: int, disc: bool) -> np.ndarray:
    """Random actions; for discs biased to thrust forward, so the two pucks meet and push."""
    act = rng.uniform(-1, 1, (n, n_actions))
    if disc:
        act[:, :2] = 0.8 + 0.2 * act[:, :2]
        act[:, 2:] *= 0.2
    return act


def _agents_touch(env: SumoArenas) -> bool:
    """Whether any contact joins the two agents (not the floor)."""
    root = env.model.body_rootid[env.model.geom_bodyid]
    pairs = [(root[c.geom[0]], root[c.geom[1]]) for c in env.data.contact[:env.data.ncon]]
    return any(r0 != r1 and min(r0, r1) > 0 for r0, r1 in pairs)


@pytest.mark.parametrize("body", ["disc", "ant"])
def test_many_arenas_step_like_one_arena_alone(body):
    """Arena 2 of a 4-arena model follows the same qpos trajectory as a 1-arena model given its start and actions."""
    many = SumoArenas(4, body, episode_steps=1000, seed=3)
    alone = SumoArenas(1, body, episode_steps=1000, seed=99)
    if body != "disc":  # start the legged bodies close enough for their legs to tangle
        many.place(2, "a", (-0.45, 0.05), yaw=0.1)
        many.place(2, "b", (0.45, -0.05), yaw=np.pi - 0.2)
    qpos, qvel = many.arena_state(2)
    alone.set_arena_state(0, qpos, qvel)
    rng = np.random.default_rng(0)
    touched = False
    for t in range(60):
        act_a = _toward_each_other(4, rng, many.n_actions, body == "disc")
        act_b = _toward_each_other(4, rng, many.n_actions, body == "disc")
        *_, done_many, _ = many.step(act_a, act_b)
        *_, done_alone, _ = alone.step(act_a[2:3], act_b[2:3])
        assert done_many[2] == done_alone[0]
        if done_alone[0]:
            break
        q_many, q_alone = many.arena_state(2)[0], alone.arena_state(0)[0]
        np.testing.assert_allclose(q_many, q_alone, atol=1e-8, rtol=0, err_msg=f"step {t}")
        touched |= _agents_touch(alone)
    assert t > 20, "the round ended too early to compare trajectories"
    assert touched, "the agents never touched: the comparison did not cover their contacts"


def test_pushed_out_of_the_ring_wins_and_loses_2000_and_the_arena_resets():
    env = SumoArenas(2, "disc", episode_steps=100, seed=0)
    env.reset(seed=0)
    env.place(1, "b", (env.ring_radius + 0.1, 0.0))
    zero = np.zeros((2, env.n_actions))
    obs_a, obs_b, rew_a, rew_b, done, info = env.step(zero, zero)
    assert done.tolist() == [False, True]
    assert info["outcome"].tolist() == [ONGOING, A_WINS]
    assert info["reward_outcome"][1].tolist() == [2000.0, -2000.0]
    assert info["reward_outcome"][0].tolist() == [0.0, 0.0]
    assert rew_a[1] > 1900 and rew_b[1] < -1900
    assert info["lost_exit"][1].tolist() == [False, True]
    edge = env.obs_slices["edge"]
    assert info["final_obs_b"][1, edge][0] < 0 < obs_b[1, edge][0], "final obs is outside, the new round's is inside"
    assert info["episode_length"][1] == 1 and info["episode_return"][1, 0] == pytest.approx(rew_a[1])
    assert np.linalg.norm(env.positions()[1, 1]) < env.ring_radius  # auto-reset (SAME_STEP)

    env.place(0, "a", (0.0, -env.ring_radius - 0.2))
    *_, done, info = env.step(zero, zero)
    assert info["outcome"][0] == B_WINS and info["reward_outcome"][0].tolist() == [-2000.0, 2000.0]


def test_time_limit_is_a_draw_minus_1000_each():
    env = SumoArenas(3, "disc", episode_steps=5, seed=0)
    zero = np.zeros((3, env.n_actions))
    for t in range(1, 6):
        _, _, rew_a, rew_b, done, info = env.step(zero, zero)
        if t < 5:
            assert not done.any() and (info["outcome"] == ONGOING).all()
    assert done.all() and (info["outcome"] == DRAW).all()
    assert (info["reward_outcome"] == -1000.0).all()
    assert (info["episode_length"] == 5).all()
    np.testing.assert_allclose(rew_a, -1000.0, atol=1.0)


def test_legged_torso_touching_the_ground_loses():
    env = SumoArenas(1, "ant", episode_steps=100, seed=0)
    qpos, qvel = env.arena_state(0)
    qpos[0, 2] = env.layout.torso_radius          # agent a's torso on the floor ...
    qpos[0, 3:7] = [0.0, 1.0, 0.0, 0.0]           # ... upside down, legs in the air
    env.set_arena_state(0, qpos)
    zero = np.zeros((1, env.n_actions))
    *_, done, info = env.step(zero, zero)
    assert done[0] and info["outcome"][0] == B_WINS
    assert info["lost_fall"][0].tolist() == [True, False]
    assert info["reward_outcome"][0].tolist() == [-2000.0, 2000.0]


def test_shaping_signs():
    env = SumoArenas(1, "disc", episode_steps=100, seed=0, start_noise=0.0)
    forward, backward = np.array([[1.0, 1.0, 0, 0]]), np.array([[-1.0, -1.0, 0, 0]])
    zero = np.zeros((1, 4))
    for _ in range(3):
        *_, info = env.step(forward, zero)               # a drives toward b
    assert info["reward_approach"][0, 0] > 0.1 and abs(info["reward_approach"][0, 1]) < 1e-9
    assert info["reward_control"][0, 0] == pytest.approx(-0.2) and info["reward_control"][0, 1] == 0.0
    env.reset()
    for _ in range(3):
        *_, info = env.step(backward, zero)              # a backs away
    assert info["reward_approach"][0, 0] < -0.1
    env.reset()
    for _ in range(3):
        *_, info = env.step(zero, backward)              # b (facing -x at +x) backs toward the edge
    assert info["reward_push"][0, 0] > 0.1, "a is rewarded when b moves away from the centre"
    assert info["reward_approach"][0, 1] < 0


def test_observations_are_egocentric():
    """From mirror-image starts both agents see the same observation, so one policy can play either side."""
    env = SumoArenas(2, "ant", seed=0, start_noise=0.0)
    obs_a, obs_b = env.reset()
    np.testing.assert_allclose(obs_a, obs_b, atol=1e-5)
    sl = env.obs_slices
    assert obs_a[0, sl["opp_pos"]][0] == pytest.approx(2 * env.start_distance, abs=1e-5)  # opponent straight ahead
    assert obs_a[0, sl["edge"]][0] == pytest.approx(env.ring_radius - env.start_distance, abs=1e-5)
    assert obs_a.shape == (2, env.obs_dim) and obs_a.dtype == np.float32


def test_sumo_env_passes_the_gymnasium_checker():
    benign = ("infinity", "spec")  # unbounded observations; render-mode test needs gymnasium.make
    for env in (SumoEnv("disc"), SumoEnv("ant", opponent=lambda obs: -np.ones(12), episode_steps=20)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env)
        bad = [str(w.message) for w in caught if not any(b in str(w.message) for b in benign)]
        assert not bad, bad
    env = SumoEnv("disc", episode_steps=4)
    obs, _ = env.reset(seed=1)
    for t in range(4):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert terminated and not truncated and info["outcome"] == DRAW and "episode_return" in info
    assert env.observation_space.contains(obs)


@pytest.mark.parametrize("kind", ["ant", "bug", "spider"])
def test_legged_bodies_compile_and_step(kind):
    n_legs = bodies.N_LEGS[kind]
    layout = bodies.body_layout(kind, "x_")
    assert layout.nu == 3 * n_legs and len(layout.leg_pairs()) == n_legs * (n_legs - 1) // 2
    scale = layout.torque_scale((0, 2), 0.25)
    assert np.count_nonzero(scale != 1) == 6 and np.all(scale[list(layout.leg_actuators(2))] == 0.25)
    model = mujoco.MjModel.from_xml_string(bodies.scene_xml([bodies.make_body(kind, "x_", contype=2)]))
    assert model.nu == layout.nu and model.nq == layout.nq
    assert model.joint("x_leg1_knee").id >= 0 and model.body(layout.torso).id >= 0
    env = SumoArenas(2, kind, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(10):
        obs_a, obs_b, rew_a, rew_b, done, info = env.step(rng.uniform(-1, 1, (2, env.n_actions)),
                                                          rng.uniform(-1, 1, (2, env.n_actions)))
    assert obs_a.shape == (2, layout.proprio_size + 11) and np.isfinite(obs_a).all() and np.isfinite(rew_a).all()
    assert (env.torso_height() > layout.torso_radius).all()


def test_bug_arenas_for_locomotion():
    xml, info = bodies.legged_arenas_xml(3, "bug")
    model = mujoco.MjModel.from_xml_string(xml)
    assert model.nu == 3 * info["n_actuators"] == 54 and info["leg_of_actuator"].tolist()[:4] == [0, 0, 0, 1]
    assert model.nq == 3 * info["nq"] and info["torsos"][2] == "a2_torso"


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="unknown body"):
        SumoArenas(1, "cat")
    with pytest.raises(ValueError, match="n_arenas"):
        SumoArenas(0)
    with pytest.raises(ValueError, match="episode_steps"):
        SumoArenas(1, episode_steps=0)
    with pytest.raises(ValueError, match="frame_skip"):
        SumoArenas(1, frame_skip=0)
    with pytest.raises(ValueError, match="unknown body"):
        bodies.make_body("cat", "x_")
    env = SumoArenas(2, "disc")
    with pytest.raises(ValueError, match="act_a"):
        env.step(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="arena"):
        env.place(5, "a", (0, 0))
    with pytest.raises(ValueError, match="agent"):
        env.place(0, "c", (0, 0))
    with pytest.raises(ValueError, match="legs"):
        bodies.body_layout("bug").leg_actuators(6)


def _egl_available() -> str | None:
    try:
        model = mujoco.MjModel.from_xml_string("<mujoco><worldbody/></mujoco>")
        mujoco.Renderer(model, 8, 8).close()
    except Exception as err:  # no EGL/OpenGL on this machine
        return f"MuJoCo cannot render offscreen here (MUJOCO_GL={os.environ.get('MUJOCO_GL')}): {err}"
    return None


def test_render_one_ring_and_all_rings():
    why = _egl_available()
    if why:
        pytest.skip(why)
    env = SumoArenas(4, "disc", seed=0)
    frames = render_frames(env, lambda oa, ob: (np.ones((4, 4)), np.zeros((4, 4))), n_steps=2, width=160, height=120)
    assert len(frames) == 3 and frames[0].shape == (120, 160, 3) and frames[0].dtype == np.uint8
    assert frames[0].std() > 5 and len(np.unique(frames[0].reshape(-1, 3), axis=0)) > 20
    assert not np.array_equal(frames[0], frames[2]), "the agents moved"
    whole = env.render(None, 200, 150)
    assert whole.shape == (150, 200, 3) and whole.std() > 5
    env.close()
