"""``python -m repro sweep``: the grid, the local executor (run, skip on re-run, merge) and a Slurm job array
built through submitit against stand-in ``srun``/``sbatch`` (nothing is submitted to a scheduler)."""
from __future__ import annotations

import io
import json
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest

import repro.robustness as robustness
from repro.cli import main as cli
from repro.config import ConfigError
from repro.sweep import SlurmResources, expand, parse_grid, point_command, run_sweep


def test_the_grid_expands_validates_and_names_its_points():
    from repro.chapters.grokking.config import GrokkingConfig

    points = expand("grokking", "smoke", ["seed=0,1", "lr=0.003,0.01", "steps=150"])
    assert [dict(p.assignments) for p in points] == [
        {"seed": "0", "lr": "0.003", "steps": "150"}, {"seed": "0", "lr": "0.01", "steps": "150"},
        {"seed": "1", "lr": "0.003", "steps": "150"}, {"seed": "1", "lr": "0.01", "steps": "150"}]
    assert [p.name for p in points] == ["seed-0_lr-0.003", "seed-0_lr-0.01", "seed-1_lr-0.003", "seed-1_lr-0.01"]
    assert points[1].overrides == {"seed": 0, "lr": 0.01, "steps": 150}
    assert [p.label for p in points] == ["steps=150 seed=0", "lr=0.01 steps=150 seed=0", "steps=150 seed=1",
                                         "lr=0.01 steps=150 seed=1"]
    # only the seed differs from the profile: the point is that base seed's column
    assert [p.label for p in expand("grokking", "smoke", ["seed=0,2"])] == ["0", "2"]
    # a tuple parameter separates its points with ';'
    tup = expand("grokking", "smoke", ["fractions=0.5,0.8;0.6", "symmetry_operations=x+y,x/y"])
    assert [p.overrides["fractions"] for p in tup] == [[0.5, 0.8], [0.6]]
    assert tup[0].overrides["symmetry_operations"] == ["x+y", "x/y"] and tup[0].name.startswith("fractions-0.5")
    assert parse_grid(GrokkingConfig, ["operation=x/y,x-y"]) == [("operation", ["x/y", "x-y"])]
    assert expand("grokking", "smoke", ["operation=x/y,x-y"])[0].name.startswith("operation-x_y-")  # file-safe
    cmd = point_command("grokking", "smoke", points[1], Path("/s/p"), python="py")
    assert cmd == ["py", "-m", "repro", "run", "grokking", "--profile", "smoke", "-p", "seed=0", "-p", "lr=0.01",
                   "-p", "steps=150", "--out", "/s/p"]
    for bad, match in [(["nope=1,2"], "unknown parameter 'nope'"), (["seed=0", "seed=1"], "given twice"),
                       (["seed=0,,1"], "empty value"), (["seed=0,0"], "repeats"), (["p=13,12"], "prime"),
                       (["lr=-1"], "must be >="), (["seed"], "key=value")]:
        with pytest.raises(ConfigError, match=match):
            expand("grokking", "smoke", bad)
    with pytest.raises(ConfigError, match="unknown executor 'pbs'"):
        run_sweep("grokking", "smoke", ["seed=0"], executor="pbs")
    assert cli(["sweep", "grokking", "-p", "seed=0", "--executor", "pbs"]) == 2
    if shutil.which("srun") is None:
        with pytest.raises(ConfigError, match="needs a Slurm cluster"):
            run_sweep("grokking", "smoke", ["seed=0"], executor="slurm")


