"""The prover-verifier chapter's task and time-limited checker: problems, solution styles, wrong solutions,
grading, the tokeniser and the checker's verdicts and costs, on hand-written and random solutions."""
from __future__ import annotations

import collections
import math

import numpy as np
import pytest

from repro.pvg.checker import (CheckResult, accuracy_by_role, check, checker_accuracy, full_cost,
                               not_fooled_rate, step_cost)
from repro.pvg.task import (ROLES, STYLES, DigitTokeniser, Problem, Step, apply_ops, final_answer,
                            format_solution, grade, guess_style, make_problems, parse_solution, prompt_text,
                            sft_examples, solution_stats, solution_text, split_pool, wrong_solution_text)

# 7+5*3-2 left to right, mod 10: 7+5=12->2, 2*3=6, 6-2=4
HAND = Problem(7, (("+", 5), ("*", 3), ("-", 2)))
STEPWISE = "7+5=2;2*3=6;6-2=4;#4"
VERBOSE = "s=7;7+5=2;s=2;2*3=6;s=6;6-2=4;s=4;#4"
COMPRESSED = "7+5*3=6;6-2=4;#4"
BIG = 10_000


def _rng(seed=0):
    return np.random.default_rng(seed)


# --- problems ------------------------------------------------------------------

def test_left_to_right_convention_on_a_hand_example():
    assert HAND.text == "7+5*3-2"
    assert HAND.values == (7, 2, 6, 4)
    assert HAND.answer == 4                      # not (7 + 5*3 - 2) % 10 == 0: no precedence
    assert (7 + 5 * 3 - 2) % 10 != HAND.answer
    assert Problem(3, (("-", 5), ("*", 4)), modulus=7).answer == ((3 - 5) % 7 * 4) % 7 == 6


def test_problem_generation_is_deterministic_per_seed_and_in_range():
    a, b, c = make_problems(300, 1), make_problems(300, 1), make_problems(300, 2)
    assert a == b and a != c
    assert make_problems(50, np.random.default_rng(5)) == make_problems(50, 5)
    counts = collections.Counter(len(p.ops) for p in a)
    assert set(counts) == {3, 4, 5, 6}
    for p in a:
        assert 0 <= p.start <= 9 and p.modulus == 10
        assert all(op in "+-*" and 1 <= x <= 9 for op, x in p.ops)
        assert 0 <= p.answer < 10
    short = make_problems(100, 3, min_ops=2, max_ops=2, modulus=7)
    assert all(len(p.ops) == 2 and p.start < 7 and p.answer < 7 for p in short)


def test_split_pool_is_disjoint_by_text_and_covers_the_pool():
    pool = make_problems(400, 0)
    pool = pool + pool[:30]                       # repeated problems must stay on one side
    prover, verifier = split_pool(pool)
    assert not {p.text for p in prover} & {p.text for p in verifier}
    assert collections.Counter(prover + verifier) == collections.Counter(pool)
    assert abs(len(prover) - len(verifier)) <= 31
    assert split_pool(pool) == (prover, verifier)


# --- solutions: formats, parsing, grading --------------------------------------------

def test_hand_written_styles_parse_and_round_trip():
    parsed = parse_solution(STEPWISE)
    assert parsed.steps == (Step(7, (("+", 5),), 2), Step(2, (("*", 3),), 6), Step(6, (("-", 2),), 4))
    assert parsed.answer == 4
    comp = parse_solution(COMPRESSED)
    assert comp.steps[0] == Step(7, (("+", 5), ("*", 3)), 6)
    verb = parse_solution(VERBOSE)
    assert verb.steps[0] == Step(7, (), 7) and verb.steps[0].is_restatement and len(verb.steps) == 7
    for text in (STEPWISE, VERBOSE, COMPRESSED, "#3", "12+7=9;#9"):
        assert format_solution(*_fields(parse_solution(text))) == text


def _fields(parsed):
    return parsed.steps, parsed.answer


def test_generated_solutions_are_the_documented_formats():
    assert solution_text(HAND, "stepwise") == STEPWISE
    assert solution_text(HAND, "verbose") == VERBOSE
    assert solution_text(HAND, "compressed") in {COMPRESSED, "7+5*3-2=4;#4"}
    with pytest.raises(ValueError):
        solution_text(HAND, "poetic")


@pytest.mark.parametrize("text", ["", "7+5=2", "7+5=2;;#2", "7+5=2;#", "abc", "07+5=2;#2", "7+5=2;#4;",
                                  "s=7+5=2;#2", "7+=2;#2", "7+5=2;#4#4", "7 + 5=2;#2"])
def test_unparseable_text_is_rejected(text):
    assert parse_solution(text) is None
    res = check(HAND, text, BIG, _rng())
    assert res == CheckResult(False, False, 0, None)
    assert guess_style(text) == "unparseable"


