"""Every chapter at the smoke profile through papermill, then the site built from those runs."""
from __future__ import annotations

import json

import pytest

from repro.book import ChapterOutcome, build_site, stage_site
from repro.chapters import all_chapters
from repro.report import NOT_EVALUATED, NOT_REPRODUCED, REPRODUCED

CHAPTERS = [c.name for c in all_chapters()]


@pytest.mark.chapter
@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_runs_at_smoke(name, smoke_run):
    res = smoke_run(name)
    m = json.loads((res.out / "metrics.json").read_text())
    assert m["chapter"] == name and m["profile"] == "smoke"
    assert m["scorecard"], "a chapter states its claims"
    for claim in m["scorecard"]:
        assert claim["status"] in (REPRODUCED, NOT_REPRODUCED, NOT_EVALUATED)
        assert claim["id"] and claim["statement"] and claim["paper"]
    assert m["claims_evaluated"] == sum(c["status"] != NOT_EVALUATED for c in m["scorecard"])
    for key in ("config", "library_version", "device", "wall_time_s", "torch", "seed"):
        assert key in m
    assert (res.out / f"{name}.ipynb").exists() and (res.out / "run.log").exists()
    assert any((res.out / "figures").glob("*.png")), "a chapter shows at least one figure"
    assert res.wall_time_s <= 60, f"{name} took {res.wall_time_s:.0f}s at smoke (budget 60s)"


@pytest.mark.site
def test_site_builds_without_warnings(smoke_run, tmp_path):
    outcomes = []
    for name in CHAPTERS:
        res = smoke_run(name)
        outcomes.append(ChapterOutcome(name, "smoke", "executed", res.wall_time_s, 0, 0, res.out))
    src = stage_site(outcomes, tmp_path / "src")
    html = build_site(src, tmp_path, strict=True)
    assert "book/intro.html" in (html / "index.html").read_text()  # the landing page redirects to the intro
    intro = (html / "book" / "intro.html").read_text()
    assert "Reproducible papers" in intro
    for name in CHAPTERS:
        page = (html / "book" / f"{name}.html").read_text()
        assert "scorecard" in page.lower()
