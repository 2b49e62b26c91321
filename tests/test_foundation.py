"""The book's foundation: configs, scorecard, runner, CLI, cache, pinned environment."""
from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from repro import book as book_mod
from repro.chapters import ChapterError, all_chapters, get_chapter
from repro.config import ConfigError, ProfileConfig, param
from repro.report import NOT_EVALUATED, NOT_REPRODUCED, REPRODUCED, Scorecard

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Toy(ProfileConfig):
    k: int = param(5, "samples", min=1, max=100)
    rate: float = param(0.1, "a rate", min=0.0)
    mode: str = param("a", "mode", choices=("a", "b"))
    ks: tuple[int, ...] = param((1, 2), "several", min=1)
    flag: bool = param(False, "a switch")
    PROFILES = {"smoke": dict(k=2), "paper": dict(k=50, ks=(1, 5, 50))}


def test_profiles_and_overrides():
    assert Toy.for_profile("smoke").k == 2
    assert Toy.for_profile("book").k == 5
    assert Toy.for_profile("paper").ks == (1, 5, 50)
    c = Toy.for_profile("smoke", k=7, ks=[3, 4])
    assert (c.k, c.ks, c.profile) == (7, (3, 4), "smoke")
    assert c.to_dict()["ks"] == [3, 4]


