"""``python -m repro sweep``: a grid of chapter runs on this machine or as a Slurm job array.

    python -m repro sweep rnd --profile book -p seed=0,1,2 -p lr=1e-3,3e-4 --executor local --max-parallel 2
    python -m repro sweep grokking --profile paper -p seed=0,1,2 --executor slurm --partition gpu \\
        --gpus-per-job 1 --time-limit 1440

1. **The grid.**  Every ``-p key=v1,v2,...`` is one axis (a key given one value
   is fixed for every point); for a parameter that is itself a tuple
   (``fractions``, ``methods``) the points are separated by ``;``
   (``-p "fractions=0.5,0.6;0.7,0.8"``: two points).  Every point's config is
   built and validated before anything runs (:func:`expand`).
2. **One run per point.**  A point is the command ``python -m repro run
   CHAPTER --profile P -p key=value ... --out SWEEP/<point>`` (:func:`point_command`),
   with its own output folder named after its swept values (and, for a
   chapter with ``checkpoint_dir``, its own checkpoint folder
   ``SWEEP/<point>.ckpt``, so a point rerun after a failure or a time limit
   resumes).  A point whose
   folder already holds a ``metrics.json`` is skipped (after checking the run
   had this point's parameters), so a sweep that is run again only runs what
   is missing.
3. **Executors.**  ``local`` runs at most ``--max-parallel`` points at a time
   as subprocesses of this machine (each point's console output goes to
   ``SWEEP/<point>.log``); a point that failed before is moved aside
   (``<point>.incomplete-N``) and rerun.  ``slurm`` submits the missing points
   as one job array through ``submitit`` (partition, GPUs, CPUs, memory and
   time limit per job; ``--max-parallel`` caps the array's running tasks);
   a point folder without metrics is then a job still running (or one that
   failed) and is left alone.  ``--wait`` waits for the array.
4. **The robustness table.**  The finished points' metrics are merged into
   ``_build/robustness/<profile>.json`` (:func:`repro.robustness.merge_points`),
   which the next ``make book`` shows on the Reproduction status page: a
   point that differs from the profile only in its seed is that base seed's
   column (shared with ``make robustness``), any other point gets a column
   labelled with its parameters.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import types
import typing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .catalog import get_chapter
from .config import ConfigError
from .launch import LAUNCH_FIELDS
from .paths import repo_root

EXECUTORS = ("local", "slurm")
# parameters that change where or how a run executes, not what it computes: left out of column labels
EXECUTION_ONLY = (*LAUNCH_FIELDS, "device", "checkpoint_dir", "checkpoint_every", "progress_every_s", "workers")


@dataclass(frozen=True)
class SweepPoint:
    """One run of a sweep: its ``-p`` assignments (raw strings, as typed), typed overrides and names."""

    assignments: tuple[tuple[str, str], ...]  # every key=value of the point, fixed ones included
    swept: tuple[tuple[str, str], ...]        # the values of the swept keys only
    overrides: dict                           # typed, as the runner passes them (tuples as lists)
    label: str                                # its column in the robustness table

    @property
    def name(self) -> str:
        """The point's folder name: its swept values, made file-name safe (a hash keeps it unique)."""
        raw = "_".join(f"{k}-{v}" for k, v in self.swept) or "default"
        safe = re.sub(r"[^A-Za-z0-9.+=-]+", "_", raw)
        return safe if safe == raw else f"{safe}-{hashlib.sha1(raw.encode()).hexdigest()[:6]}"


def _is_tuple(config_class, key: str) -> bool:
    hint = typing.get_type_hints(config_class)[key]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) is tuple


