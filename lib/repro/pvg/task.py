"""The toy task of the prover-verifier chapter: multi-step modular arithmetic written as step lists.

A problem is a start value and 3-6 operations with single-digit operands, e.g.
``7+5*3-2``.  **Convention: the operations are applied LEFT TO RIGHT, one at a
time, and every intermediate value is reduced modulo the modulus** (10 by
default); there is no operator precedence.  So ``7+5*3-2`` means
``((7+5)*3)-2`` computed as ``7+5=2``, ``2*3=6``, ``6-2=4``: the answer is 4
(standard precedence would give 0).

Solutions are short strings over the alphabet ``0-9 + - * = ; # s``: steps
separated by ``;``, then the final answer after ``#``.  A step either applies
operations, ``<left><op><operand>...=<result>`` (e.g. ``7+5=2`` or
``7+5*3=6``), or restates the running value, ``s=<value>``.  Three styles of
correct solution (:data:`STYLES`), for 7+5*3-2:

- ``stepwise``:   ``7+5=2;2*3=6;6-2=4;#4`` (one operation per step);
- ``verbose``:    ``s=7;7+5=2;s=2;2*3=6;s=6;6-2=4;s=4;#4`` (the same steps,
  each followed by a restatement of the running value: longer, every step local);
- ``compressed``: ``7+5*3=6;6-2=4;#4`` (2-3 operations merged into one step,
  only their combined result shown: skipped work, harder to check).

A *subtly wrong* solution (:func:`wrong_solution_text`) has exactly one locally
wrong step, and every later step is computed correctly from the wrong value,
so each step but one checks out and the final answer is wrong, e.g.
``7+5=2;2*3=8;8-2=6;#6``.  This is what the sneaky prover of Kirchner et al.
(2024) must learn to write: an incorrect solution that looks convincing.

Grading (:func:`grade`) looks at the final answer only, like the paper's
automatic grading; whether the steps are right is the checker's business
(:mod:`repro.pvg.checker`).

Everything here is pure Python and numpy; randomness comes from an explicit
``numpy.random.Generator``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

OPERATORS = ("+", "-", "*")
STYLES = ("stepwise", "verbose", "compressed")
STYLE_GUESSES = ("stepwise", "verbose", "compressed", "unparseable")
ROLES = ("helpful", "sneaky")
OPERANDS = tuple(range(1, 10))          # single-digit operands (0 excluded: *0 would erase all earlier work)

_NUMBER = r"(?:0|[1-9][0-9]*)"
_OP_STEP_RE = re.compile(rf"({_NUMBER})((?:[+\-*]{_NUMBER})+)=({_NUMBER})")
_RESTATE_RE = re.compile(rf"s=({_NUMBER})")
_ANSWER_RE = re.compile(rf"#({_NUMBER})")
_OP_RE = re.compile(rf"([+\-*])({_NUMBER})")


# ---------------------------------------------------------------------------
# Arithmetic and problems
# ---------------------------------------------------------------------------

def apply_op(value: int, op: str, operand: int, modulus: int) -> int:
    """``(value op operand) mod modulus`` for one operation ``op`` in ``+ - *`` (result in ``[0, modulus)``)."""
    if op == "+":
        return (value + operand) % modulus
    if op == "-":
        return (value - operand) % modulus
    if op == "*":
        return (value * operand) % modulus
    raise ValueError(f"unknown operator {op!r}")


def apply_ops(value: int, ops: Sequence[tuple[str, int]], modulus: int) -> int:
    """Apply ``ops`` to ``value`` left to right, reducing modulo ``modulus`` after each operation."""
    for op, operand in ops:
        value = apply_op(value, op, operand, modulus)
    return value


@dataclass(frozen=True)
class Problem:
    """One arithmetic problem: ``start`` then ``ops`` applied left to right, modulo ``modulus``.

    ``ops`` is a tuple of ``(operator, operand)`` pairs, e.g.
    ``Problem(7, (("+", 5), ("*", 3), ("-", 2)))`` is ``7+5*3-2`` with answer 4
    (mod 10).
    """

    start: int
    ops: tuple[tuple[str, int], ...]
    modulus: int = 10

    def __post_init__(self):
        if self.modulus < 2:
            raise ValueError(f"modulus must be at least 2, got {self.modulus}")
        if not 0 <= self.start < self.modulus:
            raise ValueError(f"start {self.start} is not a residue modulo {self.modulus}")
        for op, operand in self.ops:
            if op not in OPERATORS or not isinstance(operand, int) or operand < 0:
                raise ValueError(f"bad operation {(op, operand)!r}")

    @property
    def values(self) -> tuple[int, ...]:
        """The running values: the start (reduced) and the value after each operation (length ``len(ops) + 1``)."""
        out = [self.start]
        for op, operand in self.ops:
            out.append(apply_op(out[-1], op, operand, self.modulus))
        return tuple(out)

    @property
    def answer(self) -> int:
        """The value after the last operation (left-to-right evaluation, modulo ``modulus``)."""
        return self.values[-1]

    @property
    def text(self) -> str:
        """The problem as written in the prompt, e.g. ``7+5*3-2``."""
        return f"{self.start}" + "".join(f"{op}{operand}" for op, operand in self.ops)


def make_problems(n: int, seed, min_ops: int = 3, max_ops: int = 6, modulus: int = 10,
                  operators: Sequence[str] = OPERATORS) -> list[Problem]:
    """``n`` random problems, the same for the same ``seed`` (an int or a ``numpy.random.Generator``).

    The number of operations is uniform in ``[min_ops, max_ops]``, each operator
    uniform in ``operators`` (default ``+ - *``), each operand uniform in 1-9, and the start value uniform
    in ``[0, min(modulus, 10))`` (a single digit).  Problems may repeat (rarely:
    there are 10·27³ problems with 3 operations); :func:`split_pool` keeps copies
    of a problem on one side.
    """
    if not 1 <= min_ops <= max_ops:
        raise ValueError(f"need 1 <= min_ops <= max_ops, got {min_ops}, {max_ops}")
    if not operators or any(op not in OPERATORS for op in operators):
        raise ValueError(f"operators must be a non-empty subset of {OPERATORS}, got {operators!r}")
    rng = np.random.default_rng(seed)
    n_ops = rng.integers(min_ops, max_ops + 1, size=n)
    starts = rng.integers(0, min(modulus, 10), size=n)
    which = rng.integers(0, len(operators), size=(n, max_ops))
    operands = rng.integers(OPERANDS[0], OPERANDS[-1] + 1, size=(n, max_ops))
    return [Problem(int(starts[i]),
                    tuple((operators[which[i, j]], int(operands[i, j])) for j in range(n_ops[i])),
                    modulus)
            for i in range(n)]


def split_pool(problems: Sequence[Problem]) -> tuple[list[Problem], list[Problem]]:
    """Split ``problems`` into a prover half and a verifier half, disjoint by problem text.

    Distinct texts are dealt alternately to the two halves in order of first
    appearance, and every copy of a text goes where its first copy went, so no
    problem text is in both halves, together they hold every problem given,
    and the halves differ in size by at most the number of repeated copies plus one.
    """
    side_of: dict[str, int] = {}
    halves: tuple[list[Problem], list[Problem]] = ([], [])
    for p in problems:
        side = side_of.setdefault(p.text, len(side_of) % 2)
        halves[side].append(p)
    return halves


# ---------------------------------------------------------------------------
# Solutions: steps, formatting and parsing
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One step of a solution: the claimed left operand, the operations it applies, and the claimed result.

    A restatement ``s=7`` is a step with no operations whose result is its left
    operand.
    """

    left: int
    ops: tuple[tuple[str, int], ...]
    result: int

    @property
    def is_restatement(self) -> bool:
        """Whether the step only restates the running value (``s=<value>``)."""
        return not self.ops

    def text(self) -> str:
        """The step as written in a solution: ``7+5=2``, ``7+5*3=6`` or ``s=7``."""
        if self.is_restatement:
            return f"s={self.left}"
        return f"{self.left}" + "".join(f"{op}{x}" for op, x in self.ops) + f"={self.result}"

    def is_locally_correct(self, modulus: int) -> bool:
        """Whether the claimed result equals the step's operations applied to its claimed left operand."""
        return self.result == apply_ops(self.left, self.ops, modulus)


