"""Nonstationary locomotion: a body whose torques on one pair of legs fade over consecutive episodes.

The paper (Al-Shedivat et al. 2018, section 4.1) scales the torques of one pair
of a six-legged agent's legs linearly from 1 to 0 over 7 episodes; there are
C(6, 2) = 15 pairs, 12 used for training and 3 held out.  This module builds
that task family in MuJoCo with *many independent arenas in one MjModel*: one
``mj_step`` advances all of them in C, and every quantity the learner sees is
read off ``qpos``/``qvel`` with numpy slicing, so the cost per arena-step is a
few hundred nanoseconds rather than a Python call.

Bodies (``body=``):

* ``crawler`` (the book profile): a flat hexagonal torso that glides on the
  floor plane (joints: slide x, slide y, hinge yaw; viscous drag from joint
  damping, no contacts, so arenas cannot touch) with six *legs*: thrusters on
  the rim at angles 30 + 60 i degrees, each pushing along a direction tilted
  from the body's forward axis.  A leg at the rim makes both a force and a
  torque about the centre, so fading a pair leaves a torque imbalance that the
  other legs must cancel, and which legs must change depends on the pair.
* ``bug`` (the paper profile): a six-legged body on a free joint
  (``repro.meta.bodies``), hips and knees driven by motors; a leg's two
  motors fade together.

The task of an arena is a vector of per-leg torque scales ``[n_legs]`` in
[0, 1]; the actuators' controls are multiplied by their leg's scale.
``fade_scales(pair, episode)`` is the paper's schedule: the pair's scale is
``1 - (episode - 1) / (n_episodes - 1)``, i.e. 1 in episode 1 and 0 in
episode 7.

Reward (per step): forward velocity of the torso along the world x axis minus
a control cost ``ctrl_cost * ||a||^2`` (the paper's locomotion reward has the
same two terms).  Episodes last ``episode_steps`` agent steps for every arena
(the arenas reset together): a fixed horizon is what the meta-learner's
consecutive-episode batches need.

Observation (body frame, so a policy sees no absolute position): the torso's
forward and sideways velocity, its yaw rate, the cosine and sine of its
heading, and the fraction of the episode elapsed; for ``bug`` also the joint
angles and velocities and the torso height.
"""
from __future__ import annotations

import itertools
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import mujoco
import numpy as np

N_LEGS = 6
N_EPISODES = 7
LEG_PAIRS: tuple[tuple[int, int], ...] = tuple(itertools.combinations(range(N_LEGS), 2))  # 15 pairs
# 12 pairs for training, 3 held out (the paper's split sizes).  The held-out pairs are fixed here, one
# per kind of pair (adjacent legs, legs two apart, opposite legs), so the held-out set is not easier or
# harder than training by construction.
HELD_OUT_PAIRS: tuple[tuple[int, int], ...] = ((1, 2), (3, 5), (0, 3))
TRAIN_PAIRS: tuple[tuple[int, int], ...] = tuple(p for p in LEG_PAIRS if p not in HELD_OUT_PAIRS)
BODIES = ("crawler", "bug")


def fade_scales(pair: tuple[int, int], episode: int, n_episodes: int = N_EPISODES,
                n_legs: int = N_LEGS) -> np.ndarray:
    """Per-leg torque scales [n_legs] in episode ``episode`` (1-based) of a fade of ``pair``."""
    if not 1 <= episode <= n_episodes:
        raise ValueError(f"episode must be in 1..{n_episodes}, got {episode}")
    i, j = pair
    if not (0 <= i < n_legs and 0 <= j < n_legs and i != j):
        raise ValueError(f"pair must name two different legs in 0..{n_legs - 1}, got {pair}")
    s = np.ones(n_legs, dtype=np.float64)
    s[[i, j]] = 1.0 - (episode - 1) / (n_episodes - 1)
    return s


def fade_sequence(pair: tuple[int, int], n_episodes: int = N_EPISODES, n_legs: int = N_LEGS) -> np.ndarray:
    """The scales of all episodes of a fade: [n_episodes, n_legs]."""
    return np.stack([fade_scales(pair, k, n_episodes, n_legs) for k in range(1, n_episodes + 1)])