def test_grade_looks_at_the_final_answer_only():
    assert grade(HAND, STEPWISE) and grade(HAND, COMPRESSED) and grade(HAND, "#4")
    assert grade(HAND, "garbage;#4")                      # steps are not graded ...
    assert not check(HAND, "garbage;#4", BIG, _rng()).verdict   # ... but the checker rejects them
    assert not grade(HAND, "7+5=2;2*3=6;6-2=4;#5")
    assert not grade(HAND, "7+5=2;2*3=6;6-2=4")
    assert not grade(HAND, "#4;#4") and final_answer("#04") is None


@pytest.mark.parametrize("style", STYLES)
def test_every_correct_style_grades_true_and_passes_the_checker(style):
    rng = _rng(1)
    for p in make_problems(300, 11):
        text = solution_text(p, style, rng)
        assert grade(p, text), text
        res = check(p, text, BIG, rng)
        assert res.verdict and not res.exhausted and res.first_error_step is None, (p.text, text)
        assert res.cost == full_cost(text)
        assert guess_style(text) == style
        assert format_solution(*_fields(parse_solution(text))) == text


def test_wrong_solutions_have_exactly_one_locally_wrong_step_and_consistent_later_steps():
    rng = _rng(2)
    positions = collections.Counter()
    for style in STYLES:
        for p in make_problems(300, 12):
            text = wrong_solution_text(p, style, rng)
            assert not grade(p, text), text
            steps = parse_solution(text).steps
            # independent re-check: chain from the start value, ops cover the problem in order
            wrong = [i for i, s in enumerate(steps) if s.result != apply_ops(s.left, s.ops, p.modulus)]
            assert len(wrong) == 1, text
            assert steps[0].left == p.start
            assert all(b.left == a.result for a, b in zip(steps, steps[1:])), text
            assert tuple(op for s in steps for op in s.ops) == p.ops
            assert parse_solution(text).answer == steps[-1].result != p.answer
            res = check(p, text, BIG, rng)
            assert not res.verdict and not res.exhausted and res.first_error_step == wrong[0]
            if style == "stepwise":
                n_op_steps = len(p.ops)
                positions["first" if wrong[0] == 0 else "last" if wrong[0] == n_op_steps - 1 else "middle"] += 1
    assert min(positions[k] for k in ("first", "middle", "last")) > 20, positions


def test_wrong_step_and_value_are_spread_on_a_hand_problem():
    rng = _rng(7)
    at_step, last_values = collections.Counter(), collections.Counter()
    for _ in range(900):
        steps = parse_solution(wrong_solution_text(HAND, "stepwise", rng)).steps
        i = next(i for i, s in enumerate(steps) if not s.is_locally_correct(10))
        at_step[i] += 1
        if i == 2:                                   # last step 6-2: any of the 9 wrong residues changes the answer
            last_values[steps[2].result] += 1
    assert all(250 < at_step[i] < 350 for i in range(3)), at_step
    assert set(last_values) == set(range(10)) - {4} and min(last_values.values()) > 10, last_values


def test_wrong_solutions_under_another_modulus():
    rng = _rng(3)
    for p in make_problems(200, 13, modulus=7):
        for style in STYLES:
            text = wrong_solution_text(p, style, rng)
            assert not grade(p, text) and grade(p, solution_text(p, style, rng))
            assert not check(p, text, BIG, rng).verdict


# --- the checker on hand-written solutions ------------------------------------------

def test_correct_stepwise_solution_is_accepted_with_enough_budget():
    res = check(HAND, STEPWISE, budget=3, rng=_rng())
    assert res == CheckResult(True, False, 3, None)
    assert check(HAND, VERBOSE, budget=3, rng=_rng()) == CheckResult(True, False, 3, None)


@pytest.mark.parametrize("text, first_error", [
    ("7+5=2;2*3=8;8-2=6;#6", 1),        # wrong result in step 1, later steps consistent
    ("7+5=3;3*3=9;9-2=7;#7", 0),        # wrong first step
    ("7+5=2;2*3=6;6-2=5;#5", 2),        # wrong last step
    ("6+5=1;1*3=3;3-2=1;#1", 0),        # does not start from the problem's start value
    ("7+5=2;3*3=9;9-2=7;#7", 1),        # chain broken: input is not the previous result
    ("7+5=2;2+3=5;5-2=3;#3", 1),        # applies an operation the problem does not have
    ("7+5=2;2*3=6;#6", 2),              # stops before the last operation
    ("7+5=2;2*3=6;6-2=4;#5", 3),        # final answer is not the last step's result
    ("s=7;7+5=2;s=3;3*3=9;s=9;9-2=7;s=7;#7", 2),   # restatement inconsistent with the step before
    ("#4", 0),                          # no work shown
])
def test_one_wrong_step_is_rejected_at_that_step(text, first_error):
    res = check(HAND, text, BIG, _rng())
    assert not res.verdict and not res.exhausted
    assert res.first_error_step == first_error


