"""Hostile samples against the execution sandbox (repro.codex.sandbox).

Every case must end with exactly one outcome, leave the harness working, and
leave no process or file behind.  The limits are tight so that a failure of
containment stays small on a shared machine: 1 s wall clock, 256 MB address
space, 16 processes per sample uid.  The canary files live in pytest's tmp dir.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from repro.codex.sandbox import Limits, Sandbox

IS_ROOT = os.geteuid() == 0
TIMEOUT = 1.0


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as fh:
                kids = [int(x) for x in fh.read().split()]
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out


def _processes_of_uid(uid: int) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    pids.append(int(name))
            except OSError:
                pass
    return pids


@pytest.fixture(scope="module", params=[True, False], ids=["guard", "os-only"])
def sandbox(request):
    guard = request.param
    if not guard and not IS_ROOT:
        pytest.skip("without the audit-hook guard, containment relies on running as root (dropped uid)")
    sb = Sandbox(2, Limits(timeout_s=TIMEOUT, memory_mb=256, nproc=16, file_size_mb=4, guard=guard))
    if not guard and sb.info.get("uid") is None:
        sb.close()
        pytest.skip("this root cannot switch to an unused uid (user namespace?), so the OS layer alone is not enough")
    yield sb
    base = sb.base
    workers = [w.proc.pid for w in sb._workers if w is not None]
    uids = [w.info["uid"] for w in sb._workers if w is not None and w.info.get("uid") is not None]
    sb.close()
    assert not os.path.exists(base)
    for pid in workers:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    for uid in uids:
        assert _processes_of_uid(uid) == []


def run1(sb: Sandbox, program: str):
    (out,) = sb.run([program])
    # After every sample: no stray processes under the workers, no stray files in the sandbox dir.
    for w in sb._workers:
        if w is not None:
            assert _descendants(w.proc.pid) == [], "a sample's process survived the clean-up"
            if w.info.get("uid") is not None:
                assert _processes_of_uid(w.info["uid"]) == []
    assert os.listdir(sb.base) == [], "a sample's temporary directory was not removed"
    return out


def test_plain_outcomes(sandbox):
    outs = sandbox.run(["assert 1 + 1 == 2", "assert 1 == 2, 'nope'", "def f(:\n  pass", "print('hello')"])
    assert [o.result for o in outs[:2]] == ["passed", "failed: AssertionError: nope"]
    assert outs[2].result.startswith("failed: SyntaxError")
    assert outs[3].passed and outs[3].output == "hello\n"


def test_infinite_loop_times_out(sandbox):
    t0 = time.perf_counter()
    out = run1(sandbox, "while True:\n    pass")
    assert out.result == "timed out"
    assert time.perf_counter() - t0 < TIMEOUT + 1.5


def test_long_sleep_times_out(sandbox):
    out = run1(sandbox, "import time\ntime.sleep(60)")
    assert out.result == "timed out" and out.wall_s < TIMEOUT + 0.5


def test_fork_bomb_is_contained(sandbox):
    out = run1(sandbox, "import os\nwhile True:\n    os.fork()")
    assert out.result != "passed"
    assert out.result.startswith("failed") or out.result == "timed out"


def test_memory_bomb_is_contained(sandbox):
    out = run1(sandbox, "x = bytearray(4 * 1024**3)\nassert False")
    assert out.result == "failed: MemoryError"
    out = run1(sandbox, "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 1024**2))")
    assert out.result in ("failed: MemoryError", "timed out") or out.result.startswith("failed: killed by signal")


def test_deep_recursion(sandbox):
    out = run1(sandbox, "def f(n):\n    return f(n + 1)\nf(0)")
    assert out.result.startswith("failed: RecursionError")
    out = run1(sandbox, "import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return 1 + f(n + 1)\nf(0)")
    assert out.result != "passed"


def test_huge_output_is_capped(sandbox):
    out = run1(sandbox, "import sys\nfor _ in range(40):\n    sys.stdout.write('x' * 100_000)\n"
                        "sys.stderr.write('e' * 1_000_000)")
    assert out.passed
    assert out.output_bytes >= 5_000_000
    assert len(out.output) <= sandbox.limits.output_bytes


@pytest.mark.parametrize("program, expected", [
    ("import sys\nsys.exit(0)", "failed: SystemExit: 0"),
    ("raise SystemExit", "failed: SystemExit"),
    ("raise KeyboardInterrupt", "failed: KeyboardInterrupt"),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGINT)\nimport time\ntime.sleep(5)", None),
    ("import os\nos._exit(0)", "failed: process exited with code 0 before the tests finished"),
    ("import os\nos.write(3, b'passed')\nos._exit(0)", None),  # cannot forge a verdict without the nonce
])
def test_exits_and_interrupts_fail(sandbox, program, expected):
    out = run1(sandbox, program)
    assert out.result != "passed"
    if expected is not None:
        assert out.result == expected
    assert out.result.startswith("failed")


@pytest.mark.parametrize("program", [
    "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
    "import os, signal\nos.killpg(os.getpgid(os.getppid()), signal.SIGKILL)",
    "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)",
])
def test_killing_the_parent_is_contained(sandbox, program):
    pids = [w.proc.pid for w in sandbox._workers if w is not None]
    restarts = sandbox.restarts
    out = run1(sandbox, program)
    assert out.result != "passed"
    assert sandbox.restarts == restarts
    assert [w.proc.pid for w in sandbox._workers if w is not None] == pids
    assert all(w.proc.poll() is None for w in sandbox._workers if w is not None)
    assert run1(sandbox, "assert True").passed


def test_files_outside_tmpdir_untouched(sandbox, tmp_path):
    canary = tmp_path / "canary.txt"
    canary.write_text("alive")
    before = sorted(os.listdir(tmp_path))
    mtime = canary.stat().st_mtime_ns
    attacks = [
        f"open({str(canary)!r}, 'w').write('pwned')",
        f"open({str(canary)!r}, 'a').write('pwned')",
        f"import os\nos.remove({str(canary)!r})",
        f"import os\nos.rename({str(canary)!r}, {str(canary)!r} + '.moved')",
        f"open({str(tmp_path / 'new.txt')!r}, 'w').write('new')",
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
        f"import os\nassert os.system('rm {canary} && touch {tmp_path}/x') == 0",
        f"import subprocess\nsubprocess.run(['rm', {str(canary)!r}], check=True)",
        f"import os\nfd = os.open({str(canary)!r}, os.O_WRONLY | os.O_TRUNC)\nos.write(fd, b'x')",
    ]
    outs = sandbox.run(attacks)
    assert all(not o.passed for o in outs), [o.result for o in outs]
    assert canary.read_text() == "alive" and canary.stat().st_mtime_ns == mtime
    assert sorted(os.listdir(tmp_path)) == before
    assert os.listdir(sandbox.base) == []


def test_files_inside_tmpdir_allowed_and_removed(sandbox):
    out = run1(sandbox, "open('a.txt', 'w').write('x' * 1000)\nimport os, tempfile\n"
                        "os.mkdir('d')\nopen('d/b', 'w').write('y')\ntempfile.NamedTemporaryFile(delete=False).write(b'z')\n"
                        "assert os.path.exists('a.txt') and os.environ.get('HOME') == os.getcwd()")
    assert out.passed, out.result


def test_writes_to_shared_tmp_refused_by_guard(sandbox):
    if not sandbox.limits.guard:
        pytest.skip("without the guard, /tmp (world-writable) is reachable by the sample uid")
    name = f"/tmp/repro-codex-stray-{os.getpid()}"
    out = run1(sandbox, f"open({name!r}, 'w').write('x')")
    assert out.result.startswith("failed: PermissionError")
    assert not os.path.exists(name)


def test_guard_closes_known_bypasses(sandbox):
    if not sandbox.limits.guard:
        pytest.skip("guard only")
    outs = sandbox.run(["import _posixsubprocess", "import subprocess\nassert subprocess._fork_exec is not None",
                        "import ctypes", "import subprocess\nsubprocess.run(['true'])",
                        "import os\nos.execv('/bin/true', ['true'])", "import os\nos.posix_spawn('/bin/true', ['true'], {})"])
    assert all(o.result.startswith("failed") for o in outs), [o.result for o in outs]


def test_file_size_limit(sandbox):
    out = run1(sandbox, "with open('big', 'wb') as f:\n    f.write(b'x' * (64 * 1024**2))")
    assert out.result.startswith("failed: OSError") and "File too large" in out.result, out.result


def test_lingering_thread_does_not_hang(sandbox):
    out = run1(sandbox, "import threading, time\nthreading.Thread(target=time.sleep, args=(60,)).start()")
    assert out.passed and out.wall_s < TIMEOUT


def test_lingering_children_are_killed(sandbox):
    prog = ("import os, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            "        time.sleep(60)\n"
            "    time.sleep(60)\n")
    out = run1(sandbox, prog)  # run1 asserts nothing survives
    assert out.passed and out.leftover_processes >= 1


def test_network_is_unreachable(sandbox):
    if not sandbox.limits.guard and not sandbox.info.get("netns"):
        pytest.skip("no network namespace here: without the guard, sockets would work")
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        out = run1(sandbox, f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=0.5)\n"
                            "s.sendall(b'hello')")
        assert not out.passed
        with pytest.raises(OSError):  # nobody connected
            server.accept()
    finally:
        server.close()


def test_harness_survives_worker_death(sandbox):
    """If a worker dies mid-sample, that sample fails, the worker is replaced, nothing is lost."""
    victim = sandbox._worker(0).proc.pid
    restarts = sandbox.restarts

    def kill_soon():
        time.sleep(0.3)
        os.killpg(victim, signal.SIGKILL)

    t = threading.Thread(target=kill_soon)
    t.start()
    outs = sandbox.run(["import time\ntime.sleep(0.8)\n", "import time\ntime.sleep(0.8)"])
    t.join()
    assert len(outs) == 2
    assert any(o.result.startswith("failed: harness worker died") for o in outs)
    assert sandbox.restarts == restarts + 1
    assert [o.passed for o in sandbox.run(["assert True"] * 4)] == [True] * 4


def test_batch_outcomes_in_order_and_complete(sandbox):
    progs = [f"assert {i} % 3 != 0" for i in range(30)]
    outs = sandbox.run(progs)
    assert [o.passed for o in outs] == [i % 3 != 0 for i in range(30)]
    assert os.listdir(sandbox.base) == []


def test_scrubbed_environment_and_stdin(sandbox):
    os.environ["REPRO_CODEX_SECRET"] = "s3cret"
    try:
        out = run1(sandbox, "import os, sys\nassert 'REPRO_CODEX_SECRET' not in os.environ\n"
                            "assert sys.stdin.read() == ''\nassert os.getcwd() != '/'")
        assert out.passed, out.result
    finally:
        del os.environ["REPRO_CODEX_SECRET"]