@dataclass(frozen=True)
class ParsedSolution:
    """A parsed solution: its steps in order and the final answer."""

    steps: tuple[Step, ...]
    answer: int


def format_solution(steps: Sequence[Step], answer: int) -> str:
    """The solution text of ``steps`` and ``answer``: steps joined by ``;``, then ``;#<answer>``."""
    return "".join(s.text() + ";" for s in steps) + f"#{answer}"


def parse_step(text: str) -> Step | None:
    """The :class:`Step` written as ``text``, or ``None`` if it is not a well-formed step."""
    m = _RESTATE_RE.fullmatch(text)
    if m:
        value = int(m.group(1))
        return Step(value, (), value)
    m = _OP_STEP_RE.fullmatch(text)
    if m is None:
        return None
    ops = tuple((op, int(x)) for op, x in _OP_RE.findall(m.group(2)))
    return Step(int(m.group(1)), ops, int(m.group(3)))


def parse_solution(text: str) -> ParsedSolution | None:
    """Parse ``step;step;...;#answer`` into a :class:`ParsedSolution`; ``None`` is the parse failure value.

    Numbers must be written without leading zeros, so
    ``format_solution(*parse) == text`` whenever parsing succeeds.  A bare answer
    ``#4`` parses as a solution with no steps.
    """
    *step_texts, last = text.split(";")
    m = _ANSWER_RE.fullmatch(last)
    if m is None:
        return None
    steps = []
    for t in step_texts:
        step = parse_step(t)
        if step is None:
            return None
        steps.append(step)
    return ParsedSolution(tuple(steps), int(m.group(1)))