# ---------------------------------------------------------------------------
# The crawler's scene (our own MJCF, generated here)
# ---------------------------------------------------------------------------

CRAWLER = {
    "radius": 0.5,        # m, rim of the hexagonal torso where the legs sit
    "mass": 4.0,          # kg
    "drag": 4.0,          # N s / m, damping of the slide joints
    "spin_drag": 0.6,     # N m s / rad, damping of the yaw hinge
    "thrust": 6.0,        # N per leg at |ctrl| = 1
    "tilt": 35.0,         # degrees between a leg's push and the body's forward axis (towards the centre line)
    "timestep": 0.02,
    "frame_skip": 5,      # physics steps per agent step: 0.1 s
    "spacing": 100.0,     # m between arenas (cosmetic: nothing collides)
}


def _crawler_arena(k: int, x0: float, y0: float, c: dict) -> tuple[str, str]:
    """Body and actuator XML of arena ``k`` (names end in ``_k``)."""
    r = c["radius"]
    legs, motors = [], []
    for i in range(N_LEGS):
        phi = np.deg2rad(30.0 + 60.0 * i)              # position on the rim
        px, py = r * np.cos(phi), r * np.sin(phi)
        # push forward, tilted towards the body's centre line: a leg on the left (py > 0) pushes
        # forward-right, so every leg adds forward force and a torque whose sign depends on its side
        tilt = np.deg2rad(c["tilt"]) * (-np.sign(py))
        zrot = np.rad2deg(tilt)
        legs.append(f'<site name="leg{i}_{k}" pos="{px:.4f} {py:.4f} 0" euler="0 0 {zrot:.4f}" size="0.09" '
                    f'rgba="0.9 0.5 0.1 1"/>'
                    f'<geom type="capsule" fromto="0 0 0 {px:.4f} {py:.4f} 0" size="0.04" contype="0" '
                    f'conaffinity="0" rgba="0.4 0.4 0.45 1" mass="0"/>')
    body = (f'<body name="torso_{k}" pos="{x0:.3f} {y0:.3f} 0.1">'
            f'<joint name="x_{k}" type="slide" axis="1 0 0" damping="{c["drag"]}"/>'
            f'<joint name="y_{k}" type="slide" axis="0 1 0" damping="{c["drag"]}"/>'
            f'<joint name="yaw_{k}" type="hinge" axis="0 0 1" damping="{c["spin_drag"]}"/>'
            f'<geom type="cylinder" size="{0.6 * r:.4f} 0.05" mass="{c["mass"]}" contype="0" conaffinity="0" '
            f'rgba="0.2 0.5 0.8 1"/>'
            f'<geom type="box" pos="{0.6 * r:.4f} 0 0.06" size="0.08 0.03 0.02" contype="0" conaffinity="0" '
            f'rgba="1 1 1 1" mass="0"/>'
            + "".join(legs) + "</body>")
    # the legs' net force and torque act through three joint motors (x, y, yaw), computed in numpy from the
    # thrusts each physics step: a site actuator per leg would do the same, but MuJoCo builds each one's
    # moment arm over every joint of the whole model, which made 64 arenas ~3x slower
    motors = "".join(f'<motor name="{j}_{k}" joint="{j}_{k}" gear="1" ctrllimited="false"/>' for j in ("x", "y", "yaw"))
    return body, motors