@pytest.mark.parametrize("kw, msg", [
    (dict(kk=1), "unknown parameter 'kk'"),
    (dict(k=0), "'k' must be >= 1"),
    (dict(k=1000), "'k' must be <= 100"),
    (dict(k=2.5), "'k' must be an integer"),
    (dict(k=True), "'k' must be an integer"),
    (dict(rate="fast"), "'rate' must be a number"),
    (dict(mode="c"), "'mode' must be one of a, b"),
    (dict(ks=(1, 0)), "'ks' must be >= 1"),
    (dict(flag="maybe"), "'flag' must be true or false"),
    (dict(device="tpu"), "'device' must be"),
])
def test_bad_values_fail_with_the_parameter_named(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        Toy.for_profile("book", **kw)


def test_unknown_profile_and_string_parsing():
    with pytest.raises(ConfigError, match="unknown profile 'fast'"):
        Toy.for_profile("fast")
    parsed = Toy.parse_assignments(["k=3", "rate=1e-3", "mode=b", "ks=1,2,3", "flag=true"])
    assert parsed == {"k": 3, "rate": 1e-3, "mode": "b", "ks": (1, 2, 3), "flag": True}
    with pytest.raises(ConfigError, match="expected key=value"):
        Toy.parse_assignments(["k"])
    assert "samples" in Toy.describe()


def test_scorecard_statuses_and_rendering():
    sc = Scorecard("toy", "book")
    sc.check("a", "holds", 1.0, 1.0, True)
    sc.check("b", "fails", 1.0, 0.123456, False)
    sc.not_evaluated("c", "needs GPU", "x", "paper scale only")
    assert [c.status for c in sc.claims] == [REPRODUCED, NOT_REPRODUCED, NOT_EVALUATED]
    assert sc.n_reproduced == 1 and len(sc.evaluated) == 2
    assert sc.claims[1].ours == "0.1235"
    html = sc._repr_html_()
    assert "not reproduced" in html and "<table" in html and "1/2 claims reproduced" in html
    with pytest.raises(ValueError, match="duplicate"):
        sc.check("a", "again", 1, 1, True)


def test_chapters_discovered_in_toc_order():
    names = [c.name for c in all_chapters()]
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    listed = [Path(e["file"]).name for e in toc["chapters"] if (ROOT / (e["file"] + ".md")).exists()]
    assert names == listed and "grokking" in names
    for ch in all_chapters():
        assert issubclass(ch.config_class, ProfileConfig)
        assert ch.budget_s.get("smoke", 0) <= 60
    with pytest.raises(ChapterError, match="unknown chapter 'nope'"):
        get_chapter("nope")


def test_toc_lists_only_existing_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    for entry in [toc["root"]] + [e["file"] for e in toc["chapters"]]:
        assert (ROOT / (entry + ".md")).exists(), f"_toc.yml lists {entry} but the file is missing"


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "repro", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_cli_rejects_bad_requests_before_any_work(tmp_path):
    r = _cli("run", "nope", "--out", str(tmp_path / "a"))
    assert r.returncode == 2 and "unknown chapter 'nope'" in r.stderr and "grokking" in r.stderr
    r = _cli("run", "grokking", "-p", "stepz=3", "--out", str(tmp_path / "b"))
    assert r.returncode == 2 and "unknown parameter 'stepz'" in r.stderr and "steps" in r.stderr
    r = _cli("run", "grokking", "-p", "steps=-1", "--out", str(tmp_path / "c"))
    assert r.returncode == 2 and "'steps' must be >= 1" in r.stderr
    r = _cli("run", "grokking", "--profile", "huge", "--out", str(tmp_path / "d"))
    assert r.returncode == 2 and "unknown profile 'huge'" in r.stderr
    assert not any((tmp_path / x).exists() for x in "abcd")  # nothing was created
    old = tmp_path / "old"
    old.mkdir()
    (old / "metrics.json").write_text("{}")
    r = _cli("run", "grokking", "--profile", "smoke", "--out", str(old))
    assert r.returncode == 2 and "not empty" in r.stderr
    assert (old / "metrics.json").read_text() == "{}"  # an earlier run is never overwritten


def test_cli_list_and_params():
    r = _cli("list")
    assert r.returncode == 0 and "grokking" in r.stdout
    r = _cli("params", "grokking")
    assert r.returncode == 0 and "train_fraction" in r.stdout and "paper=97" in r.stdout


def test_dependencies_follow_imports_transitively():
    deps = {p.name for p in book_mod.dependencies("from repro.grokking import train\nimport numpy")}
    assert {"grokking.py", "config.py", "device.py", "__init__.py"} <= deps
    assert "runner.py" not in deps and "book.py" not in deps
    assert book_mod.dependencies("import numpy as np") == []
    rel = book_mod._imports("from .config import param\nfrom . import device", "repro.grokking")
    assert {"repro.config", "repro.device"} <= rel


def test_cache_reexecutes_exactly_the_changed_chapters(tmp_path, monkeypatch):
    calls = []

    def fake_run(name, profile, stream=None):
        calls.append(name)
        out = tmp_path / "runs" / f"{name}-{len(calls)}"
        out.mkdir(parents=True)
        m = {"wall_time_s": 1.0, "claims_reproduced": 1, "claims_evaluated": 1}
        (out / "metrics.json").write_text(json.dumps(m))
        (out / f"{name}.ipynb").write_text("{}")
        return type("R", (), {"out": out, "metrics": m})()

    extra = tmp_path / "extra.py"
    extra.write_text("x = 1\n")
    real_deps = book_mod.dependencies

    def deps(code):  # pretend the first chapter also imports a module we can edit
        found = real_deps(code)
        return found + [extra] if "repro.grokking" in code else found

    monkeypatch.setattr(book_mod, "run_chapter", fake_run)
    monkeypatch.setattr(book_mod, "dependencies", deps)
    names = [c.name for c in all_chapters()]
    first = book_mod.execute_all("smoke", cache_root=tmp_path / "cache")
    assert [o.status for o in first] == ["executed"] * len(names) and calls == names
    second = book_mod.execute_all("smoke", cache_root=tmp_path / "cache")
    assert [o.status for o in second] == ["cached"] * len(names) and calls == names
    extra.write_text("x = 2\n")  # a library change under grokking only
    third = book_mod.execute_all("smoke", cache_root=tmp_path / "cache")
    assert {o.chapter: o.status for o in third}["grokking"] == "executed"
    assert all(o.status == "cached" for o in third if o.chapter != "grokking")
    assert len(list((tmp_path / "cache" / "grokking").iterdir())) == 1  # one cached run per profile
    table = book_mod.table(third)
    assert "claims reproduced" in table and "grokking" in table


def _pins(lines):
    out = {}
    for line in lines:
        line = line.strip()
        if "==" in line and not line.startswith("#"):
            name, ver = line.split("==")
            out[name.lower().replace("_", "-")] = ver
    return out


def test_environment_yml_mirrors_the_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + [d for extra in project.get("optional-dependencies", {}).values() for d in extra]
    pins = _pins(deps)
    assert len(pins) == len(deps), "every dependency in pyproject.toml must be pinned with =="
    assert pins["torch"] == "2.13.0"
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip) == pins
    lock = _pins((ROOT / "requirements.lock").read_text().splitlines())
    for name, ver in pins.items():
        assert lock.get(name) == ver, f"requirements.lock has {name}=={lock.get(name)}, pyproject {ver}"


def test_ci_and_readme_use_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make book" in readme