def test_local_sweep_runs_two_points_skips_them_on_rerun_and_merges_the_table(tmp_path, monkeypatch):
    table = tmp_path / "robustness" / "smoke.json"
    monkeypatch.setattr(robustness, "results_path", lambda profile="book", root=None: table)
    out = tmp_path / "sweep"
    log = io.StringIO()
    assert run_sweep("grokking", "smoke", ["seed=0,1"], "local", out=out, max_parallel=2, stream=log) == 0
    for seed in (0, 1):
        m = json.loads((out / f"seed-{seed}" / "metrics.json").read_text())
        assert m["config"]["seed"] == seed and m["profile"] == "smoke"
    merged = json.loads(table.read_text())["grokking"]
    assert sorted(merged["seeds"]) == ["0", "1"]
    finding = merged["findings"]["grokking-delay"]
    assert set(finding["by_seed"]) == {"0", "1"} and finding["reproduced_seeds"] <= 2
    assert "| grokking | grokking-delay |" in table.with_suffix(".md").read_text()
    # the status page shows base seeds first, then points of other settings under their labels
    from repro.book import ChapterOutcome
    from repro.status import status_page

    rob = json.loads(table.read_text())
    rob["grokking"]["seeds"]["lr=0.01 seed=0"] = rob["grokking"]["seeds"]["0"]
    page = status_page([ChapterOutcome("grokking", "smoke", "cached", 1.0, 0, 3, out / "seed-0")], rob)
    assert "| status | seed 0 | seed 1 | lr=0.01 seed=0 |" in page
    stamps = {p: (out / p / "metrics.json").stat().st_mtime for p in ("seed-0", "seed-1")}
    again = io.StringIO()
    assert run_sweep("grokking", "smoke", ["seed=0,1"], "local", out=out, max_parallel=2, stream=again) == 0
    assert "2 already done" in again.getvalue() and ": done in" not in again.getvalue()
    assert stamps == {p: (out / p / "metrics.json").stat().st_mtime for p in stamps}, "finished points were rerun"
    # a folder holding a run of other parameters is never taken for this point's
    with pytest.raises(ConfigError, match="other parameters"):
        run_sweep("grokking", "smoke", ["seed=0,1", "steps=150"], "local", out=out)


def _stand_in(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_slurm_sweep_builds_a_job_array_with_the_points_commands_and_resources(tmp_path, monkeypatch):
    """submitit writes the sbatch script and pickles one task per point; a stand-in sbatch records it."""
    from submitit.core.utils import DelayedSubmission

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stand_in(bin_dir / "srun", "exit 0\n")
    _stand_in(bin_dir / "sbatch", f'cp "$1" {tmp_path}/sbatch-script.sh\necho "Submitted batch job 4242"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "sweep"
    (out / "seed-2").mkdir(parents=True)
    (out / "seed-2" / "run.log").write_text("a job still running")  # left alone, not resubmitted
    log = io.StringIO()
    res = SlurmResources(partition="gpu", gpus_per_job=2, cpus_per_job=12, mem_gb=64, time_limit_min=90,
                         max_parallel=3, setup=("module load cuda",))
    assert run_sweep("rnd", "paper", ["seed=0,1,2", "nproc=2"], "slurm", out=out, slurm=res, stream=log) == 0
    assert "submitted 2 Slurm job(s) (4242)" in log.getvalue() and "seed-2" in log.getvalue()
    script = (tmp_path / "sbatch-script.sh").read_text()
    for line in ["#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --cpus-per-task=12",
                 "#SBATCH --mem=64G", "#SBATCH --time=90", "#SBATCH --array=0-1%2", "#SBATCH --job-name=repro-rnd",
                 "#SBATCH --nodes=1", "module load cuda"]:
        assert line in script, line
    assert f"{sys.executable} -u -m submitit.core._submit" in script
    tasks = sorted((out / "slurm").glob("4242_*_submitted.pkl"))
    assert len(tasks) == 2
    commands = sorted(DelayedSubmission.load(t).function.command for t in tasks)
    root = Path(__file__).resolve().parents[1]
    assert commands == [[sys.executable, "-m", "repro", "run", "rnd", "--profile", "paper", "-p", f"seed={s}",
                         "-p", "nproc=2", "-p", f"checkpoint_dir={out / f'seed-{s}.ckpt'}", "--out", str(out / f"seed-{s}")]
                        for s in (0, 1)]
    assert all(DelayedSubmission.load(t).function.cwd == str(root) for t in tasks)
