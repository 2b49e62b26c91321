"""The library's shared conventions: where chapter code lives, checkpoints, progress, seeds, the CLI's speed,
per-seed robustness tables and the generated status page."""
from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from repro.book import ChapterOutcome
from repro.catalog import all_chapters
from repro.checkpoint import CheckpointMismatch, load_checkpoint, make_identity, save_checkpoint
from repro.progress import Progress
from repro.robustness import collect, markdown
from repro.seed import generator, seed_everything
from repro.status import status_page

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "lib" / "repro"
INFRA = {"__init__.py", "__main__.py", "cli.py", "catalog.py", "config.py", "book.py", "runner.py", "report.py",
         "scorecard.py", "paths.py", "robustness.py", "status.py"}


def _module_files():
    for p in sorted(LIB.rglob("*.py")):
        rel = p.relative_to(LIB)
        if rel.parts[0] == "chapters" or (len(rel.parts) == 1 and rel.name in INFRA):
            continue
        yield rel, p


def _imports_and_bases(path: Path):
    tree = ast.parse(path.read_text())
    mods, bases = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mods.add(("." * node.level) + (node.module or ""))
        elif isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
        elif isinstance(node, ast.ClassDef):
            bases.update(ast.unparse(b) for b in node.bases)
    return mods, bases


def test_algorithm_modules_hold_no_chapter_code():
    """A module another chapter may import holds the algorithm only: no chapter imports, no ProfileConfig."""
    bad = []
    for rel, path in _module_files():
        mods, bases = _imports_and_bases(path)
        if any("chapters" in m for m in mods):
            bad.append(f"{rel} imports chapter code: {sorted(m for m in mods if 'chapters' in m)}")
        if any(b.endswith("ProfileConfig") for b in bases):
            bad.append(f"{rel} defines a ProfileConfig (it belongs in repro/chapters/<name>/config.py)")
    assert not bad, "\n".join(bad)


def test_every_chapter_has_its_package_and_a_torch_free_config():
    for ch in all_chapters():
        module, _, cls = ch.config_ref.partition(":")
        assert module.startswith("repro.chapters.") and module.endswith(".config"), ch.config_ref
        code = f"import sys, {module} as m; assert 'torch' not in sys.modules, 'torch imported'; " \
               f"assert hasattr(m, 'CLAIMS') and hasattr(m, {cls!r})"
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert res.returncode == 0, f"{ch.name}: {res.stderr[-2000:]}"


