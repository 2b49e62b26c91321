"""pass@k: the stable and vectorised forms against exact integer binomials."""
from __future__ import annotations

from fractions import Fraction
from math import comb

import numpy as np
import pytest

from repro.codex.passk import (mean_pass_at_k, pass_at_k, pass_at_k_exact, pass_at_k_naive,
                               pass_at_k_product)


@pytest.mark.parametrize("n", [1, 2, 5, 10, 37, 100, 200, 513, 1000])
def test_stable_forms_match_fractions(n):
    ks = sorted({1, 2, 5, 10, 50, 100, 500, n} & set(range(1, n + 1)))
    c = np.arange(n + 1)
    for k in ks:
        exact = np.array([float(1 - Fraction(comb(n - ci, k), comb(n, k))) for ci in c])
        vec = pass_at_k(np.full_like(c, n), c, k)
        assert np.allclose(vec, exact, rtol=1e-9, atol=1e-12), (n, k, np.abs(vec - exact).max())
        for ci in range(0, n + 1, max(1, n // 17)):
            assert pass_at_k_product(n, ci, k) == pytest.approx(exact[ci], rel=1e-9, abs=1e-12)


def test_edge_cases():
    assert pass_at_k_exact(10, 0, 3) == 0
    assert pass_at_k_exact(10, 8, 3) == 1          # n - c < k: every k-subset holds a correct sample
    assert pass_at_k(10, 8, 3) == 1.0 and pass_at_k(10, 0, 3) == 0.0
    assert pass_at_k(7, 3, 1) == pytest.approx(3 / 7)  # pass@1 is the fraction correct
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError):
        pass_at_k(5, 2, 6)


def test_unbiased_is_expectation_over_subsets():
    """pass@k from n samples equals the mean, over all k-subsets, of 'some sample in the subset passes'."""
    import itertools
    n, c, k = 8, 3, 3
    correct = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    mean = Fraction(sum(any(correct[i] for i in s) for s in subsets), len(subsets))
    assert pass_at_k_exact(n, c, k) == mean


def test_naive_is_biased_low():
    """E[naive] < true pass@k under binomial sampling; E[unbiased] equals it (exact sums)."""
    p, n, k = 0.1, 20, 10
    true = 1 - (1 - p) ** k
    w = np.array([comb(n, c) * p**c * (1 - p) ** (n - c) for c in range(n + 1)])
    e_unbiased = float((w * pass_at_k(n, np.arange(n + 1), k)).sum())
    e_naive = float((w * pass_at_k_naive(n, np.arange(n + 1), k)).sum())
    assert e_unbiased == pytest.approx(true, abs=1e-12)
    assert e_naive < true - 0.02


def test_mean_over_problems_skips_large_k():
    out = mean_pass_at_k([10, 10], [0, 10], ks=(1, 10, 100))
    assert out == {"pass@1": 0.5, "pass@10": 0.5}
