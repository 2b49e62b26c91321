"""The prover–verifier game's paper-profile engine (repro.pvg.hf) on tiny random GPT-2 models."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="the paper profile's engine needs transformers (the optional extra hf)")

from repro.checkpoint import CheckpointMismatch  # noqa: E402
from repro.pvg import hf  # noqa: E402
from repro.pvg.game import correct_incorrect_pairs  # noqa: E402
from repro.pvg.rewards import bradley_terry_loss, kl_penalty  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny ops: see conftest

# twelve small problems in GSM8K's format (the answer's final line is '#### n')
PROBLEMS = [
    ("Tom has 3 apples and buys 4 more. How many apples does he have?", "3 + 4 = 7\n#### 7"),
    ("A box holds 6 eggs. How many eggs are in 5 boxes?", "6 * 5 = 30\n#### 30"),
    ("Sara had 20 sweets and ate 8. How many are left?", "20 - 8 = 12\n#### 12"),
    ("A shop sells 1,200 pens a day. How many pens in 2 days?", "1,200 * 2 = 2,400\n#### 2,400"),
    ("There are 9 cats and 4 dogs. How many pets are there?", "9 + 4 = 13\n#### 13"),
    ("Ben reads 15 pages a day. How many pages in 3 days?", "15 * 3 = 45\n#### 45"),
    ("A rope is 50 m long. 18 m is cut off. How long is it now?", "50 - 18 = 32\n#### 32"),
    ("Amy saves 7 dollars a week. How much in 6 weeks?", "7 * 6 = 42\n#### 42"),
    ("A bus has 40 seats and 27 are taken. How many are free?", "40 - 27 = 13\n#### 13"),
    ("Each bag has 8 marbles. How many marbles in 9 bags?", "8 * 9 = 72\n#### 72"),
    ("Lily has 11 stickers and gets 19 more. How many now?", "11 + 19 = 30\n#### 30"),
    ("A farm has 100 hens and sells 35. How many remain?", "100 - 35 = 65\n#### 65"),
]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in rows))
    return path


def _tiny_models(folder):
    """A small BPE tokenizer, a random GPT-2 prover and a smaller random GPT-2 verifier, saved to folders."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    texts = [hf.prover_prompt(hf.MathProblem(q, a, ""), r) + " " + a for q, a in PROBLEMS for r in hf.ROLE_NAMES]
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                     initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=t, eos_token="<|endoftext|>")
    paths = {}
    for name, (d, layers) in {"prover": (32, 2), "verifier": (16, 1)}.items():
        path = folder / name
        tok.save_pretrained(path)
        torch.manual_seed(0 if name == "prover" else 1)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=d, n_layer=layers,
                                           n_head=2, eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id))
        if name == "prover":  # generation defaults that must not leak into the game's plain sampling
            model.generation_config.do_sample = True
            model.generation_config.top_k = 3
            model.generation_config.repetition_penalty = 1.5
        model.save_pretrained(path)
        paths[name] = str(path)
    return paths


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pvg_hf")
    paths = _tiny_models(folder)
    paths["data"] = str(_write_jsonl(folder / "train.jsonl", PROBLEMS))
    return paths


@pytest.fixture(scope="module")
def players(tiny):
    return hf.HFPlayers.load(tiny["prover"], tiny["verifier"], "cpu")


@pytest.fixture(scope="module")
def problems(tiny):
    return hf.load_gsm8k_jsonl(tiny["data"])


def _settings(tiny, **kw):
    base = dict(prover_path=tiny["prover"], verifier_path=tiny["verifier"], data_path=tiny["data"], rounds=1,
                rl_steps=2, batch=4, micro_batch=4, lr=1e-3, verifier_samples=3, verifier_steps=3,
                verifier_batch=4, verifier_lr=1e-3, max_new_tokens=6, eval_problems=2, seed=0)
    base.update(kw)
    return hf.HFGameSettings(**base)


# ---------------------------------------------------------------------------- data, grading, prompts

