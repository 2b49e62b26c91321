"""RoboSumo (Al-Shedivat et al. 2018, section 4.2): many independent rings in one MuJoCo model.

Two agents, ``a`` and ``b``, face each other in a ring of radius ``R``.  A
round is *lost* by the agent whose torso centre leaves the ring
(``|x_xy| > R``) or, for legged bodies, whose torso touches the floor (its
sphere's centre is less than ``fall_margin`` above ``torso_radius``).  The
paper's outcome rewards: the winner gets ``+2000``, the loser ``-2000``; if
nobody has lost after ``episode_steps`` steps (500 in the paper) the round is a
*draw* and both get ``-1000``.  If both lose on the same step, that is a draw
too.  Shaping (the paper's "approaching and pushing the opponent and a control
cost"; the paper gives no coefficients, ours are :class:`SumoRewardWeights`),
per agent and step of length ``dt = frame_skip * timestep``:

* approach: ``w_approach * (x_t - x_{t-1}) . u_{t-1} / dt``, the agent's
  speed toward the opponent (``u`` the unit vector from agent to opponent at
  the start of the step): positive when it moves toward the opponent;
* push: ``w_push * (|y_t| - |y_{t-1}|) / dt``, the speed at which the opponent
  ``y`` moves away from the ring centre (toward the edge);
* control: ``-w_control * ||u_t||^2`` with the clipped action ``u_t`` in [-1, 1];
* outcome: ``+2000`` / ``-2000`` / ``-1000`` on the step that decides the round.

Observation of each agent (egocentric: everything in the agent's heading frame
and relative to it, so one policy can play either side), ``float32 [D]``,
laid out as ``SumoArenas.obs_slices``:

* ``proprio``: the body's own state (:meth:`repro.meta.bodies.BodyLayout.proprioception`),
* ``to_centre`` (2): the vector from the agent to the ring centre; ``edge`` (1):
  its distance to the ring edge ``R - |x|``,
* ``opp_pos`` (2), ``opp_vel`` (2): the opponent's position and velocity relative to the agent,
* ``opp_heading`` (2): cosine and sine of the opponent's heading minus the agent's;
  ``opp_edge`` (1): the opponent's distance to the edge,
* ``time_left`` (1): ``1 - t / episode_steps`` (the draw at the time limit is then Markov).

Layout: arena ``k`` is centred on a square grid ``spacing`` metres apart; its
agents are prefixed ``k{k}a_`` and ``k{k}b_``.  Bodies of different arenas never
touch: they are far apart (a round ends as soon as a torso leaves the ring) and,
in addition, arena ``k`` has its own pair of contype/conaffinity bits (shared
only with arenas ``k +- 15 j``).  ``a`` collides with ``b`` and with the floor,
not with itself.  ``qpos``/``qvel``/``ctrl`` are laid out arena by arena, ``a``
then ``b``, so every agent's state is one reshape of ``data.qpos``; one
``mj_step`` advances every arena (MuJoCo solves the contacts of each arena as
its own constraint island).

Autoreset (gymnasium's ``SAME_STEP`` convention, as in :mod:`repro.rl.envs`):
an arena whose round ends on a step is reset within that step; ``step``
returns the first observation of its next round, ``done`` marks the arena,
and ``info`` carries the round's end: ``final_obs_a``/``final_obs_b`` (the
observations that ended it; equal to the returned ones in arenas that go on),
``outcome``, ``episode_return`` ``[N, 2]`` and ``episode_length`` ``[N]``
(meaningful where ``done``).  A draw at the time limit is a terminal state with
its own reward (time is observed), not a truncation.

The module sets ``MUJOCO_GL=egl`` unless set, so rendering works headless.
"""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import math  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Callable  # noqa: E402

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from .bodies import KINDS, BodyLayout, body_layout, make_body, scene_xml  # noqa: E402

ONGOING, A_WINS, B_WINS, DRAW = 0, 1, 2, 3
OUTCOMES = ("ongoing", "a wins", "b wins", "draw")

# Ring radius, start distance of each agent from the centre and grid spacing (metres), per body.
RINGS = {"disc": dict(radius=1.5, start=0.6, spacing=4.5),
         "legged": dict(radius=2.5, start=1.0, spacing=9.0)}
