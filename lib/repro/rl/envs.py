"""Environments: factories, wrappers and vectorisation (gymnasium.vector).

Every task is built by a *factory*: a zero-argument callable that returns a
fresh single environment with the wrappers the task needs.  :func:`make_vector_env`
turns ``n`` factories into a synchronous (one process) or asynchronous (one
subprocess per environment) ``gymnasium.vector`` environment with
``SAME_STEP`` autoreset: when an episode ends, ``step`` returns the first
observation of the next episode and ``terminated | truncated`` marks the
transition that ended the old one, the convention the rollout storage and GAE
assume.

Each wrapped environment reports where the agent is in ``info``:
``info["cell"]`` (an integer id of the agent's coarse position, for counting
distinct states visited) and ``info["room"]`` (the room it is in).

Tasks
-----
* ``rooms``: a fixed-layout grid of rooms built with ``minigrid``.  The agent
  starts in the top-left room and the only reward is the goal in the
  bottom-right room, so a policy that acts at random almost never sees it.
  Observations are the full grid in minigrid's encoding (object, colour,
  state), as ``uint8 [3, H, W]``; three actions: turn left, turn right, forward.
* ``ALE/...`` (e.g. ``ALE/MontezumaRevenge-v5``): the RND paper's Atari
  preprocessing (84x84 grey, frame skip 4 with max-pooling, sticky actions
  0.25, 18,000-frame episodes, no terminal on life loss, a stack of 4 frames).
* ``MinAtar/<Game>-v1`` (``Asterix``, ``Breakout``, ``Freeway``, ``Seaquest``,
  ``SpaceInvaders``; the ids MinAtar itself registers with gymnasium): the
  10x10 miniature Atari games of the ``minatar`` package as ``uint8 [C, 10, 10]``
  (channels first, 0/1) with the game's minimal action set (``-v0``: all six
  actions), sticky actions 0.1 and a time limit (:func:`minatar_env`).
* ``CartPole-v1``: a quick sanity task for PPO.

``env_factory(name, noisy_tv=K)`` (rooms and MinAtar) adds a noisy TV
(:class:`repro.rl.noisy_tv.NoisyTV`): one extra action that shows one of ``K``
random pictures on one extra observation channel.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX
from minigrid.core.grid import Grid
from minigrid.core.mission import MissionSpace
from minigrid.core.world_object import Goal
from minigrid.minigrid_env import MiniGridEnv

from ..seed import seed_env

# ---------------------------------------------------------------------------
# The rooms gridworld (minigrid)
# ---------------------------------------------------------------------------


def _mission() -> str:
    return "reach the far room"


class RoomsEnv(MiniGridEnv):
    """``rooms_per_side`` x ``rooms_per_side`` rooms of ``room_size`` cells, fixed layout.

    Adjacent rooms are joined by a one-cell doorway in the middle of their
    shared wall.  The agent starts in the top-left corner facing right; the
    goal fills the bottom-right corner.  Minigrid's reward on reaching the
    goal is ``1 - 0.9 * steps / max_steps``.
    """

    AGENT = OBJECT_TO_IDX["agent"]

    def __init__(self, room_size: int = 5, rooms_per_side: int = 3, max_steps: int = 200, **kw):
        self.room_size, self.rooms_per_side = room_size, rooms_per_side
        size = rooms_per_side * (room_size + 1) + 1
        super().__init__(mission_space=MissionSpace(mission_func=_mission),
                         grid_size=size, max_steps=max_steps, see_through_walls=True, **kw)
        self.action_space = gym.spaces.Discrete(3)  # left, right, forward
        self.observation_space = gym.spaces.Box(0, 255, (3, size, size), np.uint8)
        self._static = None
        self._agent_code = np.array([OBJECT_TO_IDX["agent"], COLOR_TO_IDX["red"], 0], np.uint8)

    def _gen_grid(self, width, height):
        s, k = self.room_size + 1, self.rooms_per_side
        self.grid = Grid(width, height)
        for i in range(k + 1):
            self.grid.horz_wall(0, i * s)
            self.grid.vert_wall(i * s, 0)
        mid = s // 2
        for r in range(k):
            for c in range(k):
                if c + 1 < k:  # doorway to the room on the right
                    self.grid.set((c + 1) * s, r * s + mid, None)
                if r + 1 < k:  # doorway to the room below
                    self.grid.set(c * s + mid, (r + 1) * s, None)
        self.put_obj(Goal(), width - 2, height - 2)
        self.agent_pos, self.agent_dir = (1, 1), 0

    def static_encoding(self) -> np.ndarray:
        """The layout without the agent, uint8 [3, H, W] (cached: the layout never changes)."""
        if self._static is None:
            self._static = np.ascontiguousarray(self.grid.encode().transpose(2, 1, 0))  # [W,H,3]->[3,H,W]
        return self._static

    def gen_obs(self):
        obs = self.static_encoding().copy()
        x, y = self.agent_pos
        obs[:, y, x] = self._agent_code
        obs[2, y, x] = self.agent_dir
        return obs

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        return obs, {**info, **self.where()}

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(int(action))
        return obs, reward, terminated, truncated, {**info, **self.where()}

    def where(self) -> dict:
        """The agent's cell id (y * W + x) and room id (row-major over rooms)."""
        x, y = self.agent_pos
        s = self.room_size + 1
        return {"cell": int(y * self.width + x), "room": int((y // s) * self.rooms_per_side + x // s)}



def rooms_env(room_size: int = 5, rooms_per_side: int = 3, max_steps: int = 200) -> gym.Env:
    """One rooms gridworld (see the module docstring)."""
    return RoomsEnv(room_size=room_size, rooms_per_side=rooms_per_side, max_steps=max_steps)


def rooms_all_states(env) -> tuple[np.ndarray, np.ndarray]:
    """Every observation the rooms task can produce, for maps of the intrinsic reward.

    Returns ``obs`` uint8 [F*4, 3, H, W] (each free cell, each of 4 headings)
    and ``cells`` int [F, 2] with the (x, y) of each free cell; row ``4*f + d``
    of ``obs`` is the agent on cell ``f`` facing ``d``.
    """
    env = env.unwrapped
    base = env.static_encoding()
    free = np.argwhere((base[0] == 1) | (base[0] == 8))  # empty floor or goal, as (y, x)
    cells = free[:, ::-1].copy()  # (x, y)
    F = len(cells)
    obs = np.repeat(base[None], F * 4, axis=0)
    f = np.repeat(np.arange(F), 4)
    d = np.tile(np.arange(4), F)
    ys, xs = free[f, 0], free[f, 1]
    obs[np.arange(F * 4), 0, ys, xs] = env._agent_code[0]
    obs[np.arange(F * 4), 1, ys, xs] = env._agent_code[1]
    obs[np.arange(F * 4), 2, ys, xs] = d
    return obs, cells


# ---------------------------------------------------------------------------
# Atari (the RND paper's preprocessing)
# ---------------------------------------------------------------------------

class MontezumaInfo(gym.Wrapper):
    """Put Montezuma's room (RAM byte 3) and a coarse position cell into ``info``.

    RAM bytes: 3 = room, 42 = player x, 43 = player y, 57 = level (as used by
    the RND paper's code and its descendants).  ``cell`` = room x 8x8-pixel
    bins of (x, y), so distinct cells count states at a coarse resolution.
    """

    def _where(self) -> dict:
        ram = self.env.unwrapped.ale.getRAM()
        room, x, y, level = int(ram[3]), int(ram[42]), int(ram[43]), int(ram[57])
        return {"room": level * 24 + room, "cell": ((level * 24 + room) * 32 + x // 8) * 32 + y // 8}

    def reset(self, **kw):
        obs, info = self.env.reset(**kw)
        return obs, {**info, **self._where()}

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        return obs, r, term, trunc, {**info, **self._where()}


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of area-averaging resampling (each output pixel averages the input it covers)."""
    edges = np.linspace(0, n_in, n_out + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    px = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, px + 1) - np.maximum(lo, px), 0, None)
    return (overlap / overlap.sum(1, keepdims=True)).astype(np.float32)


class AtariFrames(gym.Wrapper):
    """Repeat each action ``skip`` times, max-pool the last two grey frames, area-resize to ``size``.

    The pure-numpy equivalent of gymnasium's AtariPreprocessing (which needs
    OpenCV): the ALE gives grey frames [210, 160]; resizing is two matrix
    products with area-averaging weights.  Observations: uint8 [size, size].
    """

    def __init__(self, env: gym.Env, skip: int = 4, size: int = 84):
        super().__init__(env)
        h, w = env.observation_space.shape[:2]
        self.skip = skip
        # torch, not numpy: numpy's BLAS threads thrash on a busy machine (100x slower measured)
        self._rows = torch.from_numpy(area_matrix(h, size))
        self._cols = torch.from_numpy(area_matrix(w, size).T.copy())
        self.observation_space = gym.spaces.Box(0, 255, (size, size), np.uint8)

    def _resize(self, frame: np.ndarray) -> np.ndarray:
        out = self._rows @ torch.from_numpy(frame).float() @ self._cols
        return out.add_(0.5).clamp_(0, 255).to(torch.uint8).numpy()

    def reset(self, **kw):
        obs, info = self.env.reset(**kw)
        return self._resize(obs), info

    def step(self, action):
        total, frames = 0.0, []
        for _ in range(self.skip):
            obs, r, term, trunc, info = self.env.step(action)
            total += r
            frames.append(obs)
            if term or trunc:
                break
        frame = np.maximum(frames[-1], frames[-2]) if len(frames) > 1 else frames[-1]
        return self._resize(frame), total, term, trunc, info


def atari_env(env_id: str = "ALE/MontezumaRevenge-v5", sticky: float = 0.25, max_frames: int = 18000,
              frame_stack: int = 4) -> gym.Env:
    """The RND paper's Atari pipeline for one environment.

    84x84 grey frames, an action repeated 4 times with the max of the last two
    frames, sticky actions (the emulator repeats the previous action with
    probability ``sticky`` each frame), at most ``max_frames`` frames per
    episode, no terminal on life loss (the ALE only ends the episode at game
    over), and the last ``frame_stack`` frames as the observation
    (uint8 [frame_stack, 84, 84]).
    """
    import ale_py
    from gymnasium.wrappers import FrameStackObservation

    gym.register_envs(ale_py)
    env = gym.make(env_id, obs_type="grayscale", frameskip=1, repeat_action_probability=sticky,
                   max_num_frames_per_episode=max_frames, full_action_space=False)
    env = AtariFrames(env, skip=4, size=84)
    if "MontezumaRevenge" in env_id:
        env = MontezumaInfo(env)
    return FrameStackObservation(env, frame_stack)


# ---------------------------------------------------------------------------
# MinAtar (miniature Atari games, the ``minatar`` package)
# ---------------------------------------------------------------------------

#: MinAtar's games: gymnasium-style name (as in ``MinAtar/<Name>-v1``) -> the package's module name.
MINATAR_GAMES = {"Asterix": "asterix", "Breakout": "breakout", "Freeway": "freeway",
                 "Seaquest": "seaquest", "SpaceInvaders": "space_invaders"}


class MinAtarEnv(gym.Env):
    """One MinAtar game as a gymnasium env with channels-first ``uint8`` observations.

    Built directly on ``minatar.Environment`` (not on MinAtar's own gym wrapper,
    whose ``reset`` does not seed ``np_random`` and whose observations are bool
    ``[10, 10, C]``).  Observations: ``uint8 [C, 10, 10]``, 0/1, channel ``c``
    named ``channel_names[c]`` (e.g. Breakout: paddle, ball, trail, brick).
    Actions: ``Discrete(len(action_set))`` where ``action_set`` lists MinAtar's
    action indices (0..5 = no-op, left, up, right, down, fire); with the minimal
    set index 0 is always the no-op (Breakout: no-op, left, right).

    Seeding: ``reset(seed=s)`` seeds ``np_random`` and, from it, the
    ``numpy.random.RandomState`` MinAtar draws both the game's randomness and
    the sticky actions from; ``reset()`` without a seed continues the streams.
    Every reset also clears the sticky-action memory (MinAtar keeps the last
    action across episodes), so an episode is a function of the seed and the
    actions alone.  Episodes are truncated after ``max_steps`` steps.
    """

    metadata = {"render_modes": []}
    noop_action = 0  # index of the no-op in both the minimal and the full action set

    def __init__(self, game: str = "breakout", sticky: float = 0.1, ramping: bool = True,
                 max_steps: int = 5000, minimal_actions: bool = True):
        from minatar import Environment  # imports matplotlib and seaborn: only when a game is built

        game = MINATAR_GAMES.get(game, game)
        if game not in MINATAR_GAMES.values():
            raise ValueError(f"unknown MinAtar game {game!r}; one of {sorted(MINATAR_GAMES.values())}")
        self.game_name, self.max_steps = game, int(max_steps)
        self.game = Environment(game, sticky_action_prob=sticky, difficulty_ramping=ramping)
        core = self.game.env
        self.action_set = list(self.game.minimal_action_set() if minimal_actions else range(self.game.num_actions()))
        self.action_names = tuple(core.action_map[a] for a in self.action_set)
        self.channel_names = tuple(sorted(core.channels, key=core.channels.get))
        self.n_channels = len(self.channel_names)
        self.action_space = gym.spaces.Discrete(len(self.action_set))
        self.observation_space = gym.spaces.Box(0, 1, (self.n_channels, 10, 10), np.uint8)
        self.t = 0

    def _obs(self) -> np.ndarray:
        return np.ascontiguousarray(self.game.state().transpose(2, 0, 1), dtype=np.uint8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.game.seed(int(self.np_random.integers(2**32)))
        self.game.last_action = 0
        self.game.reset()
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward, done = self.game.act(self.action_set[int(action)])
        self.t += 1
        return self._obs(), float(reward), bool(done), bool(not done and self.t >= self.max_steps), {}


def minatar_env(game: str = "breakout", sticky: float = 0.1, ramping: bool = True, max_steps: int = 5000,
                minimal_actions: bool = True) -> MinAtarEnv:
    """One MinAtar game (:class:`MinAtarEnv`): ``game`` is MinAtar's module name
    (``breakout``, ``space_invaders``, ...) or the gymnasium-style name
    (``Breakout``, ``SpaceInvaders``, ...).

    ``sticky``: probability that MinAtar repeats the previous action instead
    (its default 0.1); ``ramping``: MinAtar's difficulty ramping (ignored by
    Breakout); ``max_steps``: the time limit (truncation), 5000 steps by
    default, twice Freeway's own 2500-step episodes, so it only cuts games a
    good policy could play indefinitely (Breakout refills its bricks);
    ``minimal_actions``: the game's minimal action set (``-v1``) or all six (``-v0``).
    """
    return MinAtarEnv(game, sticky=sticky, ramping=ramping, max_steps=max_steps, minimal_actions=minimal_actions)


def cartpole_env() -> gym.Env:
    """CartPole-v1, a quick sanity task for PPO."""
    return gym.make("CartPole-v1")


def _minatar_name(name: str) -> tuple[str, bool] | None:
    """``MinAtar/<Game>-v1`` -> (module name, minimal action set); -v0 -> all actions; else None."""
    prefix, _, rest = name.partition("/")
    game, _, version = rest.rpartition("-")
    if prefix == "MinAtar" and game in MINATAR_GAMES and version in ("v0", "v1"):
        return MINATAR_GAMES[game], version == "v1"
    return None


def _with_noisy_tv(factory: Callable[[], gym.Env], n_images: int, **tv_kw) -> gym.Env:
    from .noisy_tv import NoisyTV

    return NoisyTV(factory(), n_images=n_images, **tv_kw)


def env_factory(name: str, noisy_tv: int = 0, tv_image_seed: int | None = None, **kw) -> Callable[[], gym.Env]:
    """A zero-argument factory for task ``name``.

    ``name``: ``rooms``, ``MinAtar/<Game>-v1`` (``-v0``: the full action set),
    ``CartPole-v1`` or ``ALE/...``; ``kw`` go to the task's builder
    (:func:`rooms_env`, :func:`minatar_env`, :func:`atari_env`).  ``noisy_tv=K``
    (rooms and MinAtar only; 0 = none) wraps the task in
    :class:`repro.rl.noisy_tv.NoisyTV` with ``K`` pictures: drawn per
    environment from its reset seed, or, with ``tv_image_seed``, one set shared
    by every copy (the TV's ``image_seed``).  Flat keyword arguments, so a run's
    ``env_kwargs`` can carry them.
    """
    if name == "rooms":
        factory = partial(rooms_env, **kw)
    elif (game := _minatar_name(name)) is not None:
        factory = partial(minatar_env, game[0], minimal_actions=game[1], **kw)
    elif name.startswith("ALE/"):
        factory = partial(atari_env, name, **kw)
    elif name == "CartPole-v1":
        factory = cartpole_env
    else:
        raise ValueError(f"unknown environment {name!r}")
    if tv_image_seed is not None and not noisy_tv:
        raise ValueError("tv_image_seed without noisy_tv: there is no TV to draw pictures for")
    if noisy_tv:
        if not (name == "rooms" or name.startswith("MinAtar/")):
            raise ValueError(f"the noisy TV is available for rooms and MinAtar only, not {name!r}")
        return partial(_with_noisy_tv, factory, int(noisy_tv), image_seed=tv_image_seed)
    return factory


def make_vector_env(factory: Callable[[], gym.Env], num_envs: int, mode: str = "sync",
                    seed: int | None = None) -> gym.vector.VectorEnv:
    """``num_envs`` copies of ``factory()`` in one vector env (``sync`` or ``async``), seeded.

    Seeding (:func:`repro.seed.seed_env`): environment ``i`` is reset with
    ``seed + i``; the action and observation spaces are seeded with ``seed``.
    Autoreset is SAME_STEP.
    """
    fns = [factory] * num_envs
    if mode == "sync":
        venv = SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    elif mode == "async":
        venv = AsyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    else:
        raise ValueError(f"vector mode must be sync or async, got {mode!r}")
    if seed is not None:
        seed_env(venv, seed)
    return venv


def info_array(info: dict, key: str, n: int, fill: int = -1) -> np.ndarray:
    """``info[key]`` of a vector env as an int array of length ``n`` (``fill`` where absent)."""
    if key not in info:
        return np.full(n, fill, np.int64)
    vals = np.asarray(info[key], dtype=np.int64)
    mask = np.asarray(info.get("_" + key, np.ones(n, bool)))
    return np.where(mask, vals, fill)
