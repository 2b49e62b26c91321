"""Prover-verifier games at toy scale (Kirchner et al., 2024: legibility of LLM outputs).

- :mod:`repro.pvg.task`: multi-step modular arithmetic problems (evaluated left
  to right), solutions as step lists in three styles (stepwise, verbose,
  compressed), subtly wrong solutions, grading by final answer, the character
  tokeniser, prompts and supervised data for the prover's helpful and sneaky roles.
- :mod:`repro.pvg.checker`: the time-limited checker that stands in for the
  paper's time-limited human raters.

Importing this package imports neither torch nor :mod:`repro.pvg.rewards` (the game's losses and
rewards, written separately, which needs torch); the task and the checker use numpy only.
"""
from .checker import (CheckResult, accuracy_by_role, check, check_many, checker_accuracy, full_cost,
                      not_fooled_rate, step_cost)
from .task import (ROLES, STYLES, DigitTokeniser, ParsedSolution, Problem, Step, SupervisedExample,
                   SolutionStats, final_answer, format_solution, grade, guess_style, make_problems,
                   parse_solution, prompt_text, sft_examples, solution_stats, solution_text, split_pool,
                   wrong_solution_text)

__all__ = ["CheckResult", "accuracy_by_role", "check", "check_many", "checker_accuracy", "full_cost",
           "not_fooled_rate", "step_cost", "ROLES", "STYLES", "DigitTokeniser", "ParsedSolution", "Problem",
           "Step", "SupervisedExample", "SolutionStats", "final_answer", "format_solution", "grade",
           "guess_style", "make_problems", "parse_solution", "prompt_text", "sft_examples", "solution_stats",
           "solution_text", "split_pool", "wrong_solution_text"]
