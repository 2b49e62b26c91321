"""The built site as a reader sees it: served on the loopback interface, opened in headless Chromium
with every request that leaves 127.0.0.1 blocked.

``tests/test_browser.py`` asserts on the :class:`PageReport` of every page; ``repro.pdf`` prints the
single-page build through the same browser.  Chromium is Debian's ``chromium`` package driven by
Playwright for Python (``pip install playwright``; Playwright's own browser download is not used).
"""
from __future__ import annotations

import os
import re
import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urljoin, urlsplit

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
INSTALL_HINT = ("needs Debian's Chromium and Playwright for Python: `apt-get install -y chromium` and "
                "`.venv/bin/pip install playwright==1.65.2` (no `playwright install`: the system Chromium is used; "
                "another binary can be named with REPRO_CHROMIUM=/path/to/chromium)")
LOOPBACK = {"127.0.0.1"}
MATHJAX_TIMEOUT_MS = 20_000


def find_chromium() -> str | None:
    """Path of the Chromium binary: ``$REPRO_CHROMIUM``, else /usr/bin/chromium or ``chromium`` on PATH."""
    env = os.environ.get("REPRO_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for cand in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if cand and Path(cand).exists():
            return cand
    return None


def missing_requirements() -> str | None:
    """Why the browser checks cannot run here (with how to fix it), or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed; " + INSTALL_HINT
    if find_chromium() is None:
        return "Chromium not found; " + INSTALL_HINT
    return None


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@contextmanager
def serve(root: Path) -> Iterator[str]:
    """Serve ``root`` over HTTP on 127.0.0.1 (a free port, a background thread); yield the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def chromium() -> Iterator[object]:
    """A headless Chromium (Playwright ``Browser``) started from the system binary."""
    from playwright.sync_api import sync_playwright

    exe = find_chromium()
    if exe is None:
        raise RuntimeError("Chromium not found; " + INSTALL_HINT)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def offline_context(browser, blocked: list[str], viewport=(1280, 900)):
    """A browser context in which every request not addressed to 127.0.0.1 is aborted (and recorded)."""
    ctx = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, service_workers="block")

    def gate(route):
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob", "about") or parts.hostname in LOOPBACK:
            route.continue_()
        else:
            blocked.append(url)
            route.abort("blockedbyclient")

    ctx.route("**/*", gate)
    ctx.set_default_timeout(60_000)  # generous: CI machines are busy; a hang still fails
    return ctx


def wait_for_mathjax(page, timeout_ms: int = MATHJAX_TIMEOUT_MS) -> str:
    """Wait until MathJax has typeset the page; return "" or why it did not."""
    try:
        page.wait_for_function("() => window.MathJax && window.MathJax.startup && window.MathJax.startup.promise",
                               timeout=timeout_ms)
        page.evaluate("() => window.MathJax.startup.promise.then(() => true)")
        return ""
    except Exception as err:  # playwright's TimeoutError or a rejected promise
        return f"MathJax did not start: {str(err).splitlines()[0]}"


# Text of the main content outside code, MathJax output and scripts: what must hold no raw LaTeX.
_READER_TEXT_JS = r"""
(sel) => {
  const root = document.querySelector(sel) || document.body;
  const skip = 'pre, code, script, style, textarea, .highlight, mjx-container, mjx-assistive-mml';
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  const parts = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement && !n.parentElement.closest(skip)) parts.push(n.nodeValue);
  }
  return parts.join('');
}
"""

_PAGE_FACTS_JS = r"""
async () => {
  const imgs = Array.from(document.images);
  for (const img of imgs) { img.loading = 'eager'; }
  await Promise.all(imgs.map(img => img.decode().catch(() => null)));
  const main = document.querySelector('main') || document.body;
  const math = Array.from(main.querySelectorAll('.math'));
  const nav = document.querySelector('.bd-sidebar-primary, nav.bd-links, nav') || document.body;
  return {
    title: document.title,
    images: imgs.map(img => ({src: img.currentSrc || img.src, ok: img.complete && img.naturalWidth > 0})),
    math: math.length,
    typeset: math.filter(m => m.querySelector('mjx-container')).length,
    mathErrors: Array.from(main.querySelectorAll('mjx-merror')).map(e => e.getAttribute('data-mjx-error') || e.textContent),
    scorecards: main.querySelectorAll('table.scorecard').length,
    exercises: main.querySelectorAll('.exercise').length,
    solutions: main.querySelectorAll('.solution').length,
    // a solution is open if anything but its title takes up space on the page
    solutionsOpen: Array.from(main.querySelectorAll('.solution')).filter(s => Array.from(s.children)
      .filter(c => !c.classList.contains('admonition-title')).some(c => c.offsetHeight > 0)).length,
    glueSpans: main.querySelectorAll('span.pasted-text, span.pasted-inline, div.pasted-inline, .pasted-text').length,
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
    navLinks: Array.from(nav.querySelectorAll('a[href]')).map(a => a.href),
    downloads: Array.from(document.querySelectorAll('a[class*="btn-download-"][href]')).map(a => a.href),
  };
}
"""

