"""``make book``: execute every chapter (cached), then build the static site.

Caching is ours, not Jupyter Book's: a chapter's cache key hashes its text,
the source of every ``repro`` module it imports (followed transitively), its
profile and parameters, and the pinned requirements.  A library change thus
re-executes exactly the chapters that import the changed code.
"""
from __future__ import annotations

import ast
import hashlib
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .catalog import Chapter, all_chapters, get_chapter
from .paths import repo_root
from .runner import ChapterFailed, run_chapter

LIB = Path(__file__).resolve().parent


def _module_file(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] != "repro":
        return None
    base = LIB.joinpath(*parts[1:])
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.exists():
            return cand
    return None


def _imports(source: str, module: str | None = None, is_package: bool = False) -> set[str]:
    """Names of the repro modules imported by ``source`` (the chapter or a module)."""
    lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return set()
    found: set[str] = set()
    pkg = (module if is_package else module.rpartition(".")[0]) if module else ""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return {m for m in found if m == "repro" or m.startswith("repro.")}


def dependencies(code: str) -> list[Path]:
    """Every repro source file the given notebook code imports, transitively (with parent packages)."""
    seen: dict[str, Path] = {}
    todo = list(_imports(code))
    while todo:
        mod = todo.pop()
        parts = mod.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            name = ".".join(parts[:i])
            path = _module_file(name)
            if path is None or name in seen:
                continue
            seen[name] = path
            todo.extend(_imports(path.read_text(), name, path.name == "__init__.py"))
    return sorted(set(seen.values()))


def chapter_code(chapter: Chapter) -> str:
    import jupytext

    nb = jupytext.read(chapter.path)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def cache_key(chapter: Chapter, profile: str, overrides: dict | None = None) -> str:
    h = hashlib.sha256()
    h.update(chapter.path.read_bytes())
    for path in dependencies(chapter_code(chapter)):
        h.update(str(path.relative_to(LIB) if path.is_relative_to(LIB) else path).encode())
        h.update(path.read_bytes())
    h.update(profile.encode())
    h.update(json.dumps(overrides or {}, sort_keys=True).encode())
    lock = repo_root() / "requirements.lock"
    if lock.exists():
        h.update(lock.read_bytes())
    return h.hexdigest()[:16]


@dataclass
class ChapterOutcome:
    chapter: str
    profile: str
    status: str  # executed | cached | failed
    wall_time_s: float | None
    reproduced: int | None  # findings reproduced
    evaluated: int | None   # findings evaluated
    folder: Path | None
    error: str = ""
    seed: int | None = None


def _normalise(chapter: Chapter, profile: str, overrides: dict | None) -> dict:
    """Drop overrides equal to the profile's value, so ``-p seed=0`` shares the default run's cache."""
    overrides = dict(overrides or {})
    if not overrides:
        return {}
    base = chapter.config_class.for_profile(profile).to_dict()
    cfg = chapter.config_class.for_profile(profile, **overrides).to_dict()
    return {k: cfg[k] for k in sorted(overrides) if cfg[k] != base[k]}


def run_cached(ch: Chapter, profile: str = "book", overrides: dict | None = None, cache_root: Path | None = None,
               force: bool = False, stream=None) -> ChapterOutcome:
    """Run chapter ``ch`` (or fetch its cached run); keep one cached run per profile and overrides."""
    stream = stream or sys.stderr
    cache_root = Path(cache_root) if cache_root else repo_root() / "_build" / "cache"
    overrides = _normalise(ch, profile, overrides)
    tag = profile + "".join(f"-{k}{v}" for k, v in overrides.items())
    key = cache_key(ch, profile, overrides)
    folder = cache_root / ch.name / f"{tag}-{key}"
    seed = overrides.get("seed", ch.config_class.for_profile(profile).seed)
    if folder.joinpath("metrics.json").exists() and not force:
        m = json.loads(folder.joinpath("metrics.json").read_text())
        print(f"[{ch.name} {tag}] unchanged since its last run: cached ({folder})", file=stream, flush=True)
        return ChapterOutcome(ch.name, profile, "cached", m.get("wall_time_s"), m["findings_reproduced"],
                              m["findings_evaluated"], folder, seed=seed)
    try:
        res = run_chapter(ch.name, profile, overrides, stream=stream)
    except ChapterFailed as err:
        print(f"[{ch.name} {tag}] FAILED: {err}", file=stream, flush=True)
        return ChapterOutcome(ch.name, profile, "failed", None, None, None, None, str(err), seed=seed)
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(res.out, folder)
    for old in folder.parent.glob(f"{tag}-*"):  # keep one cached run per profile and overrides
        if old != folder and old.name.rpartition("-")[0] == tag:
            shutil.rmtree(old, ignore_errors=True)
    m = res.metrics
    return ChapterOutcome(ch.name, profile, "executed", m["wall_time_s"], m["findings_reproduced"],
                          m["findings_evaluated"], folder, seed=seed)


