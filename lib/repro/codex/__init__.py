"""Evaluating code models by functional correctness (Chen et al., 2021: Codex / HumanEval).

- :mod:`repro.codex.sandbox`: run untrusted programs, one process each, with limits.
- :mod:`repro.codex.passk`: the unbiased pass@k estimator (stable form) and the naive one.
- :mod:`repro.codex.humaneval`: HumanEval problems, human-eval-compatible files, mutants, benchmark.
- :mod:`repro.codex.tasks`: the synthetic chained-string-operations task family.
- :mod:`repro.codex.model`: a tiny code model, batched sampling with stop sequences, BLEU.
- :mod:`repro.codex.experiments`: the chapter's config and experiments.
- ``python -m repro.codex evaluate SAMPLES``: the command-line evaluator.

Importing this package imports neither torch nor transformers; the experiments do.
"""
from .passk import pass_at_k, pass_at_k_exact, pass_at_k_naive, pass_at_k_product
from .sandbox import Limits, Outcome, Sandbox, run_programs


def __getattr__(name):
    if name == "CodexConfig":  # lazy: keeps `python -m repro.codex` free of torch
        from .experiments import CodexConfig
        return CodexConfig
    raise AttributeError(name)


__all__ = ["Limits", "Outcome", "Sandbox", "run_programs", "pass_at_k", "pass_at_k_exact", "pass_at_k_naive",
           "pass_at_k_product", "CodexConfig"]
