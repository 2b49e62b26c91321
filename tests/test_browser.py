"""The built site as a reader sees it: every page opened in headless Chromium, offline.

The site is built once per session from the smoke runs (the ``smoke_run`` fixture), served on
127.0.0.1, and every page is opened with all other hosts blocked (``repro.site_check``).  To check
another build, e.g. ``_build/html`` after ``make book``:
``REPRO_SITE_HTML=_build/html .venv/bin/python -m pytest tests/test_browser.py``.
Screenshots of every page go to the test's temporary folder and, when ``_build/`` exists, to
``_build/browser-screenshots/``.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from repro.catalog import all_chapters
from repro.paths import repo_root
from repro.site_check import check_site, external_references, missing_requirements, reached_from_start

CHAPTERS = [c.name for c in all_chapters()]
pytestmark = pytest.mark.site


@pytest.fixture(scope="session")
def site_report(request, tmp_path_factory):
    """One :class:`repro.site_check.PageReport` per page (every page opened once per session)."""
    why = missing_requirements()
    if why:
        pytest.skip(f"browser test skipped: {why}")
    html = request.getfixturevalue("smoke_site")
    shots = tmp_path_factory.mktemp("browser-screenshots")
    reports = check_site(html, shots)
    build = repo_root() / "_build"
    if build.is_dir():
        keep = build / "browser-screenshots"
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(shots, keep)
    return reports


def _chapter_page(name: str) -> str:
    return f"book/{name}.html"


def test_no_page_loads_anything_from_outside_the_site(smoke_site):
    """A static check, no browser needed: no script, stylesheet, image or inline script names a remote URL."""
    found = external_references(smoke_site)
    assert not found, "pages that would fetch from the network:\n" + "\n".join(
        f"{page}: {refs[:5]}" for page, refs in found.items())


def test_every_page_renders_offline_without_errors(site_report):
    """No blocked or failed request, no console error, every image loaded, every formula typeset by the
    MathJax copy in _static, and no raw \\( \\[ $$ left in the text a reader sees."""
    bad = {path: rep.problems() for path, rep in site_report.items() if rep.problems()}
    assert not bad, "\n".join(f"{path}:\n  " + "\n  ".join(p[:300] for p in problems[:12])
                              for path, problems in bad.items())


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_shows_math_scorecard_numbers_figures_and_downloads(site_report, name):
    rep = site_report.get(_chapter_page(name))
    assert rep is not None, f"{_chapter_page(name)} was not built"
    assert rep.n_math > 0 and rep.n_typeset == rep.n_math, f"{rep.n_typeset}/{rep.n_math} formulas typeset"
    assert rep.scorecards >= 1, "no table.scorecard on the page"
    assert rep.glue_spans > 0 and not rep.glue_left, f"glued numbers: {rep.glue_spans} pasted, left: {rep.glue_left}"
    assert rep.n_images > 0 and not rep.broken_images, f"figures: {rep.n_images}, broken: {rep.broken_images}"
    for suffix in (".ipynb", ".md"):
        target = f"_sources/book/{name}{suffix}"
        assert rep.downloads.get(target) == 200, f"download button for {target}: {rep.downloads}"
    assert rep.screenshot is not None and rep.screenshot.stat().st_size > 0


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_exercises_show_with_their_solutions_collapsed(site_report, name):
    rep = site_report[_chapter_page(name)]
    assert rep.exercises >= 3, f"{rep.exercises} exercises on the page"
    assert rep.solutions >= rep.exercises, f"{rep.solutions} solutions for {rep.exercises} exercises"
    assert rep.solutions_open == 0, f"{rep.solutions_open} solutions are open when the page loads"


def test_navigation_reaches_every_chapter(site_report):
    """From the landing page, the sidebar links every chapter, and following links reaches every chapter page."""
    landing = site_report["index.html"]
    missing_nav = [n for n in CHAPTERS if _chapter_page(n) not in landing.nav_links]
    assert not missing_nav, f"the landing page's sidebar does not link {missing_nav} (links: {landing.nav_links})"
    reached = reached_from_start(site_report)
    assert not [n for n in CHAPTERS if _chapter_page(n) not in reached]
    assert "book/status.html" in reached
