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
        n_seeds = len(ch["seeds"])
        for f in ch["findings"].values():
            f["reproduced_seeds"] = sum(s == REPRODUCED for s in f["by_seed"].values())
            f["all_seeds"] = f["reproduced_seeds"] == n_seeds
    return out


def markdown(results: dict, seeds: list[int]) -> str:
    """The findings × seeds table as Markdown."""
    head = "| chapter | finding | " + " | ".join(f"seed {s}" for s in seeds) + " | seeds reproducing |"
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
