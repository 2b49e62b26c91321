"""Run one chapter headless: jupytext -> papermill -> executed notebook + metrics.json.

``python -m repro run CHAPTER --profile P -p key=value --out DIR`` lands here.
Everything that can be checked (chapter name, profile, every parameter) is
checked before a kernel starts; an existing non-empty output folder is never
written into.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .catalog import Chapter, get_chapter
from .config import ConfigError
from .paths import repo_root


class ChapterFailed(RuntimeError):
    """A chapter raised while executing."""

    def __init__(self, chapter: str, cell: int | None, ename: str, evalue: str, notebook: Path, source: str = ""):
        self.chapter, self.cell, self.ename, self.evalue, self.notebook = chapter, cell, ename, evalue, notebook
        first = (source.strip().splitlines() or [""])[0][:60]
        where = f"cell {cell} ({first!r})" if cell is not None else "an unknown cell"
        super().__init__(f"chapter '{chapter}' failed in {where}: {ename}: {evalue} (executed notebook: {notebook})")


@dataclass
class RunResult:
    chapter: str
    profile: str
    out: Path
    notebook: Path
    metrics: dict
    wall_time_s: float


def _progress_engine():
    """A papermill engine that prints one line per code cell (chapter, cell, elapsed)."""
    from papermill.engines import NBClientEngine

    class ProgressEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
            prefix = kwargs.pop("progress_prefix", "")
            stream = kwargs.pop("progress_stream", sys.stderr)
            code_cells = [i for i, c in enumerate(nb_man.nb.cells) if c.cell_type == "code"]
            numbers = {idx: n + 1 for n, idx in enumerate(code_cells)}
            t0 = time.time()
            starts: dict[int, float] = {}
            orig_start, orig_complete = nb_man.cell_start, nb_man.cell_complete

            def cell_start(cell, cell_index=None, **kw):
                starts[cell_index] = time.time()
                if cell_index in numbers:
                    first = (cell.source.strip().splitlines() or [""])[0][:60]
                    print(f"{prefix} cell {numbers[cell_index]}/{len(code_cells)} "
                          f"[{time.time() - t0:6.1f}s] {first}", file=stream, flush=True)
                return orig_start(cell, cell_index, **kw)

            def cell_complete(cell, cell_index=None, **kw):
                took = time.time() - starts.get(cell_index, time.time())
                if cell_index in numbers and took >= 2:
                    print(f"{prefix} cell {numbers[cell_index]}/{len(code_cells)} done in {took:.1f}s",
                          file=stream, flush=True)
                return orig_complete(cell, cell_index, **kw)

            nb_man.cell_start, nb_man.cell_complete = cell_start, cell_complete
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    return ProgressEngine


class _Tee:
    """Cell output goes to run.log in full and, line by line with a prefix, to the console."""

    def __init__(self, log, stream, prefix: str):
        self.log, self.stream, self.prefix = log, stream, prefix

    def write(self, text: str) -> int:
        self.log.write(text)
        self.log.flush()
        for line in text.splitlines():
            if line.strip():
                print(f"{self.prefix}   {line}", file=self.stream, flush=True)
        return len(text)

    def flush(self) -> None:
        self.log.flush()


def default_out(chapter: str, profile: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = repo_root() / "runs" / chapter / f"{profile}-{stamp}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def prepare(name: str, profile: str = "book", overrides: dict[str, Any] | None = None) -> tuple[Chapter, Any]:
    """Validate the chapter, profile and overrides; return the chapter and its config."""
    chapter = get_chapter(name)
    config = chapter.config_class.for_profile(profile, **(overrides or {}))
    return chapter, config


def _output_folder(out: str | Path | None, name: str, profile: str) -> Path:
    """The run's output folder: new or empty (earlier runs are never written into)."""
    out = Path(out) if out else default_out(name, profile)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"output folder {out} exists and is not empty; choose another --out "
                          "(earlier runs are never overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    return out.resolve()


