"""The prover–verifier chapter's config, a seed of the toy game at smoke size, and the per-seed numbers."""
from __future__ import annotations

import math

import pytest
import torch

from repro.chapters.prover_verifier.config import CLAIMS, MIN_SEEDS, ProverVerifierConfig
from repro.chapters.prover_verifier.experiments import fooled, game_settings, per_seed, play_seed, problems_for
from repro.config import ConfigError
from repro.scorecard import FINDING

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_config_validation():
    with pytest.raises(ConfigError, match="operators"):
        ProverVerifierConfig.for_profile("book", operators="+/")
    with pytest.raises(ConfigError, match="smaller"):
        ProverVerifierConfig.for_profile("book", verifier_d=128)
    with pytest.raises(ConfigError, match="min_ops"):
        ProverVerifierConfig.for_profile("book", min_ops=5, max_ops=4)
    with pytest.raises(ConfigError, match="together"):
        ProverVerifierConfig.for_profile("paper", hf_prover="/models/p")
    with pytest.raises(ConfigError):
        ProverVerifierConfig.for_profile("book", reward="correctness")  # the baseline is run anyway
    book = ProverVerifierConfig.for_profile("book")
    assert book.n_seeds >= MIN_SEEDS and not book.uses_hf
    s = game_settings(book)
    assert s.prover == (64, 2, 4) and s.verifier == (16, 1, 2) and s.sft_steps == book.sft_steps


def test_problem_halves_are_disjoint_and_held_out_problems_unseen():
    cfg = ProverVerifierConfig.for_profile("smoke")
    prover_half, verifier_half, held_out = problems_for(cfg, 0)
    texts = lambda ps: {p.text for p in ps}  # noqa: E731
    assert not texts(prover_half) & texts(verifier_half)
    assert not texts(held_out) & (texts(prover_half) | texts(verifier_half))
    assert len(held_out) == cfg.eval_problems


def test_one_seed_of_the_toy_game_at_smoke():
    cfg = ProverVerifierConfig.for_profile("smoke", rounds=2)
    res = play_seed(cfg, 3)
    assert res["seed"] == 3 and len(res["rounds"]) == 2 and len(res["correctness"]) == 2
    assert res["rounds"][1]["verifier_data"] == 2 * res["rounds"][0]["verifier_data"]  # all provers so far
    for ev in [res["sft_eval"], *res["rounds"]]:
        assert 0 <= ev["helpful_accuracy"] <= 1 and 1 <= ev.get("attacker_steps", 1) <= cfg.attacker_steps + 1
    assert set(res["correctness"][0]) >= {"helpful_accuracy", "helpful_checker_accuracy"}
    assert "sneaky_accuracy" not in res["correctness"][0]  # the baseline has no sneaky role


def test_per_seed_orders_by_seed_and_reads_the_right_place():
    mk = lambda seed, a: {"seed": seed, "sft_eval": {"x": a}, "rounds": [{"x": a + 1}, {"x": a + 2}],  # noqa: E731
                          "correctness": [{"x": a + 3}]}
    res = [mk(2, 20.0), mk(1, 10.0)]
    assert per_seed(res, "x", "sft") == [10.0, 20.0]
    assert per_seed(res, "x", "first") == [11.0, 21.0] and per_seed(res, "x", "last") == [12.0, 22.0]
    assert per_seed(res, "x", "correctness") == [13.0, 23.0]
    assert fooled({"sneaky_accepts_incorrect": 0.25}) == 0.25


def test_claims_are_paired_over_enough_seeds():
    ids = [c.id for c in CLAIMS]
    assert len(ids) == len(set(ids))
    for c in CLAIMS:
        if c.kind == FINDING:
            assert c.rule.paired and c.rule.min_seeds == MIN_SEEDS and f"≥ {MIN_SEEDS} seeds" in c.statement


def test_paper_profile_plays_rounds_on_tiny_language_models(tmp_path, monkeypatch):
    """The paper profile's engine through the chapter: tiny random GPT-2 prover and verifier, GSM8K-format data."""
    pytest.importorskip("transformers")
    from test_pvg_hf import PROBLEMS, _parity_grade, _tiny_models, _write_jsonl

    from repro.chapters.prover_verifier.experiments import hf_rounds
    from repro.pvg import hf

    monkeypatch.setattr(hf, "grade_math", _parity_grade)  # random models never solve a problem
    paths = _tiny_models(tmp_path)
    data = _write_jsonl(tmp_path / "train.jsonl", PROBLEMS)
    cfg = ProverVerifierConfig.for_profile("paper", hf_prover=paths["prover"], hf_verifier=paths["verifier"],
                                           data_path=str(data), rounds=1, hf_rl_steps=1, hf_batch=4,
                                           hf_max_new_tokens=4, hf_verifier_samples=3, hf_verifier_steps=2,
                                           hf_eval_problems=2)
    assert cfg.uses_hf and cfg.rounds == 1
    recs = hf_rounds(cfg, tmp_path / "run", torch.device("cpu"))
    assert len(recs) == 1 and (tmp_path / "run" / "checkpoints" / hf.CHECKPOINT_NAME).exists()
    assert all(math.isfinite(v) for k, v in recs[0].items() if isinstance(v, float) and k != "sneaky_success")
