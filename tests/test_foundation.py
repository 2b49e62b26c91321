"""The book's foundation: configs, scorecard, runner, CLI, cache, pinned environment."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from repro import book as book_mod
from repro.catalog import ChapterError, all_chapters, get_chapter
from repro.config import ConfigError, ProfileConfig, param
from repro.scorecard import (FAILS, INCONCLUSIVE, NOT_EVALUATED, NOT_REPRODUCED, PASSES, REPRODUCED, Above,
                             Below, Claim, EverySeed, Greater, Holds, Less, Scorecard, Within)

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


CLAIMS = (
    Claim("gap", "finding", "a beats b", "paper: yes", Greater("score", "a", "b")),
    Claim("low", "finding", "x is small", "< 1", Below("x", 1.0)),
    Claim("exact", "check", "matches the reference", "exact", Holds("max error < 1e-9")),
    Claim("mono", "theorem", "L_k rises with k", "eq. 1", Holds("non-decreasing")),
    Claim("gpu", "finding", "paper-scale number", "79.1", Above("score", 0.5), needs="paper profile"),
)


def test_scorecard_counts_findings_only_and_renders_two_tables():
    sc = Scorecard("toy", "book", CLAIMS)
    sc.evaluate("gap", a=[10.0, 11.0, 12.0], b=[1.0, 2.0, 3.0])
    sc.evaluate("low", values=[0.9, 1.2, 1.0])          # mean 1.03: points the wrong way
    sc.evaluate("exact", ok=3e-12 < 1e-9, value="3e-12")
    sc.evaluate("mono", ok=False, value="L_5 < L_1")
    sc.not_evaluated("gpu")
    status = {r.id: r.status for r in sc.rows}
    assert status == {"gap": REPRODUCED, "low": NOT_REPRODUCED, "exact": PASSES, "mono": FAILS,
                      "gpu": NOT_EVALUATED}
    c = sc.counts()
    assert (c["findings_reproduced"], c["findings_evaluated"], c["findings_not_evaluated"]) == (1, 2, 1)
    assert (c["checks_passed"], c["checks_evaluated"]) == (1, 2)
    html = sc._repr_html_()
    assert html.count("<table") == 2 and "Implementation checks" in html
    assert "findings reproduced 1/2" in sc.summary()
    gap = next(r for r in sc.rows if r.id == "gap")
    assert "2 s.e." in gap.rule and "≥ 3 seeds" in gap.rule and "difference 9" in gap.ours
    assert next(r for r in sc.rows if r.id == "gpu").note == "paper profile"
    with pytest.raises(ValueError, match="twice"):
        sc.evaluate("gap", a=[1], b=[0])
    with pytest.raises(KeyError, match="no claim 'nope'"):
        sc.evaluate("nope", a=[1], b=[0])


def test_every_declared_claim_must_be_recorded():
    sc = Scorecard("toy", "book", CLAIMS)
    sc.evaluate("gap", a=[1, 2, 3], b=[0, 0, 0])
    with pytest.raises(RuntimeError, match="low, exact, mono, gpu"):
        sc.complete()


def test_claim_declarations_are_checked():
    with pytest.raises(ValueError, match="kind"):
        Claim("x", "result", "s", "p", Greater())
    with pytest.raises(ValueError, match="statistical rule"):
        Claim("x", "finding", "s", "p", Holds())
    with pytest.raises(ValueError, match="duplicate"):
        Scorecard("toy", "book", CLAIMS + CLAIMS[:1])
    sc = Scorecard("toy", "book", (Claim("x", "finding", "s", "p", Greater()),))
    with pytest.raises(ValueError, match="say which profile"):
        sc.not_evaluated("x")


def _status(rule, **values):
    sc = Scorecard("toy", "book", (Claim("c", "finding", "s", "p", rule),))
    return sc.evaluate("c", **values).status


@pytest.mark.parametrize("rule, reproduced, inconclusive, not_reproduced", [
    (Greater(), dict(a=[5, 6, 7], b=[1, 2, 3]), dict(a=[3, 5, 7], b=[2, 4, 6]), dict(a=[1, 2, 3], b=[1, 2, 4])),
    (Greater(paired=True), dict(a=[2.1, 3.1, 4.1], b=[2, 3, 4]), dict(a=[2.5, 2.9, 4.1], b=[2, 3, 4]),
     dict(a=[1.9, 2.9, 4.0], b=[2, 3, 4])),
    (Less(), dict(a=[1, 2, 3], b=[5, 6, 7]), dict(a=[2, 4, 6], b=[3, 5, 7]), dict(a=[5, 6, 7], b=[1, 2, 3])),
    (Above(threshold=10), dict(values=[20, 21, 22]), dict(values=[5, 12, 20]), dict(values=[9, 10, 10])),
    (Below(threshold=0.1), dict(values=[0.01, 0.02, 0.03]), dict(values=[0.0, 0.05, 0.2]),
     dict(values=[0.1, 0.2, 0.3])),
    (Within(target=0, tol=0.1), dict(values=[0.01, -0.01, 0.0]), dict(values=[0.09, -0.05, 0.1]),
     dict(values=[0.2, 0.3, 0.25])),
    (EverySeed("ratio >= 10"), dict(passed=[True] * 3), dict(passed=[True, True, False]),
     dict(passed=[True, False, False])),
])
def test_rules_give_each_status_on_synthetic_seeds(rule, reproduced, inconclusive, not_reproduced):
    assert _status(rule, **reproduced) == REPRODUCED
    assert _status(rule, **inconclusive) == INCONCLUSIVE
    assert _status(rule, **not_reproduced) == NOT_REPRODUCED


def test_too_few_seeds_is_at_most_inconclusive():
    assert _status(Greater(), a=[5, 6], b=[1, 2]) == INCONCLUSIVE
    assert _status(EverySeed(), passed=[True, True]) == INCONCLUSIVE
    assert _status(Above(threshold=0, min_seeds=1), values=[3.0]) == REPRODUCED
    assert _status(Greater(), a=[float("nan")] * 3, b=[1, 2, 3]) == NOT_REPRODUCED


# a literal decision fed to a scorecard: what the scan below forbids
HAND_SET = re.compile(r"(evaluate|check)\([^()]*?\b(ok|passed|holds)\s*=\s*\[?\s*(True|False)\b"
                      r"|\bholds\s*=\s*(True|False)\b|status\s*=\s*(REPRODUCED|PASSES|[\"']reproduced[\"'])")


def test_the_hand_set_status_scan_catches_literals():
    bad = ['sc.evaluate("x", ok=True, value="1")', 'sc.evaluate("x",\n  passed=[True, True])',
           'sc.check("a", "s", 1, 1, holds=True)', 'row.status = "reproduced"']
    good = ['sc.evaluate("x", ok=err < 1e-9, value=err)', 'ok = True  # a sandbox flag',
            'sc.evaluate("x", passed=[r >= 10 for r in ratio])']
    assert all(HAND_SET.search(b) for b in bad)
    assert not any(HAND_SET.search(g) for g in good)


def test_no_status_is_set_by_hand():
    """Statuses come from rules: no literal decision is fed to a scorecard anywhere in the book or library."""
    sources = list((ROOT / "book").glob("*.md")) + [p for p in (ROOT / "lib").rglob("*.py")
                                                    if p.name != "scorecard.py"]
    offenders = [f"{p.relative_to(ROOT)}: {m.group(0)!r}" for p in sources
                 for m in HAND_SET.finditer(p.read_text())]
    assert not offenders, "statuses must be decided by rules:\n" + "\n".join(offenders)


def test_dependencies_follow_imports_transitively():
    deps = {p.name for p in book_mod.dependencies("from repro.grokking import train\nimport numpy")}
    assert {"grokking.py", "config.py", "device.py", "__init__.py"} <= deps
    assert "runner.py" not in deps and "book.py" not in deps
    assert book_mod.dependencies("import numpy as np") == []
    rel = book_mod._imports("from .config import param\nfrom . import device", "repro.grokking")
    assert {"repro.config", "repro.device"} <= rel


def test_cache_reexecutes_exactly_the_changed_chapters(tmp_path, monkeypatch):
    calls = []

    def fake_run(name, profile, overrides=None, stream=None):
        calls.append(name)
        out = tmp_path / "runs" / f"{name}-{len(calls)}"
        out.mkdir(parents=True)
        m = {"wall_time_s": 1.0, "findings_reproduced": 1, "findings_evaluated": 1}
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
    assert "findings reproduced" in table and "grokking" in table


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
