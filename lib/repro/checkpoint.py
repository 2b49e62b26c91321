"""Checkpoints for every long run: atomic writes and an identity check.

A checkpoint stores the training state *and* the identity of the run that
wrote it (experiment name + config).  Loading with another identity raises
:class:`CheckpointMismatch` instead of silently continuing a run written with
other hyperparameters; a crash mid-write never leaves a half-written file
(temporary file, then ``os.replace``).

    state = load_checkpoint(path, identity)      # None when there is none yet
    ...
    save_checkpoint(path, {...}, identity)
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import torch


class CheckpointMismatch(ValueError):
    """A checkpoint written by another experiment or configuration."""


def make_identity(experiment: str, config: Any = None, **extra) -> dict:
    """The identity of a run: its experiment name, its config (a ProfileConfig or dict) and any extras.

    Normalised through JSON so tuples and lists compare equal after a round trip.
    """
    if config is not None and hasattr(config, "to_dict"):
        config = config.to_dict()
    return json.loads(json.dumps({"experiment": experiment, "config": config, **extra}, sort_keys=True,
                                 default=str))


def save_checkpoint(path: str | Path, state: dict, identity: dict) -> Path:
    """Write ``state`` with its ``identity`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"identity": identity, "state": state}, buf)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path | None, identity: dict, map_location: Any = "cpu") -> dict | None:
    """The state saved at ``path`` by the run ``identity``; None if there is no checkpoint.

    Raises CheckpointMismatch, naming the first differing field, if the file
    was written by another run.
    """
    if path is None or not Path(path).exists():
        return None
    saved = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(saved, dict) or "identity" not in saved or "state" not in saved:
        raise CheckpointMismatch(f"{path} is not a repro checkpoint; move it away to start afresh")
    if saved["identity"] != identity:
        diff = _first_difference(saved["identity"], identity)
        raise CheckpointMismatch(f"checkpoint {path} was written by another run ({diff}); "
                                 "move it away or choose another checkpoint path to start afresh")
    return saved["state"]


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                return f"{where}{k}: only in {'the checkpoint' if k in a else 'this run'}"
            if a[k] != b[k]:
                return _first_difference(a[k], b[k], f"{where}{k}.")
    return f"{where.rstrip('.')}: checkpoint has {a!r}, this run has {b!r}"
