"""One progress interface for every training loop.

``Progress(total, label)`` is used as ``with Progress(n, "grokking") as bar:``
then ``bar.update(k, **numbers)``.  In an interactive Jupyter kernel it is a
progress bar redrawn in place (an IPython display handle: no widget library
needed, and nothing but the final line is stored in the notebook); in a
headless run (papermill via ``python -m repro run``, a script, the tests) it
prints a line at most every ``every_s`` seconds, which the runner copies to
``run.log`` and the console.  We wrote this instead of using ``tqdm.auto``
because tqdm's notebook bar needs ipywidgets (not in the lock) and its text
bar writes carriage returns that make ``run.log`` unreadable.
"""
from __future__ import annotations

import os
import sys
import time


def _interactive() -> bool:
    """True inside a Jupyter kernel that a person drives (not the book's headless runner)."""
    if os.environ.get("REPRO_RUN_DIR"):  # set by the runner for papermill runs
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def _fmt_num(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


class Progress:
    """Progress of a loop of ``total`` units (steps, updates, passes)."""

    def __init__(self, total: int, label: str = "", unit: str = "step", every_s: float = 15.0, stream=None,
                 start: int = 0, interactive: bool | None = None):
        self.total, self.label, self.unit, self.every_s = int(total), label, unit, every_s
        self.stream = stream or sys.stdout
        self.n = self.start = int(start)
        self.t0 = self.last = time.perf_counter()
        self.numbers: dict = {}
        self.interactive = _interactive() if interactive is None else interactive
        self._handle = None
        if self.interactive:
            from IPython.display import display

            self._handle = display(self._text(), display_id=True)

    def _text(self) -> str:
        frac = self.n / self.total if self.total else 1.0
        elapsed = time.perf_counter() - self.t0
        rate = (self.n - self.start) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else float("nan")
        bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
        extra = "  ".join(f"{k} {_fmt_num(v)}" for k, v in self.numbers.items())
        eta_s = f"eta {eta:.0f}s" if eta == eta else "eta ?"
        return (f"[{self.label}] {bar} {self.n}/{self.total} {self.unit}s ({frac:.0%}) "
                f"{rate:.3g} {self.unit}s/s {eta_s}" + (f"  {extra}" if extra else ""))

    def update(self, n: int | None = None, force: bool = False, **numbers) -> None:
        """Set the position to ``n`` (or advance by one) and the numbers shown beside it."""
        self.n = self.n + 1 if n is None else int(n)
        self.numbers.update(numbers)
        now = time.perf_counter()
        if self.interactive:
            if force or now - self.last > 0.5:
                self.last = now
                self._handle.update(self._text())
        elif force or now - self.last >= self.every_s:
            self.last = now
            print(self._text(), file=self.stream, flush=True)

    def log(self, message: str) -> None:
        """A one-off line (resumed from a checkpoint, a phase finished)."""
        print(f"[{self.label}] {message}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.interactive:
            self._handle.update(self._text())
        else:
            print(self._text() + f"  done in {time.perf_counter() - self.t0:.1f}s", file=self.stream, flush=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
