"""Every chapter at the smoke profile through papermill, then the site built from those runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from repro.catalog import all_chapters
from repro.scorecard import CHECK_STATUSES, FINDING, FINDING_STATUSES, KINDS, NOT_EVALUATED

CHAPTERS = [c.name for c in all_chapters()]


@pytest.mark.chapter
@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_runs_at_smoke(name, smoke_run):
    res = smoke_run(name)
    m = json.loads((res.out / "metrics.json").read_text())
    assert m["chapter"] == name and m["profile"] == "smoke"
    assert m["scorecard"], "a chapter states its claims"
    findings = [c for c in m["scorecard"] if c["kind"] == FINDING]
    assert findings, "a chapter states at least one finding of its paper"
    for claim in m["scorecard"]:
        assert claim["kind"] in KINDS
        assert claim["status"] in (FINDING_STATUSES if claim["kind"] == FINDING else CHECK_STATUSES)
        assert claim["id"] and claim["statement"] and claim["paper"] and claim["rule"]
        if claim["status"] == NOT_EVALUATED:
            assert claim["note"], "a claim not evaluated says which profile or parameter evaluates it"
    assert m["findings_evaluated"] == sum(c["status"] != NOT_EVALUATED for c in findings)
    assert m["findings_reproduced"] == sum(c["status"] == "reproduced" for c in findings)
    for key in ("config", "library_version", "device", "wall_time_s", "torch", "seed", "commit"):
        assert key in m
    assert (res.out / f"{name}.ipynb").exists() and (res.out / "run.log").exists()
    assert any((res.out / "figures").glob("*.png")), "a chapter shows at least one figure"
    assert res.wall_time_s <= 60, f"{name} took {res.wall_time_s:.0f}s at smoke (budget 60s)"


@pytest.mark.site
def test_site_builds_without_warnings(smoke_site):
    html = smoke_site  # built with warnings as errors (conftest.py)
    assert "book/intro.html" in (html / "index.html").read_text()  # the landing page redirects to the intro
    intro = (html / "book" / "intro.html").read_text()
    assert "Reproducible papers" in intro
    for name in CHAPTERS:
        page = (html / "book" / f"{name}.html").read_text()
        assert "scorecard" in page.lower() and "Findings of the paper" in page
    status = (html / "book" / "status.html").read_text()
    assert "Reproduction status" in status
    assert all(f'href="{name}.html"' in status for name in CHAPTERS), "the status page links every chapter"


def _nbval(notebook: Path, run_dir: Path) -> subprocess.CompletedProcess:
    """Re-execute ``notebook`` under nbval (lax: only cells marked NBVAL_CHECK_OUTPUT are compared)."""
    env = {**os.environ, "REPRO_RUN_DIR": str(run_dir)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           str(notebook)], cwd=notebook.parent, env=env, capture_output=True, text=True)


def test_grokking_reexecutes_to_the_same_numbers(smoke_run, tmp_path):
    """A reader who re-runs the executed chapter gets the numbers it shows (seeded determinism), and
    nbval really compares them: the same notebook with one stored number changed fails."""
    nb_path = smoke_run("grokking").out / "grokking.ipynb"
    nb = json.loads(nb_path.read_text())
    marked = [c for c in nb["cells"] if c["cell_type"] == "code" and "# NBVAL_CHECK_OUTPUT" in "".join(c["source"])]
    assert marked, "the grokking chapter marks its step-count cell for nbval"
    ok = _nbval(nb_path, tmp_path / "rerun")
    assert ok.returncode == 0, ok.stdout[-3000:]

    stdout = next(o for o in marked[0]["outputs"] if o.get("name") == "stdout")
    text = "".join(stdout["text"])
    stdout["text"] = text.replace("steps to 99% train:", "steps to 99% train: 0")
    tampered = tmp_path / "tampered.ipynb"
    tampered.write_text(json.dumps(nb))
    bad = _nbval(tampered, tmp_path / "rerun2")
    assert bad.returncode != 0, "nbval accepted a changed output"
