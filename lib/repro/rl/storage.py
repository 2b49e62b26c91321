"""Rollout storage, preallocated once on the device.

Shapes: T steps per rollout, N environments, K reward streams (extrinsic,
intrinsic, ...).  Row ``t`` holds the observation ``s_t`` the policy saw, the
action ``a_t``, its log-probability and the values ``V_k(s_t)``, and what the
step returned: rewards ``r_{t,k}`` and ``done_t`` (the episode ended with this
transition, terminated or truncated; ``s_{t+1}`` is then the first state of the
next episode, SAME_STEP autoreset).  ``next_obs`` is ``s_{t+1}`` as an intrinsic
bonus sees it (only the channels it views are kept; :mod:`repro.rl.bonus`).
"""
from __future__ import annotations

import torch


class RolloutStorage:
    """One rollout's tensors [T, N, ...] on the device (see the module docstring)."""

    def __init__(self, num_steps: int, num_envs: int, obs_shape: tuple[int, ...], num_streams: int,
                 device: torch.device, obs_dtype: torch.dtype = torch.uint8,
                 bonus_obs_shape: tuple[int, ...] | None = None):
        T, N, K = num_steps, num_envs, num_streams
        self.T, self.N, self.K = T, N, K
        self.obs = torch.zeros((T, N, *obs_shape), dtype=obs_dtype, device=device)
        self.actions = torch.zeros((T, N), dtype=torch.long, device=device)
        self.logprobs = torch.zeros((T, N), device=device)
        self.values = torch.zeros((T, N, K), device=device)
        self.rewards = torch.zeros((T, N, K), device=device)
        self.dones = torch.zeros((T, N), device=device)
        self.next_obs = (torch.zeros((T, N, *bonus_obs_shape), dtype=obs_dtype, device=device)
                         if bonus_obs_shape is not None else None)

    def transitions(self) -> dict[str, torch.Tensor]:
        """Observations, actions and (if stored) next observations, [T, N] flattened to [T*N]."""
        B = self.T * self.N
        out = {"obs": self.obs.reshape(B, *self.obs.shape[2:]), "actions": self.actions.reshape(B)}
        if self.next_obs is not None:
            out["next_obs"] = self.next_obs.reshape(B, *self.next_obs.shape[2:])
        return out

    def flat(self, advantages: torch.Tensor, returns: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything a PPO update needs: :meth:`transitions` plus log-probabilities, values, advantages and
        returns, with [T, N] flattened to [T*N]."""
        B = self.T * self.N
        return {**self.transitions(), "logprobs": self.logprobs.reshape(B), "values": self.values.reshape(B, self.K),
                "advantages": advantages.reshape(B, self.K), "returns": returns.reshape(B, self.K)}