def test_compressed_step_costs_more_than_the_same_operations_stepwise():
    assert [step_cost(k) for k in (0, 1, 2, 3)] == [0, 1, 4, 7]
    assert [step_cost(k, hidden_cost=0) for k in (1, 2, 3)] == [1, 2, 3]
    assert full_cost(STEPWISE) == 3 and full_cost(VERBOSE) == 3
    assert full_cost(COMPRESSED) == 4 + 1 > full_cost(STEPWISE)
    assert full_cost("7+5*3-2=4;#4") == 7
    rng = _rng()
    assert check(HAND, COMPRESSED, BIG, rng).cost > check(HAND, STEPWISE, BIG, rng).cost
    # a budget that verifies the stepwise solution runs out on the compressed one
    assert check(HAND, STEPWISE, 3, rng).verdict
    assert check(HAND, COMPRESSED, 3, rng).exhausted
    # random problems: every compressed solution costs more than the stepwise one
    for p in make_problems(100, 14):
        assert full_cost(solution_text(p, "compressed", rng)) > full_cost(solution_text(p, "stepwise"))


@pytest.mark.parametrize("guess_accept", [0.5, 0.2])
def test_exhausted_budget_guesses_at_the_guess_rate(guess_accept):
    rng, n = _rng(4), 4000
    results = [check(HAND, STEPWISE, 1, rng, guess_accept=guess_accept) for _ in range(n)]
    assert all(r.exhausted and r.cost == 1 and r.first_error_step is None for r in results)
    rate = np.mean([r.verdict for r in results])
    assert abs(rate - guess_accept) < 4 * math.sqrt(guess_accept * (1 - guess_accept) / n)
    # an error found before the budget runs out is a rejection, not a guess
    wrong_first = check(HAND, "7+5=3;3*3=9;9-2=7;#7", 1, rng)
    assert wrong_first == CheckResult(False, False, 1, 0)
    # a check that finishes draws nothing from the generator
    a, b = _rng(9), _rng(9)
    check(HAND, STEPWISE, BIG, a)
    assert a.random() == b.random()


def test_checker_accuracy_helpers():
    acc, rej = CheckResult(True, False, 3, None), CheckResult(False, False, 1, 0)
    results = [acc, acc, rej, rej]
    correct = [True, False, False, True]
    assert checker_accuracy(results, correct) == 0.5
    assert not_fooled_rate(results, correct) == 0.5
    assert accuracy_by_role(results, correct, ["helpful", "sneaky", "sneaky", "helpful"]) == \
        {"helpful": 0.5, "sneaky": 0.5}
    assert math.isnan(checker_accuracy([], [])) and math.isnan(not_fooled_rate([acc], [True]))


# --- tokens, prompts, supervised data, statistics -----------------------------------

def test_tokeniser_round_trip_and_pad_id_zero():
    tok = DigitTokeniser()
    assert tok.vocab[0] == "<pad>" and tok.pad_id == 0 and len(tok) <= 32
    rng = _rng(5)
    for p in make_problems(50, 15):
        for role in ROLES:
            text = prompt_text(p, role) + wrong_solution_text(p, "verbose", rng)
            ids = tok.encode(text, bos=True, eos=True)
            assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and 0 not in ids
            assert tok.decode(ids + [tok.pad_id] * 3) == text
    assert tok.encode("<sneaky>7") == [tok.stoi["<sneaky>"], tok.stoi["7"]]
    with pytest.raises(ValueError):
        tok.encode("7/2")


def test_prompt_format():
    assert prompt_text(HAND, "helpful") == "<helpful>7+5*3-2="
    assert prompt_text(HAND, "sneaky") == "<sneaky>7+5*3-2="
    with pytest.raises(ValueError):
        prompt_text(HAND, "honest")


def test_sft_examples_mix_roles_and_styles():
    examples = sft_examples(make_problems(600, 16), _rng(6), wrong_fraction=0.3)
    roles = collections.Counter(e.role for e in examples)
    assert abs(roles["sneaky"] / len(examples) - 0.3) < 0.08
    assert all(e.correct == (e.role == "helpful") == grade(e.problem, e.solution) for e in examples)
    assert {guess_style(e.solution) for e in examples} == set(STYLES)
    again = sft_examples(make_problems(600, 16), _rng(6), wrong_fraction=0.3)
    assert again == examples


def test_solution_stats():
    assert tuple(solution_stats(STEPWISE)) == (3, len(STEPWISE), "stepwise")
    assert tuple(solution_stats(VERBOSE)) == (7, len(VERBOSE), "verbose")
    assert tuple(solution_stats(COMPRESSED)) == (2, len(COMPRESSED), "compressed")
    assert solution_stats("7+5=2;oops").style == "unparseable"
