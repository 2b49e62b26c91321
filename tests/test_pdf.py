"""``make pdf`` (``repro.pdf``): the whole book as one PDF, checked as text and images.

Built from the smoke runs, offline (Chromium prints the single-page HTML build; see repro/pdf.py).
Needs Chromium + Playwright (as tests/test_browser.py) and poppler-utils (``pdftotext``, ``pdfimages``);
skipped with the install command otherwise.  About a minute on 2 busy cores, on top of the smoke runs.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from repro.catalog import all_chapters
from repro.paths import repo_root
from repro.site_check import missing_requirements

pytestmark = pytest.mark.site


@pytest.fixture(scope="module")
def book_pdf(smoke_outcomes, tmp_path_factory):
    why = missing_requirements()
    if why:
        pytest.skip(f"PDF test skipped: {why}")
    if not (shutil.which("pdftotext") and shutil.which("pdfimages")):
        pytest.skip("PDF test skipped: needs poppler-utils (`apt-get install -y poppler-utils`)")
    from repro.pdf import build_pdf

    out = tmp_path_factory.mktemp("pdf")
    return build_pdf(smoke_outcomes, out / "pdf", work=out / "work")


def _text(pdf) -> str:
    return subprocess.run(["pdftotext", "-enc", "UTF-8", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout


def _flat(s: str) -> str:
    return " ".join(s.split()).lower()


def test_pdf_has_every_chapter_and_no_raw_latex(book_pdf):
    text = _text(book_pdf)
    raw = [text[max(0, m.start() - 40): m.end() + 40].replace("\n", " ")
           for m in re.finditer(r"\\\(|\\\[|\$\$|\\begin\{", text)]
    assert not raw, f"raw LaTeX math in the PDF: {raw[:5]}"
    flat = _flat(text)
    missing = [ch.title for ch in all_chapters() if _flat(ch.title) not in flat]
    assert not missing, f"chapter titles not in the PDF: {missing}"
    assert "findings of the paper" in flat, "no scorecard table in the PDF"
    assert "{glue" not in flat


def test_pdf_has_figures_and_the_bibliography(book_pdf):
    images = subprocess.run(["pdfimages", "-list", str(book_pdf)], capture_output=True, text=True,
                            check=True).stdout.splitlines()[2:]
    assert len(images) >= len(all_chapters()), f"only {len(images)} images in the PDF"
    bib = (repo_root() / "book" / "references.bib").read_text()
    titles = [_flat(re.sub(r"[{}]", "", t)) for t in re.findall(r"\btitle\s*=\s*[{\"](.+?)[}\"]\s*,?\s*\n", bib)]
    flat = _flat(_text(book_pdf))
    found = [t for t in titles if t[:40] in flat]
    assert len(found) >= 3, f"the bibliography is missing: {len(found)} of {len(titles)} reference titles found"
