"""Running mean / variance normalisers.

:class:`RunningMeanStd` keeps the count, mean and variance of everything it
has seen and merges a new batch with the parallel-variance formula of Chan,
Golub and LeVeque (1979).  It never accumulates raw sums (whose squares lose
all precision after billions of frames); the statistics are float64 where the
device allows it, so merging a batch of 1e4 into a count of 1e10 still moves
the mean by the right amount.  Two normalisers that saw different data merge
into the normaliser of the concatenated data (:meth:`RunningMeanStd.merge`);
in a data-parallel run each worker's batch moments are merged this way before
they update the shared statistics (:meth:`RunningMeanStd.update_moments`,
:class:`repro.rl.distributed.SyncedRunningMeanStd`).

:class:`RewardForwardFilter` is the discounted-return filter of the RND paper:
intrinsic rewards are divided by the running standard deviation of the
*discounted intrinsic return* ``R_t = gamma * R_{t-1} + r_t`` (per env), not of
the rewards themselves.
"""
from __future__ import annotations

import torch


def _stat_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def merge_moments(mean_a: torch.Tensor, var_a: torch.Tensor, n_a: torch.Tensor,
                  mean_b: torch.Tensor, var_b: torch.Tensor, n_b: torch.Tensor):
    """Combine (mean, population variance, count) of two disjoint data sets (Chan et al. 1979).

    n = n_a + n_b;  delta = mean_b - mean_a;  mean = mean_a + delta * n_b / n
    M2 = var_a * n_a + var_b * n_b + delta^2 * n_a * n_b / n;  var = M2 / n
    """
    n = n_a + n_b
    delta = mean_b - mean_a
    mean = mean_a + delta * (n_b / n)
    m2 = var_a * n_a + var_b * n_b + delta.square() * (n_a * n_b / n)
    return mean, m2 / n, n


class RunningMeanStd:
    """Mean and variance over the leading axis of every batch seen, elementwise over ``shape``."""

    def __init__(self, shape: tuple[int, ...] = (), device: torch.device | str = "cpu", eps: float = 1e-4):
        dt = _stat_dtype(device)
        self.shape = tuple(shape)
        self.mean = torch.zeros(shape, dtype=dt, device=device)
        self.var = torch.ones(shape, dtype=dt, device=device)
        # a tiny prior count (as in OpenAI baselines) keeps the first normalise well defined
        self.count = torch.tensor(eps, dtype=dt, device=device)

    def update(self, x: torch.Tensor) -> None:
        """Merge a batch ``x`` of shape [B, *shape]."""
        self.update_moments(*self.batch_moments(x))

    def batch_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean, population variance, count) of a batch ``x`` [B, *shape], in the statistics' dtype."""
        x = x.reshape(-1, *self.shape).to(self.mean.dtype)
        n_b = torch.tensor(float(x.shape[0]), dtype=self.mean.dtype, device=self.mean.device)
        mean_b = x.mean(0)
        var_b = x.var(0, unbiased=False) if x.shape[0] > 1 else torch.zeros_like(mean_b)
        return mean_b, var_b, n_b

    def update_moments(self, mean_b: torch.Tensor, var_b: torch.Tensor, n_b: torch.Tensor) -> None:
        """Merge the moments of a batch (e.g. of several workers' batches, merged first; see :mod:`repro.rl.distributed`)."""
        self.mean, self.var, self.count = merge_moments(self.mean, self.var, self.count, mean_b, var_b, n_b)

    def merge(self, other: "RunningMeanStd") -> "RunningMeanStd":
        """A new normaliser equal to one that had seen both data streams."""
        out = RunningMeanStd(self.shape, self.mean.device)
        out.mean, out.var, out.count = merge_moments(self.mean, self.var, self.count,
                                                     other.mean.to(self.mean), other.var.to(self.var),
                                                     other.count.to(self.count))
        return out

    @property
    def std(self) -> torch.Tensor:
        """sqrt(var), elementwise."""
        return self.var.sqrt()

    def normalise(self, x: torch.Tensor, clip: float | None = None, eps: float = 1e-8) -> torch.Tensor:
        """(x - mean) / sqrt(var + eps), optionally clipped to [-clip, clip], in x's float dtype."""
        dt = x.dtype if x.is_floating_point() else torch.float32
        y = (x.to(dt) - self.mean.to(dt)) / (self.var.to(dt) + eps).sqrt()
        return y.clamp(-clip, clip) if clip is not None else y

    def state_dict(self) -> dict:
        """Mean, variance and count (copies)."""
        return {"mean": self.mean.clone(), "var": self.var.clone(), "count": self.count.clone()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` on this normaliser's device and dtype."""
        self.mean = state["mean"].to(self.mean)
        self.var = state["var"].to(self.var)
        self.count = state["count"].to(self.count)


class RewardForwardFilter:
    """Per-env discounted sum of rewards, ``R_t = gamma * R_{t-1} + r_t``, never reset.

    The RND paper scales intrinsic rewards by the running std of these returns
    (book: rnd-rew-norm).
    """

    def __init__(self, gamma: float, num_envs: int, device: torch.device | str = "cpu"):
        self.gamma = gamma
        self.rewems = torch.zeros(num_envs, dtype=torch.float32, device=device)

    def __call__(self, rewards_t: torch.Tensor) -> torch.Tensor:
        """Advance one step with rewards [N]; return the new returns [N]."""
        self.rewems = self.rewems * self.gamma + rewards_t
        return self.rewems

    def run(self, rewards: torch.Tensor) -> torch.Tensor:
        """Advance over a rollout [T, N]; return the returns at every step [T, N]."""
        out = torch.empty_like(rewards)
        for t in range(rewards.shape[0]):
            out[t] = self(rewards[t])
        return out

    def state_dict(self) -> dict:
        """The per-env running returns (a copy)."""
        return {"rewems": self.rewems.clone()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.rewems = state["rewems"].to(self.rewems)