_BITS = 15  # arenas k and k + 15 share contype/conaffinity bits (and are far apart)


@dataclass(frozen=True)
class SumoRewardWeights:
    """Reward terms of RoboSumo: the paper's outcome values and our shaping coefficients."""

    win: float = 2000.0
    loss: float = -2000.0
    draw: float = -1000.0
    approach: float = 1.0
    push: float = 1.0
    control: float = 0.1


def sumo_xml(n_arenas: int, body: str, timestep: float = 0.01, ring_radius: float | None = None,
             spacing: float | None = None) -> tuple[str, list[tuple[BodyLayout, BodyLayout]], np.ndarray]:
    """MJCF of ``n_arenas`` rings with two ``body`` agents each; returns ``(xml, layouts, centres [N, 2])``."""
    ring = RINGS["disc" if body == "disc" else "legged"]
    radius = ring["radius"] if ring_radius is None else ring_radius
    spacing = ring["spacing"] * radius / ring["radius"] if spacing is None else spacing
    start = ring["start"] * radius / ring["radius"]
    cols = math.ceil(math.sqrt(n_arenas))
    centres = np.array([((k % cols) * spacing, (k // cols) * spacing) for k in range(n_arenas)], float)
    parts, rings = [], []
    for k, (cx, cy) in enumerate(centres):
        bit_a, bit_b = 1 << (2 * (k % _BITS)), 1 << (2 * (k % _BITS) + 1)
        if body == "disc":  # slides measure displacement from the ring centre
            pa = pb = (cx, cy)
            kw_a = kw_b = {}
        else:
            pa, pb = (cx - start, cy), (cx + start, cy)
            kw_a, kw_b = dict(yaw=0.0), dict(yaw=math.pi)
        parts.append(make_body(body, f"k{k}a_", pa, (0.85, 0.25, 0.2, 1.0), contype=bit_a, conaffinity=bit_b, **kw_a))
        parts.append(make_body(body, f"k{k}b_", pb, (0.2, 0.4, 0.85, 1.0), contype=bit_b, conaffinity=bit_a, **kw_b))
        rings.append(
            f'<geom name="arena{k}_edge" type="cylinder" pos="{cx:.6g} {cy:.6g} 0.002" size="{radius + 0.08:.6g} 0.002" '
            f'rgba="0.55 0.12 0.1 1" contype="0" conaffinity="0"/>'
            f'<geom name="arena{k}_ring" type="cylinder" pos="{cx:.6g} {cy:.6g} 0.004" size="{radius:.6g} 0.002" '
            f'rgba="0.86 0.76 0.56 1" contype="0" conaffinity="0"/>')
    xml = scene_xml(parts, extra_worldbody="".join(rings), timestep=timestep, floor_collides=body != "disc",
                    model_name=f"robosumo_{body}_{n_arenas}")
    layouts = [(parts[2 * k].layout, parts[2 * k + 1].layout) for k in range(n_arenas)]
    return xml, layouts, centres


class SumoArenas:
    """``n_arenas`` RoboSumo rings in one ``MjModel`` behind a vectorised interface (numpy in and out).

    ``reset(seed=None) -> (obs_a, obs_b)``, each ``float32 [N, D]``; ``step(act_a, act_b)`` with
    actions ``[N, A]`` (``A = layout.n_actions``, clipped to [-1, 1]) ``-> (obs_a, obs_b, rew_a [N], rew_b [N], done [N], info)``.
    ``info``: ``outcome`` ``[N]`` int (``ONGOING``/``A_WINS``/``B_WINS``/``DRAW``), ``reward_approach``,
    ``reward_push``, ``reward_control``, ``reward_outcome`` ``[N, 2]`` (column 0: a, 1: b; they sum to
    the rewards), ``lost_exit``/``lost_fall`` ``[N, 2]`` bool, and the end-of-round entries of the
    module docstring (SAME_STEP autoreset).  Starts: ``a`` at ``(-s, 0)`` facing +x, ``b`` at
    ``(s, 0)`` facing -x (relative to the ring centre), each jittered by up to ``start_noise``
    metres, ``3 start_noise`` radians of heading and ``start_noise`` radians per leg joint.
    """

    def __init__(self, n_arenas: int, body: str = "disc", episode_steps: int = 500, frame_skip: int = 5,
                 seed: int | None = None, *, rewards: SumoRewardWeights = SumoRewardWeights(),
                 start_noise: float = 0.1, ring_radius: float | None = None, timestep: float = 0.01,
                 fall_margin: float = 0.02):
        if isinstance(n_arenas, bool) or not isinstance(n_arenas, (int, np.integer)) or n_arenas < 1:
            raise ValueError(f"n_arenas must be an integer >= 1, got {n_arenas!r}")
        if body not in KINDS:
            raise ValueError(f"unknown body {body!r}: choose from {', '.join(KINDS)}")
        for name, value in (("episode_steps", episode_steps), ("frame_skip", frame_skip)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not start_noise >= 0:
            raise ValueError(f"start_noise must be >= 0, got {start_noise!r}")
        if ring_radius is not None and not ring_radius > 0:
            raise ValueError(f"ring_radius must be > 0, got {ring_radius!r}")
        if not timestep > 0:
            raise ValueError(f"timestep must be > 0, got {timestep!r}")
        self.num_envs, self.body = int(n_arenas), body
        self.episode_steps, self.frame_skip = int(episode_steps), int(frame_skip)
        self.weights, self.start_noise, self.fall_margin = rewards, float(start_noise), float(fall_margin)
        xml, layouts, self.centres = sumo_xml(self.num_envs, body, timestep, ring_radius)
        ring = RINGS["disc" if body == "disc" else "legged"]
        self.ring_radius = ring["radius"] if ring_radius is None else float(ring_radius)
        self.start_distance = ring["start"] * self.ring_radius / ring["radius"]
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        self.layout: BodyLayout = body_layout(body)          # the shared structure, without a prefix
        self.layouts = layouts
        self._check_layout()
        self.dt = self.model.opt.timestep * self.frame_skip
        n, lay = self.num_envs, self.layout
        self.nq, self.nv, self.nu, self.n_actions = lay.nq, lay.nv, lay.nu, lay.n_actions
        self._qpos = self.data.qpos.reshape(n, 2, lay.nq)     # views: writing them writes the simulation
        self._qvel = self.data.qvel.reshape(n, 2, lay.nv)
        self._ctrl = self.data.ctrl.reshape(n, 2, lay.nu)
        self._warm = self.data.qacc_warmstart.reshape(n, 2, lay.nv)
        self._origin = np.zeros((n, 1, 2)) if lay.planar else self.centres[:, None, :].copy()
        self.rng = np.random.default_rng(seed)
        self._t = np.zeros(n, np.int64)
        self._returns = np.zeros((n, 2))
        self._prev_xy = np.zeros((n, 2, 2))
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        p = lay.proprio_size
        names = [("to_centre", 2), ("edge", 1), ("opp_pos", 2), ("opp_vel", 2), ("opp_heading", 2),
                 ("opp_edge", 1), ("time_left", 1)]
        self.obs_slices: dict[str, slice] = {"proprio": slice(0, p)}
        at = p
        for name, size in names:
            self.obs_slices[name] = slice(at, at + size)
            at += size
        self.obs_dim = at
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (self.obs_dim,), np.float32)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (self.n_actions,), np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (n, self.obs_dim), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (n, self.n_actions), np.float32)
        self.reset()

    def _check_layout(self) -> None:
        lay, m = body_layout(self.body), self.model
        if m.nq != 2 * self.num_envs * lay.nq or m.nu != 2 * self.num_envs * lay.nu:
            raise RuntimeError("the scene's joints/actuators are not laid out agent after agent")
        for k, pair in enumerate(self.layouts):
            for i, agent in enumerate(pair):
                if agent.qpos_slice(m).start != (2 * k + i) * lay.nq or agent.ctrl_slice(m).start != (2 * k + i) * lay.nu:
                    raise RuntimeError(f"agent {agent.prefix} is not where the reshape expects it")

    # -- state ------------------------------------------------------------------------
    def _planar(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        xy, yaw, vxy = self.layout.planar_state(self._qpos, self._qvel)
        return xy - self._origin, yaw, vxy

    def positions(self) -> np.ndarray:
        """Torso positions relative to each ring's centre, ``[N, 2 agents, 2]``."""
        return self._planar()[0].copy()

    def torso_height(self) -> np.ndarray:
        """Torso centre heights ``[N, 2]`` (the disc's constant half height for discs)."""
        if self.layout.planar:
            return np.full((self.num_envs, 2), self.layout.stand_height)
        return self._qpos[:, :, 2].copy()

    def arena_state(self, arena: int) -> tuple[np.ndarray, np.ndarray]:
        """``(qpos [2, nq], qvel [2, nv])`` of one arena, positions relative to its centre."""
        self._check_arena(arena)
        qpos = self._qpos[arena].copy()
        qpos[:, :2] -= self._origin[arena]
        return qpos, self._qvel[arena].copy()

    def set_arena_state(self, arena: int, qpos: np.ndarray, qvel: np.ndarray | None = None) -> None:
        """Put one arena in a state given as :meth:`arena_state` returns it (qvel defaults to zero).

        The arena's step counter and episode return are kept; the shaping reference positions are
        the new ones.
        """
        self._check_arena(arena)
        qpos = np.array(qpos, float).reshape(2, self.nq)
        qpos[:, :2] += self._origin[arena]
        self._qpos[arena] = qpos
        self._qvel[arena] = 0.0 if qvel is None else np.asarray(qvel, float).reshape(2, self.nv)
        self._warm[arena] = 0.0
        mujoco.mj_kinematics(self.model, self.data)
        self._prev_xy[arena] = self._planar()[0][arena]

    def place(self, arena: int, agent: str, xy, yaw: float | None = None, height: float | None = None) -> None:
        """Scripted positions: move agent ``"a"`` or ``"b"`` of ``arena`` to ``xy`` (relative to the
        ring centre) with heading ``yaw`` (default: its current one) and, for legged bodies, torso
        height ``height`` (default: the standing height), at rest."""
        if agent not in ("a", "b"):
            raise ValueError(f"agent must be 'a' or 'b', got {agent!r}")
        i = "ab".index(agent)
        qpos, qvel = self.arena_state(arena)
        if yaw is None:
            yaw = float(self._planar()[1][arena, i])
        n_root = 3 if self.layout.planar else 7
        qpos[i, :n_root] = self.layout.root_qpos(np.asarray(xy, float), np.asarray(yaw, float), height)
        qvel[i] = 0.0
        self.set_arena_state(arena, qpos, qvel)

    def _check_arena(self, arena: int) -> None:
        if not 0 <= arena < self.num_envs:
            raise ValueError(f"arena must be in 0..{self.num_envs - 1}, got {arena}")

    # -- observations -------------------------------------------------------------------
    def _observe(self) -> tuple[np.ndarray, np.ndarray]:
        xy, yaw, vxy = self._planar()
        c, s = np.cos(yaw), np.sin(yaw)                                     # [N, 2]

        def ego(v):                                                          # world [N, 2, 2] -> own heading frame
            return np.stack([c * v[..., 0] + s * v[..., 1], -s * v[..., 0] + c * v[..., 1]], -1)

        edge = self.ring_radius - np.linalg.norm(xy, axis=-1)               # [N, 2]
        dpsi = yaw[:, ::-1] - yaw
        time_left = np.broadcast_to((1.0 - self._t / self.episode_steps)[:, None, None], (self.num_envs, 2, 1))
        obs = np.concatenate([
            self.layout.proprioception(self._qpos, self._qvel), ego(-xy), edge[..., None],
            ego(xy[:, ::-1] - xy), ego(vxy[:, ::-1] - vxy), np.stack([np.cos(dpsi), np.sin(dpsi)], -1),
            edge[:, ::-1, None], time_left], -1).astype(np.float32)        # [N, 2, D]
        return obs[:, 0], obs[:, 1]

    # -- episodes ---------------------------------------------------------------------------
    def _reset_arenas(self, idx: np.ndarray) -> None:
        k = len(idx)
        if k == 0:
            return
        noise, lay = self.start_noise, self.layout
        xy = np.zeros((k, 2, 2))
        xy[:, 0, 0], xy[:, 1, 0] = -self.start_distance, self.start_distance
        xy += self.rng.uniform(-noise, noise, (k, 2, 2))
        yaw = np.array([0.0, math.pi]) + self.rng.uniform(-3 * noise, 3 * noise, (k, 2))
        root = lay.root_qpos(xy + self._origin[idx], yaw)                    # [k, 2, n_root]
        qpos = np.zeros((k, 2, lay.nq))
        qpos[..., :root.shape[-1]] = root
        if not lay.planar:
            qpos[..., 7:] = self.rng.uniform(-noise, noise, (k, 2, lay.nq - 7))
        self._qpos[idx] = qpos
        self._qvel[idx] = 0.0
        self._warm[idx] = 0.0
        self._ctrl[idx] = 0.0
        self._t[idx] = 0
        self._returns[idx] = 0.0
        self._prev_xy[idx] = xy

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Start a new round in every arena; ``seed`` reseeds the start-position generator."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._reset_arenas(np.arange(self.num_envs))
        mujoco.mj_kinematics(self.model, self.data)
        return self._observe()

    def _actions(self, act: np.ndarray, who: str) -> np.ndarray:
        a = np.asarray(act, dtype=np.float64)
        if a.size != self.num_envs * self.n_actions:
            raise ValueError(f"act_{who} must have shape [{self.num_envs}, {self.n_actions}], got {a.shape}")
        return np.clip(a.reshape(self.num_envs, self.n_actions), -1.0, 1.0)

    def step(self, act_a: np.ndarray, act_b: np.ndarray):
        """Advance every arena by ``frame_skip`` physics steps; see the class docstring for the returns."""
        a, b = self._actions(act_a, "a"), self._actions(act_b, "b")
        self._ctrl[:] = self.layout.controls(np.stack([a, b], 1), self._qpos)   # [N, 2, nu]
        prev = self._prev_xy
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        self._t += 1
        xy = self._planar()[0]
        w = self.weights
        to_opp = prev[:, ::-1] - prev                                        # [N, 2, 2]
        unit = to_opp / np.maximum(np.linalg.norm(to_opp, axis=-1, keepdims=True), 1e-9)
        approach = w.approach * np.sum((xy - prev) * unit, -1) / self.dt     # [N, 2]
        radius, radius_prev = np.linalg.norm(xy, axis=-1), np.linalg.norm(prev, axis=-1)
        push = w.push * (radius - radius_prev)[:, ::-1] / self.dt
        control = -w.control * np.stack([np.square(a).sum(-1), np.square(b).sum(-1)], -1)
        lost_exit = radius > self.ring_radius
        lost_fall = (np.zeros_like(lost_exit) if self.layout.planar else
                     self._qpos[:, :, 2] < self.layout.torso_radius + self.fall_margin)
        lost = lost_exit | lost_fall
        outcome = np.where(lost[:, 0] & lost[:, 1], DRAW, np.where(lost[:, 1], A_WINS, np.where(lost[:, 0], B_WINS, ONGOING)))
        outcome = np.where((outcome == ONGOING) & (self._t >= self.episode_steps), DRAW, outcome)
        table = np.array([[0.0, 0.0], [w.win, w.loss], [w.loss, w.win], [w.draw, w.draw]])
        reward_outcome = table[outcome]                                      # [N, 2]
        reward = approach + push + control + reward_outcome
        self._returns += reward
        self._prev_xy = xy
        done = outcome != ONGOING
        obs_a, obs_b = self._observe()
        info = {"outcome": outcome, "reward_approach": approach, "reward_push": push, "reward_control": control,
                "reward_outcome": reward_outcome, "lost_exit": lost_exit, "lost_fall": lost_fall,
                "final_obs_a": obs_a, "final_obs_b": obs_b,
                "episode_return": self._returns.copy(), "episode_length": self._t.copy()}
        if done.any():
            self._prev_xy = xy.copy()
            self._reset_arenas(np.flatnonzero(done))
            obs_a, obs_b = self._observe()
        return obs_a, obs_b, reward[:, 0].copy(), reward[:, 1].copy(), done, info

    # -- pictures ------------------------------------------------------------------------------
    def render(self, arena: int | None = 0, width: int = 480, height: int = 360) -> np.ndarray:
        """An RGB frame ``uint8 [height, width, 3]`` of one ring (``arena``) or of every ring (``None``)."""
        if not (0 < width <= self.model.vis.global_.offwidth and 0 < height <= self.model.vis.global_.offheight):
            raise ValueError(f"width and height must be within {self.model.vis.global_.offwidth}x"
                             f"{self.model.vis.global_.offheight}, got {width}x{height}")
        key = (width, height)
        if key not in self._renderers:
            self._renderers[key] = mujoco.Renderer(self.model, height, width)
        renderer = self._renderers[key]
        cam = mujoco.MjvCamera()
        if arena is None:
            lo, hi = self.centres.min(0), self.centres.max(0)
            cam.lookat[:] = [*(0.5 * (lo + hi)), 0.0]
            cam.distance = 1.2 * (float(np.max(hi - lo)) + 2.5 * self.ring_radius)
            cam.elevation, cam.azimuth = -70.0, 90.0
        else:
            self._check_arena(arena)
            cam.lookat[:] = [*self.centres[arena], 0.2]
            cam.distance, cam.elevation, cam.azimuth = 3.0 * self.ring_radius, -50.0, 90.0
        mujoco.mj_kinematics(self.model, self.data)  # positions after the last substep; leaves the dynamics alone
        renderer.update_scene(self.data, camera=cam)
        return renderer.render().copy()

    def close(self) -> None:
        """Free the renderers."""
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()


def render_frames(arenas: SumoArenas, policy: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
                  n_steps: int, arena: int | None = 0, width: int = 480, height: int = 360) -> list[np.ndarray]:
    """Step ``arenas`` ``n_steps`` times with ``policy(obs_a, obs_b) -> (act_a, act_b)`` from a reset
    and return the frames (``n_steps + 1`` images, the first after the reset) of ``arena``."""
    obs_a, obs_b = arenas.reset()
    frames = [arenas.render(arena, width, height)]
    for _ in range(n_steps):
        act_a, act_b = policy(obs_a, obs_b)
        obs_a, obs_b, *_ = arenas.step(act_a, act_b)
        frames.append(arenas.render(arena, width, height))
    return frames


class SumoEnv(gym.Env):
    """One RoboSumo ring as a ``gymnasium.Env``: we control agent ``a``; ``opponent(obs_b) -> action``
    (a fixed callable, default: zero action) drives ``b``.

    Reward: agent a's reward of :class:`SumoArenas`.  ``terminated`` when the round is decided
    (win, loss, or the draw at ``episode_steps``, which is terminal: time is observed); never
    ``truncated``.  ``info``: ``outcome`` (int), the reward components of agent a and of b
    (``reward_approach`` ... as ``[2]`` arrays) and, at the end, ``episode_return`` ``[2]``.
    Call ``reset`` after a terminal step.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, body: str = "disc", opponent: Callable[[np.ndarray], np.ndarray] | None = None,
                 episode_steps: int = 500, frame_skip: int = 5, render_mode: str | None = None, **kwargs):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if opponent is not None and not callable(opponent):
            raise ValueError("opponent must be a callable obs_b -> action")
        self.arenas = SumoArenas(1, body, episode_steps, frame_skip, **kwargs)
        self.opponent = opponent
        self.render_mode = render_mode
        self.observation_space = self.arenas.single_observation_space
        self.action_space = self.arenas.single_action_space
        self.metadata = {**self.metadata, "render_fps": max(1, round(1.0 / self.arenas.dt))}
        self._obs_b = np.zeros(self.arenas.obs_dim, np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs_a, obs_b = self.arenas.reset(seed=seed)
        self._obs_b = obs_b[0]
        return obs_a[0], {"outcome": ONGOING}

    def step(self, action):
        if self.opponent is None:
            act_b = np.zeros(self.arenas.n_actions)
        else:
            act_b = np.asarray(self.opponent(self._obs_b), dtype=np.float64)
        obs_a, obs_b, rew_a, _, done, info = self.arenas.step(np.asarray(action)[None], act_b[None])
        terminated = bool(done[0])
        if terminated:
            obs_a, obs_b = info["final_obs_a"], info["final_obs_b"]
        self._obs_b = obs_b[0]
        out = {"outcome": int(info["outcome"][0])}
        for key in ("reward_approach", "reward_push", "reward_control", "reward_outcome"):
            out[key] = info[key][0].copy()
        if terminated:
            out["episode_return"] = info["episode_return"][0].copy()
        return obs_a[0].copy(), float(rew_a[0]), terminated, False, out

    def render(self):
        if self.render_mode == "rgb_array":
            return self.arenas.render(0)
        return None

    def close(self):
        self.arenas.close()