def test_jsonl_parsing_normalises_answers_and_names_a_malformed_line(tmp_path):
    probs = hf.load_gsm8k_jsonl(_write_jsonl(tmp_path / "a.jsonl", PROBLEMS))
    assert len(probs) == 12 and probs[0].answer == "7" and probs[3].answer == "2400"
    assert probs[0].text == probs[0].question and probs[3].answer_text.endswith("#### 2,400")
    assert len(hf.load_gsm8k_jsonl(tmp_path / "a.jsonl", limit=5)) == 5
    assert [hf.normalise_answer(x) for x in ("1,234", " 42 ", "$5.00", "3.50", "-0", "7.")] == \
        ["1234", "42", "5", "3.5", "0", "7"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "#### 1"}) + "\n\n{not json\n")
    with pytest.raises(ValueError, match="line 3"):
        hf.load_gsm8k_jsonl(bad)
    bad.write_text(json.dumps({"question": "q", "answer": "1"}) + "\n")
    with pytest.raises(ValueError, match=r"line 1: the answer has no \"####\""):
        hf.load_gsm8k_jsonl(bad)
    bad.write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(ValueError, match="line 1.*string fields"):
        hf.load_gsm8k_jsonl(bad)
    with pytest.raises(FileNotFoundError, match="GSM8K-format JSONL"):
        hf.load_gsm8k_jsonl(tmp_path / "missing.jsonl")


def test_grading_reads_the_last_hashes_or_else_the_last_number():
    p = hf.MathProblem("q", "#### 2,400", "2400")
    assert hf.grade_math(p, " 1200 * 2 = 2400\n#### 2,400")
    assert hf.grade_math(p, "#### 7\n then again #### 2400 pens")          # the last ####
    assert not hf.grade_math(p, "#### 2400 no, #### 7")
    assert hf.grade_math(p, "so the shop sells 2400 pens")                   # no ####: the last number
    assert not hf.grade_math(p, "2400 pens, or maybe 7")
    assert not hf.grade_math(p, "#### lots") and hf.final_math_answer("#### lots") is None
    assert not hf.grade_math(p, "no numbers here")


def test_halves_are_disjoint_and_prompts_hide_the_role_from_the_verifier(tmp_path):
    probs = hf.load_gsm8k_jsonl(_write_jsonl(tmp_path / "a.jsonl", PROBLEMS + PROBLEMS[:2]))
    a, b = hf.split_halves(probs)
    assert not {p.text for p in a} & {p.text for p in b} and len(a) + len(b) == 14
    x = probs[0]
    assert hf.prover_prompt(x, "helpful").startswith("Role: helpful\n") and x.question in hf.prover_prompt(x, "sneaky")
    assert hf.prover_prompt(x, "sneaky").endswith("Solution:")
    assert "Role" not in hf.verifier_text(x, " 3 + 4 = 7") and hf.verifier_text(x, " z").endswith("Solution: z")
    with pytest.raises(ValueError, match="unknown role"):
        hf.prover_prompt(x, "honest")


def test_settings_name_missing_paths_and_bad_values(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"prover_path '.*nowhere'.*config\.json"):
        _settings(tiny, prover_path=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"verifier_path is empty"):
        _settings(tiny, verifier_path="")
    with pytest.raises(ValueError, match=r"data_path '.*x\.jsonl' does not exist: expected a GSM8K-format JSONL"):
        _settings(tiny, data_path=str(tmp_path / "x.jsonl"))
    with pytest.raises(ValueError, match="unknown reward"):
        _settings(tiny, reward="best")
    with pytest.raises(ValueError, match="batch must be an integer >= 2"):
        _settings(tiny, batch=1)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        _settings(tiny, temperature=0.0)


def test_importing_the_module_does_not_import_transformers():
    code = "import sys, repro.pvg.hf; assert 'transformers' not in sys.modules, 'transformers imported'"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]


# ---------------------------------------------------------------------------- sampling and log-probabilities