class _RunEnvironment:
    """Sets the variables the chapter's kernel reads (run folder, repository, inline plots); restores them."""

    KEYS = ("REPRO_RUN_DIR", "REPRO_ROOT", "MPLBACKEND")

    def __init__(self, out: Path):
        self.values = {"REPRO_RUN_DIR": str(out), "REPRO_ROOT": str(repo_root()),
                       "MPLBACKEND": "module://matplotlib_inline.backend_inline"}

    def __enter__(self):
        self.before = {k: os.environ.get(k) for k in self.KEYS}
        os.environ.update(self.values)
        return self

    def __exit__(self, *exc):
        for k, v in self.before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _execute(chapter: Chapter, name: str, profile: str, typed: dict, out: Path, stream, timeout_s) -> Path:
    """Papermill the chapter into ``out``; cell output to run.log and the console.  Returns the notebook."""
    import jupytext
    import papermill as pm
    from papermill.engines import papermill_engines
    from papermill.exceptions import PapermillExecutionError

    executed = out / f"{name}.ipynb"
    prefix = f"[{name} {profile}]"
    papermill_engines.register("repro-progress", _progress_engine())
    nb = jupytext.read(chapter.path)
    print(f"{prefix} running {chapter.path.name} -> {out}", file=stream, flush=True)
    try:
        with _RunEnvironment(out), open(out / "run.log", "w") as log:
            tee = _Tee(log, stream, prefix)
            pm.execute_notebook(
                nb, str(executed), parameters={"profile": profile, "overrides": typed},
                engine_name="repro-progress", kernel_name="python3", cwd=str(out),
                progress_bar=False, log_output=True, stdout_file=tee, stderr_file=tee,
                execution_timeout=timeout_s, progress_prefix=prefix, progress_stream=stream)
    except PapermillExecutionError as err:
        raise ChapterFailed(name, err.cell_index, err.ename, err.evalue, executed, err.source) from None
    return executed


def _finish_metrics(name: str, config, typed: dict, out: Path, executed: Path, wall: float) -> dict:
    """Add the runner's facts (wall time, parameters, overrides) to the chapter's metrics.json."""
    metrics_path = out / "metrics.json"
    if not metrics_path.exists():
        raise ChapterFailed(name, None, "MissingMetrics", "the chapter did not call run.finish()", executed)
    metrics = json.loads(metrics_path.read_text())
    metrics.update(wall_time_s=round(wall, 2), parameters=config.to_dict(), overrides=typed,
                   notebook=executed.name, run_dir=str(out))
    metrics_path.write_text(json.dumps(metrics, indent=2))
    return metrics


def run_chapter(name: str, profile: str = "book", overrides: dict[str, Any] | None = None,
                out: str | Path | None = None, *, stream=None, timeout_s: float | None = None) -> RunResult:
    """Execute chapter ``name`` at ``profile``; return where its outputs went.

    Phases: validate the request and prepare the output folder; execute the
    notebook through papermill; complete metrics.json and report.  Raises
    ChapterError / ConfigError before any work if the request is bad, and
    ChapterFailed (naming the cell) if the notebook raises.
    """
    overrides = dict(overrides or {})
    chapter, config = prepare(name, profile, overrides)
    out = _output_folder(out, name, profile)
    stream = stream or sys.stderr
    # the parameters we pass are the *validated* values, so the kernel sees typed data
    typed = {k: getattr(config, k) for k in overrides}
    typed = {k: list(v) if isinstance(v, tuple) else v for k, v in typed.items()}
    t0 = time.time()
    executed = _execute(chapter, name, profile, typed, out, stream, timeout_s)
    wall = time.time() - t0
    metrics = _finish_metrics(name, config, typed, out, executed, wall)
    budget = chapter.budget_s.get(profile)
    over = f" (over its {budget}s budget)" if budget and wall > budget else ""
    print(f"[{name} {profile}] done in {wall:.1f}s{over}: {metrics['findings_reproduced']}/"
          f"{metrics['findings_evaluated']} findings reproduced; outputs in {out}", file=stream, flush=True)
    return RunResult(name, profile, out, executed, metrics, wall)
