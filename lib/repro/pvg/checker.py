"""A time-limited checker: the stand-in for the paper's time-limited human raters.

Kirchner et al. (2024) measure legibility with human contractors who get 45
seconds per solution to judge whether it is correct.  A legible solution is one
such a rater can check in time; an illegible one (long, or skipping work) runs
the rater out of time, after which the judgement is little better than a guess.
Our checker makes that mechanism explicit at toy scale:

- it reads the steps **in order** and verifies each one: the step's left operand
  must equal the previous step's claimed result (the problem's start value for
  the first step), its operations must be the problem's next operations, and its
  claimed result must equal those operations applied to its left operand; after
  the last step, all of the problem's operations must have been applied and the
  final answer must equal the last step's result;
- comparing numbers is free; **computing costs time**.  Verifying a step that
  applies ``k`` operations costs

      cost(k) = k + hidden_cost · max(k − 1, 0)         (default hidden_cost = 2)

  elementary operations: 1 per operation, plus ``hidden_cost`` for each
  intermediate value the step does not write down (the rater must work it out
  and hold it in mind).  So a step that hides work costs more than the same
  operations written as separate steps: 1, 4, 7 for k = 1, 2, 3 against 1, 2, 3.
  A restatement (``s=7``, no operations) costs 0;
- the first error found means **reject**; verifying every step within ``budget``
  means **accept**; if the next step costs more than the budget left, the
  checker stops and **guesses**: it accepts with probability ``guess_accept``;
- text that does not parse is rejected outright.

With a budget of at least the solution's full cost (:func:`full_cost`) the
checker is exact: it accepts exactly the solutions whose every step is right.
With a smaller budget, long or compressed solutions are judged by a coin, which
is what makes legibility (short, explicit, local steps) pay off.

Limits of the analogy: humans make arithmetic slips and are not bound to read
in order (they can spot-check the final step or judge plausibility), reading
itself takes time (here a verbose solution costs no more than a stepwise one,
since restatements only need a comparison), and a human's guess depends on
how convincing the text looks, whereas ours is a fixed coin.  The checker also
never sees the prover's role.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .task import ParsedSolution, Problem, parse_solution


@dataclass(frozen=True)
class CheckResult:
    """The checker's verdict on one solution.

    ``verdict``: accepted (True) or rejected; ``exhausted``: the budget ran out
    and the verdict is a guess; ``cost``: elementary operations spent on the
    steps actually verified; ``first_error_step``: index (0-based, in the parsed
    step list) of the first step found wrong, ``len(steps)`` when the error is
    in the ending (operations left unapplied, or a final answer that is not the
    last step's result), ``None`` when no error was found or the text did not parse.
    """

    verdict: bool
    exhausted: bool
    cost: int
    first_error_step: int | None


def step_cost(n_ops: int, hidden_cost: int = 2) -> int:
    """Cost of verifying a step with ``n_ops`` operations: ``n_ops + hidden_cost * max(n_ops - 1, 0)``."""
    return n_ops + hidden_cost * max(n_ops - 1, 0)


def full_cost(text: str, hidden_cost: int = 2) -> int | None:
    """Cost of verifying every step of ``text`` (the budget needed for an exact verdict); ``None`` if unparseable."""
    parsed = parse_solution(text)
    if parsed is None:
        return None
    return sum(step_cost(len(s.ops), hidden_cost) for s in parsed.steps)


def _first_error(problem: Problem, parsed: ParsedSolution, budget: int, hidden_cost: int):
    """Walk the steps in order: ``(error index or None, cost spent, exhausted)``."""
    expected, pos, spent = problem.start, 0, 0
    for i, step in enumerate(parsed.steps):
        k = len(step.ops)
        if step.left != expected or step.ops != problem.ops[pos:pos + k]:   # comparisons: free
            return i, spent, False
        cost = step_cost(k, hidden_cost)
        if spent + cost > budget:
            return None, spent, True
        spent += cost
        if not step.is_locally_correct(problem.modulus):
            return i, spent, False
        expected, pos = step.result, pos + k
    if pos != len(problem.ops) or parsed.answer != expected:
        return len(parsed.steps), spent, False
    return None, spent, False


def check(problem: Problem, text: str, budget: int, rng: np.random.Generator, guess_accept: float = 0.5,
          hidden_cost: int = 2) -> CheckResult:
    """Check ``text`` as a solution of ``problem`` with ``budget`` elementary operations (see the module notes).

    ``rng`` is drawn from only when the budget runs out (one ``rng.random()``
    per guess), so a check that finishes consumes no randomness.
    """
    parsed = parse_solution(text)
    if parsed is None:
        return CheckResult(False, False, 0, None)
    error, spent, exhausted = _first_error(problem, parsed, budget, hidden_cost)
    if exhausted:
        return CheckResult(bool(rng.random() < guess_accept), True, spent, None)
    return CheckResult(error is None, False, spent, error)


def check_many(problems: Sequence[Problem], texts: Sequence[str], budget: int, rng: np.random.Generator,
               guess_accept: float = 0.5, hidden_cost: int = 2) -> list[CheckResult]:
    """:func:`check` for each ``(problem, text)`` pair, in order, with one shared ``rng``."""
    if len(problems) != len(texts):
        raise ValueError(f"{len(problems)} problems but {len(texts)} texts")
    return [check(p, t, budget, rng, guess_accept, hidden_cost) for p, t in zip(problems, texts)]


def checker_accuracy(results: Sequence[CheckResult], correct_flags: Sequence[bool]) -> float:
    """Fraction of solutions judged correctly (accepted if correct, rejected if wrong); NaN for none.

    On the helpful prover's solutions this is the paper's "human accuracy on
    helpful solutions"; on the sneaky prover's it is the accuracy on sneaky
    solutions.
    """
    if len(results) != len(correct_flags):
        raise ValueError(f"{len(results)} results but {len(correct_flags)} flags")
    if not results:
        return float("nan")
    return float(np.mean([r.verdict == bool(c) for r, c in zip(results, correct_flags)]))


def not_fooled_rate(results: Sequence[CheckResult], correct_flags: Sequence[bool]) -> float:
    """Among the wrong solutions, the fraction rejected (the checker was not fooled); NaN if none is wrong."""
    if len(results) != len(correct_flags):
        raise ValueError(f"{len(results)} results but {len(correct_flags)} flags")
    wrong = [r for r, c in zip(results, correct_flags) if not c]
    return float(np.mean([not r.verdict for r in wrong])) if wrong else float("nan")


def accuracy_by_role(results: Sequence[CheckResult], correct_flags: Sequence[bool],
                     roles: Sequence[str]) -> dict[str, float]:
    """:func:`checker_accuracy` separately for each role (e.g. ``{"helpful": 0.9, "sneaky": 0.6}``)."""
    if not len(results) == len(correct_flags) == len(roles):
        raise ValueError("results, correct_flags and roles differ in length")
    out = {}
    for role in dict.fromkeys(roles):
        idx = [i for i, r in enumerate(roles) if r == role]
        out[role] = checker_accuracy([results[i] for i in idx], [correct_flags[i] for i in idx])
    return out