def parse_grid(config_class, pairs: list[str]) -> list[tuple[str, list[str]]]:
    """``["seed=0,1,2", "lr=1e-3"]`` -> ``[("seed", ["0", "1", "2"]), ("lr", ["1e-3"])]``, checked.

    Values of a tuple-typed parameter are separated by ``;`` (each value is a
    comma-separated tuple), of any other parameter by ``,``.
    """
    known = config_class.parameters()
    axes: list[tuple[str, list[str]]] = []
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"expected key=value[,value...], got {pair!r}")
        key, raw = (x.strip() for x in pair.split("=", 1))
        if key not in known:
            raise ConfigError(f"unknown parameter {key!r} for {config_class.__name__}; allowed: {', '.join(known)}")
        if key in (k for k, _ in axes):
            raise ConfigError(f"parameter {key!r} is given twice; list its values once, e.g. {key}=a,b")
        values = [v.strip() for v in raw.split(";" if _is_tuple(config_class, key) else ",")]
        if not values or any(v == "" for v in values):
            raise ConfigError(f"parameter {key!r} has an empty value in {pair!r}")
        if len(set(values)) != len(values):
            raise ConfigError(f"parameter {key!r} repeats a value in {pair!r}")
        axes.append((key, values))
    return axes


def _label(config_class, profile: str, overrides: dict) -> str:
    """The robustness column of a point: its seed alone if nothing else differs from the profile."""
    base = config_class.for_profile(profile).to_dict()
    cfg = config_class.for_profile(profile, **overrides).to_dict()
    differs = {k: cfg[k] for k in overrides if cfg[k] != base[k] and k not in EXECUTION_ONLY and k != "seed"}
    if not differs:
        return str(cfg["seed"])
    text = " ".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in differs.items())
    return f"{text} seed={cfg['seed']}"


def expand(chapter: str, profile: str, pairs: list[str], checkpoints_in: Path | None = None) -> list[SweepPoint]:
    """Every point of the grid, each config built and validated (ConfigError before anything runs).

    With ``checkpoints_in`` (the sweep folder), a chapter that has a
    ``checkpoint_dir`` parameter the grid does not set checkpoints each point
    into ``checkpoints_in/<point>.ckpt``: outside the point's run folder, so a
    point rerun after a failure or a time limit resumes from them.
    """
    config_class = get_chapter(chapter).config_class
    axes = parse_grid(config_class, pairs)
    swept_keys = [k for k, vs in axes if len(vs) > 1]
    own_checkpoints = checkpoints_in is not None and "checkpoint_dir" in config_class.parameters() and \
        "checkpoint_dir" not in (k for k, _ in axes)
    points = []
    for combo in itertools.product(*(vs for _, vs in axes)):
        assignments = tuple((k, v) for (k, _), v in zip(axes, combo))
        swept = tuple((k, v) for k, v in assignments if k in swept_keys)
        if own_checkpoints:
            name = SweepPoint(assignments, swept, {}, "").name
            assignments += (("checkpoint_dir", str(Path(checkpoints_in) / f"{name}.ckpt")),)
        overrides = config_class.parse_assignments([f"{k}={v}" for k, v in assignments])
        config = config_class.for_profile(profile, **overrides)  # cross-field rules too
        typed = {k: list(v) if isinstance(v := getattr(config, k), tuple) else v for k in overrides}
        points.append(SweepPoint(assignments, swept, typed, _label(config_class, profile, overrides)))
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        raise ConfigError("two points of the grid would share an output folder")
    return points


def point_command(chapter: str, profile: str, point: SweepPoint, out: Path, timeout_s: float | None = None,
                  python: str | None = None) -> list[str]:
    """``python -m repro run CHAPTER --profile P -p k=v ... --out OUT`` for one point."""
    cmd = [python or sys.executable, "-m", "repro", "run", chapter, "--profile", profile]
    for k, v in point.assignments:
        cmd += ["-p", f"{k}={v}"]
    cmd += ["--out", str(out)]
    return cmd + (["--timeout", str(timeout_s)] if timeout_s else [])


def default_folder(chapter: str, profile: str, points: list[SweepPoint]) -> Path:
    """``runs/<chapter>/sweep-<profile>-<swept keys>``: the same folder when the same sweep is run again."""
    keys = "-".join(k for k, _ in points[0].swept) if points and points[0].swept else "default"
    return repo_root() / "runs" / chapter / f"sweep-{profile}-{keys}"


