"""Shared fixtures: each chapter is executed at the smoke profile at most once per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_SMOKE: dict = {}


@pytest.fixture(scope="session")
def smoke_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("smoke")


@pytest.fixture(scope="session")
def smoke_run(smoke_dir):
    """``smoke_run("grokking")`` -> RunResult of the chapter at the smoke profile (cached per session)."""
    from repro.runner import run_chapter

    def get(name: str):
        if name not in _SMOKE:
            try:
                _SMOKE[name] = run_chapter(name, "smoke", out=smoke_dir / name)
            except Exception as err:  # remember the failure so dependants fail fast with the same error
                _SMOKE[name] = err
        res = _SMOKE[name]
        if isinstance(res, Exception):
            raise res
        return res

    return get


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for modules of tiny tensor ops: on a busy 2-core
    machine two threads oversubscribe the cores and were >10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_configure(config):
    os.environ.setdefault("REPRO_ROOT", str(ROOT))
