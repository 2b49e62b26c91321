"""Per-step bookkeeping read off the environments' ``info``, kept out of the training loop.

The trainer stays generic: what a chapter wants to measure about the states
visited (distinct gridworld cells, Montezuma rooms, the share of time spent
watching a noisy TV) is a *tracker*.  A run lists tracker settings
(:attr:`repro.rl.trainer.RLRun.trackers`); each builds an object with

* ``update(info, num_envs, reset)`` - called with the vector env's ``info``
  after the first reset (``reset=True``) and after every agent step (not
  during the random walk);
* ``record()`` - the numbers this update adds to the trainer's history;
* ``state_dict()`` / ``load_state_dict()`` - for checkpoints.

An env that does not put the key in its ``info`` is simply not counted
(CartPole has no cells: ``distinct_cells`` stays 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .envs import info_array


@dataclass(frozen=True)
class VisitCounts:
    """Visit counts of the integer ids in ``info[key]`` (e.g. ``cell``, ``room``); records ``distinct_<key>s``."""

    key: str

    def build(self) -> VisitCounter:
        return VisitCounter(self.key)


class VisitCounter:
    """How often each id of ``info[key]`` was visited (``counts[id]``), grown as new ids appear."""

    def __init__(self, key: str):
        self.key = key
        self.counts = np.zeros(0, np.int64)

    def update(self, info: dict, num_envs: int, reset: bool = False) -> None:
        ids = info_array(info, self.key, num_envs)
        ids = ids[ids >= 0]
        if len(ids) == 0:
            return
        if ids.max() >= len(self.counts):
            self.counts = np.concatenate([self.counts, np.zeros(ids.max() + 1 - len(self.counts), np.int64)])
        np.add.at(self.counts, ids, 1)

    def record(self) -> dict:
        return {f"distinct_{self.key}s": int((self.counts > 0).sum())}

    def state_dict(self) -> dict:
        return {"counts": self.counts.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.counts = state["counts"].copy()


@dataclass(frozen=True)
class StepShare:
    """The share of agent steps on which ``info[key]`` is nonzero (e.g. ``tv``: watching the noisy TV).

    Records ``share_<key>`` for the update (steps of this update only) and
    ``total_<key>`` (count over the whole run).  A step that ends an episode is
    read from ``info["final_info"]`` (with SAME_STEP autoreset the top-level
    ``info`` then describes the next episode's first state).
    """

    key: str

    def build(self) -> StepShareCounter:
        return StepShareCounter(self.key)


class StepShareCounter:
    """Counts steps with ``info[key]`` nonzero, per update and in total."""

    def __init__(self, key: str):
        self.key = key
        self.hits = self.steps = self.total = 0

    def update(self, info: dict, num_envs: int, reset: bool = False) -> None:
        if reset:  # the first observation is not a step
            return
        on = info_array(info, self.key, num_envs, fill=0)
        if "final_info" in info:  # an env whose episode just ended reports the step in final_info (SAME_STEP autoreset)
            ended = np.asarray(info.get("_final_info", np.zeros(num_envs, bool)))
            on = np.where(ended, info_array(info["final_info"], self.key, num_envs, fill=0), on)
        self.hits += int((on > 0).sum())
        self.steps += num_envs

    def record(self) -> dict:
        share = self.hits / self.steps if self.steps else float("nan")
        self.total += self.hits
        out = {f"share_{self.key}": share, f"total_{self.key}": self.total}
        self.hits = self.steps = 0
        return out

    def state_dict(self) -> dict:
        return {"hits": self.hits, "steps": self.steps, "total": self.total}

    def load_state_dict(self, state: dict) -> None:
        self.hits, self.steps, self.total = state["hits"], state["steps"], state["total"]


DEFAULT_TRACKERS = (VisitCounts("cell"), VisitCounts("room"))