def execute_all(profile: str = "book", names: list[str] | None = None, cache_root: Path | None = None,
                force: bool = False, stream=None) -> list[ChapterOutcome]:
    """Run (or fetch from cache) each chapter; return one outcome per chapter."""
    chapters = [get_chapter(n) for n in names] if names else all_chapters()
    return [run_cached(ch, profile, None, cache_root, force, stream) for ch in chapters]


def stage_site(outcomes: list[ChapterOutcome], src: Path) -> Path:
    """Lay out a Jupyter Book source tree whose chapters are the executed notebooks."""
    root = repo_root()
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(root / name, src / name)
    executed = {o.chapter: o.folder for o in outcomes if o.folder}
    shutil.copytree(root / "book", src / "book",
                    ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints", "__pycache__"))
    for ch in all_chapters():
        (src / "book" / f"{ch.name}.md").unlink()
        if ch.name in executed:
            shutil.copy2(executed[ch.name] / f"{ch.name}.ipynb", src / "book" / f"{ch.name}.ipynb")
    shutil.copytree(root / "lib", src / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    from .status import status_page

    (src / "book" / "status.md").write_text(status_page(outcomes))
    return src


def build_site(src: Path, out_parent: Path, strict: bool = True, stream=None) -> Path:
    """``jupyter-book build`` the staged tree; HTML lands in ``out_parent/_build/html``."""
    stream = stream or sys.stderr
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe), "build", str(src), "--path-output", str(out_parent)]
    if strict:
        cmd += ["--warningiserror", "--keep-going"]
    print(f"[site] jupyter-book {' '.join(cmd[1:])}", file=stream, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log = out_parent / "_build" / "site-build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise RuntimeError(f"site build failed (full log: {log}):\n{tail}")
    return out_parent / "_build" / "html"


def table(outcomes: list[ChapterOutcome]) -> str:
    rows = [("chapter", "profile", "wall time", "findings reproduced", "source")]
    for o in outcomes:
        wall = f"{o.wall_time_s:.0f} s" if o.wall_time_s is not None else "—"
        claims = f"{o.reproduced}/{o.evaluated}" if o.evaluated is not None else "—"
        rows.append((o.chapter, o.profile, wall, claims, o.status if o.status != "failed" else "FAILED"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def make_book(profile: str = "book", names: list[str] | None = None, out_parent: Path | None = None,
              force: bool = False, strict: bool = True, cache_root: Path | None = None, stream=None) -> int:
    """Execute, build, print the table; return a process exit code."""
    stream = stream or sys.stderr
    root = repo_root()
    out_parent = Path(out_parent) if out_parent else root
    t0 = time.time()
    outcomes = execute_all(profile, names, cache_root=cache_root, force=force, stream=stream)
    failed = [o for o in outcomes if o.status == "failed"]
    html = None
    if not failed:
        src = stage_site(outcomes, out_parent / "_build" / "src")
        html = build_site(src, out_parent, strict=strict, stream=stream)
    print("\n" + table(outcomes), flush=True)
    print(f"\ntotal {time.time() - t0:.0f} s", flush=True)
    if failed:
        for o in failed:
            print(f"FAILED {o.error}", flush=True)
        print("site not built: fix the failing chapters first", flush=True)
        return 1
    print(f"site: file://{(html / 'index.html').resolve()}", flush=True)
    return 0
