"""Random Network Distillation (Burda, Edwards, Storkey, Klimov 2018).

A *target* network f, randomly initialised and frozen, maps an observation to
a feature vector; a *predictor* f_hat is trained by regression to match it on
the states the agent visits.  The exploration bonus is the prediction error

    i_t = || f_hat(s_{t+1}) - f(s_{t+1}) ||^2               (book: rnd-bonus; RND eq. 1)

which is small on states like those already seen and large on new ones.  The
target is a deterministic function of the state, so the error can be driven
to zero on familiar states: unlike forward-dynamics prediction, stochastic
transitions leave no irreducible error for the agent to chase.

Inputs to both networks are whitened with a running mean/std per pixel and
clipped to [-5, 5]; the statistics are initialised by a random agent.  The
bonus is divided by a running std of the discounted *intrinsic return*.  The
predictor is trained on a random ``proportion`` of each batch (25% with 128
envs in the paper, so that the effective batch stays that of 32 envs).

Shapes: B samples, C x H x W observations, D feature size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .bonus import BonusSettings, channel_view
from .normalise import RunningMeanStd
from .ppo import layer_init

# ---------------------------------------------------------------------------
# The bonus and the predictor's loss
# ---------------------------------------------------------------------------


def intrinsic_reward(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """i = ||f_hat(s) - f(s)||^2 over the feature axis: [B, D], [B, D] -> [B]   (rnd-bonus; RND eq. 1)."""
    return (pred - target).square().sum(-1)


def predictor_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the predictor, ||f_hat(s) - f(s)||^2 / D averaged over the batch (rnd-loss)."""
    return (pred - target.detach()).square().mean()


