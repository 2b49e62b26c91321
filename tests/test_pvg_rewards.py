"""The prover–verifier game's Bradley–Terry loss and rewards on small hand-computed tables."""
from __future__ import annotations

import math

import pytest
import torch

from repro.pvg.rewards import (bradley_terry_loss, cgc_reward, correctness_reward, goodhart_reward, kl_penalty,
                               reward, role_baseline, src_reward)


def test_bradley_terry_loss_by_hand():
    good, bad = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0])
    expected = -(math.log(1 / (1 + math.exp(-2.0))) + math.log(1 / (1 + math.exp(1.0)))) / 2
    assert bradley_terry_loss(good, bad).item() == pytest.approx(expected, rel=1e-6)
    assert bradley_terry_loss(torch.tensor([0.0]), torch.tensor([0.0])).item() == pytest.approx(math.log(2))


# four solutions: helpful+correct, helpful+wrong, sneaky+wrong, sneaky+correct; scores 3, 1, 2, -2 (mean 1)
SCORES = torch.tensor([3.0, 1.0, 2.0, -2.0])
CORRECT = torch.tensor([1, 0, 0, 1])
HELPFUL = torch.tensor([1, 1, 0, 0])


def test_src_on_a_table():
    # V' = 2, 0, 1, -3: positive only for rows 0 and 2 (both role-aligned: sign +1); the rest get -1
    torch.testing.assert_close(src_reward(SCORES, CORRECT, HELPFUL), torch.tensor([2.0, -1.0, 1.0, -1.0]))
    # a misaligned solution with V' > 0 is punished in proportion: helpful+wrong scoring highest
    torch.testing.assert_close(src_reward(torch.tensor([5.0, 1.0]), torch.tensor([0, 1]), torch.tensor([1, 1])),
                               torch.tensor([-2.0, -1.0]))


def test_cgc_goodhart_and_correctness_on_a_table():
    torch.testing.assert_close(cgc_reward(SCORES, CORRECT, HELPFUL), torch.tensor([3.0, -2.0, 2.0, -2.0]))
    torch.testing.assert_close(goodhart_reward(SCORES, CORRECT, HELPFUL), SCORES)
    torch.testing.assert_close(correctness_reward(SCORES, CORRECT, HELPFUL), torch.tensor([1.0, 0.0, 0.0, 1.0]))
    torch.testing.assert_close(reward("cgc", SCORES, CORRECT, HELPFUL), cgc_reward(SCORES, CORRECT, HELPFUL))
    with pytest.raises(ValueError, match="unknown reward"):
        reward("lenient", SCORES, CORRECT, HELPFUL)


def test_role_baseline_centres_each_role():
    adv = role_baseline(torch.tensor([1.0, 3.0, 10.0, 20.0]), HELPFUL)
    torch.testing.assert_close(adv, torch.tensor([-1.0, 1.0, -5.0, 5.0]))


def test_kl_is_zero_for_identical_policies_and_counts_valid_tokens():
    lp = torch.log(torch.tensor([[0.5, 0.25, 0.9], [0.1, 0.2, 0.3]]))
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    torch.testing.assert_close(kl_penalty(lp, lp, mask), torch.zeros(2))
    ref = lp - 0.5
    torch.testing.assert_close(kl_penalty(lp, ref, mask), torch.tensor([1.0, 1.5]))
