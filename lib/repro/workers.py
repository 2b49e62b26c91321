"""Independent runs of a chapter (seeds, settings) spread over one-thread worker processes.

On a small CPU machine two one-thread processes beat one process with two
threads for small networks (measured in the curiosity and AIS-for-decoders
chapters), so chapters whose runs are independent hand them to
:func:`run_jobs`.  Workers are *spawned* (a fresh interpreter: no state
forked from a notebook kernel), so the function and its arguments must be
picklable and importable.
"""
from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterator, Sequence

import torch


def run_jobs(fn: Callable, jobs: Sequence[tuple], workers: int, device: torch.device) -> Iterator:
    """Yield ``fn(*job)`` for every job, in order.

    On the CPU with ``workers`` > 1 and more than one job, the calls run in
    ``min(workers, len(jobs))`` spawned processes, each called with
    ``threads=1``; otherwise they run one after another in this process
    (``fn`` keeps the caller's thread setting).
    """
    if workers > 1 and len(jobs) > 1 and device.type == "cpu":
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(fn, *job, threads=1) for job in jobs]
            for f in futures:
                yield f.result()
    else:
        for job in jobs:
            yield fn(*job)