def keep_fraction(n: int, proportion: float, device: torch.device,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of the samples the predictor trains on: each kept independently with ``proportion``."""
    keep = torch.rand(n, device=device, generator=generator) < proportion
    return keep.nonzero().squeeze(1)


# ---------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------


def atari_convs(channels: int = 1) -> nn.Sequential:
    """The paper's RND conv stack: 32 8x8/4, 64 4x4/2, 64 3x3/1, leaky ReLU, flatten (3136 for 84x84)."""
    return nn.Sequential(
        layer_init(nn.Conv2d(channels, 32, 8, stride=4)), nn.LeakyReLU(),
        layer_init(nn.Conv2d(32, 64, 4, stride=2)), nn.LeakyReLU(),
        layer_init(nn.Conv2d(64, 64, 3, stride=1)), nn.LeakyReLU(), nn.Flatten())


class RNDNetworks(nn.Module):
    """Target f (frozen) and predictor f_hat.

    ``kind="atari"``: the paper's networks for 1 x 84 x 84 frames: target =
    convs -> linear 512; predictor = convs -> 2 x (FC 512, ReLU) -> linear 512.
    ``kind="mlp"``: the same shapes with the convs replaced by flatten -> FC
    ``hidden`` (leaky ReLU), for small gridworld observations.
    """

    def __init__(self, obs_shape: tuple[int, ...], kind: str = "mlp", hidden: int = 256, out: int = 128):
        super().__init__()
        if kind == "atari":
            feat, body = 64 * 7 * 7, lambda: atari_convs(obs_shape[0])
            out = 512
        elif kind == "mlp":
            d = math.prod(obs_shape)
            feat = hidden
            body = lambda: nn.Sequential(nn.Flatten(), layer_init(nn.Linear(d, hidden)), nn.LeakyReLU())  # noqa: E731
        else:
            raise ValueError(f"unknown RND network kind {kind!r}")
        width = 512 if kind == "atari" else hidden
        self.target = nn.Sequential(body(), layer_init(nn.Linear(feat, out)))
        self.predictor = nn.Sequential(body(), layer_init(nn.Linear(feat, width)), nn.ReLU(),
                                       layer_init(nn.Linear(width, width)), nn.ReLU(),
                                       layer_init(nn.Linear(width, out)))
        for p in self.target.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Whitened observations [B, *obs_shape] -> (f_hat(x), f(x)), each [B, D]."""
        return self.predictor(x), self.target(x)


@dataclass(frozen=True)
class RNDSettings(BonusSettings):
    """RND as a trainer plug-in (:mod:`repro.rl.bonus`): network kind and width, the predictor's
    training fraction and the whitened-input clip; ``channels`` as in :class:`~repro.rl.bonus.BonusSettings`."""

    net: str = "mlp"            # mlp | atari
    hidden: int = 256
    proportion: float = 0.25
    obs_clip: float = 5.0
    kind: str = field(default="rnd", init=False)

    def __post_init__(self) -> None:
        if self.net not in ("mlp", "atari"):
            raise ValueError(f"unknown RND network kind {self.net!r}: choose mlp or atari")
        if not 0.0 <= self.proportion <= 1.0:
            raise ValueError(f"RND proportion must be in [0, 1], got {self.proportion}")

    def build(self, obs_shape: tuple[int, ...], n_actions: int, device: torch.device) -> RND:
        return RND(self.view_shape(obs_shape), device, self.net, self.hidden, self.proportion, self.obs_clip,
                   channels=self.channels)


class RND:
    """The bonus machinery: networks, observation normaliser, the bonus and the predictor's loss.

    Implements :class:`repro.rl.bonus.IntrinsicBonus`: the bonus of a
    transition is the novelty of the state it reaches, ``bonus(s, a, s') =
    novelty(s')``, and the loss trains the predictor on the reached states.
    """

    def __init__(self, obs_shape: tuple[int, ...], device: torch.device, kind: str = "mlp",
                 hidden: int = 256, proportion: float = 0.25, obs_clip: float = 5.0,
                 channels: tuple[int, ...] | None = None):
        self.nets = RNDNetworks(obs_shape, kind, hidden).to(device)
        self.obs_rms = RunningMeanStd(obs_shape, device)
        self.proportion, self.obs_clip = proportion, obs_clip
        self.view_shape, self.channels = tuple(obs_shape), channels

    def view(self, obs: torch.Tensor) -> torch.Tensor:
        """The channels of observations [B, C, ...] the networks see."""
        return channel_view(obs, self.channels)

    def whiten(self, obs: torch.Tensor) -> torch.Tensor:
        """clip((s - mu) / sigma, -5, 5) with the running per-pixel statistics (rnd-obs-norm)."""
        return self.obs_rms.normalise(obs.float(), clip=self.obs_clip)

    def observe(self, obs: torch.Tensor, random_walk: bool = False) -> None:
        """Update the observation statistics (the random walk's, then every rollout's: they keep tracking)."""
        self.obs_rms.update(obs.float())

    @torch.no_grad()
    def novelty(self, obs: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Unnormalised intrinsic reward i of a batch of raw (viewed) states [B, ...] -> [B]."""
        out = [intrinsic_reward(*self.nets(self.whiten(o))) for o in obs.split(chunk)]
        return torch.cat(out)

    def bonus(self, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """The bonus of transitions (s, a, s'): the novelty of s' [B]."""
        return self.novelty(next_obs)

    def keep_mask(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
        """Which of ``n`` samples the predictor trains on, drawn exactly as :meth:`state_loss` draws them.

        A data-parallel update draws the mask of a whole minibatch once, with
        a generator every rank shares, and each rank passes its part as
        ``keep`` (:mod:`repro.rl.distributed`).
        """
        return torch.rand(n, device=device, generator=generator) < self.proportion

    def state_loss(self, obs: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """The predictor's loss on raw states [B, ...]: a random ``proportion`` of them, or those ``keep`` [B] marks."""
        idx = keep_fraction(obs.shape[0], self.proportion, obs.device) if keep is None else keep.nonzero().squeeze(1)
        if idx.numel() == 0:
            return torch.zeros((), device=obs.device)
        pred, target = self.nets(self.whiten(obs[idx]))  # only the kept samples are evaluated
        return predictor_loss(pred, target)

    def loss(self, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor,
             keep: torch.Tensor | None = None) -> torch.Tensor:
        """The predictor's loss on a minibatch of transitions: trained on the reached states s' (``keep``: see
        :meth:`state_loss`)."""
        return self.state_loss(next_obs, keep)

    def parameters(self) -> list[nn.Parameter]:
        """The predictor's parameters (the target is frozen)."""
        return list(self.nets.predictor.parameters())

    def state_dict(self) -> dict:
        """Networks and observation statistics."""
        return {"nets": self.nets.state_dict(), "obs_rms": self.obs_rms.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.nets.load_state_dict(state["nets"])
        self.obs_rms.load_state_dict(state["obs_rms"])