def crawler_legs(params: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each leg's position on the rim and unit push direction in the body frame: ([n_legs, 2], [n_legs, 2])."""
    c = {**CRAWLER, **(params or {})}
    phi = np.deg2rad(30.0 + 60.0 * np.arange(N_LEGS))
    pos = c["radius"] * np.stack([np.cos(phi), np.sin(phi)], 1)
    tilt = np.deg2rad(c["tilt"]) * -np.sign(pos[:, 1])
    return pos, np.stack([np.cos(tilt), np.sin(tilt)], 1)


def crawler_xml(n_arenas: int, params: dict | None = None) -> str:
    """The MJCF of ``n_arenas`` crawlers on a square grid of arenas (one floor, no contacts)."""
    c = {**CRAWLER, **(params or {})}
    side = int(np.ceil(np.sqrt(n_arenas)))
    bodies, motors = [], []
    for k in range(n_arenas):
        b, m = _crawler_arena(k, c["spacing"] * (k % side), c["spacing"] * (k // side), c)
        bodies.append(b)
        motors.append(m)
    return (f'<mujoco model="crawlers">'
            f'<option timestep="{c["timestep"]}" gravity="0 0 -9.81"><flag contact="disable"/></option>'
            f'<visual><global offwidth="640" offheight="480"/></visual>'
            f'<asset><texture name="grid" type="2d" builtin="checker" rgb1="0.82 0.82 0.8" rgb2="0.7 0.7 0.68" '
            f'width="256" height="256"/><material name="grid" texture="grid" texrepeat="1 1" texuniform="true"/>'
            f'</asset><worldbody><light pos="0 0 20" dir="0 0 -1" directional="true"/>'
            f'<geom name="floor" type="plane" size="{c["spacing"] * side} {c["spacing"] * side} 0.1" '
            f'material="grid" contype="0" conaffinity="0"/>'
            + "".join(bodies) + "</worldbody><actuator>" + "".join(motors) + "</actuator></mujoco>")


# ---------------------------------------------------------------------------
# Many arenas, one model
# ---------------------------------------------------------------------------


class LocomotionArenas(gym.vector.VectorEnv):
    """``n_arenas`` copies of a body in one MjModel behind gymnasium's vector-env interface (numpy in and out;
    no automatic reset: ``metadata["autoreset_mode"]`` is ``DISABLED``).

    ``set_tasks(scales [N, n_legs])`` sets every arena's leg torque scales (applied from the next step);
    ``reset(seed) -> (obs [N, D] float32, info)`` puts every torso at the origin of its arena with a
    small random heading and velocity; ``step(actions [N, A]) -> (obs, reward [N], terminated [N],
    truncated [N], info)``: actions are clipped to [-1, 1], multiplied by their leg's scale and held
    for ``frame_skip`` physics steps; ``truncated`` is True for every arena after ``episode_steps``
    steps (then call ``reset``: the arenas do not reset themselves).  ``info`` holds
    ``x_velocity`` and ``ctrl_cost`` [N].
    """

    metadata = {"render_modes": ["rgb_array"], "autoreset_mode": gym.vector.AutoresetMode.DISABLED}

    def __init__(self, n_arenas: int, body: str = "crawler", episode_steps: int = 100,
                 ctrl_cost: float = 0.05, init_noise: float = 0.1, seed: int | None = None,
                 params: dict | None = None):
        if n_arenas < 1:
            raise ValueError(f"n_arenas must be >= 1, got {n_arenas}")
        if body not in BODIES:
            raise ValueError(f"unknown body {body!r}: choose from {', '.join(BODIES)}")
        if episode_steps < 1:
            raise ValueError(f"episode_steps must be >= 1, got {episode_steps}")
        self.num_envs, self.body, self.episode_steps = n_arenas, body, episode_steps
        self.ctrl_cost, self.init_noise = ctrl_cost, init_noise
        if body == "crawler":
            c = {**CRAWLER, **(params or {})}
            self.model = mujoco.MjModel.from_xml_string(crawler_xml(n_arenas, c))
            self.frame_skip = c["frame_skip"]
            self.act_per_arena = N_LEGS
            self.leg_of_actuator = np.arange(N_LEGS)
            self.nq = self.nv = 3
            pos, push = crawler_legs(c)
            # per unit of a leg's control: body-frame force [n_legs, 2] and torque about the centre [n_legs]
            self._leg_force = c["thrust"] * push
            self._leg_torque = c["thrust"] * (pos[:, 0] * push[:, 1] - pos[:, 1] * push[:, 0])
            self._nu = 3
            self.torsos = [f"torso_{k}" for k in range(n_arenas)]
        else:  # the paper's six-legged body
            from . import bodies
            xml, layout = bodies.legged_arenas_xml(n_arenas, "bug", **(params or {}))
            self.model = mujoco.MjModel.from_xml_string(xml)
            self.frame_skip = layout["frame_skip"]
            self.act_per_arena = layout["n_actuators"]
            self.leg_of_actuator = np.asarray(layout["leg_of_actuator"])
            self.nq, self.nv = layout["nq"], layout["nv"]
            self._nu = self.act_per_arena
            self.torsos = list(layout["torsos"])
        if self.model.nq != n_arenas * self.nq or self.model.nu != n_arenas * self._nu:
            raise RuntimeError("the scene's joints/actuators are not laid out arena after arena")
        self.data = mujoco.MjData(self.model)
        self.dt = self.model.opt.timestep * self.frame_skip
        self.scales = np.ones((n_arenas, N_LEGS))
        self._ctrl_scale = np.ones((n_arenas, self.act_per_arena))
        self.rng = np.random.default_rng(seed)
        self.t = 0
        self.obs_dim = self._observe().shape[1]
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (n_arenas, self.obs_dim), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (n_arenas, self.act_per_arena), np.float32)
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (self.obs_dim,), np.float32)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (self.act_per_arena,), np.float32)
        self._renderer = None

    # -- tasks ------------------------------------------------------------------
    def set_tasks(self, scales: np.ndarray) -> None:
        """Leg torque scales for every arena: [N, n_legs] in [0, 1] (or [n_legs] for all arenas)."""
        s = np.broadcast_to(np.asarray(scales, dtype=np.float64), (self.num_envs, N_LEGS))
        if np.any(s < 0) or np.any(s > 1) or not np.all(np.isfinite(s)):
            raise ValueError("leg scales must lie in [0, 1]")
        self.scales = s.copy()
        self._ctrl_scale = self.scales[:, self.leg_of_actuator]  # [N, A]: each actuator takes its leg's scale
        if self.body == "crawler":  # pictures: a leg's thruster fades from orange to grey with its scale
            ids = self._leg_sites()
            s = self.scales[..., None]
            self.model.site_rgba[ids] = s * np.array([0.95, 0.5, 0.1, 1.0]) + (1 - s) * np.array([0.3, 0.3, 0.3, 1.0])

    def _leg_sites(self) -> np.ndarray:
        """Site ids of the crawler's legs [N, n_legs]."""
        if not hasattr(self, "_site_ids"):
            self._site_ids = np.array([[self.model.site(f"leg{i}_{k}").id for i in range(N_LEGS)]
                                       for k in range(self.num_envs)])
        return self._site_ids

    # -- state -------------------------------------------------------------------
    def _qpos(self) -> np.ndarray:
        return self.data.qpos.reshape(self.num_envs, self.nq)

    def _qvel(self) -> np.ndarray:
        return self.data.qvel.reshape(self.num_envs, self.nv)

    def heading(self) -> np.ndarray:
        """Yaw of every torso [N] (radians)."""
        if self.body == "crawler":
            return self._qpos()[:, 2].copy()
        q = self._qpos()[:, 3:7]  # free joint quaternion (w, x, y, z)
        return np.arctan2(2 * (q[:, 0] * q[:, 3] + q[:, 1] * q[:, 2]), 1 - 2 * (q[:, 2] ** 2 + q[:, 3] ** 2))

    def position(self) -> np.ndarray:
        """Torso position in each arena's own frame [N, 2]."""
        return self._qpos()[:, :2] - self._origin

    def _observe(self) -> np.ndarray:
        qv = self._qvel()
        psi = self.heading()
        c, s = np.cos(psi), np.sin(psi)
        vx, vy = qv[:, 0], qv[:, 1]
        fwd, side = c * vx + s * vy, -s * vx + c * vy        # body-frame velocity
        yaw_rate = qv[:, 2] if self.body == "crawler" else qv[:, 5]
        phase = np.full_like(vx, self.t / self.episode_steps)
        cols = [fwd, side, yaw_rate, c, s, phase]
        obs = np.stack(cols, 1)
        if self.body != "crawler":
            qp = self._qpos()
            obs = np.concatenate([obs, qp[:, 2:3], qp[:, 7:], 0.1 * qv[:, 6:]], 1)
        return obs.astype(np.float32)

    @property
    def _origin(self) -> np.ndarray:
        if not hasattr(self, "_origin_cache"):
            mujoco.mj_resetData(self.model, self.data)
            self._origin_cache = self._qpos()[:, :2].copy()
        return self._origin_cache

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        origin = self._origin
        mujoco.mj_resetData(self.model, self.data)
        qp, qv = self._qpos(), self._qvel()
        qp[:, :2] = origin
        n = self.init_noise
        if self.body == "crawler":
            qp[:, 2] = self.rng.uniform(-n, n, self.num_envs)
            qv[:, :] = self.rng.uniform(-n, n, (self.num_envs, self.nv))
        else:
            qp[:, 7:] += self.rng.uniform(-n, n, (self.num_envs, self.nq - 7))
            qv[:, :] = n * self.rng.standard_normal((self.num_envs, self.nv))
        mujoco.mj_forward(self.model, self.data)
        self.t = 0
        return self._observe(), {}

    def step(self, actions: np.ndarray):
        a = np.clip(np.asarray(actions, dtype=np.float64).reshape(self.num_envs, self.act_per_arena), -1.0, 1.0)
        x0 = self._qpos()[:, 0].copy()
        u = a * self._ctrl_scale                                   # [N, A]: each leg's effective control
        if self.body == "crawler":
            f_body = u @ self._leg_force                           # [N, 2] net push in the body frame
            torque = u @ self._leg_torque                          # [N]
            ctrl = self.data.ctrl.reshape(self.num_envs, 3)
            ctrl[:, 2] = torque
            for _ in range(self.frame_skip):                       # the push turns with the body
                psi = self._qpos()[:, 2]
                c, s = np.cos(psi), np.sin(psi)
                ctrl[:, 0] = c * f_body[:, 0] - s * f_body[:, 1]
                ctrl[:, 1] = s * f_body[:, 0] + c * f_body[:, 1]
                mujoco.mj_step(self.model, self.data)
        else:
            self.data.ctrl[:] = u.ravel()
            mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        self.t += 1
        x_vel = (self._qpos()[:, 0] - x0) / self.dt
        ctrl_cost = self.ctrl_cost * np.square(a).sum(1)
        reward = x_vel - ctrl_cost
        truncated = np.full(self.num_envs, self.t >= self.episode_steps)
        terminated = np.zeros(self.num_envs, dtype=bool)
        return (self._observe(), reward.astype(np.float64), terminated, truncated,
                {"x_velocity": x_vel, "ctrl_cost": ctrl_cost})

    # -- pictures ----------------------------------------------------------------
    def render(self, arena: int = 0, width: int = 320, height: int = 240, distance: float = 2.5) -> np.ndarray:
        """An RGB frame [H, W, 3] uint8 of one arena, seen from above at an angle."""
        if self._renderer is None or self._renderer.width != width or self._renderer.height != height:
            self._renderer = mujoco.Renderer(self.model, height, width)
        cam = mujoco.MjvCamera()
        cam.lookat[:] = self.data.xpos[self.model.body(self.torsos[arena]).id]
        cam.distance, cam.elevation, cam.azimuth = distance, -60.0, 90.0
        self._renderer.update_scene(self.data, camera=cam)
        return self._renderer.render().copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self.closed = True


