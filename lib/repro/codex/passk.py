"""pass@k estimators (Chen et al., 2021, section 2.1, functional correctness).

With n samples per problem of which c pass, the unbiased estimator is

    pass@k = 1 - C(n - c, k) / C(n, k)                 (paper eq. 1; book: codex-passk)

and its numerically stable product form is

    pass@k = 1 - prod_{i = n - c + 1}^{n} (1 - k / i),   and 1 if n - c < k.

The naive plug-in estimator 1 - (1 - c/n)^k (book: codex-naive) is biased (it underestimates).
"""
from __future__ import annotations

from fractions import Fraction
from math import comb

import numpy as np


def pass_at_k_exact(n: int, c: int, k: int) -> Fraction:
    """Eq. codex-passk with integer binomials: the exact rational value (reference)."""
    _check(n, c, k)
    return 1 - Fraction(comb(n - c, k), comb(n, k))


def pass_at_k_product(n: int, c: int, k: int) -> float:
    """The stable product form for one problem (the paper's reference code for pass@k)."""
    _check(n, c, k)
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k(n, c, k: int) -> np.ndarray:
    """Unbiased pass@k (eq. codex-passk) per problem, vectorised over problems.

    ``n`` and ``c`` are arrays (or scalars) of samples and correct samples per
    problem.  Uses log(1 - pass@k) = sum_{i=n-c+1}^{n} log1p(-k/i), written as a
    difference of one shared cumulative sum S[i] = sum_{j=k+1}^{i} log1p(-k/j),
    so the cost is one pass over 1..max(n) for any number of problems.
    """
    n = np.asarray(n, dtype=np.int64)
    c = np.asarray(c, dtype=np.int64)
    n, c = np.broadcast_arrays(n, c)
    if k < 1 or (n < k).any() or (c < 0).any() or (c > n).any():
        raise ValueError(f"need 1 <= k <= n and 0 <= c <= n (k={k})")
    top = int(n.max()) if n.size else 0
    i = np.arange(1, top + 1, dtype=np.float64)
    terms = np.where(i > k, np.log1p(-k / np.maximum(i, k + 1)), 0.0)
    S = np.concatenate([[0.0], np.cumsum(terms)])  # S[m] = sum_{i<=m, i>k} log1p(-k/i)
    log_fail = S[n] - S[n - c]
    out = -np.expm1(log_fail)
    return np.where(n - c < k, 1.0, out)


def pass_at_k_naive(n, c, k: int) -> np.ndarray:
    """The biased plug-in estimator 1 - (1 - c/n)^k (eq. codex-naive)."""
    n = np.asarray(n, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    return 1.0 - (1.0 - c / n) ** k


def mean_pass_at_k(n, c, ks=(1, 10, 100)) -> dict[str, float]:
    """Average pass@k over problems for every k that all problems allow (k <= min n)."""
    n = np.asarray(n)
    return {f"pass@{k}": float(pass_at_k(n, c, k).mean()) for k in ks if len(n) and (n >= k).all()}


def _check(n: int, c: int, k: int) -> None:
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
