"""The prover–verifier game's pieces end to end on tiny settings (sizes far below the book's)."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from repro.pvg.game import (GameSettings, attacker_steps, correct_incorrect_pairs, evaluate,
                            helpful_reference_score, rl_steps, sample_solutions, train_prover_sft,
                            train_verifier, verifier_data, verifier_scores)
from repro.pvg.task import DigitTokeniser, make_problems, solution_text, split_pool, wrong_solution_text

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = GameSettings(prover=(16, 1, 2), verifier=(8, 1, 2), sft_steps=5, sft_batch=8, verifier_steps=5,
                    verifier_batch=8, verifier_samples=8, rl_steps=2, rl_batch=8, attacker_steps=2,
                    eval_problems=8, max_new_tokens=40)


def test_pairs_match_correct_and_incorrect_solutions_of_one_problem():
    a, b = make_problems(2, 0)
    data = [(a, "x1", True), (a, "x2", True), (a, "y1", False), (b, "z1", True), (b, "w1", True)]
    pairs = correct_incorrect_pairs(data)
    assert sorted((p.text, g, w) for p, g, w in pairs) == sorted([(a.text, "x1", "y1"), (a.text, "x2", "y1")])


def test_verifier_training_lowers_the_bradley_terry_loss_from_fixed_initial_weights():
    """Retrained from the same initial weights every round; training lowers the pairwise loss on its pairs."""
    from repro.pvg.rewards import bradley_terry_loss
    tok = DigitTokeniser()
    rng = np.random.default_rng(0)
    train = make_problems(64, 1, operators=("+",))
    data = [(p, solution_text(p, "stepwise"), True) for p in train]
    data += [(p, wrong_solution_text(p, "stepwise", rng), False) for p in train]
    s = GameSettings(verifier=(16, 1, 2), verifier_steps=150, verifier_batch=32)

    def loss(model):
        good = verifier_scores(model, tok, train, [d[1] for d in data[:64]])
        bad = verifier_scores(model, tok, train, [d[1] for d in data[64:]])
        return bradley_terry_loss(good, bad).item()

    untrained = train_verifier(tok, [], s, seed=0)  # no pairs: the initial weights, the same every round
    again = train_verifier(tok, [], s, seed=0)
    assert all(torch.equal(x, y) for x, y in zip(untrained.parameters(), again.parameters()))
    trained = train_verifier(tok, data, s, seed=0)
    assert loss(trained) < 0.8 * loss(untrained)


def test_one_round_end_to_end_on_tiny_settings():
    tok = DigitTokeniser()
    prover_half, verifier_half = split_pool(make_problems(200, 0))
    test = make_problems(8, 9)
    sft = train_prover_sft(tok, prover_half, TINY, seed=0)
    data = verifier_data(sft, tok, verifier_half, TINY, seed=1)
    assert len(data) == 2 * TINY.verifier_samples
    ver = train_verifier(tok, data, TINY, seed=2)
    prover = copy.deepcopy(sft)
    recs = rl_steps(prover, sft, ver, tok, prover_half, TINY, "src", TINY.rl_steps, seed=3)
    assert len(recs) == TINY.rl_steps and all(math.isfinite(r["kl"]) for r in recs)
    assert recs[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # the first batch is sampled from pi = pi_0
    ev = evaluate(prover, ver, tok, test, TINY, seed=4)
    for role in ("helpful", "sneaky"):
        assert 0 <= ev[f"{role}_accuracy"] <= 1 and 0 <= ev[f"{role}_checker_accuracy"] <= 1
        assert sum(ev[f"{role}_share_{k}"] for k in ("stepwise", "verbose", "compressed", "unparseable")) == \
            pytest.approx(1.0)
    ref = helpful_reference_score(prover, ver, tok, test, TINY, seed=5)
    n = attacker_steps(sft, ver, tok, prover_half, ref, TINY, seed=6)
    assert 1 <= n <= TINY.attacker_steps + 1


def test_sampling_is_seeded():
    tok = DigitTokeniser()
    probs = make_problems(4, 0)
    sft = train_prover_sft(tok, probs, TINY, seed=0)
    a = sample_solutions(sft, tok, probs, ["helpful"] * 4, TINY, torch.Generator().manual_seed(1))
    b = sample_solutions(sft, tok, probs, ["helpful"] * 4, TINY, torch.Generator().manual_seed(1))
    assert a.texts == b.texts and torch.equal(a.tokens, b.tokens)
