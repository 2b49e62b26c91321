"""Seeding of every random number generator a chapter touches."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch (all devices); return a CPU torch Generator."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def seed_env(env, seed: int) -> None:
    """Seed a gymnasium (vector) environment and its action/observation spaces."""
    env.reset(seed=seed)
    for space in (getattr(env, "action_space", None), getattr(env, "observation_space", None),
                  getattr(env, "single_action_space", None), getattr(env, "single_observation_space", None)):
        if space is not None:
            space.seed(seed)
