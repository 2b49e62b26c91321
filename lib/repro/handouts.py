"""``make handouts``: a student and an instructor notebook per chapter, and a zip of each set.

The chapters' exercises are ``sphinx-exercise`` directives.  A solution is
either one ``{solution}`` directive in a Markdown cell or a *gated* block that
spans cells: a Markdown cell holding ``{solution-start}``, then Markdown and
code cells (runnable solutions, tagged ``solution``), then ``{solution-end}``.

- The **student** notebook drops every solution: the ``{solution}`` blocks,
  everything from ``{solution-start}`` to ``{solution-end}`` (across cells),
  and every code cell tagged ``solution``.  Outputs are cleared; the
  parameters cell stays, so the notebook still runs at any profile.
- The **instructor** notebook is the whole chapter with outputs cleared.

Output: ``_build/handouts/{student,instructor}/<chapter>.ipynb`` and
``_build/handouts/{student,instructor}.zip`` (each with a README naming the
commit and how to install the library the notebooks import).  Two zips, so
that the one given to students cannot contain the solutions.
"""
from __future__ import annotations

import copy
import re
import sys
import time
import zipfile
from pathlib import Path

from .catalog import Chapter, all_chapters, get_chapter
from .paths import git_commit, repo_root

SOLUTION_TAG = "solution"
_FENCE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[a-z-]+)\}.*$")


class HandoutError(ValueError):
    """A chapter's solution markup is malformed (e.g. a ``{solution-start}`` without its end)."""


def _strip_markdown(text: str, inside: bool) -> tuple[str, bool]:
    """Remove solution blocks from one Markdown cell; ``inside``: a gated solution is open on entry."""
    out: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i].strip())
        name = m.group("name") if m else None
        if name == "solution-start":
            if inside:
                raise HandoutError("nested {solution-start}")
            inside = True
            i = _skip_block(lines, i, m.group("fence"))
            continue
        if name == "solution-end":
            if not inside:
                raise HandoutError("{solution-end} without {solution-start}")
            inside = False
            i = _skip_block(lines, i, m.group("fence"))
            continue
        if name == "solution" and not inside:
            i = _skip_block(lines, i, m.group("fence"))
            continue
        if not inside:
            out.append(lines[i])
        i += 1
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip("\n"), inside


def _skip_block(lines: list[str], start: int, fence: str) -> int:
    """Index after the fenced directive that opens at ``start`` (its closing fence included)."""
    for j in range(start + 1, len(lines)):
        if lines[j].strip() == fence:
            return j + 1
    raise HandoutError(f"unclosed directive: {lines[start].strip()}")


def student_notebook(nb):
    """A copy of ``nb`` (nbformat) without solutions and outputs; raises :class:`HandoutError` on bad markup."""
    out = copy.deepcopy(nb)
    cells, inside = [], False
    for cell in out.cells:
        if cell.cell_type == "markdown":
            cell.source, inside = _strip_markdown(cell.source, inside)
            if cell.source.strip():
                cells.append(cell)
            continue
        if inside or SOLUTION_TAG in cell.metadata.get("tags", []):
            continue
        cells.append(cell)
    if inside:
        raise HandoutError("{solution-start} without {solution-end}")
    out.cells = cells
    return clear_outputs(out)


def instructor_notebook(nb):
    """A copy of ``nb`` with outputs cleared (solutions kept)."""
    return clear_outputs(copy.deepcopy(nb))


def clear_outputs(nb):
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def solution_cells(nb) -> list[int]:
    """Indices of cells that are, or contain, a solution (what the student notebook must not have)."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and SOLUTION_TAG in cell.metadata.get("tags", []):
            found.append(i)
        elif cell.cell_type == "markdown" and re.search(r"\{solution(-start|-end)?\}", cell.source):
            found.append(i)
    return found


def _readme(kind: str, names: list[str]) -> str:
    what = ("exercises without their solutions" if kind == "student"
            else "exercises with their solutions (do not hand these to students)")
    return (f"{kind.capitalize()} notebooks of the reproducible textbook, commit {git_commit() or 'unknown'}.\n"
            f"Chapters: {', '.join(names)}; {what}.\n\n"
            "The notebooks import the book's library `repro`.  In a clone of the repository run\n"
            "`make setup` (or `pip install -r requirements.lock && pip install -e .`), then open a\n"
            "notebook in JupyterLab (`make lab`).  The first code cell picks the profile:\n"
            "'smoke' runs in under a minute, 'book' in the time the chapter states.\n")


def build_handouts(names: list[str] | None = None, out: Path | None = None, stream=None) -> Path:
    """Write the student and instructor notebooks and zips; return the output folder."""
    import jupytext
    import nbformat

    stream = stream or sys.stderr
    out = Path(out) if out else repo_root() / "_build" / "handouts"
    chapters: list[Chapter] = [get_chapter(n) for n in names] if names else all_chapters()
    t0 = time.time()
    for kind, make in (("student", student_notebook), ("instructor", instructor_notebook)):
        folder = out / kind
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.ipynb"):
            old.unlink()
        for ch in chapters:
            nb = make(jupytext.read(ch.path))
            nbformat.write(nb, folder / f"{ch.name}.ipynb")
        (folder / "README.txt").write_text(_readme(kind, [c.name for c in chapters]))
        with zipfile.ZipFile(out / f"{kind}.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.iterdir()):
                zf.write(path, f"{kind}/{path.name}")
    print(f"[handouts] {len(chapters)} chapters -> {out}/student, {out}/instructor and their zips "
          f"({time.time() - t0:.1f}s)", file=stream, flush=True)
    return out


def run_handout(path: str | Path, out: str | Path, profile: str = "smoke", timeout_s: float | None = None) -> Path:
    """Execute a handout notebook with papermill at ``profile`` in the folder ``out``; return the executed copy."""
    import papermill as pm

    from .runner import _RunEnvironment

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    executed = out / Path(path).name
    with _RunEnvironment(out):
        pm.execute_notebook(str(path), str(executed), parameters={"profile": profile, "overrides": {}},
                            kernel_name="python3", cwd=str(out), progress_bar=False,
                            execution_timeout=timeout_s)
    return executed
