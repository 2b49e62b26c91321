"""The noisy TV: a source of irreducible randomness that the agent controls.

:class:`NoisyTV` wraps an environment with a ``Discrete`` action space and a
channels-first image observation ``uint8 [C, H, W]``.  It adds one action,
*press the remote*, and one observation channel, the *screen* (the last
channel, index ``C``, so the original channels keep their indices):

* pressing the remote steps the wrapped environment with its no-op action
  (time passes, the agent stays where it is) and the screen shows one of
  ``n_images`` fixed random pictures, chosen uniformly at random;
* every other action is passed through and the screen is blank (zeros);
  ``reset`` shows a blank screen.

``info["tv"]`` is 1 on steps that pressed the remote, else 0 (also 0 after
``reset``); ``info["tv_image"]`` is the index of the picture shown (-1 for a
blank screen).  The wrapped environment's own ``info`` keys are kept.

Pictures: ``n_images`` arrays ``uint8 [H, W]`` with pixels uniform on
``0..high``, where ``high`` is the largest ``high`` of the wrapped observation
space (255 for the rooms gridworld, 1 for MinAtar), so the screen lives on the
same scale as the other channels; a picture is never blank (an all-zero draw is
redrawn), but two pictures are not forced to differ (for a 1-pixel screen they
may).

Randomness: the wrapper owns a ``numpy.random.Generator`` (``tv_random``),
separate from the wrapped environment's (gymnasium's ``Wrapper.np_random``
would forward to the wrapped environment's generator, and drawing from it
would change that environment's own randomness).  ``reset(seed=s)`` reseeds it
from ``s`` (a different stream from the one gymnasium derives from ``s``) and
redraws the pictures from it, so everything the wrapper does after
``reset(seed=s)`` is a function of ``s`` and the actions; ``reset()`` without a
seed continues the stream and keeps the pictures.  In a vector env
(:func:`repro.rl.envs.make_vector_env`) environment ``i`` is seeded with
``seed + i``, so each copy has its own pictures; ``image_seed`` instead draws
one set of pictures at construction, shared by every copy (only the choice of
picture then follows the reset seed).

No-op: ``noop_action`` defaults to ``MiniGridEnv.Actions.done`` (6, which
minigrid's ``step`` treats as "do nothing", outside the rooms task's
``Discrete(3)`` but accepted by its ``step``) for minigrid environments and to
the environment's ``noop_action`` attribute otherwise (0 for
:class:`repro.rl.envs.MinAtarEnv`).  With sticky actions (MinAtar's 0.1) the
wrapped environment may repeat the previous action instead of the no-op, as it
does for every action.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

_TV_STREAM = 0x7E1E  # mixed into the reset seed: the TV's stream differs from the env's own


def default_noop(env: gym.Env) -> int:
    """The no-op action of ``env`` (see the module docstring); ValueError if it has none."""
    from minigrid.minigrid_env import MiniGridEnv

    base = env.unwrapped
    if isinstance(base, MiniGridEnv):
        return int(base.actions.done)
    if getattr(base, "noop_action", None) is not None:
        return int(base.noop_action)
    raise ValueError(f"no known no-op action for {base!r}: pass noop_action")


class NoisyTV(gym.Wrapper):
    """One extra action (index ``n`` of ``n + 1``) showing a random picture on one extra channel.

    ``env``: ``Discrete(n)`` actions (starting at 0), ``Box uint8 [C, H, W]``
    observations.  ``n_images``: the number of pictures ``K``.  ``noop_action``:
    the wrapped environment's no-op (default: :func:`default_noop`).
    ``image_seed``: draw the pictures once from this seed (shared by every copy)
    instead of from each reset seed.  Observations: ``uint8 [C + 1, H, W]``.
    """

    def __init__(self, env: gym.Env, n_images: int = 16, noop_action: int | None = None,
                 image_seed: int | None = None):
        super().__init__(env)
        space, actions = env.observation_space, env.action_space
        if not (isinstance(actions, gym.spaces.Discrete) and int(actions.start) == 0):
            raise ValueError(f"NoisyTV needs a Discrete action space starting at 0, got {actions}")
        if not (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3):
            raise ValueError(f"NoisyTV needs uint8 [C, H, W] image observations, got {space}")
        if n_images < 1:
            raise ValueError(f"n_images must be at least 1, got {n_images}")
        C, H, W = space.shape
        self.n_images, self.image_shape = int(n_images), (H, W)
        self.tv_high = int(np.max(space.high))
        if self.tv_high < 1:
            raise ValueError("the observation space's high is 0: no room for a picture")
        self.noop_action = default_noop(env) if noop_action is None else int(noop_action)
        self.tv_action = int(actions.n)
        self.action_space = gym.spaces.Discrete(self.tv_action + 1)
        low = np.concatenate([space.low, np.zeros((1, H, W), np.uint8)])
        high = np.concatenate([space.high, np.full((1, H, W), self.tv_high, np.uint8)])
        self.observation_space = gym.spaces.Box(low, high, dtype=np.uint8)
        self.blank = np.zeros((H, W), np.uint8)
        self.image_seed = image_seed
        self.tv_random: np.random.Generator | None = None
        self.images: np.ndarray | None = None  # uint8 [K, H, W]
        if image_seed is not None:
            self.images = self._draw_images(np.random.default_rng([_TV_STREAM, int(image_seed), 1]))

    def _draw_images(self, rng: np.random.Generator) -> np.ndarray:
        images = rng.integers(0, self.tv_high, (self.n_images, *self.image_shape), np.uint8, endpoint=True)
        for k in range(self.n_images):
            while not images[k].any():  # a picture is never blank
                images[k] = rng.integers(0, self.tv_high, self.image_shape, np.uint8, endpoint=True)
        return images

    def _observe(self, obs: np.ndarray, screen: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(obs, np.uint8), screen[None]], 0)

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        if seed is not None or self.tv_random is None:
            self.tv_random = np.random.default_rng(None if seed is None else [_TV_STREAM, int(seed)])
            if self.image_seed is None:
                self.images = self._draw_images(self.tv_random)
        return self._observe(obs, self.blank), {**info, "tv": 0, "tv_image": -1}

    def step(self, action):
        if int(action) == self.tv_action:
            obs, reward, terminated, truncated, info = self.env.step(self.noop_action)
            k = int(self.tv_random.integers(self.n_images))
            screen, tv = self.images[k], 1
        else:
            obs, reward, terminated, truncated, info = self.env.step(action)
            k, screen, tv = -1, self.blank, 0
        return self._observe(obs, screen), reward, terminated, truncated, {**info, "tv": tv, "tv_image": k}
