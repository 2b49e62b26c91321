"""The reproduction scorecard: claims declared once, statuses decided by tested rules.

A chapter declares every row of its scorecard once, in its own module
(``repro/chapters/<name>/config.py``), as a :class:`Claim`:

* ``kind="finding"``: an empirical result of the paper.  Only findings count in
  "findings reproduced N/M" (chapter header, ``make book``, README).
* ``kind="check"``: a property of our implementation or harness (agreement
  with a reference, a sandbox containing hostile code, a speed target).
* ``kind="theorem"``: true by mathematics (a bound non-decreasing in k); we
  show the numerical confirmation, never as a reproduced finding.

Each claim carries a :class:`Rule`.  The notebook only feeds the rule the
measured values (``scorecard.evaluate("id", a=[...], b=[...])``); the rule
decides the status and writes the statistic and the margin shown to the
reader.  No status is ever passed in by hand.  A finding is

* ``reproduced`` when the comparison holds with the rule's margin over at
  least ``min_seeds`` seeds,
* ``inconclusive`` when it points the paper's way but within the margin (or
  with fewer seeds than the rule requires),
* ``not reproduced`` when it does not point the paper's way,
* ``not evaluated`` at this profile, saying which profile or parameter would.

Checks and theorems ``pass`` or ``fail``.

This module imports no torch, so ``python -m repro list`` stays fast.
"""
from __future__ import annotations

import html
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

FINDING, CHECK, THEOREM = "finding", "check", "theorem"
KINDS = (FINDING, CHECK, THEOREM)

REPRODUCED = "reproduced"
INCONCLUSIVE = "inconclusive"
NOT_REPRODUCED = "not reproduced"
NOT_EVALUATED = "not evaluated"
PASSES = "passes"
FAILS = "fails"
FINDING_STATUSES = (REPRODUCED, INCONCLUSIVE, NOT_REPRODUCED, NOT_EVALUATED)
CHECK_STATUSES = (PASSES, FAILS, NOT_EVALUATED)

# what a rule concludes, before it is mapped to a kind's status
YES, NOISE, NO = "yes", "within noise", "no"


def fmt(v: Any) -> str:
    """A number as a reader wants to see it (4 significant digits)."""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.4g}"
    return str(v)


