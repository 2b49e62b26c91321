"""Forward-dynamics curiosity (Burda, Edwards, Pathak, Storkey, Darrell, Efros 2019).

"Large-scale study of curiosity-driven learning" (ICLR 2019): the agent is
rewarded for transitions it cannot predict.  An embedding phi maps an
observation to a feature vector; a *forward model* f predicts the next
features from the current ones and the action; the bonus is its error

    r_t = 1/2 || f(phi(s_t), a_t) - phi(s_{t+1}) ||^2        (sum over the feature axis)

computed without gradients.  f is trained on the same squared error (as a
mean over batch and features) with phi *detached*: the forward loss never
moves the features, otherwise phi could collapse to a constant and make every
transition predictable.

Feature spaces (``features=``):

* ``"pixels"`` - phi(s) = the whitened observation, flattened (identity, no
  parameters; D = prod(view_shape); the ``net`` setting is ignored);
* ``"rf"`` - random features: a feature network (``net=``) randomly
  initialised and frozen;
* ``"idf"`` - inverse-dynamics features: the feature network is trained only
  by the inverse loss, the cross-entropy of predicting a_t from
  concat(phi(s_t), phi(s_{t+1})) with an MLP head

      L_inv = - log softmax(g(phi(s_t), phi(s_{t+1})))[a_t]

  so the features keep what the agent's actions can affect.

The paper's fourth feature space, VAE features, is not implemented here.

Forward model (the action enters every layer; A actions, onehot(a) in {0,1}^A):

    x   = leaky_relu(W_0 [phi(s); onehot(a)])                     [B, hidden]
    for each of ``n_residual`` blocks (paper: 4):
        res = leaky_relu(W_1 [x; onehot(a)])
        res = W_2 [res; onehot(a)]
        x   = x + res
    f   = W_out [x; onehot(a)]                                     [B, D]

Feature networks (``net=``, for ``"rf"`` and ``"idf"``):

* ``"mlp"`` - flatten -> Linear ``hidden`` -> leaky ReLU -> Linear D (small observations);
* ``"minatar"`` - for [C, 10, 10] frames: conv 16 3x3 stride 1, leaky ReLU, flatten, Linear D;
* ``"atari"`` - the paper's conv stack for 84 x 84 frame stacks: 32 8x8/4, 64 4x4/2,
  64 3x3/1 (leaky ReLU), flatten, Linear D.

The paper's sizes are D = ``feat_dim`` = 512, ``hidden`` = 512 and 4 residual
blocks; the defaults here are small, for tiny observations.

Observation normalisation: a *per-pixel* running mean/std (as RND), fed only
by the random agent's observations (``observe(obs, random_walk=True)``) and
then FIXED - the paper computes the statistics once from a random agent, so
``observe(obs, random_walk=False)`` does nothing.  Whitened inputs are clipped
to [-``obs_clip``, ``obs_clip``] (5, as RND).  With no random-walk
observations the statistics stay at mean 0, variance 1.

The forward (and inverse) loss is computed on a random ``proportion`` of each
minibatch (default 1: all samples; the draw uses torch's global RNG, so a
checkpointed RNG state resumes identically).

Shapes: B transitions, C x H x W (or D_obs) observations, D features, A actions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .bonus import BonusSettings, channel_view
from .normalise import RunningMeanStd
from .ppo import layer_init
from .rnd import atari_convs, keep_fraction

FEATURES = ("pixels", "rf", "idf")
NETS = ("mlp", "minatar", "atari")

# ---------------------------------------------------------------------------
# The bonus and the losses
# ---------------------------------------------------------------------------


def forward_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """r = 1/2 ||f(phi(s), a) - phi(s')||^2 over the feature axis: [B, D], [B, D] -> [B]."""
    return 0.5 * (pred - target).square().sum(-1)


def forward_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The forward model's mean squared error over batch and features, target features detached."""
    return (pred - target.detach()).square().mean()


def inverse_loss(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the inverse model: logits [B, A], actions [B] -> mean of -log p(a_t | s_t, s_{t+1})."""
    return F.cross_entropy(logits, actions)


# ---------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------


def _flat_size(body: nn.Module, shape: tuple[int, ...]) -> int:
    """Number of features ``body`` gives for one input of ``shape``."""
    with torch.no_grad():
        return body(torch.zeros(1, *shape)).shape[1]


def feature_net(features: str, net: str, view_shape: tuple[int, ...], feat_dim: int, hidden: int) -> nn.Module:
    """phi: whitened observations [B, *view_shape] -> [B, D] (D = prod(view_shape) for pixels)."""
    if features == "pixels":
        return nn.Flatten()
    if net == "mlp":
        return nn.Sequential(nn.Flatten(), layer_init(nn.Linear(math.prod(view_shape), hidden)), nn.LeakyReLU(),
                             layer_init(nn.Linear(hidden, feat_dim), gain=1.0))
    if len(view_shape) != 3:
        raise ValueError(f"net={net!r} needs [C, H, W] observations, got view shape {view_shape}")
    if net == "minatar":
        body = nn.Sequential(layer_init(nn.Conv2d(view_shape[0], 16, 3, stride=1)), nn.LeakyReLU(), nn.Flatten())
    elif net == "atari":
        body = atari_convs(view_shape[0])
    else:
        raise ValueError(f"unknown curiosity feature net {net!r}; expected one of {NETS}")
    return nn.Sequential(body, layer_init(nn.Linear(_flat_size(body, view_shape), feat_dim), gain=1.0))


class ForwardModel(nn.Module):
    """f(phi(s), a): dense ``hidden`` -> ``n_residual`` residual blocks -> dense D, the one-hot action
    concatenated to the input of every dense layer (see the module docstring).

    Orthogonal initialisation; each block's second layer has gain 0.5 so that the residual stream's
    scale grows only ~1.25x per block in variance (with gain sqrt(2) it doubles per block, and
    4 blocks would start the bonus at ~50x the feature variance).
    """

    def __init__(self, feat_dim: int, n_actions: int, hidden: int, n_residual: int):
        super().__init__()
        self.n_actions = n_actions
        a = n_actions
        self.inp = layer_init(nn.Linear(feat_dim + a, hidden))
        self.blocks = nn.ModuleList(
            nn.ModuleList([layer_init(nn.Linear(hidden + a, hidden)),
                           layer_init(nn.Linear(hidden + a, hidden), gain=0.5)])
            for _ in range(n_residual))
        self.out = layer_init(nn.Linear(hidden + a, feat_dim), gain=1.0)

    def forward(self, feat: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Features [B, D], actions [B] (int64) -> predicted next features [B, D]."""
        onehot = F.one_hot(actions.long(), self.n_actions).to(feat.dtype)

        def cat(x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x, onehot], -1)

        x = F.leaky_relu(self.inp(cat(feat)))
        for first, second in self.blocks:
            res = F.leaky_relu(first(cat(x)))
            x = x + second(cat(res))
        return self.out(cat(x))


class InverseHead(nn.Module):
    """g(phi(s), phi(s')): concat -> Linear ``hidden`` -> leaky ReLU -> Linear A (action logits)."""

    def __init__(self, feat_dim: int, n_actions: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(layer_init(nn.Linear(2 * feat_dim, hidden)), nn.LeakyReLU(),
                                 layer_init(nn.Linear(hidden, n_actions), gain=0.01))

    def forward(self, feat: torch.Tensor, next_feat: torch.Tensor) -> torch.Tensor:
        """[B, D], [B, D] -> logits [B, A]."""
        return self.net(torch.cat([feat, next_feat], -1))


# ---------------------------------------------------------------------------
# Settings and the bonus object
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CuriositySettings(BonusSettings):
    """Forward-dynamics curiosity (see the module docstring).

    ``features``: "pixels", "rf" or "idf"; ``net``: "mlp", "minatar" or "atari"
    (ignored for pixels); ``feat_dim`` D (paper 512; ignored for pixels, where
    D = prod(view shape)); ``hidden``: width of the forward model, the mlp
    feature net and the inverse head (paper 512); ``n_residual``: residual
    blocks of the forward model (paper 4); ``proportion``: fraction of each
    minibatch the losses use; ``obs_clip``: whitened inputs are clipped to
    [-obs_clip, obs_clip].
    """

    features: str = "rf"
    net: str = "mlp"
    feat_dim: int = 64
    hidden: int = 64
    n_residual: int = 4
    proportion: float = 1.0
    obs_clip: float = 5.0
    kind: str = field(default="curiosity", init=False)

    def __post_init__(self):
        if self.features not in FEATURES:
            raise ValueError(f"unknown curiosity features {self.features!r}; expected one of {FEATURES} "
                             "(VAE features are not implemented)")
        if self.net not in NETS:
            raise ValueError(f"unknown curiosity feature net {self.net!r}; expected one of {NETS}")
        for name in ("feat_dim", "hidden"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"curiosity {name} must be a positive integer, got {v!r}")
        if isinstance(self.n_residual, bool) or not isinstance(self.n_residual, int) or self.n_residual < 0:
            raise ValueError(f"curiosity n_residual must be a non-negative integer, got {self.n_residual!r}")
        if not 0.0 < self.proportion <= 1.0:
            raise ValueError(f"curiosity proportion must be in (0, 1], got {self.proportion!r}")
        if not self.obs_clip > 0:
            raise ValueError(f"curiosity obs_clip must be positive, got {self.obs_clip!r}")

    def build(self, obs_shape: tuple[int, ...], n_actions: int, device: torch.device) -> "Curiosity":
        """The bonus for env observations of ``obs_shape`` (full shape) and ``n_actions`` actions."""
        return Curiosity(self, tuple(obs_shape), n_actions, torch.device(device))


class Curiosity:
    """Feature net phi, forward model f (and inverse head g for IDF), the fixed observation statistics."""

    def __init__(self, settings: CuriositySettings, obs_shape: tuple[int, ...], n_actions: int,
                 device: torch.device):
        if n_actions < 1:
            raise ValueError(f"curiosity needs at least one action, got n_actions={n_actions}")
        s = self.settings = settings
        self.channels = s.channels
        self.view_shape = s.view_shape(tuple(obs_shape))
        self.n_actions = n_actions
        self.obs_rms = RunningMeanStd(self.view_shape, device)
        phi = feature_net(s.features, s.net, self.view_shape, s.feat_dim, s.hidden)
        self.feat_dim = math.prod(self.view_shape) if s.features == "pixels" else s.feat_dim
        nets = {"phi": phi, "dynamics": ForwardModel(self.feat_dim, n_actions, s.hidden, s.n_residual)}
        if s.features == "idf":
            nets["inverse"] = InverseHead(self.feat_dim, n_actions, s.hidden)
        else:
            for p in phi.parameters():   # random features are frozen at init
                p.requires_grad_(False)
        self.nets = nn.ModuleDict(nets).to(device)

    @property
    def phi(self) -> nn.Module:
        return self.nets["phi"]

    @property
    def forward_model(self) -> ForwardModel:
        return self.nets["dynamics"]

    @property
    def inverse_head(self) -> InverseHead | None:
        return self.nets["inverse"] if "inverse" in self.nets else None

    # -- the IntrinsicBonus interface ----------------------------------------

    def view(self, obs: torch.Tensor) -> torch.Tensor:
        """The channels of observations [B, C, ...] the bonus sees."""
        return channel_view(obs, self.channels)

    def observe(self, obs_view: torch.Tensor, random_walk: bool) -> None:
        """Random-walk observations set the (per-pixel) statistics; later ones are ignored (fixed stats)."""
        if random_walk:
            self.obs_rms.update(obs_view.float())

    def whiten(self, obs_view: torch.Tensor) -> torch.Tensor:
        """clip((s - mu) / sigma, -obs_clip, obs_clip) with the random agent's per-pixel statistics."""
        return self.obs_rms.normalise(obs_view.float(), clip=self.settings.obs_clip)

    def embed(self, obs_view: torch.Tensor) -> torch.Tensor:
        """phi(whiten(s)): [B, *view_shape] -> [B, D]."""
        return self.phi(self.whiten(obs_view))

    @torch.no_grad()
    def bonus(self, obs_view: torch.Tensor, actions: torch.Tensor, next_obs_view: torch.Tensor,
              chunk: int = 4096) -> torch.Tensor:
        """Unnormalised r = 1/2 ||f(phi(s), a) - phi(s')||^2 of B transitions -> [B]."""
        out = [forward_error(self.forward_model(self.embed(o), a), self.embed(n))
               for o, a, n in zip(obs_view.split(chunk), actions.split(chunk), next_obs_view.split(chunk))]
        return torch.cat(out)

    def keep_mask(self, n: int, device: torch.device,
                  generator: torch.Generator | None = None) -> torch.Tensor | None:
        """Which of ``n`` samples the losses use, drawn exactly as :meth:`losses` draws them (None: all, no draw).

        A data-parallel update draws the mask of a whole minibatch once, with
        a generator every rank shares, and each rank passes its part as
        ``keep`` (:mod:`repro.rl.distributed`).
        """
        if self.settings.proportion >= 1.0:
            return None
        return torch.rand(n, device=device, generator=generator) < self.settings.proportion

    def losses(self, obs_view: torch.Tensor, actions: torch.Tensor, next_obs_view: torch.Tensor,
               keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(forward loss, inverse loss) on a random ``proportion`` of the batch (or the samples ``keep`` [B]
        marks); the inverse loss is 0 unless features == "idf".  phi is detached in the forward loss, so only
        the inverse loss trains it."""
        zero = torch.zeros((), device=obs_view.device)
        if keep is not None or self.settings.proportion < 1.0:
            idx = (keep_fraction(obs_view.shape[0], self.settings.proportion, obs_view.device) if keep is None
                   else keep.nonzero().squeeze(1))
            if idx.numel() == 0:
                return zero, zero
            obs_view, actions, next_obs_view = obs_view[idx], actions[idx], next_obs_view[idx]
        feat, next_feat = self.embed(torch.cat([obs_view, next_obs_view])).chunk(2)
        fwd = forward_loss(self.forward_model(feat.detach(), actions), next_feat)
        inv = inverse_loss(self.inverse_head(feat, next_feat), actions) if self.inverse_head is not None else zero
        return fwd, inv

    def loss(self, obs_view: torch.Tensor, actions: torch.Tensor, next_obs_view: torch.Tensor,
             keep: torch.Tensor | None = None) -> torch.Tensor:
        """Forward loss (+ inverse loss for IDF) on one minibatch: a scalar to add to PPO's loss."""
        fwd, inv = self.losses(obs_view, actions, next_obs_view, keep)
        return fwd + inv

    @torch.no_grad()
    def inverse_logits(self, obs_view: torch.Tensor, next_obs_view: torch.Tensor) -> torch.Tensor:
        """The IDF head's action logits g(phi(s), phi(s')) [B, A] (IDF only)."""
        if self.inverse_head is None:
            raise ValueError(f"inverse_logits needs features='idf', not {self.settings.features!r}")
        return self.inverse_head(self.embed(obs_view), self.embed(next_obs_view))

    def parameters(self) -> list[nn.Parameter]:
        """Trainable parameters: the forward model (+ feature net and inverse head for IDF)."""
        return [p for p in self.nets.parameters() if p.requires_grad]

    def state_dict(self) -> dict:
        """All networks (frozen ones included) and the observation statistics."""
        return {"nets": self.nets.state_dict(), "obs_rms": self.obs_rms.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.nets.load_state_dict(state["nets"])
        self.obs_rms.load_state_dict(state["obs_rms"])
