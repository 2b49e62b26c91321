"""Seeding: the one place that owns every random number generator a chapter touches.

``seed_everything(seed)`` seeds python, numpy and torch (all devices) at the
start of a run; experiments draw from explicit generators made by
:func:`generator` (so two experiments in one chapter do not share a stream);
:func:`seed_env` seeds a gymnasium (vector) environment and its spaces.
"""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch (all devices); return a CPU torch Generator seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return generator(seed)


def generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """An explicit torch generator on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(int(seed))


def seed_env(env, seed: int) -> None:
    """Seed a gymnasium (vector) environment and its action/observation spaces."""
    env.reset(seed=seed)
    for space in (getattr(env, "action_space", None), getattr(env, "observation_space", None),
                  getattr(env, "single_action_space", None), getattr(env, "single_observation_space", None)):
        if space is not None:
            space.seed(seed)
