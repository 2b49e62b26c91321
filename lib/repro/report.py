"""Reproduction scorecards and the bookkeeping of one chapter run.

A chapter states each headline claim of its paper as data (:class:`Claim`):
what the paper says, the paper's number, our number, and whether the claim
holds at this profile.  The scorecard renders as a table in the chapter and
is written to ``metrics.json``, which is what the tests and ``make book`` read.
"""
from __future__ import annotations

import html
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .device import configure_threads, describe, get_device
from .seed import seed_everything

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_EVALUATED = "not evaluated at this profile"


@dataclass
class Claim:
    id: str
    statement: str
    paper: str
    ours: str
    status: str
    note: str = ""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}"
    return str(v)


@dataclass
class Scorecard:
    """The claims of one chapter at one profile."""

    chapter: str
    profile: str
    claims: list[Claim] = field(default_factory=list)

    def _add(self, claim: Claim) -> Claim:
        if any(c.id == claim.id for c in self.claims):
            raise ValueError(f"duplicate claim id {claim.id!r}")
        self.claims.append(claim)
        return claim

    def check(self, id: str, statement: str, paper: Any, ours: Any, holds: bool, note: str = "") -> Claim:
        """Record a claim evaluated at this profile; ``holds`` decides its status."""
        return self._add(Claim(id, statement, _fmt(paper), _fmt(ours),
                               REPRODUCED if bool(holds) else NOT_REPRODUCED, note))

    def not_evaluated(self, id: str, statement: str, paper: Any, why: str) -> Claim:
        """A claim this profile cannot test (e.g. it needs the paper's scale)."""
        return self._add(Claim(id, statement, _fmt(paper), "—", NOT_EVALUATED, why))

    @property
    def evaluated(self) -> list[Claim]:
        return [c for c in self.claims if c.status != NOT_EVALUATED]

    @property
    def n_reproduced(self) -> int:
        return sum(c.status == REPRODUCED for c in self.claims)

    def summary(self) -> str:
        return f"{self.n_reproduced}/{len(self.evaluated)} claims reproduced at profile '{self.profile}'"

    def to_records(self) -> list[dict]:
        return [asdict(c) for c in self.claims]

    def _repr_html_(self) -> str:
        colour = {REPRODUCED: "#1a7f37", NOT_REPRODUCED: "#cf222e", NOT_EVALUATED: "#6e7781"}
        head = "".join(f"<th>{h}</th>" for h in ("claim", "statement", "paper", "ours", "status"))
        rows = []
        for c in self.claims:
            status = f'<span style="color:{colour[c.status]};font-weight:600">{c.status}</span>'
            if c.note:
                status += f"<br><small>{html.escape(c.note)}</small>"
            cells = [html.escape(c.id), html.escape(c.statement), html.escape(c.paper), html.escape(c.ours), status]
            rows.append("<tr>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
        return (f"<table class='scorecard'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
                f"<p><b>{html.escape(self.summary())}</b></p>")

    def __repr__(self) -> str:
        lines = [f"Scorecard: {self.chapter} ({self.summary()})"]
        for c in self.claims:
            lines.append(f"  [{c.status}] {c.id}: {c.statement} | paper: {c.paper} | ours: {c.ours}"
                         + (f" ({c.note})" if c.note else ""))
        return "\n".join(lines)


def repo_root() -> Path:
    """The repository root (the folder holding ``_toc.yml``)."""
    env = os.environ.get("REPRO_ROOT")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "_toc.yml").exists():
            return parent
    return Path.cwd()


def run_dir(chapter: str) -> Path:
    """Where a chapter writes its outputs: the runner's folder, or runs/<chapter>/interactive."""
    env = os.environ.get("REPRO_RUN_DIR")
    return Path(env) if env else repo_root() / "runs" / chapter / "interactive"


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, torch.Tensor):
        return _jsonable(v.tolist())
    if hasattr(v, "item") and callable(v.item):  # numpy scalars
        return v.item()
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    return v


class Run:
    """One execution of a chapter: seeds, device, threads, outputs, scorecard.

    ``run = Run("grokking", cfg)`` at the top of a chapter records the seed and
    config, picks the device and prepares the output folder; ``run.glue`` keeps
    a number for the prose and ``metrics.json``; ``run.finish()`` writes
    ``metrics.json`` and returns the scorecard for display.
    """

    def __init__(self, chapter: str, config, threads: int | None = None):
        self.chapter = chapter
        self.config = config
        self.started = time.time()
        self.dir = run_dir(chapter)
        self.figures = self.dir / "figures"
        self.figures.mkdir(parents=True, exist_ok=True)
        self.device = get_device(config.device)
        self.threads = configure_threads(threads) if self.device.type == "cpu" else torch.get_num_threads()
        self.generator = seed_everything(config.seed)
        self.scorecard = Scorecard(chapter, config.profile)
        self.numbers: dict[str, Any] = {}
        print(f"[{chapter}] profile={config.profile} seed={config.seed} device={describe(self.device)} "
              f"threads={self.threads} torch={torch.__version__} repro={__version__}")
        print(f"[{chapter}] config: {json.dumps(config.to_dict())}")
        print(f"[{chapter}] outputs: {self.dir}")

    def glue(self, name: str, value: Any, display: bool = False) -> Any:
        """Keep ``value`` for metrics.json and for ``{glue:}`` references in the prose."""
        self.numbers[name] = _jsonable(value)
        try:
            from myst_nb import glue
        except ImportError:  # pragma: no cover - myst_nb ships with jupyter-book
            return value
        glue(name, value, display=display)
        return value

    def savefig(self, fig, name: str) -> Path:
        path = self.figures / f"{name}.png"
        fig.savefig(path)
        return path

    def metrics(self) -> dict:
        return {
            "chapter": self.chapter,
            "profile": self.config.profile,
            "config": self.config.to_dict(),
            "seed": self.config.seed,
            "scorecard": self.scorecard.to_records(),
            "claims_reproduced": self.scorecard.n_reproduced,
            "claims_evaluated": len(self.scorecard.evaluated),
            "numbers": _jsonable(self.numbers),
            "notebook_wall_time_s": round(time.time() - self.started, 2),
            "library_version": __version__,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "device": describe(self.device),
            "threads": self.threads,
        }

    def finish(self) -> Scorecard:
        """Write metrics.json and return the scorecard (it renders as a table)."""
        path = self.dir / "metrics.json"
        path.write_text(json.dumps(self.metrics(), indent=2))
        print(f"[{self.chapter}] {self.scorecard.summary()}; wrote {path}")
        return self.scorecard
