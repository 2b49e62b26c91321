"""Data parallelism inside one run: ``torch.distributed`` processes launched by ``torchrun``.

How a chapter trains on several processes (``-p nproc=N``; the parameters are
:class:`repro.launch.DataParallelParams`):

1. in the notebook, the chapter's experiment function sees ``cfg.world_size > 1``
   and calls :func:`run_parallel` with the dotted name of its *parallel entry*
   (e.g. ``repro.chapters.rnd.experiments:train_parallel``) and its work folder;
2. :func:`run_parallel` starts ``torchrun`` (:func:`repro.launch.torchrun_command`)
   on this node, streams its output into the notebook (and ``run.log``) and waits;
3. every worker runs :func:`main` (``python -m repro.distributed``): it rebuilds
   the config, joins the process group (:func:`init_from_torchrun`: NCCL with
   one GPU per process, gloo on the CPU) and calls
   ``entry(cfg, ctx, folder, **kwargs)``; global rank 0 saves what the entry
   returns to ``folder/parallel-<entry>.pt`` (with the run's identity);
4. :func:`run_parallel` loads that file and returns it, so the notebook analyses
   the results exactly as after a one-process run.  A results file written by
   the same configuration is reused without relaunching (the grokking chapter
   asks for its ensembles in four cells, trained by one launch).

Other nodes of a multi-node run execute only steps 2-3 (``python -m repro
train CHAPTER ... -p node_rank=K``); global rank 0 is on node 0 (static
rendezvous), so results and checkpoints are written there.

:class:`DistContext` is what an entry gets: rank, world size, device and the
few collectives the library uses (gather/broadcast of Python objects, sums of
tensors, a logical AND).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from .checkpoint import CheckpointMismatch, load_checkpoint, make_identity, save_checkpoint
from .launch import torchrun_command

# ---------------------------------------------------------------------------
# Inside a worker: the process group and its collectives
# ---------------------------------------------------------------------------


def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor inside (dicts, lists, tuples) moved to the CPU (for object collectives)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


@dataclass
class DistContext:
    """One process of a data-parallel run: its rank, the world size, its device and the collectives.

    Every collective must be called by every rank, in the same order.
    """

    rank: int
    world: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        """True on global rank 0 (it writes results and checkpoints and prints progress)."""
        return self.rank == 0

    def all_gather(self, obj: Any) -> list:
        """Every rank's ``obj`` (picklable; tensors travel on the CPU), in rank order."""
        out: list = [None] * self.world
        dist.all_gather_object(out, to_cpu(obj))
        return out

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``obj`` on every rank."""
        box = [to_cpu(obj) if self.rank == src else None]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the ranks, in place (on this rank's device); returns it."""
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_gather_tensor(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``tensor`` (same shape and dtype on every rank), in rank order."""
        out = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(out, tensor.contiguous())
        return out

    def all_true(self, flag: bool) -> bool:
        """True only if ``flag`` is true on every rank."""
        t = torch.tensor([0.0 if flag else 1.0], device=self.device)
        return float(self.all_reduce_(t)) == 0.0

    def barrier(self) -> None:
        """Wait for every rank."""
        dist.barrier()


def worker_device(device_spec: str, local_rank: int) -> torch.device:
    """The device of local rank ``local_rank``: GPU ``local_rank`` unless the config says ``cpu`` (or there is none)."""
    if device_spec != "cpu" and torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    if device_spec.startswith("cuda"):
        raise RuntimeError(f"device {device_spec!r} requested but CUDA is not available; use device=auto or cpu")
    return torch.device("cpu")


def start(rank: int, world: int, device: torch.device, init_method: str | None = None, local_rank: int | None = None,
          timeout_s: float = 1800.0) -> DistContext:
    """Join the default process group (NCCL on CUDA, gloo on the CPU) and return this rank's context.

    Under ``torchrun`` leave ``init_method`` None (the launcher's environment
    says where to meet); tests pass ``file://...`` to run ranks without it.
    """
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))
    return DistContext(rank, world, rank if local_rank is None else local_rank, device, backend)


def init_from_torchrun(device_spec: str = "auto") -> DistContext:
    """This worker's context from the variables ``torchrun`` sets (RANK, WORLD_SIZE, LOCAL_RANK)."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    return start(rank, world, worker_device(device_spec, local), local_rank=local)


def stop() -> None:
    """Leave the process group (if one was joined)."""
    if dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------
# In the notebook: launch the workers, return rank 0's results
# ---------------------------------------------------------------------------


def _import(dotted: str) -> Any:
    """``package.module:attribute`` -> the attribute."""
    module, _, attr = dotted.partition(":")
    return getattr(importlib.import_module(module), attr)


def _config_ref(cfg) -> str:
    return f"{type(cfg).__module__}:{type(cfg).__qualname__}"


def results_identity(entry: str, cfg, kwargs: dict) -> dict:
    """What a results file must match: the entry, the config (launch plumbing left out) and the entry's arguments.

    ``nproc``/``nnodes`` stay in: a run on another world size draws other
    random numbers (each rank samples its own actions), so its results are
    another run's.  The training checkpoints themselves do not depend on the
    world size (see :mod:`repro.rl.distributed`).
    """
    config = {k: v for k, v in cfg.to_dict().items() if k not in ("node_rank", "rdzv_endpoint")}
    return make_identity(f"parallel:{entry}", config, kwargs=kwargs)


def results_path(folder: str | Path, entry: str) -> Path:
    """Where rank 0 saves an entry's results: ``folder/parallel-<function name>.pt``."""
    return Path(folder) / f"parallel-{entry.rpartition(':')[2]}.pt"


def run_parallel(entry: str, cfg, folder: str | Path, stream=None, **kwargs) -> Any:
    """Run ``entry(cfg, ctx, folder, **kwargs)`` on ``cfg.nproc`` processes of this node under ``torchrun``.

    Returns what global rank 0's entry returned (None on a node other than
    node 0, whose rank 0 lives elsewhere).  A results file of the same
    identity in ``folder`` is returned without launching.  Raises
    RuntimeError (with the last lines of output) if ``torchrun`` fails.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stream = stream or sys.stdout
    path, identity = results_path(folder, entry), results_identity(entry, cfg, kwargs)
    try:
        done = load_checkpoint(path, identity)
    except CheckpointMismatch:
        done = None  # results of another configuration: this launch replaces them
    if done is not None:
        print(f"[parallel] results of this configuration found in {path}: not relaunching", file=stream, flush=True)
        return done
    args = ["--entry", entry, "--config-class", _config_ref(cfg), "--config", json.dumps(cfg.to_dict()),
            "--folder", str(folder), "--kwargs", json.dumps(kwargs)]
    cmd = torchrun_command(cfg, "repro.distributed", args)
    print(f"[parallel] {cfg.world_size} processes ({cfg.nproc} on this node): {' '.join(cmd[:cmd.index('-m', 3)])} "
          f"-m repro.distributed --entry {entry}", file=stream, flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    tail: deque = deque(maxlen=40)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        for line in proc.stdout:
            tail.append(line)
            print(line, end="", file=stream, flush=True)
        code = proc.wait()
    if code:
        raise RuntimeError(f"torchrun exited with status {code} running {entry}; last lines:\n{''.join(tail)}")
    if cfg.node_rank != 0:
        return None
    results = load_checkpoint(path, identity)
    if results is None:
        raise RuntimeError(f"torchrun finished but rank 0 wrote no results to {path}")
    return results


def main(argv: list[str] | None = None) -> int:
    """A worker (``python -m repro.distributed --entry ... --config ...``, started by ``torchrun``)."""
    p = argparse.ArgumentParser(prog="python -m repro.distributed", description=__doc__.splitlines()[0])
    p.add_argument("--entry", required=True, help="package.module:function(cfg, ctx, folder, **kwargs)")
    p.add_argument("--config-class", required=True)
    p.add_argument("--config", required=True, help="the config as JSON (ProfileConfig.to_dict)")
    p.add_argument("--folder", required=True)
    p.add_argument("--kwargs", default="{}")
    args = p.parse_args(argv)
    values = json.loads(args.config)
    cfg = _import(args.config_class).for_profile(values.pop("profile"), **values)
    kwargs = json.loads(args.kwargs)
    entry: Callable = _import(args.entry)
    ctx = init_from_torchrun(cfg.device)
    try:
        results = entry(cfg, ctx, Path(args.folder), **kwargs)
        if ctx.is_main:
            save_checkpoint(results_path(args.folder, args.entry), to_cpu(results),
                            results_identity(args.entry, cfg, kwargs))
        ctx.barrier()
    finally:
        stop()
    return 0


if __name__ == "__main__":
    from torch.distributed.elastic.multiprocessing.errors import record

    sys.exit(record(main)())
