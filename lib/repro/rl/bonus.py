"""Intrinsic rewards as a plug-in of the PPO trainer.

An *intrinsic bonus* turns transitions (s_t, a_t, s_{t+1}) into a reward the
agent gives itself.  RND (:mod:`repro.rl.rnd`) and forward-dynamics curiosity
(:mod:`repro.rl.curiosity`) are two implementations; the trainer
(:mod:`repro.rl.trainer`) knows only this interface:

* :class:`BonusSettings` - a frozen dataclass of typed settings, one subclass
  per method (its ``kind`` field names the method and is part of a run's
  checkpoint identity); ``settings.build(obs_shape, n_actions, device)``
  returns the bonus;
* :class:`IntrinsicBonus` - what ``build`` returns:

  - ``view(obs)`` selects the channels of observations [B, C, ...] the bonus
    sees (``settings.channels``; ``None`` = all); ``view_shape`` is their shape;
  - ``observe(obs_view, random_walk)`` feeds observation statistics: once per
    chunk of the random walk (``random_walk=True``), then once per rollout with
    that rollout's next observations (``random_walk=False``; a method whose
    statistics stay fixed after the random walk, like curiosity, ignores these);
  - ``bonus(obs_view, actions, next_obs_view) -> [B]``: the unnormalised reward
    of B transitions, without gradients;
  - ``loss(obs_view, actions, next_obs_view) -> scalar``: the bonus's own
    training loss on one PPO minibatch (added to PPO's loss through
    ``ppo_update``'s ``aux_loss`` hook; its parameters are in the same
    optimiser);
  - ``parameters()`` - the trainable parameters (given to the optimiser
    after the policy's); ``state_dict()`` / ``load_state_dict()`` - everything
    a checkpoint needs (networks and statistics).

The trainer normalises every bonus the same way (divide by the running std of
the discounted intrinsic return, RND eq. / curiosity's reward normalisation),
puts it in reward stream 1, and computes its advantages with that stream's
discount and episodic flag.  Two settings of the existing streams give the
curiosity paper's regimes:

* **pure curiosity**: ``PPOSettings.adv_coefs = (0.0, 1.0)`` - the extrinsic
  stream is still measured (returns, value head) but never optimised;
* **infinite horizon**: ``PPOSettings.episodic = (True, False)`` - the
  intrinsic return flows across episode ends (death is one more transition).

Shapes: B transitions, C x ... observations, A actions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol, runtime_checkable

import torch
import torch.nn as nn


@runtime_checkable
class IntrinsicBonus(Protocol):
    """What the trainer needs from an intrinsic reward (see the module docstring)."""

    view_shape: tuple[int, ...]

    def view(self, obs: torch.Tensor) -> torch.Tensor: ...

    def observe(self, obs_view: torch.Tensor, random_walk: bool) -> None: ...

    def bonus(self, obs_view: torch.Tensor, actions: torch.Tensor, next_obs_view: torch.Tensor) -> torch.Tensor: ...

    def loss(self, obs_view: torch.Tensor, actions: torch.Tensor, next_obs_view: torch.Tensor) -> torch.Tensor: ...

    def parameters(self) -> Iterable[nn.Parameter]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass(frozen=True)
class BonusSettings:
    """Base of every bonus's typed settings.

    ``channels``: the observation channels the bonus sees (e.g. ``(-1,)``, the
    last Atari frame, for RND; ``None``: all).  Subclasses add their own fields,
    set ``kind`` and implement :meth:`build`.
    """

    channels: tuple[int, ...] | None = None
    kind: str = field(default="", init=False)

    def view_shape(self, obs_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one observation as the bonus sees it."""
        return obs_shape if self.channels is None else (len(self.channels), *obs_shape[1:])

    def build(self, obs_shape: tuple[int, ...], n_actions: int, device: torch.device) -> IntrinsicBonus:
        """The bonus for observations of ``obs_shape`` (the env's full shape) and ``n_actions`` actions."""
        raise NotImplementedError


def channel_view(obs: torch.Tensor, channels: tuple[int, ...] | None) -> torch.Tensor:
    """The channels ``channels`` of observations [B, C, ...] (all if None)."""
    return obs if channels is None else obs[:, list(channels)]
