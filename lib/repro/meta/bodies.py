"""MuJoCo bodies for the continuous-adaptation chapter: MJCF fragments for one agent.

Al-Shedivat et al. (2018) use three legged bodies in RoboSumo (Ant, Bug,
Spider) and a six-legged body for the nonstationary locomotion task, whose
torques on one pair of legs fade from 1 to 0 over 7 episodes (C(6, 2) = 15
pairs).  This module writes our own MJCF for such bodies (no scene is copied
from another project) as *fragments*: each function returns the ``<body>``
element for the ``<worldbody>`` and the ``<motor>`` elements for the
``<actuator>`` section of a larger scene, every name prefixed, so many agents
(two per RoboSumo ring, many rings per model) live in one ``MjModel``.

Bodies (``KINDS``):

* ``disc`` (the book profile): a puck that slides on the floor.  Joints: slide
  x, slide y (world axes), hinge yaw; viscous drag comes from joint damping
  and it has no contact with the floor, so it is cheap.  Collision shape: a
  sphere whose centre lies in the plane of motion (two such spheres touch
  exactly when the discs do); what you see is a flat cylinder with a white
  nose on its forward (+x) side.  Its four actions are rim thrusters (marked
  by sites): ``thrust_left``/``thrust_right`` at +y/-y push along the body's
  x axis (together: forward; differentially: turn), ``thrust_front``/
  ``thrust_back`` at +x/-x push along y (together: sideways; differentially:
  turn).  :meth:`BodyLayout.controls` turns them into the net world-frame
  force and the torque about the centre, which three joint motors
  (``force_x``, ``force_y``, ``torque``) apply, the direction fixed for the
  ``frame_skip`` physics steps of one agent step.  (Site actuators would
  rotate with the disc inside the step, but MuJoCo computes a dense Jacobian
  over the whole model's ``nv`` for each one: with 128 discs in one model
  they took 1.4 ms of a 1.7 ms step.)
* ``ant`` (4 legs), ``bug`` (6 legs), ``spider`` (8 legs) (the paper profile):
  a spherical torso on a free joint; leg ``i`` leaves the torso at yaw
  ``(i + 1/2) 360/n`` degrees (so the body's forward +x axis points between
  two legs) and has three hinges, all motors with ``ctrlrange [-1, 1]``:
  ``leg{i}_hip_yaw`` (swing forward/back), ``leg{i}_hip_pitch`` (lift) and
  ``leg{i}_knee``.  Positive pitch and knee angles push the foot down.

Names (``p`` is the prefix): the torso body ``{p}torso``, its collision geom
``{p}torso_geom``, joints and actuators ``{p}leg{i}_hip_yaw`` etc.  The
actuators of leg ``i`` are consecutive, legs in order, so ``leg_actuators(i)``
is ``[3 i, 3 i + 3)`` and scaling a pair of legs' torques is multiplying the
controls by :meth:`BodyLayout.torque_scale`.

:class:`BodyLayout` describes a body without MuJoCo: its joint and actuator
names, ``nq``/``nv``/``nu``, and vectorised readers of its state from its own
``qpos``/``qvel`` rows (``planar_state``, ``proprioception``,
``proprio_slices``), so a scene with the bodies laid out one after another can
read every agent's state with one reshape of ``data.qpos``.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

KINDS = ("disc", "ant", "bug", "spider")
N_LEGS = {"ant": 4, "bug": 6, "spider": 8}
JOINTS_PER_LEG = ("hip_yaw", "hip_pitch", "knee")
THRUSTERS = ("left", "right", "front", "back")  # the disc's actions, in order

# Our dimensions (metres, kilograms, newtons); the paper does not list its bodies'.
DISC = dict(radius=0.2, half_height=0.05, mass=1.0, thrust=5.0, damping=4.0, yaw_damping=0.3)
LEGGED = dict(torso_radius=0.25, hip_radius=0.2, thigh=0.25, shin_out=0.2, shin_down=0.45, limb_radius=0.07,
              density=5.0, gear=10.0, armature=1.0, damping=1.0, stiffness=5.0, stand_height=0.75)


def _fmt(xs: Iterable[float]) -> str:
    return " ".join(f"{x:.6g}" for x in xs)


@dataclass(frozen=True)
class BodyLayout:
    """Names and state layout of one agent body (no MuJoCo needed).

    ``joints``/``actuators``: actuated joint and motor names in actuator order
    (for ``disc`` the motors are ``force_x``, ``force_y``, ``torque`` on the root joints and
    ``joints`` is empty); ``n_actions``: the length of an action (``disc``: 4 thrusters; legged:
    one per motor), mapped to the motors' ``ctrl`` by :meth:`controls`;
    ``root_joints``: the unactuated joints that place the torso (``disc``:
    slide x, slide y, yaw; legged: one free joint).  ``nq``/``nv``/``nu``: the
    body's sizes of ``qpos``/``qvel``/``ctrl``; in a scene its entries are
    contiguous (the body's subtree), in the order root joints then legs.
    """

    kind: str
    prefix: str
    n_legs: int
    torso: str
    torso_geom: str
    root_joints: tuple[str, ...]
    joints: tuple[str, ...]
    actuators: tuple[str, ...]
    nq: int
    nv: int
    nu: int
    n_actions: int
    torso_radius: float
    stand_height: float

    def controls(self, actions: np.ndarray, qpos: np.ndarray) -> np.ndarray:
        """``ctrl [..., nu]`` of actions ``[..., n_actions]`` in [-1, 1] (clipped here), given ``qpos [..., nq]``.

        Legged: the actions themselves (motor torque = gear * action).  Disc: thrust ``F`` per
        thruster at the rim radius ``r``: body-frame force ``F (u_left + u_right, u_front + u_back)``
        rotated by the current heading, torque ``F r (u_right - u_left + u_front - u_back)``.
        """
        u = np.clip(actions, -1.0, 1.0)
        if not self.planar:
            return u
        f, r = DISC["thrust"], DISC["radius"]
        fx, fy = f * (u[..., 0] + u[..., 1]), f * (u[..., 2] + u[..., 3])
        yaw = qpos[..., 2]
        c, s = np.cos(yaw), np.sin(yaw)
        return np.stack([c * fx - s * fy, s * fx + c * fy, f * r * (u[..., 1] - u[..., 0] + u[..., 2] - u[..., 3])], -1)

    @property
    def planar(self) -> bool:
        """True for ``disc``: the torso moves in the plane (no height, no tilt, cannot fall)."""
        return self.kind == "disc"

    # -- legs ---------------------------------------------------------------
    def leg_actuators(self, leg: int) -> tuple[int, ...]:
        """Indices (within this body's actuators) of leg ``leg``'s motors: hip yaw, hip pitch, knee."""
        if not 0 <= leg < self.n_legs:
            raise ValueError(f"{self.kind} has legs 0..{self.n_legs - 1}, got {leg}")
        k = len(JOINTS_PER_LEG)
        return tuple(range(k * leg, k * leg + k))

    @property
    def leg_of_actuator(self) -> np.ndarray:
        """``[nu]`` int: the leg each actuator belongs to (legged bodies)."""
        if self.planar:
            raise ValueError("a disc has thrusters, not legs")
        return np.repeat(np.arange(self.n_legs), len(JOINTS_PER_LEG))

    def leg_pairs(self) -> list[tuple[int, int]]:
        """All unordered pairs of legs, ``C(n_legs, 2)`` of them (15 for the six-legged bug)."""
        return list(itertools.combinations(range(self.n_legs), 2))

    def torque_scale(self, legs: Sequence[int], factor: float) -> np.ndarray:
        """``[nu]`` multipliers for the controls: ``factor`` on the motors of ``legs``, 1 elsewhere.

        The paper's nonstationary locomotion scales one pair's torques from 1 to 0 over 7 episodes.
        """
        scale = np.ones(self.nu)
        for leg in legs:
            scale[list(self.leg_actuators(leg))] = factor
        return scale

    # -- state readers (vectorised over leading dimensions) -------------------
    def planar_state(self, qpos: np.ndarray, qvel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(xy [..., 2], yaw [...], vxy [..., 2])`` of the torso from the body's ``qpos [..., nq]`` and ``qvel [..., nv]``.

        ``xy`` is the free joint's world position (legged) or the slides' displacement from the body's
        placement (disc); ``yaw`` is the heading of the torso's x axis; ``vxy`` the world-frame velocity.
        """
        if self.planar:
            return qpos[..., 0:2], qpos[..., 2], qvel[..., 0:2]
        return qpos[..., 0:2], quat_yaw(qpos[..., 3:7]), qvel[..., 0:2]

    @property
    def proprio_size(self) -> int:
        """Length of :meth:`proprioception`'s last axis."""
        return sum(s.stop - s.start for s in self.proprio_slices().values())

    def proprio_slices(self) -> dict[str, slice]:
        """Where each quantity sits in :meth:`proprioception`'s output.

        disc: ``velocity`` (forward, sideways; torso frame), ``yaw_rate``.
        legged: ``height`` (torso centre above the floor), ``gravity`` (unit down vector in the torso
        frame: tilt), ``velocity`` (linear, torso frame), ``angular_velocity`` (torso frame),
        ``joint_pos`` and ``joint_vel`` (actuator order).
        """
        if self.planar:
            return {"velocity": slice(0, 2), "yaw_rate": slice(2, 3)}
        n = self.nu
        return {"height": slice(0, 1), "gravity": slice(1, 4), "velocity": slice(4, 7),
                "angular_velocity": slice(7, 10), "joint_pos": slice(10, 10 + n), "joint_vel": slice(10 + n, 10 + 2 * n)}

    def proprioception(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """The body's own state as seen from the torso, ``[..., proprio_size]`` (see :meth:`proprio_slices`).

        Nothing in it depends on where the body is or which way it faces, so one policy can drive
        either side of a ring.
        """
        if self.planar:
            yaw = qpos[..., 2]
            c, s = np.cos(yaw), np.sin(yaw)
            vx, vy = qvel[..., 0], qvel[..., 1]
            return np.stack([c * vx + s * vy, -s * vx + c * vy, qvel[..., 2]], -1)
        rot = quat_to_mat(qpos[..., 3:7])                              # [..., 3, 3] torso -> world
        gravity = -rot[..., 2, :]                                      # R^T (0, 0, -1)
        vel = np.einsum("...ji,...j->...i", rot, qvel[..., 0:3])       # R^T v
        return np.concatenate([qpos[..., 2:3], gravity, vel, qvel[..., 3:6], qpos[..., 7:], qvel[..., 6:]], -1)

    def root_qpos(self, xy: np.ndarray, yaw: np.ndarray, height: float | np.ndarray | None = None) -> np.ndarray:
        """``[..., n_root]`` root ``qpos`` entries putting the torso at ``xy`` facing ``yaw``.

        disc: ``n_root = 3`` (slide x, slide y, yaw; ``xy`` relative to the body's placement);
        legged: ``n_root = 7`` (free joint: world position, quaternion of a pure yaw; ``height``
        defaults to ``stand_height``).
        """
        xy, yaw = np.asarray(xy, float), np.asarray(yaw, float)
        if self.planar:
            return np.concatenate([xy, yaw[..., None]], -1)
        z = np.broadcast_to(np.asarray(self.stand_height if height is None else height, float), yaw.shape)
        half = 0.5 * yaw
        zero = np.zeros_like(yaw)
        return np.concatenate([xy, z[..., None], np.stack([np.cos(half), zero, zero, np.sin(half)], -1)], -1)

    # -- addresses in a compiled model ------------------------------------------
    def qpos_slice(self, model) -> slice:
        """This body's ``qpos`` entries in a compiled ``mujoco.MjModel``."""
        start = int(model.joint(self.root_joints[0]).qposadr[0])
        return slice(start, start + self.nq)

    def qvel_slice(self, model) -> slice:
        """This body's ``qvel`` entries in a compiled ``mujoco.MjModel``."""
        start = int(model.joint(self.root_joints[0]).dofadr[0])
        return slice(start, start + self.nv)

    def ctrl_slice(self, model) -> slice:
        """This body's ``ctrl`` entries in a compiled ``mujoco.MjModel``."""
        start = int(model.actuator(self.actuators[0]).id)
        return slice(start, start + self.nu)


@dataclass(frozen=True)
class BodyMJCF:
    """One agent's MJCF: ``body`` goes in ``<worldbody>``, ``actuators`` in ``<actuator>``."""

    body: str
    actuators: str
    layout: BodyLayout


def quat_yaw(quat: np.ndarray) -> np.ndarray:
    """Heading (radians) of the rotated x axis of unit quaternions ``[..., 4]`` (w, x, y, z)."""
    w, x, y, z = (quat[..., i] for i in range(4))
    return np.arctan2(2 * (x * y + w * z), 1 - 2 * (y * y + z * z))


def quat_to_mat(quat: np.ndarray) -> np.ndarray:
    """Rotation matrices ``[..., 3, 3]`` (body -> world) of unit quaternions ``[..., 4]`` (w, x, y, z)."""
    w, x, y, z = (quat[..., i] for i in range(4))
    rows = [[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]]
    return np.stack([np.stack(r, -1) for r in rows], -2)


def body_layout(kind: str, prefix: str = "") -> BodyLayout:
    """The :class:`BodyLayout` of a ``kind`` body named with ``prefix`` (ValueError for an unknown kind)."""
    if kind == "disc":
        motors = (f"{prefix}force_x", f"{prefix}force_y", f"{prefix}torque")
        return BodyLayout(kind, prefix, 0, f"{prefix}torso", f"{prefix}torso_geom",
                          (f"{prefix}slide_x", f"{prefix}slide_y", f"{prefix}yaw"), (), motors,
                          nq=3, nv=3, nu=3, n_actions=4, torso_radius=DISC["radius"], stand_height=DISC["half_height"])
    if kind not in N_LEGS:
        raise ValueError(f"unknown body {kind!r}: choose from {', '.join(KINDS)}")
    n = N_LEGS[kind]
    joints = tuple(f"{prefix}leg{i}_{j}" for i in range(n) for j in JOINTS_PER_LEG)
    return BodyLayout(kind, prefix, n, f"{prefix}torso", f"{prefix}torso_geom", (f"{prefix}root",), joints, joints,
                      nq=7 + len(joints), nv=6 + len(joints), nu=len(joints), n_actions=len(joints),
                      torso_radius=LEGGED["torso_radius"], stand_height=LEGGED["stand_height"])


def _collision(contype: int, conaffinity: int) -> str:
    return f'contype="{contype}" conaffinity="{conaffinity}"'


def disc(prefix: str, pos: Sequence[float] = (0.0, 0.0), rgba: Sequence[float] = (0.8, 0.2, 0.2, 1.0), *,
         contype: int = 1, conaffinity: int = 1) -> BodyMJCF:
    """MJCF of a sliding sumo puck (the book profile's agent) placed at ``pos`` (x, y).

    Its ``qpos`` is (x displacement, y displacement, yaw) from the placement; its four actions in
    [-1, 1] scale rim thrusters of ``DISC["thrust"]`` newtons each, applied through three joint
    motors by :meth:`BodyLayout.controls` (see the module docstring).
    """
    c = DISC
    r, h = c["radius"], c["half_height"]
    coll = _collision(contype, conaffinity)
    body = (
        f'<body name="{prefix}torso" pos="{_fmt((pos[0], pos[1], h))}">'
        f'<joint name="{prefix}slide_x" type="slide" axis="1 0 0" damping="{c["damping"]}"/>'
        f'<joint name="{prefix}slide_y" type="slide" axis="0 1 0" damping="{c["damping"]}"/>'
        f'<joint name="{prefix}yaw" type="hinge" axis="0 0 1" damping="{c["yaw_damping"]}"/>'
        f'<geom name="{prefix}torso_geom" type="sphere" size="{r}" mass="{c["mass"]}" group="3" {coll}/>'
        f'<geom name="{prefix}puck" type="cylinder" size="{r} {h}" mass="0" rgba="{_fmt(rgba)}" contype="0" conaffinity="0"/>'
        f'<geom name="{prefix}nose" type="box" pos="{0.6 * r:.6g} 0 {h:.6g}" size="{0.3 * r:.6g} {0.12 * r:.6g} 0.005" '
        f'mass="0" rgba="1 1 1 1" contype="0" conaffinity="0"/>'
        f'<site name="{prefix}thrust_left" pos="0 {r} 0" size="0.02"/>'
        f'<site name="{prefix}thrust_right" pos="0 {-r} 0" size="0.02"/>'
        f'<site name="{prefix}thrust_front" pos="{r} 0 0" size="0.02"/>'
        f'<site name="{prefix}thrust_back" pos="{-r} 0 0" size="0.02"/>'
        f'</body>')
    big = 2 * c["thrust"]  # two thrusters push each way
    actuators = (f'<motor name="{prefix}force_x" joint="{prefix}slide_x" ctrlrange="{-big} {big}"/>'
                 f'<motor name="{prefix}force_y" joint="{prefix}slide_y" ctrlrange="{-big} {big}"/>'
                 f'<motor name="{prefix}torque" joint="{prefix}yaw" ctrlrange="{-2 * big * r:.6g} {2 * big * r:.6g}"/>')
    return BodyMJCF(body, actuators, body_layout("disc", prefix))


def legged(kind: str, prefix: str, pos: Sequence[float] = (0.0, 0.0), rgba: Sequence[float] = (0.8, 0.2, 0.2, 1.0), *,
           yaw: float = 0.0, contype: int = 1, conaffinity: int = 1) -> BodyMJCF:
    """MJCF of a legged body (``ant``: 4 legs, ``bug``: 6, ``spider``: 8) with its torso at ``pos`` (x, y).

    The torso starts ``LEGGED["stand_height"]`` above the floor on a free joint named ``{prefix}root``;
    every leg has hip yaw, hip pitch and knee hinges with motors of gear ``LEGGED["gear"]``.
    """
    layout = body_layout(kind, prefix)
    if layout.planar:
        raise ValueError("legged() builds ant, bug or spider; use disc() for the disc")
    c = LEGGED
    coll = _collision(contype, conaffinity)
    joint = f'armature="{c["armature"]}" damping="{c["damping"]}" limited="true"'
    spring = f'stiffness="{c["stiffness"]}"'  # a passive stance: with zero torque the legs hold the torso up
    geom = f'density="{c["density"]}" rgba="{_fmt(rgba)}" {coll}'
    legs = []
    for i in range(layout.n_legs):
        a = (i + 0.5) * 2 * math.pi / layout.n_legs
        leg = f"{prefix}leg{i}"
        legs.append(
            f'<body name="{leg}" pos="{_fmt((c["hip_radius"] * math.cos(a), c["hip_radius"] * math.sin(a), 0))}" '
            f'euler="0 0 {math.degrees(a):.6g}">'
            f'<joint name="{leg}_hip_yaw" type="hinge" axis="0 0 1" range="-40 40" {joint}/>'
            f'<joint name="{leg}_hip_pitch" type="hinge" axis="0 1 0" range="-10 40" {joint} {spring}/>'
            f'<geom name="{leg}_thigh" type="capsule" fromto="0 0 0 {c["thigh"]} 0 0" size="{c["limb_radius"]}" {geom}/>'
            f'<body name="{leg}_shin" pos="{c["thigh"]} 0 0">'
            f'<joint name="{leg}_knee" type="hinge" axis="0 1 0" range="-10 40" {joint} {spring}/>'
            f'<geom name="{leg}_foot" type="capsule" fromto="0 0 0 {c["shin_out"]} 0 {-c["shin_down"]}" '
            f'size="{c["limb_radius"]}" {geom}/>'
            f'</body></body>')
    body = (f'<body name="{prefix}torso" pos="{_fmt((pos[0], pos[1], c["stand_height"]))}" euler="0 0 {math.degrees(yaw):.6g}">'
            f'<freejoint name="{prefix}root"/>'
            f'<geom name="{prefix}torso_geom" type="sphere" size="{c["torso_radius"]}" {geom}/>'
            f'<geom name="{prefix}eye" type="sphere" pos="{0.8 * c["torso_radius"]:.6g} 0 0.08" size="0.06" '
            f'rgba="1 1 1 1" mass="0" contype="0" conaffinity="0"/>'
            + "".join(legs) + '</body>')
    actuators = "".join(f'<motor name="{j}" joint="{j}" gear="{c["gear"]}" ctrlrange="-1 1"/>' for j in layout.joints)
    return BodyMJCF(body, actuators, layout)


def ant(prefix: str, pos: Sequence[float] = (0.0, 0.0), rgba: Sequence[float] = (0.8, 0.2, 0.2, 1.0), **kw) -> BodyMJCF:
    """Four-legged body (the paper's Ant); see :func:`legged`."""
    return legged("ant", prefix, pos, rgba, **kw)


def bug(prefix: str, pos: Sequence[float] = (0.0, 0.0), rgba: Sequence[float] = (0.8, 0.2, 0.2, 1.0), **kw) -> BodyMJCF:
    """Six-legged body (the paper's Bug and its locomotion agent); see :func:`legged`."""
    return legged("bug", prefix, pos, rgba, **kw)


def spider(prefix: str, pos: Sequence[float] = (0.0, 0.0), rgba: Sequence[float] = (0.8, 0.2, 0.2, 1.0), **kw) -> BodyMJCF:
    """Eight-legged body (the paper's Spider); see :func:`legged`."""
    return legged("spider", prefix, pos, rgba, **kw)


def make_body(kind: str, prefix: str, pos: Sequence[float] = (0.0, 0.0),
              rgba: Sequence[float] = (0.8, 0.2, 0.2, 1.0), **kw) -> BodyMJCF:
    """Any body by name (``KINDS``); ValueError for an unknown kind."""
    if kind == "disc":
        kw.pop("yaw", None)  # a disc's heading lives in its qpos
        return disc(prefix, pos, rgba, **kw)
    if kind not in N_LEGS:
        raise ValueError(f"unknown body {kind!r}: choose from {', '.join(KINDS)}")
    return legged(kind, prefix, pos, rgba, **kw)


def scene_xml(bodies: Sequence[BodyMJCF], *, extra_worldbody: str = "", timestep: float = 0.01,
              floor_collides: bool = True, model_name: str = "scene") -> str:
    """A complete MJCF scene: lights, a floor plane and ``bodies``.

    The floor collides with every geom whose conaffinity/contype share a bit with it (all of bits
    0..29) when ``floor_collides``; a scene of discs needs no floor contact.
    """
    mask = (1 << 30) - 1 if floor_collides else 0
    return (f'<mujoco model="{model_name}"><compiler angle="degree" autolimits="true"/>'
            f'<option timestep="{timestep}"/>'
            '<visual><global offwidth="1280" offheight="960"/><quality shadowsize="2048"/></visual>'
            '<asset><texture name="grid" type="2d" builtin="checker" rgb1="0.22 0.26 0.3" rgb2="0.16 0.2 0.24" '
            'width="256" height="256"/><material name="grid" texture="grid" texrepeat="2 2" texuniform="true"/></asset>'
            '<worldbody><light name="sun" directional="true" pos="0 0 20" dir="0.2 0.3 -1" diffuse="0.8 0.8 0.8" castshadow="false"/>'
            f'<geom name="floor" type="plane" size="0 0 0.1" material="grid" contype="{mask}" conaffinity="{mask}"/>'
            + extra_worldbody + "".join(b.body for b in bodies) + "</worldbody><actuator>"
            + "".join(b.actuators for b in bodies) + "</actuator></mujoco>")


def legged_arenas_xml(n_arenas: int, kind: str = "bug", *, spacing: float = 6.0, frame_skip: int = 5,
                      timestep: float = 0.01) -> tuple[str, dict]:
    """One legged body per arena on a grid ``spacing`` metres apart, in one scene (for locomotion).

    Arena ``k``'s body has prefix ``a{k}_`` (torso ``a{k}_torso``); bodies of different arenas never
    collide (no shared contype/conaffinity bit: each body only collides with the floor).  Returns the
    XML and a dict with ``frame_skip``, ``timestep``, ``n_actuators``, ``leg_of_actuator``, ``nq``,
    ``nv``, ``n_legs``, ``torsos`` (names) and ``layouts`` (one :class:`BodyLayout` per arena).
    """
    if n_arenas < 1:
        raise ValueError(f"n_arenas must be >= 1, got {n_arenas}")
    if kind not in N_LEGS:
        raise ValueError(f"legged_arenas_xml needs a legged body ({', '.join(N_LEGS)}), got {kind!r}")
    cols = math.ceil(math.sqrt(n_arenas))
    bodies = [legged(kind, f"a{k}_", ((k % cols) * spacing, (k // cols) * spacing), (0.85, 0.55, 0.2, 1.0),
                     contype=1 << 30, conaffinity=1)  # contype bit 30 is not the floor's: no body-body contact
              for k in range(n_arenas)]
    lay = bodies[0].layout
    info = dict(frame_skip=frame_skip, timestep=timestep, n_actuators=lay.nu, leg_of_actuator=lay.leg_of_actuator,
                nq=lay.nq, nv=lay.nv, n_legs=lay.n_legs, torsos=[b.layout.torso for b in bodies],
                layouts=[b.layout for b in bodies])
    return scene_xml(bodies, timestep=timestep, model_name=f"{kind}_arenas_{n_arenas}"), info