def final_answer(text: str) -> int | None:
    """The final answer of ``text`` (its last ``;``-field, ``#<number>``), or ``None`` if there is none.

    Only the answer has to be well formed (and ``#`` must occur once): the steps
    before it are not looked at.
    """
    if text.count("#") != 1:
        return None
    m = _ANSWER_RE.fullmatch(text.rsplit(";", 1)[-1])
    return int(m.group(1)) if m else None


def grade(problem: Problem, text: str) -> bool:
    """True iff the final answer of ``text`` parses and equals ``problem.answer`` (exact, final answer only)."""
    return final_answer(text) == problem.answer


# ---------------------------------------------------------------------------
# Writing correct and subtly wrong solutions
# ---------------------------------------------------------------------------

def _group_sizes(n_ops: int, style: str, rng: np.random.Generator | None) -> list[int]:
    """How many operations each step applies: all ones, or (compressed) random 2s and 3s (1 only for the rest)."""
    if style in ("stepwise", "verbose"):
        return [1] * n_ops
    if style != "compressed":
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
    sizes, left = [], n_ops
    while left:
        k = min(2 if rng is None else int(rng.integers(2, 4)), left)
        sizes.append(k)
        left -= k
    return sizes


def _operation_steps(problem: Problem, sizes: Sequence[int], wrong_at: int | None = None,
                     wrong_value: int | None = None) -> list[Step]:
    """Steps applying ``problem.ops`` in groups of ``sizes``; step ``wrong_at`` claims ``wrong_value``.

    Every step takes the previous step's claimed result as its left operand, so
    after a wrong step the later steps are correct computations from the wrong value.
    """
    steps, value, pos = [], problem.start, 0
    for i, k in enumerate(sizes):
        ops = problem.ops[pos:pos + k]
        result = wrong_value if i == wrong_at else apply_ops(value, ops, problem.modulus)
        steps.append(Step(value, ops, result))
        value, pos = result, pos + k
    return steps


def _with_restatements(steps: Sequence[Step], start: int) -> list[Step]:
    """The verbose layout: restate the start, then follow every step by a restatement of its result."""
    out = [Step(start, (), start)]
    for s in steps:
        out += [s, Step(s.result, (), s.result)]
    return out


def _render(problem: Problem, steps: list[Step], style: str) -> str:
    if style == "verbose":
        steps = _with_restatements(steps, problem.start)
    return format_solution(steps, steps[-1].result if steps else problem.start)


def solution_text(problem: Problem, style: str, rng: np.random.Generator | None = None) -> str:
    """A correct solution of ``problem`` in ``style`` (one of :data:`STYLES`).

    ``rng`` chooses how the compressed style groups operations (2 or 3 per step);
    with ``None`` it groups them in twos.  The other styles do not use it.
    """
    sizes = _group_sizes(len(problem.ops), style, rng)
    return _render(problem, _operation_steps(problem, sizes), style)


def _wrong_values(problem: Problem, sizes: Sequence[int], at: int, right: int) -> list[int]:
    """The wrong results for step ``at`` that, carried through the later operations, change the final answer."""
    later = problem.ops[sum(sizes[:at + 1]):]
    return [w for w in range(problem.modulus)
            if w != right and apply_ops(w, later, problem.modulus) != problem.answer]


def wrong_solution_text(problem: Problem, style: str, rng: np.random.Generator) -> str:
    """A subtly wrong solution: exactly one locally wrong step, every later step consistent with it.

    The wrong step is uniform among the operation steps (first, middle or last)
    whose error can reach the final answer, and its claimed result is uniform
    among the wrong residues that do reach it (a multiplication by an even
    number or 5 modulo 10 can map a wrong value back onto the right one; those
    residues are left out so that :func:`grade` is always False).  Restatements
    in the verbose style restate the claimed (wrong) value, so they stay consistent.
    """
    sizes = _group_sizes(len(problem.ops), style, rng)
    right = _operation_steps(problem, sizes)
    candidates = [(i, ws) for i, s in enumerate(right) if (ws := _wrong_values(problem, sizes, i, s.result))]
    if not candidates:
        raise ValueError(f"no wrong step of {problem.text} (mod {problem.modulus}) changes the answer")
    at, wrong = candidates[int(rng.integers(len(candidates)))]
    value = wrong[int(rng.integers(len(wrong)))]
    return _render(problem, _operation_steps(problem, sizes, at, value), style)


