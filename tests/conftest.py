"""Shared fixtures: each chapter is executed at the smoke profile at most once per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# MuJoCo picks its OpenGL platform when it is first imported: headless EGL, whichever test imports it first
os.environ.setdefault("MUJOCO_GL", "egl")

ROOT = Path(__file__).resolve().parents[1]
_SMOKE: dict = {}


@pytest.fixture
def one_thread():
    """Tiny networks: one intra-op thread is much faster than two on a busy 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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


@pytest.fixture(scope="session")
def smoke_site(request, tmp_path_factory) -> Path:
    """``_build/html`` of the site built (warnings as errors) from every chapter's smoke run, once per session.

    ``REPRO_SITE_HTML=_build/html`` checks an existing build instead (e.g. after ``make book``).
    """
    from repro.book import build_site, stage_site

    given = os.environ.get("REPRO_SITE_HTML")
    if given:
        return Path(given).resolve()
    outcomes = request.getfixturevalue("smoke_outcomes")
    out = tmp_path_factory.mktemp("browser-site")
    return build_site(stage_site(outcomes, out / "src"), out, strict=True)


@pytest.fixture(scope="session")
def smoke_outcomes(smoke_run) -> list:
    """Every chapter's smoke run as the ``ChapterOutcome`` list that the site and PDF builders take."""
    from repro.book import ChapterOutcome

    return [ChapterOutcome(name, "smoke", "executed", res.wall_time_s, 0, 0, res.out)
            for name, res in ((n, smoke_run(n)) for n in _chapter_names())]


def _chapter_names() -> list[str]:
    from repro.catalog import all_chapters

    return [c.name for c in all_chapters()]


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


@pytest.fixture
def tiny_mnist(tmp_path) -> Path:
    """A data root whose ``mnist/`` holds random 28x28 IDX files (40 training, 4 test images); returns the root."""
    import numpy as np

    from repro.data import write_idx

    rng = np.random.default_rng(0)
    root = tmp_path / "mnist"
    root.mkdir()
    for split, n in (("train", 40), ("t10k", 4)):
        write_idx(root / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8))
    return tmp_path