@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_teacher_forced_logprobs_equal_generate_scores(players, problems, temperature):
    """completion_logprobs reproduces the log-probabilities of the tokens generate sampled (and no top-k or
    repetition penalty from the model's own generation config leaks into the sampling)."""
    probs = problems[:3]
    prompts = [hf.prover_prompt(p, r) for p in probs for r in hf.ROLE_NAMES]
    torch.manual_seed(0)
    s = hf.sample_completions(players.prover, players.tokenizer, prompts, temperature, 8, players.eos_ids,
                              with_scores=True)
    assert len(s.texts) == 6 and s.lengths.tolist() == [len(c) for c in s.completion_ids]
    assert all(0 < n <= 8 for n in s.lengths.tolist())
    assert all(c[-1] in players.eos_ids for c, f in zip(s.completion_ids, s.finished.tolist()) if f)
    out = hf.completion_logprobs(players.prover, s.prompt_ids, s.completion_ids,
                                 pad_id=players.tokenizer.pad_token_id, temperature=temperature)
    assert out.tokens.requires_grad and out.mask.sum(1).tolist() == s.lengths.tolist()
    assert torch.allclose(out.tokens.detach(), s.logprobs, atol=1e-4), (out.tokens - s.logprobs).abs().max()
    assert torch.allclose(out.total.detach(), s.logprobs.sum(1), atol=1e-4)
    # one row at a time (no padding) gives the same numbers
    one = hf.completion_logprobs(players.prover, s.prompt_ids[:1], s.completion_ids[:1],
                                 pad_id=players.tokenizer.pad_token_id, temperature=temperature)
    assert torch.allclose(one.total.detach(), out.total[:1].detach(), atol=1e-4)


def test_kl_to_the_reference_is_zero_for_the_reference_itself(players, problems):
    probs = problems[:2]
    torch.manual_seed(1)
    s = hf.sample_completions(players.reference, players.tokenizer, [hf.prover_prompt(p, "sneaky") for p in probs],
                              1.0, 6, players.eos_ids)
    pad = players.tokenizer.pad_token_id
    new = hf.completion_logprobs(players.prover, s.prompt_ids, s.completion_ids, pad_id=pad)
    old = hf.completion_logprobs(players.reference, s.prompt_ids, s.completion_ids, pad_id=pad)
    assert torch.equal(kl_penalty(new.tokens, old.tokens, new.mask.float()), torch.zeros(2))
    assert not any(p.requires_grad for p in players.reference.parameters())


# ---------------------------------------------------------------------------- verifier and prover steps

def test_bradley_terry_training_lowers_the_loss_on_its_pairs(players, problems):
    probs = problems[:4]
    data = [(p, f" {p.answer_text.splitlines()[0]}\n#### {p.answer}", True) for p in probs]
    data += [(p, f" the sum is\n#### {int(p.answer) + 1}", False) for p in probs]
    data += [(probs[0], " alone", False), (hf.MathProblem("only right", "#### 1", "1"), "#### 1", True)]
    pairs = correct_incorrect_pairs(data)
    assert len(pairs) == 5   # 4 problems x 1 x 1, plus the extra wrong one of the first; the lone right one has none
    players.reset_verifier()
    before = hf.pair_loss(players.verifier, players.verifier_tokenizer, pairs)
    assert before == pytest.approx(math.log(2), abs=1e-6)   # the zero head scores everything 0
    hist = hf.train_verifier_bt(players, data, steps=25, lr=3e-3, batch=8, seed=0, micro_batch=4)
    after = hf.pair_loss(players.verifier, players.verifier_tokenizer, pairs)
    assert hist["pairs"] == 5 and len(hist["loss"]) == 25 and after < before - 0.1
    good = hf.verifier_scores(players.verifier, players.verifier_tokenizer, [p for p, _, _ in pairs],
                              [g for _, g, _ in pairs])
    bad = hf.verifier_scores(players.verifier, players.verifier_tokenizer, [p for p, _, _ in pairs],
                             [b for _, _, b in pairs])
    assert float(bradley_terry_loss(good, bad)) == pytest.approx(after, abs=1e-5)
    # retraining starts again from the initial weights: the same data and seed give the same verifier
    again = hf.train_verifier_bt(players, data, steps=25, lr=3e-3, batch=8, seed=0, micro_batch=8)
    assert again["loss"] == pytest.approx(hist["loss"], abs=1e-5)
    players.reset_verifier()
    assert hf.pair_loss(players.verifier, players.verifier_tokenizer, pairs) == pytest.approx(before)