_RAW_MATH = re.compile(r"\\\(|\\\[|\$\$|\\begin\{")  # \( \[ $$ \begin{


@dataclass
class PageReport:
    """What a reader's browser saw on one page."""

    path: str
    title: str = ""
    status: int | None = None
    blocked_requests: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    n_images: int = 0
    n_math: int = 0
    n_typeset: int = 0
    math_errors: list[str] = field(default_factory=list)
    mathjax: str = ""  # why MathJax did not run, or ""
    raw_math: list[str] = field(default_factory=list)
    scorecards: int = 0
    exercises: int = 0
    solutions: int = 0
    solutions_open: int = 0  # solutions whose body is visible without a click
    glue_spans: int = 0
    glue_left: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)      # same-site pages linked from this page
    nav_links: list[str] = field(default_factory=list)  # same-site pages linked from the sidebar
    downloads: dict[str, int] = field(default_factory=dict)  # download-button target -> HTTP status
    screenshot: Path | None = None
    reached: bool = False  # by following links from the start page
    busy: bool = False  # the network was still busy 10 s after the load event

    def problems(self) -> list[str]:
        """Everything wrong on the page that applies to any page (chapter checks are the test's)."""
        out = []
        if self.status != 200:
            out.append(f"HTTP status {self.status}")
        out += [f"blocked external request: {u}" for u in self.blocked_requests]
        out += [f"failed request: {u}" for u in self.failed_requests]
        out += [f"console error: {m}" for m in self.console_errors]
        out += [f"image not loaded: {u}" for u in self.broken_images]
        if self.mathjax and self.n_math:
            out.append(self.mathjax)
        if self.n_typeset < self.n_math:
            out.append(f"{self.n_math - self.n_typeset} of {self.n_math} math elements not typeset by MathJax")
        out += [f"MathJax error: {m}" for m in self.math_errors]
        out += [f"raw LaTeX in the rendered text: ...{s}..." for s in self.raw_math]
        out += [f"glue not pasted: ...{s}..." for s in self.glue_left]
        out += [f"download link {u} answers {code}" for u, code in self.downloads.items() if code != 200]
        return out


def _page_path(url: str, base: str) -> str | None:
    """The site-relative path of a same-site HTML page (no fragment, no query), or None."""
    if not url.startswith(base):
        return None
    path = unquote(urlsplit(url).path)[len(urlsplit(base).path):]
    if path == "" or path.endswith("/"):
        path += "index.html"
    return path if path.endswith(".html") else None


def _snippets(text: str, pattern: re.Pattern, width: int = 40, limit: int = 5) -> list[str]:
    return [text[max(0, m.start() - width): m.end() + width].replace("\n", " ")
            for m in list(pattern.finditer(text))[:limit]]


