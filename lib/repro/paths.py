"""Where things are: the repository root and a chapter's output folder.  Imports nothing heavy."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path


def repo_root() -> Path:
    """The repository root (the folder holding ``_toc.yml``), or ``$REPRO_ROOT``."""
    env = os.environ.get("REPRO_ROOT")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "_toc.yml").exists():
            return parent
    return Path.cwd()


def run_dir(chapter: str) -> Path:
    """Where a chapter writes its outputs: the runner's folder (``$REPRO_RUN_DIR``), or runs/<chapter>/interactive."""
    env = os.environ.get("REPRO_RUN_DIR")
    return Path(env) if env else repo_root() / "runs" / chapter / "interactive"


def git_commit(root: Path | None = None) -> str:
    """The checked-out commit (with ``+dirty`` when the work tree has changes), or ``unknown``."""
    root = root or repo_root()
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
