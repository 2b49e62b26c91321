"""Command line: ``python -m repro {list,params,run,train,sweep,book,robustness,pdf,handouts}``."""
from __future__ import annotations

import argparse
import sys

from .catalog import ChapterError, all_chapters, get_chapter
from .config import PROFILE_NAMES, ConfigError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m repro", description="Run the book's chapters.")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the chapters, their claims and budgets")
    pp = sub.add_parser("params", help="show a chapter's parameters and their per-profile values")
    pp.add_argument("chapter")
    r = sub.add_parser("run", help="execute one chapter headless")
    r.add_argument("chapter")
    r.add_argument("--profile", default="book", help=f"one of {', '.join(PROFILE_NAMES)} (default book)")
    r.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="override one parameter (repeatable); see `python -m repro params CHAPTER`")
    r.add_argument("--out", help="output folder (default runs/CHAPTER/PROFILE-TIMESTAMP); must be new or empty")
    r.add_argument("--timeout", type=float, default=None, help="per-cell timeout in seconds")
    t = sub.add_parser("train", help="only a chapter's data-parallel training under torchrun, no notebook "
                                     "(what the other nodes of a multi-node run execute)")
    t.add_argument("chapter")
    t.add_argument("--profile", default="paper", help=f"one of {', '.join(PROFILE_NAMES)} (default paper)")
    t.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="the same parameters as the notebook run (nproc, nnodes, node_rank, rdzv_endpoint, "
                        "checkpoint_dir, ...)")
    sw = sub.add_parser("sweep", help="a grid of runs (one `repro run` each), locally or as a Slurm job array; "
                                      "merges their findings into the robustness table")
    sw.add_argument("chapter")
    sw.add_argument("--profile", default="book", help=f"one of {', '.join(PROFILE_NAMES)} (default book)")
    sw.add_argument("-p", "--param", action="append", default=[], metavar="KEY=V1,V2",
                    help="an axis of the grid (repeatable); a tuple parameter separates its points with ';'")
    sw.add_argument("--executor", default="local", help="local (this machine) or slurm (a submitit job array)")
    sw.add_argument("--out", help="the sweep folder (default runs/CHAPTER/sweep-PROFILE-KEYS); finished points "
                                  "in it are skipped")
    sw.add_argument("--max-parallel", type=int, default=1, help="points running at once (local: processes; "
                                                                "slurm: array tasks)")
    sw.add_argument("--partition", default="", help="slurm: partition")
    sw.add_argument("--gpus-per-job", type=int, default=1, help="slurm: GPUs per point (default 1)")
    sw.add_argument("--cpus-per-job", type=int, default=8, help="slurm: CPUs per point (default 8)")
    sw.add_argument("--mem-gb", type=float, default=0.0, help="slurm: memory per point in GB (default: the "
                                                              "partition's)")
    sw.add_argument("--time-limit", type=int, default=24 * 60, help="slurm: minutes per point (default 1440)")
    sw.add_argument("--setup", action="append", default=[], help="slurm: a shell line run before each point "
                                                                  "(repeatable, e.g. 'module load cuda')")
    sw.add_argument("--wait", action="store_true", help="slurm: wait for the array, then merge its metrics")
    sw.add_argument("--timeout", type=float, default=None, help="per-cell timeout in seconds, for every point")
    b = sub.add_parser("book", help="execute every chapter (cached) and build the site")
    b.add_argument("--profile", default="book", choices=PROFILE_NAMES)
    b.add_argument("--chapter", action="append", help="only these chapters (repeatable)")
    b.add_argument("--out", default=None, help="folder that receives _build/html (default: the repository)")
    b.add_argument("--force", action="store_true", help="ignore the execution cache")
    b.add_argument("--no-strict", action="store_true", help="do not treat Sphinx warnings as errors")
    rb = sub.add_parser("robustness", help="run chapters once per base seed (cached) and tabulate findings x seeds")
    rb.add_argument("chapter", nargs="*", help="chapters (default: all)")
    rb.add_argument("--seeds", default="0,1,2", help="comma-separated base seeds (default 0,1,2)")
    rb.add_argument("--profile", default="book", choices=PROFILE_NAMES)
    rb.add_argument("--force", action="store_true", help="ignore the execution cache")
    pd = sub.add_parser("pdf", help="the whole book as one PDF in _build/pdf (offline; needs chromium)")
    pd.add_argument("--profile", default="book", choices=PROFILE_NAMES)
    pd.add_argument("--out", default=None, help="output folder (default _build/pdf)")
    ho = sub.add_parser("handouts", help="student (no solutions) and instructor notebooks + zips in _build/handouts")
    ho.add_argument("chapter", nargs="*", help="chapters (default: all)")
    ho.add_argument("--out", default=None, help="output folder (default _build/handouts)")
    return p


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated non-negative integers, got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must be distinct non-negative integers, got {text!r}")
    return seeds


