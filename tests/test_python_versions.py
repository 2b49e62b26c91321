"""The Python versions the book supports (issue 17).

One range, declared in pyproject.toml ``requires-python``; environment.yml, the
classifiers and make's guard (.ci/check_python.sh) must say the same; make refuses
an unsupported interpreter in one line and never silently reuses a venv made by
another one; and every pin of requirements.lock resolves on every supported minor
(pip --dry-run --python-version, resolution only, one pip per version in parallel).
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / ".ci" / "check_python.sh"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
REQUIRES = PROJECT["requires-python"]
SPEC = SpecifierSet(REQUIRES)
# The supported minors; each is resolved at its lowest patch (3.11.0, 3.12.0, ...).
MINORS = ["3.11", "3.12", "3.13", "3.14"]
PATCHES = range(0, 40)  # patch releases a minor's requires-python sweep covers


def _minor_supported(minor: str) -> bool:
    return any(Version(f"{minor}.{p}") in SPEC for p in PATCHES)


# --------------------------------------------------------------- one declared range

def test_supported_minors_are_the_declared_range():
    assert [f"3.{m}" for m in range(6, 20) if _minor_supported(f"3.{m}")] == MINORS
    assert Version("3.11.0") in SPEC, "3.11.0 must be supported (Debian 12 ships 3.11.2)"
    assert Version("3.10.14") not in SPEC, "numpy 2.4 / pandas 3 / matplotlib 3.11 need 3.11"


def test_environment_yml_declares_the_same_range():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = [d for d in env["dependencies"] if isinstance(d, str) and re.match(r"python\b", d)]
    assert len(python) == 1, python
    assert SpecifierSet(python[0].removeprefix("python").strip()) == SPEC, (python[0], REQUIRES)


def test_classifiers_list_the_supported_minors():
    listed = [c.rsplit(" :: ", 1)[1] for c in PROJECT["classifiers"]
              if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    assert listed == MINORS


def test_makefile_guards_with_the_script_and_names_the_range():
    makefile = (ROOT / "Makefile").read_text()
    assert "PYTHON ?= python3" in makefile
    assert ".ci/check_python.sh --venv $(VENV)" in makefile
    assert f"CPython {REQUIRES}" in makefile, "the Makefile comment states the range"
    assert "requires-python" in CHECK.read_text(), "the script reads the range from pyproject.toml"


# ----------------------------------------------------- make's interpreter check, unit

def _fake_python(tmp_path: Path, version: str, impl: str = "CPython") -> Path:
    """A stand-in interpreter: answers the version query; ``-m venv DIR`` makes a
    venv whose bin/python is (a symlink to) itself; anything else (pip) is logged."""
    exe = tmp_path / f"python-{impl}-{version}"
    exe.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = -m ] && [ "$2" = venv ]; then\n'
        '  mkdir -p "$3/bin" && ln -s "$(readlink -f "$0")" "$3/bin/python" && echo "home = x" > "$3/pyvenv.cfg"\n'
        '  echo "venv $3" >> "$(dirname "$(readlink -f "$0")")/calls.log"; exit 0\n'
        "fi\n"
        'case "$*" in *sys.version_info*) echo "' + impl + " " + version + ' $(readlink -f "$0")"; exit 0;; esac\n'
        'echo "$*" >> "$(dirname "$(readlink -f "$0")")/calls.log"\n'
    )
    exe.chmod(0o755)
    return exe


def _check(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(CHECK), *map(str, args)], capture_output=True, text=True, timeout=60)


GRID = [f"3.{m}.{p}" for m in range(8, 17) for p in (0, 1, 2, 4, 5, 9)]


def test_check_accepts_exactly_the_declared_versions(tmp_path):
    for version in GRID:
        res = _check(_fake_python(tmp_path, version))
        assert (res.returncode == 0) == (Version(version) in SPEC), (version, res.stderr)


def test_check_rejects_an_old_python_in_one_line(tmp_path):
    res = _check(_fake_python(tmp_path, "3.9.0"))
    assert res.returncode == 1 and res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert "3.9.0" in lines[0] and REQUIRES in lines[0]
    assert "make setup PYTHON=" in lines[0]


@pytest.mark.parametrize("version", ["3.11.0", "3.11.2", "3.12.3", "3.14.2"])
def test_check_accepts_a_supported_python(tmp_path, version):
    res = _check(_fake_python(tmp_path, version))
    assert res.returncode == 0 and res.stdout == res.stderr == "", res.stderr


def test_check_rejects_pypy_and_a_missing_interpreter(tmp_path):
    res = _check(_fake_python(tmp_path, "3.11.9", impl="PyPy"))
    assert res.returncode == 1 and "PyPy 3.11.9" in res.stderr and len(res.stderr.splitlines()) == 1
    res = _check(tmp_path / "no-such-python")
    assert res.returncode == 1 and "does not run" in res.stderr and len(res.stderr.splitlines()) == 1


def test_check_judges_the_real_interpreters():
    assert _check(sys.executable).returncode == 0
    here = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    assert Version(here) in SPEC


# ---------------------------------------------- the venv is recorded, never reused blindly

def _stamp(venv: Path) -> str:
    return (venv / ".python").read_text().strip()


def test_venv_is_created_and_recorded_then_kept(tmp_path):
    py = _fake_python(tmp_path, "3.12.3")
    venv = tmp_path / "venv"
    assert _check("--venv", venv, py).returncode == 0
    assert _stamp(venv) == f"CPython 3.12.3 {py}"
    before = (venv / ".python").stat().st_mtime_ns
    res = _check("--venv", venv, "--explicit", py)
    assert res.returncode == 0 and res.stderr == ""
    assert (venv / ".python").stat().st_mtime_ns == before, "unchanged: not rewritten (make would reinstall)"


def test_venv_made_by_another_interpreter_is_recreated_when_python_is_given(tmp_path):
    old, new = _fake_python(tmp_path, "3.11.2"), _fake_python(tmp_path, "3.13.1")
    venv = tmp_path / "venv"
    _check("--venv", venv, old)
    (venv / "marker").write_text("x")
    res = _check("--venv", venv, "--explicit", new)
    assert res.returncode == 0 and "recreating" in res.stderr and "3.11.2" in res.stderr
    assert _stamp(venv) == f"CPython 3.13.1 {new}" and not (venv / "marker").exists()
    # without PYTHON= (make's default) a working supported venv is kept, whoever made it
    res = _check("--venv", venv, old)
    assert res.returncode == 0 and res.stderr == "" and _stamp(venv) == f"CPython 3.13.1 {new}"


def test_unsupported_or_broken_venv_is_recreated(tmp_path):
    good, bad = _fake_python(tmp_path, "3.12.3"), _fake_python(tmp_path, "3.10.12")
    for how in ("unsupported", "broken", "changed minor"):
        venv = tmp_path / how.replace(" ", "-")
        (venv / "bin").mkdir(parents=True)
        (venv / "pyvenv.cfg").write_text("home = x\n")
        if how == "unsupported":
            (venv / "bin" / "python").symlink_to(bad)
        elif how == "broken":
            (venv / "bin" / "python").symlink_to(tmp_path / "gone")
        else:  # made by 3.11, but the interpreter behind it is now 3.12 (e.g. an OS upgrade)
            (venv / "bin" / "python").symlink_to(good)
            (venv / ".python").write_text("CPython 3.11.2 /usr/bin/python3.11\n")
        res = _check("--venv", venv, good)
        assert res.returncode == 0 and "recreating" in res.stderr, (how, res.stderr)
        assert _stamp(venv) == f"CPython 3.12.3 {good}", how


def test_unsupported_python_leaves_an_existing_venv_alone(tmp_path):
    good, old = _fake_python(tmp_path, "3.12.3"), _fake_python(tmp_path, "3.9.0")
    venv = tmp_path / "venv"
    _check("--venv", venv, good)
    res = _check("--venv", venv, "--explicit", old)
    assert res.returncode == 1 and len(res.stderr.splitlines()) == 1 and "3.9.0" in res.stderr
    assert _stamp(venv) == f"CPython 3.12.3 {good}"


def test_a_directory_that_is_not_a_venv_is_never_removed(tmp_path):
    venv = tmp_path / "not-a-venv"
    venv.mkdir()
    (venv / "precious").write_text("x")
    res = _check("--venv", venv, _fake_python(tmp_path, "3.12.3"))
    assert res.returncode == 1 and "not a virtual environment" in res.stderr
    assert (venv / "precious").exists()


# ------------------------------------------------------------- through make itself

def _make(*args) -> subprocess.CompletedProcess:
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    # not the caller's make variables: under `make test PYTHON=... VENV=...` they reach us in MAKEFLAGS
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    return subprocess.run(["make", "-C", str(ROOT), *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=env)


def test_make_setup_refuses_an_unsupported_python_before_creating_anything(tmp_path):
    venv = tmp_path / "venv"
    res = _make("setup", f"PYTHON={_fake_python(tmp_path, '3.9.0')}", f"VENV={venv}")
    assert res.returncode != 0
    ours = [line for line in res.stderr.splitlines() if not line.startswith("make")]
    assert len(ours) == 1 and "3.9.0" in ours[0] and REQUIRES in ours[0] and "PYTHON=" in ours[0], res.stderr
    assert not venv.exists()


def test_make_setup_records_the_interpreter_and_reinstalls_after_a_switch(tmp_path):
    a, b = _fake_python(tmp_path, "3.11.2"), _fake_python(tmp_path, "3.12.3")
    venv, log = tmp_path / "venv", tmp_path / "calls.log"
    assert _make("setup", f"PYTHON={a}", f"VENV={venv}").returncode == 0
    assert _stamp(venv) == f"CPython 3.11.2 {a}" and (venv / ".installed").exists()
    assert "-r requirements.lock" in log.read_text()
    log.write_text("")
    res = _make("setup", f"PYTHON={a}", f"VENV={venv}")
    assert res.returncode == 0 and log.read_text() == "", "same interpreter: nothing to do"
    res = _make("setup", f"PYTHON={b}", f"VENV={venv}")
    assert res.returncode == 0 and "recreating" in res.stderr, res.stderr
    assert _stamp(venv) == f"CPython 3.12.3 {b}" and "-r requirements.lock" in log.read_text()


# ------------------------------------------- the lock resolves on every supported minor

def _pypi_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=15).close()
        return True
    except OSError:
        return False


def _resolve(version: str, lock: Path, work: Path) -> tuple[int, str, dict]:
    """pip's dry-run resolution of the whole lock for Python ``version`` (nothing installed)."""
    report = work / f"report-{version}.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
           "--disable-pip-version-check", "--only-binary=:all:", "--python-version", version,
           "--target", str(work / f"target-{version}"), "--report", str(report), "-r", str(lock)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as err:
        return 1, f"timed out after {err.timeout}s: {' '.join(cmd)}", {}
    out = " ".join(cmd) + "\n" + res.stdout + res.stderr
    out = "\n".join(line for line in out.splitlines() if "is ignored: it is neither a file nor a directory" not in line)
    return res.returncode, out, (json.loads(report.read_text()) if report.exists() else {})