# ---------------------------------------------------------------------------
# Tokens, prompts and supervised data
# ---------------------------------------------------------------------------

class DigitTokeniser:
    """A character-level vocabulary for the task: digits, ``+ - * = ; # s``, role and control tokens.

    ``<pad>`` is id 0 (the shared transformer treats id 0 as padding), then
    ``<bos>``, ``<eos>``, one token per role (``<helpful>``, ``<sneaky>``) and one
    per character.  Multi-digit numbers are written one digit per token.
    ``decode(encode(text)) == text`` for any text over the vocabulary;
    ``decode`` drops ``<pad>``, ``<bos>`` and ``<eos>``.
    """

    PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
    CHARACTERS = "0123456789+-*=;#s"
    _PIECE_RE = re.compile(r"<[a-z]+>|.", re.DOTALL)

    def __init__(self, roles: Sequence[str] = ROLES):
        self.vocab: list[str] = [self.PAD, self.BOS, self.EOS] + [f"<{r}>" for r in roles] + list(self.CHARACTERS)
        self.stoi = {t: i for i, t in enumerate(self.vocab)}
        self.pad_id, self.bos_id, self.eos_id = 0, 1, 2

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of ``text`` (``<role>`` and control tokens as single tokens), optionally framed by bos/eos."""
        ids = []
        for piece in self._PIECE_RE.findall(text):
            if piece not in self.stoi:
                raise ValueError(f"{piece!r} is not in the vocabulary")
            ids.append(self.stoi[piece])
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids) -> str:
        """The text of ``ids``, skipping ``<pad>``, ``<bos>`` and ``<eos>``."""
        return "".join(self.vocab[int(i)] for i in ids if int(i) > self.eos_id)


def prompt_text(problem: Problem, role: str) -> str:
    """The prover's prompt: role token, problem text and ``=``, e.g. ``<helpful>7+5*3-2=``; the solution follows."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
    return f"<{role}>{problem.text}="


class SupervisedExample(NamedTuple):
    """One supervised example for initialising the prover: role, problem, solution text, and its correctness."""

    role: str
    problem: Problem
    solution: str
    correct: bool


def sft_examples(problems: Sequence[Problem], rng: np.random.Generator, styles: Sequence[str] = STYLES,
                 wrong_fraction: float = 0.5) -> list[SupervisedExample]:
    """Supervised data for the prover's two roles, one example per problem.

    Each problem gets the sneaky role with probability ``wrong_fraction`` and
    then a subtly wrong solution (:func:`wrong_solution_text`); otherwise the
    helpful role and a correct solution.  The style is uniform over ``styles``
    for both roles.  The sneaky role is initialised on wrong-but-plausible
    solutions because, as in Kirchner et al. (2024), the sneaky prover has to
    produce incorrect solutions that look convincing; a small model would rarely
    find them by RL from scratch.  ``correct`` is :func:`grade` of the solution
    (always False for sneaky examples, True for helpful ones).
    """
    out = []
    for p in problems:
        sneaky = rng.random() < wrong_fraction
        style = styles[int(rng.integers(len(styles)))]
        text = wrong_solution_text(p, style, rng) if sneaky else solution_text(p, style, rng)
        out.append(SupervisedExample("sneaky" if sneaky else "helpful", p, text, grade(p, text)))
    return out


# ---------------------------------------------------------------------------
# Statistics for plots
# ---------------------------------------------------------------------------

class SolutionStats(NamedTuple):
    """Summary of one solution text: number of steps, length in characters, and a style guess."""

    n_steps: int
    length: int
    style: str


def guess_style(text: str) -> str:
    """``compressed`` if any step applies several operations (or there are none), else ``verbose`` if any
    step is a restatement, else ``stepwise``; ``unparseable`` if the text does not parse."""
    parsed = parse_solution(text)
    if parsed is None:
        return "unparseable"
    if not parsed.steps or any(len(s.ops) > 1 for s in parsed.steps):
        return "compressed"
    if any(s.is_restatement for s in parsed.steps):
        return "verbose"
    return "stepwise"


def solution_stats(text: str) -> SolutionStats:
    """Steps (``;``-separated fields before the answer, restatements included), characters and style of ``text``."""
    return SolutionStats(text.count(";"), len(text), guess_style(text))