def test_no_two_classes_share_a_name():
    seen: dict[str, Path] = {}
    dup = []
    for p in sorted(LIB.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                if node.name in seen and seen[node.name] != p:
                    dup.append(f"{node.name}: {seen[node.name].relative_to(LIB)} and {p.relative_to(LIB)}")
                seen.setdefault(node.name, p)
    assert not dup, dup


@pytest.mark.parametrize("cmd", [["list"], ["params", "grokking"]])
def test_list_and_params_answer_fast_without_torch(cmd):
    code = ("import sys, runpy; sys.argv = ['repro'] + %r\n"
            "try:\n    runpy.run_module('repro', run_name='__main__')\nexcept SystemExit as e:\n    assert not e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'" % cmd)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    took = time.perf_counter() - t0
    assert res.returncode == 0, res.stderr[-2000:]
    assert took < 1.5, f"python -m repro {' '.join(cmd)} took {took:.2f}s"


def test_checkpoint_roundtrip_atomic_and_identity_checked(tmp_path):
    path = tmp_path / "ck" / "run.pt"
    ident = make_identity("exp", {"lr": 1e-3, "sizes": (1, 2)})
    assert load_checkpoint(path, ident) is None
    save_checkpoint(path, {"w": torch.arange(3.0), "step": 7}, ident)
    assert not list(path.parent.glob("*.tmp")), "the temporary file is renamed into place"
    state = load_checkpoint(path, make_identity("exp", {"lr": 1e-3, "sizes": [1, 2]}))
    assert state["step"] == 7 and torch.equal(state["w"], torch.arange(3.0))
    with pytest.raises(CheckpointMismatch, match="config.lr"):
        load_checkpoint(path, make_identity("exp", {"lr": 1e-2, "sizes": (1, 2)}))
    with pytest.raises(CheckpointMismatch, match="experiment"):
        load_checkpoint(path, make_identity("other", {"lr": 1e-3, "sizes": (1, 2)}))
    torch.save({"w": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointMismatch, match="not a repro checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt", ident)


def test_progress_prints_periodic_lines_headless():
    out = io.StringIO()
    with Progress(10, "toy", unit="step", every_s=0.0, stream=out, interactive=False) as bar:
        for i in range(1, 11):
            bar.update(i, loss=1.0 / i)
    lines = out.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].startswith("[toy]") and "10/10 steps (100%)" in lines[-1]
    assert "loss 0.1" in lines[-1] and "done in" in lines[-1]
    quiet = io.StringIO()
    with Progress(1000, "toy", every_s=3600, stream=quiet, interactive=False) as bar:
        for i in range(1000):
            bar.update()
    assert len(quiet.getvalue().splitlines()) == 1, "at most one line per interval, plus the final one"


def test_seeding_helpers_are_reproducible():
    seed_everything(3)
    a = torch.rand(3)
    seed_everything(3)
    assert torch.equal(a, torch.rand(3))
    assert torch.equal(torch.rand(2, generator=generator(5)), torch.rand(2, generator=generator(5)))


def _fake_run(folder: Path, chapter: str, seed: int, statuses: dict) -> ChapterOutcome:
    folder.mkdir(parents=True)
    rows = [{"id": k, "kind": "finding", "statement": f"{k} holds", "rule": "r", "paper": "p", "ours": "o",
             "margin": "", "status": v, "n": 3, "note": ""} for k, v in statuses.items()]
    rows.append({"id": "impl", "kind": "check", "statement": "s", "rule": "r", "paper": "p", "ours": "o",
                 "margin": "", "status": "passes", "n": 1, "note": ""})
    m = {"profile": "book", "scorecard": rows, "wall_time_s": 12.0, "device": "cpu", "library_version": "0.1.0",
         "commit": "abc", "findings_reproduced": sum(v == "reproduced" for v in statuses.values()),
         "findings_evaluated": len(statuses)}
    (folder / "metrics.json").write_text(json.dumps(m))
    return ChapterOutcome(chapter, "book", "executed", 12.0, m["findings_reproduced"], len(statuses), folder,
                          seed=seed)


def test_robustness_table_and_status_page(tmp_path):
    outs = [_fake_run(tmp_path / f"s{s}", "toy", s, {"a": "reproduced", "b": st})
            for s, st in zip((0, 1, 2), ("reproduced", "inconclusive", "reproduced"))]
    res = collect(outs)
    assert res["toy"]["findings"]["a"]["reproduced_seeds"] == 3 and res["toy"]["findings"]["a"]["all_seeds"]
    assert res["toy"]["findings"]["b"]["reproduced_seeds"] == 2 and not res["toy"]["findings"]["b"]["all_seeds"]
    assert "impl" not in res["toy"]["findings"], "checks are not findings"
    table = markdown(res, [0, 1, 2])
    assert "| toy | b | reproduced | inconclusive | reproduced | 2/3 |" in table
    page = status_page(outs[:1], res)
    assert "# Reproduction status" in page and "| {doc}`toy` | book | 2/2 | 12 s | cpu | 0.1.0 | abc |" in page
    assert "| **b**: b holds | p | o | reproduced | reproduced | inconclusive | reproduced |" in page


def test_robustness_cli_rejects_bad_input_before_work():
    for args, msg in ((["robustness", "nope"], "unknown chapter 'nope'"),
                      (["robustness", "--seeds", "1,x"], "--seeds"),
                      (["robustness", "--seeds", "1,1"], "distinct")):
        res = subprocess.run([sys.executable, "-m", "repro", *args], capture_output=True, text=True)
        assert res.returncode == 2 and msg in res.stderr, res.stderr