def point_state(point: SweepPoint, folder: Path) -> str:
    """``done`` (metrics.json of this point's parameters), ``missing`` (no folder or an empty one) or
    ``incomplete`` (a run that failed or is still running).  A finished run of other parameters is an error."""
    out = folder / point.name
    metrics = out / "metrics.json"
    if metrics.exists():
        m = json.loads(metrics.read_text())
        if m.get("overrides") is not None and json.loads(json.dumps(m["overrides"])) != \
                json.loads(json.dumps(point.overrides)):
            raise ConfigError(f"{out} holds a run with other parameters ({m['overrides']}, not {point.overrides}); "
                              "choose another --out for this sweep")
        return "done"
    if not out.exists() or not any(out.iterdir()):
        return "missing"
    return "incomplete"


def _move_aside(path: Path) -> Path:
    n = 1
    while path.with_name(f"{path.name}.incomplete-{n}").exists():
        n += 1
    target = path.with_name(f"{path.name}.incomplete-{n}")
    path.rename(target)
    return target


# ---------------------------------------------------------------------------
# Executors
# ---------------------------------------------------------------------------


def run_local(chapter: str, profile: str, points: list[SweepPoint], folder: Path, max_parallel: int = 1,
              timeout_s: float | None = None, stream=None) -> dict[str, int]:
    """Run ``points`` as ``repro run`` subprocesses, at most ``max_parallel`` at a time; return exit codes by name.

    Points running side by side share the cores: unless ``REPRO_THREADS`` is
    set, each gets ``cores // max_parallel`` torch threads (more threads than
    cores made two tiny runs on 2 cores several times slower here).
    """
    stream = stream or sys.stderr
    env = dict(os.environ)
    if max_parallel > 1 and "REPRO_THREADS" not in env:
        env["REPRO_THREADS"] = str(max(1, (os.cpu_count() or 1) // max_parallel))

    def one(point: SweepPoint) -> int:
        out = folder / point.name
        if out.exists() and any(out.iterdir()):
            print(f"[sweep] {point.name}: an earlier run did not finish; moved to {_move_aside(out).name}",
                  file=stream, flush=True)
        t0 = time.time()
        with open(folder / f"{point.name}.log", "w") as log:
            code = subprocess.run(point_command(chapter, profile, point, out, timeout_s), cwd=repo_root(),
                                  stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        state = "done" if code == 0 else f"FAILED (exit {code}; see {point.name}.log)"
        print(f"[sweep] {point.name}: {state} in {time.time() - t0:.0f}s", file=stream, flush=True)
        return code

    with ThreadPoolExecutor(max(1, max_parallel)) as pool:
        return dict(zip((p.name for p in points), pool.map(one, points)))


class PointJob:
    """What one Slurm array task runs: a point's ``repro run`` command in the repository (picklable)."""

    def __init__(self, command: list[str], cwd: str):
        self.command, self.cwd = list(command), cwd

    def __call__(self) -> str:
        subprocess.run(self.command, cwd=self.cwd, check=True)
        return self.command[self.command.index("--out") + 1]

    def __repr__(self) -> str:
        return f"PointJob({shlex.join(self.command)})"


@dataclass(frozen=True)
class SlurmResources:
    """Per job of the array: partition, GPUs, CPUs, memory (GB, 0: the partition's default) and time limit (minutes)."""

    partition: str = ""
    gpus_per_job: int = 1
    cpus_per_job: int = 8
    mem_gb: float = 0.0
    time_limit_min: int = 24 * 60
    max_parallel: int = 16
    setup: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("gpus_per_job", "cpus_per_job", "time_limit_min", "max_parallel"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < (0 if name == "gpus_per_job" else 1):
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")


def slurm_executor(folder: Path, chapter: str, res: SlurmResources):
    """A submitit ``SlurmExecutor`` (logs and pickles in ``folder/slurm``) with ``res`` as its sbatch parameters.

    submitit refuses to build one where ``srun`` is missing (not a Slurm cluster).
    """
    import submitit

    if shutil.which("srun") is None or shutil.which("sbatch") is None:
        raise ConfigError("--executor slurm needs a Slurm cluster: srun and sbatch are not on PATH here")
    executor = submitit.SlurmExecutor(folder=folder / "slurm", python=shlex.quote(sys.executable))
    params = dict(job_name=f"repro-{chapter}", time=res.time_limit_min, nodes=1, ntasks_per_node=1,
                  cpus_per_task=res.cpus_per_job, array_parallelism=res.max_parallel, stderr_to_stdout=True)
    if res.partition:
        params["partition"] = res.partition
    if res.gpus_per_job:
        params["gpus_per_node"] = res.gpus_per_job
    if res.mem_gb:
        params["mem"] = f"{int(res.mem_gb)}G" if float(res.mem_gb).is_integer() else f"{int(res.mem_gb * 1024)}M"
    if res.setup:
        params["setup"] = list(res.setup)
    executor.update_parameters(**params)
    return executor


def submit_slurm(chapter: str, profile: str, points: list[SweepPoint], folder: Path, res: SlurmResources,
                 timeout_s: float | None = None) -> list:
    """Submit ``points`` as one job array (one task per point); return submitit's jobs."""
    executor = slurm_executor(folder, chapter, res)
    jobs = [PointJob(point_command(chapter, profile, p, folder / p.name, timeout_s), str(repo_root()))
            for p in points]
    return executor.submit_array(jobs)


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------


def run_sweep(chapter: str, profile: str, pairs: list[str], executor: str = "local", out: str | Path | None = None,
              max_parallel: int = 1, slurm: SlurmResources | None = None, wait: bool = False,
              timeout_s: float | None = None, stream=None) -> int:
    """Expand the grid, run (or submit) the points that have no results yet, merge the finished ones into the
    robustness table; return an exit code (1 if a local point failed)."""
    stream = stream or sys.stderr
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    if max_parallel < 1:
        raise ConfigError(f"--max-parallel must be at least 1, got {max_parallel}")
    if executor == "slurm" and (shutil.which("srun") is None or shutil.which("sbatch") is None):
        raise ConfigError("--executor slurm needs a Slurm cluster: srun and sbatch are not on PATH here")
    folder = (Path(out) if out else default_folder(chapter, profile, expand(chapter, profile, pairs))).resolve()
    points = expand(chapter, profile, pairs, checkpoints_in=folder)
    folder.mkdir(parents=True, exist_ok=True)
    states = {p.name: point_state(p, folder) for p in points}
    done = [p for p in points if states[p.name] == "done"]
    print(f"[sweep] {chapter} at {profile}: {len(points)} points in {folder}; {len(done)} already done",
          file=stream, flush=True)
    code = 0
    if executor == "local":
        todo = [p for p in points if states[p.name] != "done"]
        codes = run_local(chapter, profile, todo, folder, max_parallel, timeout_s, stream) if todo else {}
        code = int(any(codes.values()))
    else:
        running = [p.name for p in points if states[p.name] == "incomplete"]
        if running:
            print(f"[sweep] left alone (running, or failed: move the folder away to resubmit): {', '.join(running)}",
                  file=stream, flush=True)
        todo = [p for p in points if states[p.name] == "missing"]
        if todo:
            res = slurm or SlurmResources(max_parallel=max_parallel)
            jobs = submit_slurm(chapter, profile, todo, folder, res, timeout_s)
            print(f"[sweep] submitted {len(jobs)} Slurm job(s) ({jobs[0].job_id.split('_')[0]}); logs in "
                  f"{folder / 'slurm'}" + ("" if wait else "; run this command again when they have finished to "
                                           "merge their metrics"), file=stream, flush=True)
            if wait:
                for job in jobs:
                    try:
                        job.result()
                    except Exception as err:  # noqa: BLE001 - a failed point is reported, the others still merge
                        print(f"[sweep] job {job.job_id} failed: {str(err).splitlines()[-1] if str(err) else err}",
                              file=stream, flush=True)
                        code = 1
    finished = [p for p in points if point_state(p, folder) == "done"]
    if finished:
        from .robustness import merge_points

        path = merge_points(chapter, profile, [(p.label, folder / p.name) for p in finished])
        print(f"[sweep] {len(finished)}/{len(points)} points merged into {path} (and {path.with_suffix('.md').name})",
              file=stream, flush=True)
    return code


__all__ = ["EXECUTORS", "PointJob", "SlurmResources", "SweepPoint", "expand", "parse_grid", "point_command",
           "point_state", "run_local", "run_sweep", "slurm_executor", "submit_slurm"]
