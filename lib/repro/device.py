"""Device and thread selection.  Nothing here runs at import time."""
from __future__ import annotations

import os

import torch


def get_device(spec: str | torch.device = "auto") -> torch.device:
    """Resolve ``"auto"`` to cuda, then mps, then cpu; pass other specs through.

    Asking for a device that is not there is an error, not a silent fallback.
    """
    if isinstance(spec, torch.device):
        return spec
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {spec!r} requested but CUDA is not available; use device=auto or cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device {spec!r} requested but MPS is not available; use device=auto or cpu")
    return dev


def configure_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads and return the number used.

    ``n`` wins (a chapter passes it where it measured a difference), then the
    ``REPRO_THREADS`` environment variable, else torch's default (one thread
    per core).  On 2 cores, one thread is faster for tiny per-step work
    (thread start-up dominates) and two are faster for batched ensembles such
    as the grokking sweep (1.6x, measured), so there is no single right value.
    """
    if n is None and os.environ.get("REPRO_THREADS"):
        n = int(os.environ["REPRO_THREADS"])
    if n is not None:
        torch.set_num_threads(max(1, int(n)))
    return torch.get_num_threads()


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type