def _train(args) -> int:
    """``python -m repro train``: this node's share of a chapter's data-parallel training (no notebook)."""
    if args.profile not in PROFILE_NAMES:
        raise ConfigError(f"unknown profile {args.profile!r}: choose one of {', '.join(PROFILE_NAMES)}")
    ch = get_chapter(args.chapter)
    if not getattr(ch.config_class, "DATA_PARALLEL", False):
        raise ConfigError(f"chapter {ch.name!r} has no data-parallel training (its paper-profile section says why); "
                          "run it with `python -m repro run`")
    cfg = ch.config_class.for_profile(args.profile, **ch.config_class.parse_assignments(args.param))
    if not cfg.checkpoint_dir:
        raise ConfigError("`python -m repro train` needs -p checkpoint_dir=DIR: where rank 0 writes the results "
                          "and checkpoints (a notebook run with the same parameters finds them there)")
    if cfg.world_size == 1:
        raise ConfigError("`python -m repro train` launches torchrun: give -p nproc=N (and nnodes for several nodes)")
    from .distributed import run_parallel

    entry = ch.config_class.__module__.rpartition(".")[0] + ".experiments:train_parallel"
    run_parallel(entry, cfg, cfg.checkpoint_dir)
    where = "node 0's rank 0 writes them" if cfg.node_rank else "in " + cfg.checkpoint_dir
    print(f"[{ch.name} {args.profile}] data-parallel training done; results: {where}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "list":
            print(f"{'chapter':<16} {'smoke':>6} {'book':>6}  title / headline claim")
            for ch in all_chapters():
                b = ch.budget_s
                print(f"{ch.name:<16} {str(b.get('smoke', '-')) + 's':>6} {str(b.get('book', '-')) + 's':>6}  "
                      f"{ch.title}\n{'':<32}{ch.claim}")
            print("\nprofiles: smoke (CI, <=60 s), book (default, minutes on a laptop), paper (GPU, hours)")
            return 0
        if args.cmd == "params":
            ch = get_chapter(args.chapter)
            print(f"{ch.name}: {ch.config_class.__name__}\n{ch.config_class.describe()}")
            return 0
        if args.cmd == "run":
            from .runner import ChapterFailed, prepare, run_chapter

            if args.profile not in PROFILE_NAMES:
                raise ConfigError(f"unknown profile {args.profile!r}: choose one of {', '.join(PROFILE_NAMES)}")
            ch = get_chapter(args.chapter)
            overrides = ch.config_class.parse_assignments(args.param)
            prepare(args.chapter, args.profile, overrides)
            try:
                run_chapter(args.chapter, args.profile, overrides, args.out, timeout_s=args.timeout)
            except ChapterFailed as err:
                print(f"error: {err}", file=sys.stderr)
                return 1
            return 0
        if args.cmd == "train":
            return _train(args)
        if args.cmd == "sweep":
            from .sweep import EXECUTORS, SlurmResources, run_sweep

            if args.profile not in PROFILE_NAMES:
                raise ConfigError(f"unknown profile {args.profile!r}: choose one of {', '.join(PROFILE_NAMES)}")
            if args.executor not in EXECUTORS:
                raise ConfigError(f"unknown executor {args.executor!r}: choose one of {', '.join(EXECUTORS)}")
            slurm = SlurmResources(args.partition, args.gpus_per_job, args.cpus_per_job, args.mem_gb,
                                   args.time_limit, args.max_parallel, tuple(args.setup))
            return run_sweep(args.chapter, args.profile, args.param, args.executor, args.out, args.max_parallel,
                             slurm, args.wait, args.timeout)
        if args.cmd == "book":
            from .book import make_book

            return make_book(args.profile, args.chapter, args.out, force=args.force, strict=not args.no_strict)
        if args.cmd == "pdf":
            from .pdf import main as pdf_main

            return pdf_main(["--profile", args.profile] + (["--out", args.out] if args.out else []))
        if args.cmd == "handouts":
            for name in args.chapter:
                get_chapter(name)
            from .handouts import build_handouts

            build_handouts(args.chapter or None, args.out)
            return 0
        if args.cmd == "robustness":
            seeds = _seeds(args.seeds)
            for name in args.chapter:
                get_chapter(name)  # unknown names fail before any work
            from .robustness import run_robustness

            return run_robustness(args.chapter or None, seeds, args.profile, force=args.force)
    except (ConfigError, ChapterError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
