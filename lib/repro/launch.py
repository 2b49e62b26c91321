"""The data-parallel parameters of a chapter config, and the ``torchrun`` command line they give.

A chapter whose heavy training can run on several processes (one per GPU, or
gloo processes on CPU) mixes :class:`DataParallelParams` into its config::

    @dataclass(frozen=True)
    class RNDConfig(DataParallelParams, ProfileConfig): ...

which adds ``nproc`` (processes on this node), ``nnodes``, ``node_rank`` and
``rdzv_endpoint`` (``HOST:PORT`` of node 0).  ``nproc * nnodes`` is the world
size; at 1 (the default) nothing changes: the chapter trains in its own
process exactly as before.  :meth:`DataParallelParams.check_data_parallel`
validates them together with what the chapter splits (environment counts must
divide by the world size) before anything runs.

:func:`torchrun_command` turns them into the launcher's command line: one node
uses ``--standalone`` (a free local port), several nodes use the static
rendezvous at ``rdzv_endpoint`` with ``--node-rank`` (so global rank 0, which
writes results and checkpoints, is always on node 0).  The runtime (process
group, collectives, the worker entry point) is :mod:`repro.distributed`.

This module imports no torch: chapter configs import it and must stay
instant (``python -m repro params``).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import ClassVar

from .config import ConfigError, param

LAUNCH_FIELDS = ("nproc", "nnodes", "node_rank", "rdzv_endpoint")


@dataclass(frozen=True)
class DataParallelParams:
    """Mixin of the configs whose heavy training runs data-parallel under ``torchrun`` (see the module docstring)."""

    nproc: int = param(1, "processes on this node for the heavy training, launched with torchrun (one per GPU; "
                          "gloo processes on CPU); 1: train in this process, no torchrun", min=1)
    nnodes: int = param(1, "nodes of a multi-node torchrun run (node 0 runs the notebook, the others "
                           "`python -m repro train`)", min=1)
    node_rank: int = param(0, "this node's rank in a multi-node run (0: the node that runs the notebook)", min=0)
    rdzv_endpoint: str = param("", "HOST:PORT of node 0, where the nodes of a multi-node run meet")

    DATA_PARALLEL: ClassVar[bool] = True

    @property
    def world_size(self) -> int:
        """Processes in all: nproc * nnodes."""
        return self.nproc * self.nnodes

    def check_data_parallel(self, env_counts: tuple[int, ...] = (), checkpoint_dir: str | None = None) -> None:
        """Raise ConfigError unless the launch parameters are consistent.

        ``env_counts``: every number of parallel environments a run of the
        chapter uses; each must divide by the world size (every process steps
        an equal share).  ``checkpoint_dir``: the chapter's checkpoint folder
        setting; a multi-node run needs one (a path every node can use, where
        rank 0 writes results and checkpoints).
        """
        if self.node_rank >= self.nnodes:
            raise ConfigError(f"node_rank ({self.node_rank}) must be below nnodes ({self.nnodes})")
        if self.nnodes > 1:
            host, _, port = self.rdzv_endpoint.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError("a multi-node run (nnodes > 1) needs rdzv_endpoint=HOST:PORT, the address of "
                                  f"node 0 where the nodes meet; got {self.rdzv_endpoint!r}")
            if checkpoint_dir is not None and not checkpoint_dir:
                raise ConfigError("a multi-node run (nnodes > 1) needs checkpoint_dir: a folder path valid on every "
                                  "node (shared storage), where rank 0 writes the results and checkpoints")
        elif self.rdzv_endpoint:
            raise ConfigError("rdzv_endpoint is only for multi-node runs (nnodes > 1); one node uses a free local port")
        world = self.world_size
        if world > 1:
            if getattr(self, "device", "auto") == "mps":
                raise ConfigError("data-parallel runs use NCCL on CUDA or gloo on the CPU; device=mps cannot be "
                                  "combined with nproc > 1")
            for n in env_counts:
                if n % world:
                    raise ConfigError(f"{n} environments cannot be split over nproc x nnodes = {world} processes: "
                                      "the number of environments must be divisible by the world size")


def torchrun_command(cfg: DataParallelParams, module: str, args: list[str], python: str | None = None) -> list[str]:
    """``python -m torch.distributed.run ... -m module args`` for this node of ``cfg``'s world.

    ``python -m torch.distributed.run`` is the ``torchrun`` console script run
    by this interpreter (so the workers use the same environment).
    """
    cmd = [python or sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(cfg.nproc)]
    if cfg.nnodes == 1:
        cmd += ["--standalone", "--nnodes", "1"]
    else:
        cmd += ["--nnodes", str(cfg.nnodes), "--node-rank", str(cfg.node_rank), "--rdzv-backend", "static",
                "--rdzv-endpoint", cfg.rdzv_endpoint]
    return cmd + ["-m", module, *args]