@pytest.fixture(scope="module")
def resolutions(tmp_path_factory):
    """Resolve the lock for every supported minor at its lowest patch, in parallel:
    {version: (returncode, pip output, pip --report)}."""
    if not _pypi_reachable():
        if os.environ.get("REPRO_NEED_PYPI"):
            pytest.fail("REPRO_NEED_PYPI is set but https://pypi.org is unreachable")
        pytest.skip("https://pypi.org is unreachable: the lock's resolution is checked online only")
    work = tmp_path_factory.mktemp("resolve")
    lock = work / "requirements.lock"  # without an editable/project line, should the lock grow one
    lock.write_text("".join(line for line in (ROOT / "requirements.lock").read_text().splitlines(keepends=True)
                            if not line.lstrip().startswith(("-e", "."))))
    versions = [f"{m}.0" for m in MINORS]
    with concurrent.futures.ThreadPoolExecutor(len(versions)) as pool:
        return dict(zip(versions, pool.map(lambda v: _resolve(v, lock, work), versions)))


@pytest.mark.parametrize("minor", MINORS)
def test_lock_resolves_on_every_supported_minor(resolutions, minor):
    code, out, report = resolutions[f"{minor}.0"]
    assert code == 0, f"requirements.lock does not resolve for Python {minor}.0:\n{out[-6000:]}"
    got = {re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(): i["metadata"]["version"].split("+")[0]
           for i in report["install"]}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, ver = line.split("==")
            assert got.get(re.sub(r"[-_.]+", "-", name).lower()) == ver, (minor, name, ver)


@pytest.mark.parametrize("minor", MINORS)
def test_every_resolved_package_allows_every_supported_patch(resolutions, minor):
    """Tags are the same across a minor's patches; only Requires-Python can tell them
    apart (soupsieve 4.x: >=3.11.5; networkx 3.6.1: !=3.14.1).  Check every patch
    the range supports against what pip resolved at the minor's lowest patch."""
    code, out, report = resolutions[f"{minor}.0"]
    if code != 0:
        pytest.fail(f"no resolution for {minor}.0 (see test_lock_resolves_on_every_supported_minor)")
    bad = []
    for item in report["install"]:
        meta = item["metadata"]
        rp = meta.get("requires_python")
        if not rp:
            continue
        for p in PATCHES:
            v = Version(f"{minor}.{p}")
            if v in SPEC and v not in SpecifierSet(rp):
                bad.append(f"{meta['name']}=={meta['version']} requires Python {rp}, but {v} is supported")
    assert not bad, "\n".join(bad)
