"""``python -m repro robustness``: every chapter once per base seed, and a table of findings × seeds.

Each (chapter, seed) run is cached exactly like ``make book`` (seed 0 *is*
the book run), so a re-run after a library change re-executes only what the
change touches.  The results go to ``_build/robustness/<profile>.json`` and a
Markdown table beside it; the book's "Reproduction status" page and the
README's table are made from them.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from .book import ChapterOutcome, run_cached
from .catalog import all_chapters, get_chapter
from .paths import repo_root
from .scorecard import FINDING, REPRODUCED


def results_path(profile: str = "book", root: Path | None = None) -> Path:
    return (root or repo_root()) / "_build" / "robustness" / f"{profile}.json"


def collect(outcomes: list[ChapterOutcome]) -> dict:
    """Per chapter: per seed the findings' status and statistic, and per finding how many seeds reproduce it."""
    out: dict = {}
    for o in outcomes:
        ch = out.setdefault(o.chapter, {"seeds": {}, "findings": {}})
        if o.folder is None:
            ch["seeds"][str(o.seed)] = {"failed": o.error}
            continue
        m = json.loads((Path(o.folder) / "metrics.json").read_text())
        rows = [r for r in m["scorecard"] if r["kind"] == FINDING]
        ch["seeds"][str(o.seed)] = {"wall_time_s": m.get("wall_time_s"), "device": m.get("device"),
                                    "findings_reproduced": m["findings_reproduced"],
                                    "findings_evaluated": m["findings_evaluated"],
                                    "rows": {r["id"]: {"status": r["status"], "ours": r["ours"]} for r in rows}}
        for r in rows:
            f = ch["findings"].setdefault(r["id"], {"statement": r["statement"], "paper": r["paper"],
                                                    "by_seed": {}})
            f["by_seed"][str(o.seed)] = r["status"]
    for ch in out.values():
        _count(ch)
    return out


def _count(ch: dict) -> None:
    """Per finding of one chapter's results: how many seeds (columns) reproduce it, and whether all do."""
    n_seeds = len(ch["seeds"])
    for f in ch["findings"].values():
        f["reproduced_seeds"] = sum(s == REPRODUCED for s in f["by_seed"].values())
        f["all_seeds"] = f["reproduced_seeds"] == n_seeds


def label_order(label) -> tuple:
    """Sort key of a column: base seeds (integers) first, in order, then sweep points (labels such as
    ``lr=0.001 seed=0``) alphabetically."""
    text = str(label)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def column_title(label) -> str:
    """``seed 3`` for a base seed, the label itself for a sweep point."""
    return f"seed {label}" if str(label).isdigit() else str(label)


def merge_points(chapter: str, profile: str, points: list[tuple[str, Path]]) -> Path:
    """Merge finished runs of ``chapter`` (``(column label, run folder)`` pairs, e.g. the points of
    ``python -m repro sweep``) into ``_build/robustness/<profile>.json`` and its Markdown table.

    A label that is a plain integer is a base seed and shares its column with
    ``make robustness``'s run of that seed; other labels (a point with other
    parameters) get their own column.  Other chapters' and other columns'
    results are kept.  Returns the JSON path.
    """
    outcomes = [ChapterOutcome(chapter, profile, "executed", None, None, None, Path(folder), seed=label)
                for label, folder in points]
    new = collect(outcomes).get(chapter, {"seeds": {}, "findings": {}})
    path = results_path(profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(path.read_text()) if path.exists() else {}
    ch = results.setdefault(chapter, {"seeds": {}, "findings": {}})
    ch["seeds"].update(new["seeds"])
    for fid, f in new["findings"].items():
        kept = ch["findings"].setdefault(fid, {"statement": f["statement"], "paper": f["paper"], "by_seed": {}})
        kept["by_seed"].update(f["by_seed"])
    _count(ch)
    path.write_text(json.dumps(results, indent=2))
    columns = sorted({c for r in results.values() for c in r["seeds"]}, key=label_order)
    path.with_suffix(".md").write_text(markdown(results, columns))
    return path


def markdown(results: dict, seeds: list) -> str:
    """The findings × seeds table as Markdown (a column per base seed or sweep point)."""
    head = "| chapter | finding | " + " | ".join(column_title(s) for s in seeds) + " | seeds reproducing |"
    lines = [head, "|" + "---|" * (len(seeds) + 3)]
    for name, ch in results.items():
        for fid, f in ch["findings"].items():
            cells = [f["by_seed"].get(str(s), "—") for s in seeds]
            lines.append(f"| {name} | {fid} | " + " | ".join(cells) + f" | {f['reproduced_seeds']}/{len(seeds)} |")
    return "\n".join(lines) + "\n"


def run_robustness(names: list[str] | None = None, seeds: list[int] = (0, 1, 2), profile: str = "book",
                   cache_root: Path | None = None, force: bool = False, stream=None) -> int:
    """Run each chapter once per seed (cached), write the table, print it; return an exit code."""
    stream = stream or sys.stderr
    chapters = [get_chapter(n) for n in names] if names else all_chapters()
    t0 = time.time()
    outcomes = []
    for ch in chapters:
        for s in seeds:
            outcomes.append(run_cached(ch, profile, {"seed": int(s)}, cache_root, force, stream))
    results = collect(outcomes)
    path = results_path(profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update(results)  # a run over some chapters keeps the others' results
    path.write_text(json.dumps(old, indent=2))
    table = markdown(old, list(seeds))
    path.with_suffix(".md").write_text(table)
    print("\n" + table, flush=True)
    print(f"total {time.time() - t0:.0f} s; results in {path}", flush=True)
    failed = [o for o in outcomes if o.status == "failed"]
    for o in failed:
        print(f"FAILED seed {o.seed}: {o.error}", flush=True)
    return 1 if failed else 0