# ---------------------------------------------------------------------------- the rounds, checkpointed

def _same(a, b) -> bool:
    """Equal, NaN equal to NaN, at any depth of dicts, lists and tuples."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _without_time(records):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in records]


def _parity_grade(problem, completion):
    """A stand-in grader for random models (which never solve a problem): about half their solutions
    are 'correct', so the verifier has pairs to train on and the rewards vary."""
    return sum(map(ord, completion)) % 2 == 0


def test_prover_rl_step_moves_the_prover_and_reports_its_batch(tiny, problems, monkeypatch):
    monkeypatch.setattr(hf, "grade_math", _parity_grade)
    players = hf.HFPlayers.load(tiny["prover"], tiny["verifier"], "cpu")
    before = [p.detach().clone() for p in players.prover.parameters()]
    opt = torch.optim.Adam(players.prover.parameters(), lr=1e-3)
    torch.manual_seed(0)
    rec = hf.prover_rl_step(players, opt, problems, _settings(tiny, reward="correctness", batch=6, micro_batch=4),
                            np.random.default_rng(0))
    assert math.isnan(rec["accuracy_sneaky"]) and 0.0 <= rec["accuracy_helpful"] <= 1.0   # helpful role only
    assert rec["kl"] == 0.0 and 0 < rec["length"] <= 6      # sampled from the initial prover, before the step
    assert any(not torch.equal(a, b) for a, b in zip(before, players.prover.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(before, players.reference.parameters()))


def test_play_rounds_checkpoints_resumes_and_refuses_other_settings(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(hf, "grade_math", _parity_grade)
    s = _settings(tiny)
    t0 = time.perf_counter()
    first = hf.play_rounds(s, tmp_path / "a", progress=False)
    assert time.perf_counter() - t0 < 30
    assert (tmp_path / "a" / hf.CHECKPOINT_NAME).exists()
    (rec,) = first
    assert rec["round"] == 0 and rec["verifier_data"] == 6 and rec["rl_steps"] == 2 and rec["verifier_pairs"] > 0
    for key in ("helpful_accuracy", "sneaky_accuracy", "sneaky_success", "helpful_length", "sneaky_length",
                "verifier_loss", "rl_reward", "rl_kl", "wall_s"):
        assert math.isfinite(rec[key]), key
    assert 0 < rec["helpful_length"] <= 6 and len(rec["helpful_examples"]) == 2

    # a second call with the same settings resumes: nothing is sampled or trained, no model is loaded
    def refuse(*a, **k):
        raise AssertionError("the finished round was played again")
    with monkeypatch.context() as m:
        m.setattr(hf.HFPlayers, "load", refuse)
        assert _same(hf.play_rounds(s, tmp_path / "a", progress=False), first)

    with pytest.raises(CheckpointMismatch, match="kl_coef"):
        hf.play_rounds(_settings(tiny, kl_coef=0.5), tmp_path / "a", progress=False)

    # extending to two rounds resumes after round 0 and equals two rounds played in one go
    two = _settings(tiny, rounds=2)
    resumed = hf.play_rounds(two, tmp_path / "a", progress=False)
    fresh = hf.play_rounds(two, tmp_path / "b", progress=False)
    assert _same(resumed[0], first[0]) and len(resumed) == 2 and resumed[1]["verifier_data"] == 12
    assert _same(_without_time(resumed), _without_time(fresh))
