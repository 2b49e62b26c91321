"""``make pdf``: the whole book as one PDF, built without network access, into ``_build/pdf/``.

Route: the executed chapters are staged as for the website (``repro.book.stage_site``), Jupyter Book
builds them as ONE HTML page (Sphinx ``singlehtml`` builder, MathJax from ``_static`` as on the
site), and headless Chromium prints that page to PDF once MathJax has typeset every formula
(``repro.site_check``: served on 127.0.0.1, every other host blocked).  No LaTeX installation is
needed, and the PDF shows exactly what the website shows: figures, typeset math, scorecard tables,
the bibliography.

    .venv/bin/python -m repro.pdf                 # book profile, chapters cached as by `make book`
    .venv/bin/python -m repro.pdf --profile smoke
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .book import ChapterOutcome, execute_all, stage_site, table
from .config import PROFILE_NAMES
from .paths import repo_root

PDF_NAME = "reproducible-papers.pdf"

# Print layout on top of the site's own print stylesheet: no navigation chrome, wide content, wrapped code,
# and tables/figures kept whole where they fit on a page.
PRINT_CSS = """
@page { size: A4; margin: 16mm 14mm 18mm 14mm; }
.bd-header, .bd-sidebar-primary, .bd-sidebar-secondary, .bd-header-article, .bd-footer, .bd-footer-article,
.bd-footer-content, .prev-next-area, .header-article-items, #pst-back-to-top, .skip-link, .search-button,
.theme-switch-button, .sidebar-toggle, .bd-search, .headerlink, button.copybtn, .toggle-details__summary
  { display: none !important; }
.bd-main, .bd-main .bd-content, .bd-main .bd-content .bd-article-container, .bd-page-width, .bd-container,
.bd-container__inner, .bd-article { max-width: 100% !important; width: 100% !important; padding: 0 !important;
  margin: 0 !important; }
.bd-page-width, .bd-container, .bd-container__inner, .bd-main, .bd-content, .bd-article-container, .bd-article
  { display: block !important; }  /* page breaks are ignored inside flex items */