def mean_se(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, standard error of the mean (sample s.d. / sqrt(n); 0 for n = 1) and n of the finite values."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return float("nan"), float("nan"), 0
    m = sum(xs) / n
    if n == 1:
        return m, 0.0, 1
    var = sum((x - m) ** 2 for x in xs) / (n - 1)
    return m, math.sqrt(var / n), n


def _pm(values: Sequence[float]) -> str:
    m, se, n = mean_se(values)
    return f"{fmt(m)} ± {fmt(se)}"


@dataclass(frozen=True)
class Verdict:
    """A rule's conclusion: ``outcome`` (yes / within noise / no), the statistic and the margin it used."""

    outcome: str
    statistic: str
    margin: str
    n: int


class Rule:
    """Decides a claim from measured values.  Subclasses define ``describe`` and ``decide``."""

    min_seeds: int = 1

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def decide(self, **values) -> Verdict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _enough(self, outcome: str, n: int) -> str:
        """A 'yes' from fewer seeds than the rule needs is only 'within noise'."""
        return NOISE if outcome == YES and n < self.min_seeds else outcome


def _seeds(name: str, values: Any) -> list[float]:
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        return [float(values)]
    try:
        out = [float(v) for v in values]
    except TypeError:
        raise TypeError(f"{name} must be a number or a sequence of per-seed numbers, got {values!r}") from None
    if not out:
        raise ValueError(f"{name} is empty: a rule needs at least one measured value")
    return out


def _one_sample(rule: Rule, values, outcome: Callable[[float, float], str], margin_prefix: str) -> Verdict:
    """The rules on one list of per-seed values: ``outcome(mean, s.e.)`` decides, with the shared report."""
    xs = _seeds("values", values)
    m, se, n = mean_se(xs)
    if n == 0:
        return Verdict(NO, "no finite values", "", 0)
    return Verdict(rule._enough(outcome(m, se), n), f"{rule.what} {_pm(xs)} (n={n})",
                   f"{margin_prefix}{fmt(rule.z)} s.e. = {fmt(rule.z * se)}", n)


@dataclass(frozen=True)
class Greater(Rule):
    """Mean of ``a`` exceeds mean of ``b`` by more than ``z`` standard errors of the difference.

    Unpaired by default (Welch standard error sqrt(se_a² + se_b²)); with
    ``paired=True`` the per-seed differences a_i − b_i are used.  ``yes`` when
    the difference in the claimed direction exceeds z·se (with at least
    ``min_seeds`` seeds), ``within noise`` when it is positive but not beyond
    z·se, ``no`` otherwise.  ``what`` names the quantity; :class:`Less` is
    the same rule in the other direction.
    """

    what: str = "value"
    a_name: str = "a"
    b_name: str = "b"
    z: float = 2.0
    paired: bool = False
    min_seeds: int = 3
    sign = 1  # +1: a > b is claimed; -1: a < b

    def describe(self) -> str:
        how = "paired per-seed difference" if self.paired else "difference of means"
        rel = ">" if self.sign > 0 else "<"
        return (f"{self.a_name} {rel} {self.b_name} in {self.what}: {how} beyond {fmt(self.z)} s.e., "
                f"≥ {self.min_seeds} seeds")

    def decide(self, a, b) -> Verdict:
        a, b = _seeds("a", a), _seeds("b", b)
        if self.paired:
            if len(a) != len(b):
                raise ValueError(f"a paired rule needs as many a as b values ({len(a)} vs {len(b)})")
            d, se, n = mean_se([x - y for x, y in zip(a, b)])
        else:
            ma, sa, na = mean_se(a)
            mb, sb, nb = mean_se(b)
            d, se, n = ma - mb, math.hypot(sa, sb), min(na, nb)
        if not math.isfinite(d):
            return Verdict(NO, "no finite values", "", 0)
        signed = self.sign * d
        outcome = YES if signed > self.z * se else (NOISE if signed > 0 else NO)
        stat = f"{self.a_name} {_pm(a)} vs {self.b_name} {_pm(b)}; difference {fmt(d)} (n={n})"
        return Verdict(self._enough(outcome, n), stat, f"{fmt(self.z)} s.e. = {fmt(self.z * se)}", n)


@dataclass(frozen=True)
class Less(Greater):
    """Mean of ``a`` is below mean of ``b`` by more than ``z`` standard errors (see :class:`Greater`)."""

    sign = -1


@dataclass(frozen=True)
class Above(Rule):
    """The mean of per-seed ``values`` exceeds ``threshold`` by more than ``z`` standard errors.

    ``yes`` when mean − z·se > threshold (with at least ``min_seeds`` seeds),
    ``within noise`` when only the mean is beyond it, ``no`` otherwise;
    :class:`Below` is the same rule in the other direction.
    """

    what: str = "value"
    threshold: float = 0.0
    z: float = 2.0
    min_seeds: int = 3
    sign = 1  # +1: above the threshold is claimed; -1: below

    def describe(self) -> str:
        rel = ">" if self.sign > 0 else "<"
        return (f"mean {self.what} {rel} {fmt(self.threshold)} by more than {fmt(self.z)} s.e., "
                f"≥ {self.min_seeds} seeds")

    def decide(self, values) -> Verdict:
        return _one_sample(self, values, self._outcome, "")

    def _outcome(self, m: float, se: float) -> str:
        beyond = self.sign * (m - self.threshold)
        return YES if beyond > self.z * se else (NOISE if beyond > 0 else NO)


@dataclass(frozen=True)
class Below(Above):
    """The mean of per-seed ``values`` is below ``threshold`` by more than ``z`` standard errors (see :class:`Above`)."""

    sign = -1


@dataclass(frozen=True)
class Within(Rule):
    """|mean of per-seed ``values`` − ``target``| plus ``z`` standard errors stays below ``tol``.

    ``yes`` when |m − target| + z·se < tol, ``within noise`` when only
    |m − target| < tol, ``no`` otherwise.
    """

    what: str = "value"
    target: float = 0.0
    tol: float = 0.0
    z: float = 2.0
    min_seeds: int = 3

    def describe(self) -> str:
        return (f"|mean {self.what} − {fmt(self.target)}| + {fmt(self.z)} s.e. < {fmt(self.tol)}, "
                f"≥ {self.min_seeds} seeds")

    def decide(self, values) -> Verdict:
        return _one_sample(self, values, self._outcome, f"tolerance {fmt(self.tol)}; ")

    def _outcome(self, m: float, se: float) -> str:
        dev = abs(m - self.target)
        return YES if dev + self.z * se < self.tol else (NOISE if dev < self.tol else NO)


@dataclass(frozen=True)
class EverySeed(Rule):
    """A per-seed condition (``passed``) holds in every seed.

    ``yes`` when all of at least ``min_seeds`` seeds pass; ``within noise``
    when more than half pass (or all pass but there are too few seeds);
    ``no`` otherwise.  ``condition`` is the per-seed test in words, and
    ``values`` (optional) the per-seed numbers it was computed from.
    """

    condition: str = "the condition holds"
    min_seeds: int = 3
    unit: str = "seed"  # what one replicate is (a seed, or e.g. an (RBM, K) case)

    def describe(self) -> str:
        return f"{self.condition} in every {self.unit}, ≥ {self.min_seeds} {self.unit}s"

    def decide(self, passed, values=None) -> Verdict:
        ok = [bool(p) for p in passed]
        if not ok:
            raise ValueError("passed is empty: a rule needs at least one seed")
        n, k = len(ok), sum(ok)
        outcome = YES if k == n else (NOISE if k > n / 2 else NO)
        stat = f"{k}/{n} {self.unit}s"
        if values is not None:
            stat += " (" + ", ".join(fmt(float(v)) for v in values) + ")"
        return Verdict(self._enough(outcome, n), stat, f"every {self.unit}", n)


@dataclass(frozen=True)
class Holds(Rule):
    """For checks and theorems: a measured condition, computed by the notebook from its data.

    ``decide(ok, value)`` with ``ok`` the computed truth of ``condition``
    and ``value`` the measurement shown.  Not for findings: they need a
    statistical rule.
    """

    condition: str = "the condition holds"

    def describe(self) -> str:
        return self.condition

    def decide(self, ok, value="") -> Verdict:
        if not isinstance(ok, (bool, int)) and not hasattr(ok, "__bool__"):
            raise TypeError("ok must be a computed truth value")
        return Verdict(YES if bool(ok) else NO, str(value), "", 1)


@dataclass(frozen=True)
class Claim:
    """One row of a scorecard, declared once: what is claimed, the paper's value, and the rule that decides it."""

    id: str
    kind: str
    statement: str
    paper: str
    rule: Rule
    needs: str = ""  # the profile or parameter that evaluates this claim where it is not evaluated

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"claim {self.id!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == FINDING and isinstance(self.rule, Holds):
            raise ValueError(f"finding {self.id!r} needs a statistical rule, not Holds")


@dataclass
class Row:
    """A claim's result at one run (what metrics.json stores)."""

    id: str
    kind: str
    statement: str
    rule: str
    paper: str
    ours: str
    margin: str
    status: str
    n: int = 0
    note: str = ""


def _status(kind: str, outcome: str) -> str:
    if kind == FINDING:
        return {YES: REPRODUCED, NOISE: INCONCLUSIVE, NO: NOT_REPRODUCED}[outcome]
    return PASSES if outcome == YES else FAILS


_COLOURS = {REPRODUCED: "#1a7f37", PASSES: "#1a7f37", INCONCLUSIVE: "#9a6700",
            NOT_REPRODUCED: "#cf222e", FAILS: "#cf222e", NOT_EVALUATED: "#6e7781"}


@dataclass
class Scorecard:
    """The declared claims of one chapter and their results at one profile."""

    chapter: str
    profile: str
    claims: Sequence[Claim] = ()
    rows: list[Row] = field(default_factory=list)

    def __post_init__(self):
        ids = [c.id for c in self.claims]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate claim ids {sorted(dup)}")
        self._by_id = {c.id: c for c in self.claims}

    def claim(self, id: str) -> Claim:
        try:
            return self._by_id[id]
        except KeyError:
            raise KeyError(f"{self.chapter}: no claim {id!r} is declared; declared: {', '.join(self._by_id)}") from None

    def _add(self, row: Row) -> Row:
        if any(r.id == row.id for r in self.rows):
            raise ValueError(f"claim {row.id!r} recorded twice")
        self.rows.append(row)
        return row

    def evaluate(self, id: str, note: str = "", **values) -> Row:
        """Feed claim ``id``'s rule the measured values; the rule decides the status."""
        c = self.claim(id)
        v = c.rule.decide(**values)
        return self._add(Row(c.id, c.kind, c.statement, c.rule.describe(), c.paper, v.statistic, v.margin,
                             _status(c.kind, v.outcome), v.n, note))

    def not_evaluated(self, id: str, why: str = "") -> Row:
        """Claim ``id`` is not evaluated at this profile; ``why`` (or the claim's ``needs``) says what would."""
        c = self.claim(id)
        why = why or c.needs
        if not why:
            raise ValueError(f"claim {id!r}: say which profile or parameter evaluates it")
        return self._add(Row(c.id, c.kind, c.statement, c.rule.describe(), c.paper, "—", "",
                             NOT_EVALUATED, 0, why))

    def missing(self) -> list[str]:
        recorded = {r.id for r in self.rows}
        return [c.id for c in self.claims if c.id not in recorded]

    def complete(self) -> None:
        """Every declared claim must be evaluated or marked not evaluated."""
        if self.missing():
            raise RuntimeError(f"{self.chapter}: claims neither evaluated nor marked not evaluated: "
                               f"{', '.join(self.missing())}")

    # --- counts -----------------------------------------------------------------
    @property
    def findings(self) -> list[Row]:
        return [r for r in self.rows if r.kind == FINDING]

    @property
    def checks(self) -> list[Row]:
        return [r for r in self.rows if r.kind != FINDING]

    @property
    def n_reproduced(self) -> int:
        return sum(r.status == REPRODUCED for r in self.findings)

    @property
    def n_evaluated(self) -> int:
        return sum(r.status != NOT_EVALUATED for r in self.findings)

    def counts(self) -> dict:
        f = self.findings
        return {
            "findings_reproduced": self.n_reproduced,
            "findings_inconclusive": sum(r.status == INCONCLUSIVE for r in f),
            "findings_not_reproduced": sum(r.status == NOT_REPRODUCED for r in f),
            "findings_evaluated": self.n_evaluated,
            "findings_not_evaluated": sum(r.status == NOT_EVALUATED for r in f),
            "checks_passed": sum(r.status == PASSES for r in self.checks),
            "checks_evaluated": sum(r.status != NOT_EVALUATED for r in self.checks),
        }

    def summary(self) -> str:
        c = self.counts()
        extra = [f"{c[k]} {label}" for k, label in (("findings_inconclusive", "inconclusive"),
                                                    ("findings_not_reproduced", "not reproduced"),
                                                    ("findings_not_evaluated", "not evaluated"))
                 if c[k]]
        return (f"findings reproduced {c['findings_reproduced']}/{c['findings_evaluated']} at profile "
                f"'{self.profile}'" + (f" ({', '.join(extra)})" if extra else "")
                + f"; implementation checks passed {c['checks_passed']}/{c['checks_evaluated']}")

    def to_records(self) -> list[dict]:
        return [asdict(r) for r in self.rows]

    # --- display ----------------------------------------------------------------
    @staticmethod
    def _html_table(rows: list[Row], title: str) -> str:
        head = "".join(f"<th>{h}</th>" for h in ("id", "kind", "claim and rule", "paper", "ours", "margin",
                                                   "status"))
        body = []
        for r in rows:
            status = f'<span style="color:{_COLOURS[r.status]};font-weight:600">{r.status}</span>'
            if r.note:
                status += f"<br><small>{html.escape(r.note)}</small>"
            claim = f"{html.escape(r.statement)}<br><small><i>rule:</i> {html.escape(r.rule)}</small>"
            cells = [html.escape(r.id), r.kind, claim, html.escape(r.paper), html.escape(r.ours),
                     html.escape(r.margin), status]
            body.append("<tr>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
        return (f"<p><b>{html.escape(title)}</b></p><table class='scorecard'><thead><tr>{head}</tr></thead>"
                f"<tbody>{''.join(body)}</tbody></table>")

    def _repr_html_(self) -> str:
        parts = [self._html_table(self.findings, "Findings of the paper")]
        if self.checks:
            parts.append(self._html_table(self.checks, "Implementation checks (not counted as findings)"))
        parts.append(f"<p><b>{html.escape(self.summary())}</b></p>")
        return "".join(parts)

    def __repr__(self) -> str:
        lines = [f"Scorecard: {self.chapter} ({self.summary()})", "Findings:"]
        for group in (self.findings, None, self.checks):
            if group is None:
                lines.append("Implementation checks:")
                continue
            for r in group:
                lines.append(f"  [{r.status}] {r.id} ({r.kind}): {r.statement} | rule: {r.rule} | "
                             f"paper: {r.paper} | ours: {r.ours}" + (f" | margin: {r.margin}" if r.margin else "")
                             + (f" ({r.note})" if r.note else ""))
        return "\n".join(lines)