class LocomotionEnv(gym.Env):
    """One arena as a gymnasium env (passes ``gymnasium.utils.env_checker.check_env``).

    ``LocomotionEnv(pair=(i, j), episode=k)`` fades ``pair`` to its scale in episode ``k`` of the
    schedule; ``reset(options={"scales": [...]})`` sets other leg scales.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, body: str = "crawler", pair: tuple[int, int] | None = None, episode: int = 1,
                 episode_steps: int = 100, render_mode: str | None = None, **kw):
        self.arenas = LocomotionArenas(1, body=body, episode_steps=episode_steps, **kw)
        self.render_mode = render_mode
        self.observation_space = self.arenas.single_observation_space
        self.action_space = self.arenas.single_action_space
        if pair is not None:
            self.arenas.set_tasks(fade_scales(pair, episode))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "scales" in options:
            self.arenas.set_tasks(np.asarray(options["scales"])[None])
        if seed is not None or not hasattr(self, "_seeded"):
            self._seeded = True
            self.arenas.rng = np.random.default_rng(self.np_random.integers(2**63))
        obs, info = self.arenas.reset()
        return obs[0], info

    def step(self, action):
        obs, r, term, trunc, info = self.arenas.step(np.asarray(action)[None])
        return obs[0], float(r[0]), bool(term[0]), bool(trunc[0]), {k: float(v[0]) for k, v in info.items()}

    def render(self):
        return self.arenas.render(0)

    def close(self):
        self.arenas.close()