def check_page(ctx, blocked: list[str], base: str, path: str, screenshot_dir: Path | None = None) -> PageReport:
    """Open ``base + path`` in a new tab of ``ctx`` (an :func:`offline_context` recording into ``blocked``)
    and report what it shows."""
    rep = PageReport(path)
    blocked_before = len(blocked)
    page = ctx.new_page()
    page.on("console", lambda m: rep.console_errors.append(f"{m.text} ({m.location.get('url', '')})")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: rep.console_errors.append(f"uncaught: {e}"))
    page.on("requestfailed", lambda r: rep.failed_requests.append(f"{r.url} ({r.failure})"))
    page.on("response", lambda r: rep.failed_requests.append(f"{r.url} (HTTP {r.status})")
            if r.status >= 400 else None)
    try:
        resp = page.goto(base + path, wait_until="load")
        rep.status = resp.status if resp else None
        try:  # fonts and lazy assets; a page that never goes quiet is not an error by itself
            page.wait_for_load_state("networkidle", timeout=10_000)
        except Exception:
            rep.busy = True
        page.wait_for_load_state("load")  # after a redirect (the landing page's meta refresh), the new page
        has_math = page.evaluate("() => document.querySelectorAll('.math').length > 0")
        if has_math:
            rep.mathjax = wait_for_mathjax(page)
        facts = page.evaluate(_PAGE_FACTS_JS)
        text = page.evaluate(_READER_TEXT_JS, "main")
        rep.title = facts["title"]
        rep.n_images = len(facts["images"])
        rep.broken_images = [i["src"] for i in facts["images"] if not i["ok"]]
        rep.n_math, rep.n_typeset, rep.math_errors = facts["math"], facts["typeset"], facts["mathErrors"]
        rep.raw_math = _snippets(text, _RAW_MATH)
        rep.scorecards, rep.glue_spans = facts["scorecards"], facts["glueSpans"]
        rep.exercises, rep.solutions = facts["exercises"], facts["solutions"]
        rep.solutions_open = facts["solutionsOpen"]
        rep.glue_left = _snippets(text, re.compile(r"\{glue"))
        here = page.url
        rep.links = sorted({p for u in facts["links"] if (p := _page_path(urljoin(here, u), base))})
        rep.nav_links = sorted({p for u in facts["navLinks"] if (p := _page_path(urljoin(here, u), base))})
        for url in sorted(set(facts["downloads"])):
            rep.downloads[url[len(base):] if url.startswith(base) else url] = page.request.get(url).status
        if screenshot_dir is not None:
            screenshot_dir.mkdir(parents=True, exist_ok=True)
            rep.screenshot = screenshot_dir / (path.replace("/", "__").removesuffix(".html") + ".png")
            page.screenshot(path=str(rep.screenshot), full_page=True)
    finally:
        page.close()
    rep.blocked_requests = blocked[blocked_before:]
    return rep


def check_site(html: Path, screenshot_dir: Path | None = None, start: str = "index.html") -> dict[str, PageReport]:
    """Crawl the site from ``start`` (following same-site links), then open every other HTML page on disk.

    Returns one report per page, in visiting order; ``reached_from_start(reports)`` tells which pages the
    navigation reaches.
    """
    html = Path(html)
    on_disk = sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html")
                     if not p.relative_to(html).parts[0].startswith("_"))
    reports: dict[str, PageReport] = {}
    with serve(html) as base, chromium() as browser:
        blocked: list[str] = []
        ctx = offline_context(browser, blocked)
        queue = [start]
        while queue:
            path = queue.pop(0)
            if path in reports:
                continue
            rep = reports[path] = check_page(ctx, blocked, base, path, screenshot_dir)
            rep.reached = True
            queue += [p for p in rep.links if p not in reports and (html / p).exists()]
        for path in on_disk:
            if path not in reports:
                reports[path] = check_page(ctx, blocked, base, path, screenshot_dir)
        ctx.close()
    return reports


def reached_from_start(reports: dict[str, PageReport]) -> set[str]:
    """Pages the crawl reached by following links from the start page."""
    return {p for p, r in reports.items() if r.reached}


class _ExternalRefs(HTMLParser):
    """Collects every absolute URL a page would load by itself (not the links a reader may click)."""

    LOADS = {("script", "src"), ("link", "href"), ("img", "src"), ("iframe", "src"), ("source", "src"),
             ("video", "src"), ("audio", "src"), ("embed", "src"), ("object", "data")}

    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if (tag, name) in self.LOADS and value and re.match(r"(https?:)?//", value):
                if not (tag == "link" and dict(attrs).get("rel") in ("canonical", "alternate")):
                    self.found.append(f"<{tag} {name}={value}>")
        self._in_script = tag in ("script", "style")

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.found += [f"inline {u}" for u in re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"'`)]*", data)]


def external_references(html: Path) -> dict[str, list[str]]:
    """For each built page, the external URLs it loads (script/link/img sources, URLs in inline scripts)."""
    out = {}
    for page in sorted(Path(html).rglob("*.html")):
        if page.relative_to(html).parts[0] == "_sources":
            continue
        parser = _ExternalRefs()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        if parser.found:
            out[page.relative_to(html).as_posix()] = parser.found
    return out
