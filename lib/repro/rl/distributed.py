"""Data-parallel PPO (with an intrinsic bonus) over ``torch.distributed`` ranks.

The RND paper trained on 128-1,024 environments spread over MPI workers whose
gradients were averaged.  Here rank r of R steps environments
``[r N/R, (r+1) N/R)`` of the run's N (each seeded as in a one-process run:
environment i with ``seed + i``), and one PPO update over all of them is
computed without gathering any rollout:

* **minibatches** are drawn from the *whole* rollout of T x N samples with a
  generator every rank shares (``Trainer.update_generator``); each rank
  evaluates the samples of the minibatch that live on it;
* **losses** are weighted by each rank's share of the minibatch (a rank holding
  k of the minibatch's m samples multiplies its mean loss by k/m), so the
  **sum** of the ranks' gradients (one ``all_reduce`` per minibatch) is the
  gradient of the one-process minibatch loss; clipping and Adam then run on
  identical gradients, so every rank keeps identical parameters;
* **advantage normalisation** uses the minibatch's mean and standard deviation
  over all ranks (two scalar ``all_reduce``s);
* **the bonus's own loss** (RND's predictor, curiosity's forward/inverse
  models) trains, on each rank, on that rank's samples of the fraction the
  bonus keeps: the keep mask of the whole minibatch is drawn once from the
  shared generator (``bonus.keep_mask``) and each rank uses its part, weighted
  by its share of the kept samples;
* **running statistics** (RND's per-pixel observation normaliser, the
  intrinsic-return normaliser) merge every rank's batch moments with the
  parallel-variance formula (:func:`repro.rl.normalise.merge_moments`) before
  updating, so each rank holds the statistics of all N environments
  (:class:`SyncedRunningMeanStd`);
* **history records** gather finished episodes and tracker counts (visit
  counts are summed), so a record describes all N environments.

With the shared generator in the state a one-process update would have, this
update equals the one-process update on all environments up to
floating-point summation order (``tests/test_distributed.py`` checks it, the
normaliser statistics included).  Each rank samples its own actions (its own
torch stream), so whole runs on different world sizes are different draws of
the same experiment, not the same numbers.

**Checkpoints** are written by rank 0 in a world-size-free layout: per-env
arrays (current observations, episode returns, the intrinsic-return filter)
over all N environments, merged tracker counts, the shared generator, plus
each rank's environments and RNG state.  Any world size that divides N
resumes them (:meth:`DistributedTrainer.load_state_dict`); on the same world
size the continuation is exact (synchronous envs), on another one the
environments start fresh episodes and each rank's action stream is reseeded,
as when a one-process run resumes with environments that cannot be pickled.
A one-process :class:`~repro.rl.trainer.Trainer` resumes them too (and a data-parallel
trainer resumes a one-process checkpoint).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn as nn

from ..checkpoint import load_checkpoint, make_identity, save_checkpoint
from ..distributed import DistContext
from ..seed import generator
from .normalise import RunningMeanStd, merge_moments
from .ppo import PPOSettings, evaluate, ppo_loss
from .trainer import RLRun, Trainer, rng_state

UPDATE_STREAM = 104_729  # offset of the shared minibatch generator's seed from the run's seed

# ---------------------------------------------------------------------------
# Running statistics merged across ranks
# ---------------------------------------------------------------------------


class SyncedRunningMeanStd(RunningMeanStd):
    """A :class:`~repro.rl.normalise.RunningMeanStd` whose every update merges all ranks' batches.

    ``update(x)`` computes this rank's batch moments, gathers every rank's,
    merges them in rank order (Chan et al.'s formula) and updates the running
    statistics with the result, so every rank ends with the statistics of the
    concatenated batches.  All ranks must call ``update`` together.
    """

    def __init__(self, plain: RunningMeanStd, ctx: DistContext):
        super().__init__(plain.shape, plain.mean.device)
        self.mean, self.var, self.count = plain.mean, plain.var, plain.count
        self.ctx = ctx

    def update(self, x: torch.Tensor) -> None:
        mean_b, var_b, n_b = self.batch_moments(x)
        d = mean_b.numel()
        packed = torch.cat([mean_b.reshape(-1), var_b.reshape(-1), n_b.reshape(1)])
        parts = self.ctx.all_gather_tensor(packed)

        def unpack(p: torch.Tensor):
            return p[:d].reshape(mean_b.shape), p[d:2 * d].reshape(mean_b.shape), p[2 * d]

        mean, var, n = unpack(parts[0])
        for p in parts[1:]:
            mean, var, n = merge_moments(mean, var, n, *unpack(p))
        self.update_moments(mean, var, n)


def synchronise_normalisers(owner, ctx: DistContext) -> None:
    """Replace every :class:`RunningMeanStd` attribute of ``owner`` (e.g. a bonus's ``obs_rms``) by a synced one."""
    for name, value in list(vars(owner).items()):
        if isinstance(value, RunningMeanStd) and not isinstance(value, SyncedRunningMeanStd):
            setattr(owner, name, SyncedRunningMeanStd(value, ctx))


# ---------------------------------------------------------------------------
# Tracker counts: merged by summation
# ---------------------------------------------------------------------------


def merge_counts(states: list[dict]) -> dict:
    """Tracker states (:mod:`repro.rl.tracking`: counts) of several ranks -> the state of all their envs.

    Arrays are summed elementwise (shorter ones padded with zeros: a visit
    counter grows as new ids appear), numbers are summed.
    """
    out = {}
    for key in states[0]:
        vals = [s[key] for s in states]
        if isinstance(vals[0], np.ndarray):
            n = max(len(v) for v in vals)
            total = np.zeros(n, vals[0].dtype)
            for v in vals:
                total[:len(v)] += v
            out[key] = total
        else:
            out[key] = sum(vals)
    return out


def zero_counts(state: dict) -> dict:
    """A tracker state with every count zero (the other ranks' share after a resume: rank 0 holds the totals)."""
    return {k: np.zeros_like(v) if isinstance(v, np.ndarray) else type(v)(0) for k, v in state.items()}


# ---------------------------------------------------------------------------
# The update
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EnvShard:
    """The environments ``[first, first + count)`` of ``num_envs`` that this rank steps."""

    num_envs: int
    first: int
    count: int

    @classmethod
    def of(cls, num_envs: int, rank: int, world: int) -> "EnvShard":
        """Rank ``rank``'s equal share of ``num_envs`` environments (ValueError if ``world`` does not divide it)."""
        if num_envs % world:
            raise ValueError(f"{num_envs} environments cannot be split evenly over {world} processes")
        n = num_envs // world
        return cls(num_envs, rank * n, n)

    def local_indices(self, idx: torch.Tensor, num_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Global sample indices ``t * N + i`` of a [T, N] rollout -> (which are here [m] bool, their local
        indices ``t * n + (i - first)``)."""
        env = idx % self.num_envs
        here = (env >= self.first) & (env < self.first + self.count)
        return here, (idx[here] // self.num_envs) * self.count + (env[here] - self.first)


def all_reduce_grads(params: list[nn.Parameter], ctx: DistContext) -> None:
    """Sum every parameter's gradient over the ranks (one flat ``all_reduce``).

    A parameter no rank gave a gradient keeps ``grad = None`` (Adam then skips
    it, as in a one-process step); one that some rank did gets the sum.
    """
    if not params:
        return
    dev = params[0].device
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
                     + [torch.tensor([float(p.grad is not None) for p in params], device=dev)])
    ctx.all_reduce_(flat)
    have = flat[-len(params):].tolist()
    offset = 0
    for p, h in zip(params, have):
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p) if h > 0 else None
        offset += n


def _normalise_across(adv: torch.Tensor, m: int, ctx: DistContext) -> torch.Tensor:
    """(A - mean) / (std + 1e-8) with the mean and unbiased std of the whole minibatch of ``m`` samples."""
    total = adv.sum().reshape(1).to(torch.float32)
    mean = ctx.all_reduce_(total)[0] / m
    sq = (adv - mean).square().sum().reshape(1)
    std = (ctx.all_reduce_(sq)[0] / (m - 1)).sqrt()
    return (adv - mean) / (std + 1e-8)


STAT_KEYS = ("pg_loss", "v_loss", "entropy", "approx_kl", "clipfrac")


def sharded_ppo_update(net: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
                       s: PPOSettings, shard: EnvShard, num_steps: int, ctx: DistContext, gen: torch.Generator,
                       aux_loss=None, keep_mask=None) -> dict[str, float]:
    """:func:`repro.rl.ppo.ppo_update` on a rollout whose environments are split over the ranks (module docstring).

    ``batch`` holds this rank's samples ([T, n] flattened to T*n, as
    ``RolloutStorage.flat``); minibatches index the global T*N samples, drawn
    from ``gen`` (the same state on every rank).  ``aux_loss(local_idx, keep)``
    is the bonus's loss on this rank's samples of the minibatch (``keep``: which
    of them it trains on, or None for all); ``keep_mask(m, device, generator)``
    draws the bonus's keep mask of a whole minibatch (None: no mask, no draw).
    Returns the mean statistics over all ranks (the same on every rank).
    """
    T, N = num_steps, shard.num_envs
    B = T * N
    mb = B // s.minibatches
    device = batch["advantages"].device
    coefs = torch.tensor(s.adv_coefs, device=device)
    combined = (batch["advantages"] * coefs).sum(-1)  # rnd-ppo: A = sum_k c_k A_k, [T*n]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    keys = list(STAT_KEYS) + (["aux_loss"] if aux_loss is not None else [])
    totals = torch.zeros(len(keys), device=device)
    grad_norm = torch.zeros((), device=device)
    n_mb = 0
    for _ in range(s.epochs):
        perm = torch.randperm(B, device=device, generator=gen)
        for i in range(s.minibatches):
            here, local = shard.local_indices(perm[i * mb:(i + 1) * mb], T)
            count = int(here.sum())
            adv = combined[local]
            if s.norm_adv:
                adv = _normalise_across(adv, mb, ctx)
            loss, parts = None, torch.zeros(len(keys), device=device)
            if count:
                logp, ent, v = evaluate(net, batch["obs"][local], batch["actions"][local])
                ppo, stats = ppo_loss(logp, batch["logprobs"][local], ent, v, batch["values"][local],
                                      batch["returns"][local], adv, s.clip_coef, s.vf_coef, s.ent_coef,
                                      s.clip_value_loss)
                share = count / mb
                loss = ppo * share
                parts[:len(STAT_KEYS)] = torch.stack([stats[k] for k in STAT_KEYS]) * share
            if aux_loss is not None:
                keep = keep_mask(mb, device, gen) if keep_mask is not None else None  # drawn on every rank
                aux = None
                if keep is None:
                    if count:
                        aux = aux_loss(local, None) * (count / mb)
                else:
                    mine = keep[here]
                    kept_here, kept = int(mine.sum()), int(keep.sum())
                    if kept_here:
                        aux = aux_loss(local, mine) * (kept_here / kept)
                if aux is not None:
                    loss = aux if loss is None else loss + aux
                    parts[-1] = aux.detach()
            optimizer.zero_grad(set_to_none=True)
            if loss is not None and loss.requires_grad:
                loss.backward()
            all_reduce_grads(params, ctx)
            grad_norm = grad_norm + nn.utils.clip_grad_norm_(params, s.max_grad_norm)
            optimizer.step()
            totals += parts
            n_mb += 1
    ctx.all_reduce_(totals)
    out = dict(zip(keys, (totals / n_mb).tolist()))
    out["grad_norm"] = float(grad_norm) / n_mb
    return out


# ---------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------


class DistributedTrainer(Trainer):
    """A :class:`~repro.rl.trainer.Trainer` for one rank of a data-parallel run (see the module docstring).

    ``DistributedTrainer(run, ctx, num_updates)``: ``run`` is the whole run
    (all N environments; its identity is the one-process run's); this rank
    steps its :class:`EnvShard`.  Drive it with
    :func:`repro.rl.trainer.train` on every rank; only rank 0 reads and writes
    the checkpoint and should show progress.
    """

    def __init__(self, run: RLRun, ctx: DistContext, num_updates: int):
        self.ctx, self.run = ctx, run
        self.shard = EnvShard.of(run.num_envs, ctx.rank, ctx.world)
        # this rank's part of the run: its environments, seeded as the one-process run seeds them
        local = dataclasses.replace(run, num_envs=self.shard.count, seed=run.seed + self.shard.first)
        super().__init__(local, ctx.device, num_updates)
        # rank 0's networks for everyone (rank 0's seed is the run's: the one-process run's networks)
        self.net.load_state_dict(ctx.broadcast(self.net.state_dict()))
        if self.bonus is not None:
            self.bonus.load_state_dict(ctx.broadcast(self.bonus.state_dict()))
            synchronise_normalisers(self.bonus, ctx)
            self.int_rms = SyncedRunningMeanStd(self.int_rms, ctx)
        self.update_generator = generator(run.seed + UPDATE_STREAM, ctx.device)
        self.local_trackers = self.trackers  # count this rank's envs; self.trackers hold everyone's
        self.trackers = [t.build() for t in run.trackers]
        self._merge_trackers()

    def identity(self, experiment: str = "rl") -> dict:
        """The one-process run's identity (the world size is not part of it)."""
        return make_identity(experiment, dataclasses.asdict(self.run), num_updates=self.num_updates)

    # -- steps over all ranks ------------------------------------------------

    def _track(self, info: dict, reset: bool = False) -> None:
        for t in self.__dict__.get("local_trackers", self.trackers):
            t.update(info, self.spec.num_envs, reset)

    def _merge_trackers(self) -> None:
        parts = self.ctx.all_gather([t.state_dict() for t in self.local_trackers])
        for i, t in enumerate(self.trackers):
            t.load_state_dict(merge_counts([p[i] for p in parts]))

    def random_walk(self) -> None:
        before = self.global_step
        super().random_walk()
        self.global_step = before + (self.global_step - before) * self.ctx.world

    def collect(self) -> dict:
        before = self.global_step
        eps = super().collect()
        self.global_step = before + (self.global_step - before) * self.ctx.world
        return eps

    def learn(self) -> dict:
        """Bonus, GAE on this rank's envs, then the sharded PPO update (:func:`sharded_ppo_update`)."""
        s = self.spec.ppo
        stats, transitions, batch = self._rollout_batch()
        if stats:  # intrinsic-reward means: every rank holds as many samples, so the mean of the means
            keys = list(stats)
            vals = self.ctx.all_reduce_(torch.stack([torch.as_tensor(stats[k], dtype=torch.float32,
                                                                     device=self.device) for k in keys]))
            stats = dict(zip(keys, (vals / self.ctx.world).tolist()))
        for g in self.optimizer.param_groups:
            g["lr"] = s.lr_at(self.update + 1, self.num_updates)
        aux = keep_mask = None
        if self.bonus is not None:
            def aux(idx: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
                args = (transitions["bonus_obs"][idx], batch["actions"][idx], batch["next_obs"][idx])
                return self.bonus.loss(*args) if keep is None else self.bonus.loss(*args, keep=keep)
            keep_mask = getattr(self.bonus, "keep_mask", None)
        stats.update(sharded_ppo_update(self.net, self.optimizer, batch, s, self.shard, self.spec.num_steps,
                                        self.ctx, self.update_generator, aux, keep_mask))
        return {k: float(v) for k, v in stats.items()}

    def _record(self, rec: dict, rets: list, collect_s: float, update_s: float) -> dict:
        """The record of all ranks: every finished episode, the summed tracker counts, the slowest rank's time."""
        parts = self.ctx.all_gather((rets, [t.state_dict() for t in self.local_trackers], collect_s, update_s))
        for i, t in enumerate(self.trackers):
            t.load_state_dict(merge_counts([p[1][i] for p in parts]))
        for t in self.local_trackers:  # advance the per-update counters as the merged ones advance
            t.record()
        rets = [r for p in parts for r in p[0]]
        n = self.spec.num_steps * self.run.num_envs
        rec.update({
            "update": self.update, "global_step": self.global_step, "episodes": len(rets),
            "return_mean": float(np.mean(rets)) if rets else float("nan"),
            "successes": int(np.sum(np.asarray(rets) > 0)),
        })
        for t in self.trackers:
            rec.update(t.record())
        rec.update({"sps_env": n / max(p[2] for p in parts), "sps": n / max(p[3] for p in parts)})
        return rec

    # -- checkpoints: rank 0 writes and reads, everyone gets its share ------------

    def read_checkpoint(self, path, identity: dict) -> dict | None:
        """Rank 0 loads the checkpoint and every rank receives it (a mismatch is raised on every rank)."""
        state, error = None, None
        if self.ctx.is_main:
            try:
                state = load_checkpoint(path, identity)
            except Exception as err:  # noqa: BLE001 - re-raised on every rank below
                error = err
        state, error = self.ctx.broadcast((state, error))
        if error is not None:
            raise error
        return state

    def write_checkpoint(self, path, identity: dict) -> None:
        """Every rank contributes its share (:meth:`state_dict`); rank 0 writes."""
        state = self.state_dict()
        if self.ctx.is_main:
            save_checkpoint(path, state, identity)

    def state_dict(self) -> dict:
        """The run's state over all N environments (the layout of the module docstring); call on every rank."""
        own = super().state_dict()
        shares = self.ctx.all_gather({
            "next_obs": own["next_obs"], "ep_return": own["ep_return"], "ep_length": own["ep_length"],
            "int_filter": own.get("int_filter"), "rng": own["rng"], "envs": own["envs"]})
        state = dict(own)
        state["next_obs"] = torch.cat([p["next_obs"] for p in shares]).to(self.device)
        state["ep_return"] = np.concatenate([p["ep_return"] for p in shares])
        state["ep_length"] = np.concatenate([p["ep_length"] for p in shares])
        if self.bonus is not None:
            state["int_filter"] = {"rewems": torch.cat([p["int_filter"]["rewems"] for p in shares]).to(self.device)}
        state["trackers"] = [t.state_dict() for t in self.trackers]  # already everyone's counts
        # a one-process trainer reads "rng" and "envs": rank 0's stream; envs only if they are all in one piece
        state["envs"] = shares[0]["envs"] if self.ctx.world == 1 else None
        state["dist"] = {"world": self.ctx.world, "rng": [p["rng"] for p in shares],
                         "envs": [p["envs"] for p in shares], "update_generator": self.update_generator.get_state()}
        return state

    def load_state_dict(self, state: dict) -> None:
        """Take this rank's share of a checkpoint written on any world size dividing N (or by one process)."""
        dist_state = state.get("dist") or {"world": 1, "rng": [state["rng"]], "envs": [state["envs"]],
                                           "update_generator": None}
        same_world = dist_state["world"] == self.ctx.world
        mine = slice(self.shard.first, self.shard.first + self.shard.count)
        local = dict(state)
        local["next_obs"] = state["next_obs"][mine]
        local["ep_return"], local["ep_length"] = state["ep_return"][mine], state["ep_length"][mine]
        if self.bonus is not None:
            local["int_filter"] = {"rewems": state["int_filter"]["rewems"][mine]}
        local["trackers"] = state["trackers"] if self.ctx.is_main else [zero_counts(s) for s in state["trackers"]]
        local["envs"] = dist_state["envs"][self.ctx.rank] if same_world else None
        local["rng"] = dist_state["rng"][self.ctx.rank] if same_world else rng_state()
        merged, self.trackers = self.trackers, self.local_trackers  # the base class loads this rank's counters
        super().load_state_dict(local)
        self.trackers = merged
        for t, s in zip(self.trackers, state["trackers"], strict=True):
            t.load_state_dict(s)
        if not same_world:  # a fresh action stream per (run, rank, update)
            torch.manual_seed(self.run.seed + 7919 * self.update + 1_000_003 * (self.ctx.rank + 1))
            np.random.seed((self.run.seed + 7919 * self.update + self.ctx.rank) % 2**32)
        if dist_state["update_generator"] is not None:
            self.update_generator.set_state(dist_state["update_generator"])
        else:
            self.update_generator.manual_seed(self.run.seed + UPDATE_STREAM + 7919 * self.update)