html, body { font-size: 10pt !important; }
pre, .highlight pre { white-space: pre-wrap !important; word-break: break-word; font-size: 8pt !important; }
.cell_output pre { max-height: none !important; overflow: visible !important; }
img, figure, table.scorecard tr, .math { break-inside: avoid; }
.cell_output, .output, .output.text_html { width: 100% !important; max-width: 100% !important; overflow: visible !important; }
table.scorecard { width: 100% !important; table-layout: fixed; font-size: 8pt !important; border-collapse: collapse; }
table.scorecard th, table.scorecard td { padding: 2px 5px !important; vertical-align: top !important;
  border-bottom: 0.5px solid #ccc; overflow-wrap: anywhere; line-height: 1.3 !important; }
table.scorecard small { font-size: 0.9em !important; }
/* id, kind, claim and rule, paper, ours, margin, status */
table.scorecard th:nth-child(1) { width: 11%; } table.scorecard th:nth-child(2) { width: 7%; }
table.scorecard th:nth-child(3) { width: 34%; } table.scorecard th:nth-child(4) { width: 14%; }
table.scorecard th:nth-child(5) { width: 12%; } table.scorecard th:nth-child(6) { width: 8%; }
p:has(+ table.scorecard) { break-after: avoid; }  /* the table's title stays with it */
table.scorecard th:nth-child(7) { width: 14%; }
mjx-container[display="true"] { overflow: visible !important; max-width: 100%; }
h1, h2, h3 { break-after: avoid; }
span[id^="document-"] + section { break-before: page; }  /* every chapter starts a page */
"""

FOOTER = ('<div style="font-size:8px; width:100%; padding:0 14mm; color:#555; display:flex; '
          'justify-content:space-between;"><span class="title"></span>'
          '<span><span class="pageNumber"></span> / <span class="totalPages"></span></span></div>')


def build_singlehtml(src: Path, out_parent: Path, stream=None) -> Path:
    """``jupyter-book build --builder singlehtml`` the staged tree; return the page (``index.html``)."""
    stream = stream or sys.stderr
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe), "build", str(src), "--path-output", str(out_parent), "--builder", "singlehtml"]
    print(f"[pdf] jupyter-book {' '.join(cmd[1:])}", file=stream, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log = out_parent / "_build" / "singlehtml-build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(proc.stdout + proc.stderr)
    out = out_parent / "_build" / "singlehtml"
    index = out / "index.html"
    if proc.returncode != 0 or not index.exists():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise RuntimeError(f"single-page build failed (full log: {log}):\n{tail}")
    # The root document is book/intro, so Sphinx writes the page to book/intro.html (index.html only
    # redirects there), but with every link relative to the output folder: serve a copy from there.
    m = re.search(r'url=([^"]+\.html)', index.read_text())
    page = out / "book.html"
    shutil.copy2(out / m.group(1) if m else index, page)
    return page


def print_to_pdf(page: Path, pdf: Path, title: str = "Reproducible Papers") -> dict:
    """Print ``page`` (served from its folder, network blocked) to ``pdf`` after MathJax has typeset it.

    Returns what the browser saw: formulas found and typeset, images and broken images, blocked requests.
    """
    from .site_check import chromium, offline_context, serve, wait_for_mathjax

    pdf.parent.mkdir(parents=True, exist_ok=True)
    blocked: list[str] = []
    with serve(page.parent) as base, chromium() as browser:
        ctx = offline_context(browser, blocked)
        tab = ctx.new_page()
        tab.goto(base + page.name, wait_until="load")
        mathjax = wait_for_mathjax(tab, timeout_ms=180_000)
        tab.add_style_tag(content=PRINT_CSS)
        facts = tab.evaluate("""async () => {
            const imgs = Array.from(document.images);
            imgs.forEach(i => { i.loading = 'eager'; });
            await Promise.all(imgs.map(i => i.decode().catch(() => null)));
            document.querySelectorAll('details').forEach(d => d.open = true);
            return {math: document.querySelectorAll('.math').length,
                    typeset: Array.from(document.querySelectorAll('.math')).filter(m => m.querySelector('mjx-container')).length,
                    images: imgs.length, broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)};
        }""")
        tab.pdf(path=str(pdf), format="A4", print_background=True, display_header_footer=True,
                header_template=f"<span style='font-size:1px'>{title}</span>", footer_template=FOOTER,
                margin={"top": "16mm", "bottom": "18mm", "left": "14mm", "right": "14mm"})
        ctx.close()
    return {**facts, "mathjax": mathjax, "blocked": blocked}


def page_count(pdf: Path) -> int | None:
    """Pages in ``pdf`` (``pdfinfo`` from poppler-utils when present, else the page objects counted)."""
    if shutil.which("pdfinfo"):
        out = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True).stdout
        m = re.search(r"^Pages:\s+(\d+)", out, re.M)
        if m:
            return int(m.group(1))
    n = len(re.findall(rb"/Type\s*/Page(?![s\w])", pdf.read_bytes()))
    return n or None


def build_pdf(outcomes: list[ChapterOutcome], out_dir: Path, work: Path | None = None, stream=None) -> Path:
    """Stage the executed chapters, build them as one HTML page, print it; return the PDF's path."""
    stream = stream or sys.stderr
    out_dir = Path(out_dir)
    work = Path(work) if work else out_dir.parent / "pdf-work"
    t0 = time.time()
    src = stage_site(outcomes, work / "src")
    page = build_singlehtml(src, work, stream=stream)
    pdf = out_dir / PDF_NAME
    seen = print_to_pdf(page, pdf)
    problems = []
    if seen["mathjax"]:
        problems.append(seen["mathjax"])
    if seen["typeset"] < seen["math"]:
        problems.append(f"{seen['math'] - seen['typeset']} of {seen['math']} formulas not typeset")
    problems += [f"image not loaded: {u}" for u in seen["broken"]]
    problems += [f"blocked external request: {u}" for u in seen["blocked"]]
    pages = page_count(pdf)
    print(f"[pdf] {pdf}: {pages} pages, {seen['typeset']}/{seen['math']} formulas typeset, {seen['images']} images, "
          f"{time.time() - t0:.0f} s", file=stream, flush=True)
    if problems:
        raise RuntimeError("the PDF is not what a reader should get:\n" + "\n".join(problems))
    return pdf


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repro.pdf", description="Build the whole book as one PDF (offline).")
    ap.add_argument("--profile", default="book", choices=PROFILE_NAMES,
                    help="profile the chapters run at (cached as by `make book`; default book)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: _build/pdf)")
    args = ap.parse_args(argv)
    root = repo_root()
    out = args.out or root / "_build" / "pdf"
    t0 = time.time()
    outcomes = execute_all(args.profile)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        print("\n" + table(outcomes), flush=True)
        for o in failed:
            print(f"FAILED {o.error}", flush=True)
        print("PDF not built: fix the failing chapters first", flush=True)
        return 1
    try:
        pdf = build_pdf(outcomes, out, work=root / "_build" / "pdf-work")
    except RuntimeError as err:
        print(err, flush=True)
        return 1
    print(f"pdf: {pdf} ({page_count(pdf)} pages, {time.time() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
