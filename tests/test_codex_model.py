"""The synthetic task family, the tiny code model and its sampler, the analyses, the paper profile, the chapter."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from repro.codex import model as M
from repro.codex import tasks
from repro.chapters.codex.config import CodexConfig
from repro.chapters.codex.experiments import (ExecutionCache, estimator_bias, hf_humaneval, pass_at_k_table,
                                              pass_by_ops, ranking, train_models)
from repro.codex.passk import pass_at_k
from repro.config import ConfigError


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny ops: see conftest


# ---------------------------------------------------------------- task family

def test_every_implementation_matches_its_operation():
    rng = random.Random(0)
    for op in tasks.OPS:
        for code in op.code:
            for _ in range(20):
                x = tasks.random_input(rng)
                env = {"s": x}
                exec(code, env)
                assert env["s"] == op.fn(x), (op.name, code, x)


def test_reference_bodies_pass_their_tests_and_wrong_bodies_fail():
    split = tasks.make_split(4, 5, 5, seed=0)
    assert len(split.eval) == 20
    for p in split.eval:
        env = {}
        exec(p["prompt"] + p["canonical_solution"] + "\n" + p["test"] + f"\ncheck({p['entry_point']})", env)
    p = split.eval[-1]
    with pytest.raises(AssertionError):
        exec(p["prompt"] + "    return s\n\n" + p["test"] + "\ncheck(transform)", {})


def test_held_out_compositions_are_never_trained_on():
    split = tasks.make_split(4, 10, 3, seed=1)
    train = set(split.train)
    held = [tuple(p["ops"]) for p in split.eval if p["n_ops"] >= 2]
    assert len(held) == 30 and not (set(held) & train)
    assert all(len(set(p["ops"])) >= 1 for p in split.eval)
    assert {p["n_ops"] for p in split.eval} == {1, 2, 3, 4}


def test_tokeniser_round_trip_without_unknowns():
    tok = M.Tokeniser.for_tasks()
    rng = random.Random(0)
    for comp in rng.sample(tasks.all_compositions(4), 200):
        p, c = tasks.training_text(comp, rng)
        ids = tok.encode(p + c)
        assert 3 not in ids
        assert tok.decode(ids) == p + c


def test_truncate_at_stop():
    assert M.truncate_at_stop("    return s\n\ndef g():\n    pass") == "    return s\n"
    assert M.truncate_at_stop("    x = 1\n    if x:\n        pass\nif y") == "    x = 1\n    if x:\n        pass"
    assert M.truncate_at_stop("    return s") == "    return s"
    assert M.truncate_at_stop("a\n#c\nprint(1)") == "a"


def test_top_p_filter_matches_reference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 13, generator=g) * 2
    for top_p in (0.1, 0.5, 0.9, 0.95, 1.0):
        out = M.top_p_filter(logits, top_p)
        for row, orow in zip(logits, out):
            probs = row.softmax(0)
            order = probs.argsort(descending=True).tolist()
            keep, mass = set(), 0.0
            for i in order:
                keep.add(i)
                mass += float(probs[i])
                if mass >= top_p:
                    break
            kept = {i for i in range(13) if torch.isfinite(orow[i])}
            assert kept == keep or top_p == 1.0


def _tiny_model(seed=0):
    tok = M.Tokeniser.for_tasks()
    torch.manual_seed(seed)
    return tok, M.TinyGPT(len(tok), d=16, n_layer=2, n_head=2, max_len=200).eval()


def test_sampling_logprobs_match_a_plain_forward_pass():
    """The KV cache and left padding give the same log-probabilities as teacher forcing one row at a time."""
    tok, model = _tiny_model()
    prompts = [tasks.prompt((0,)), tasks.prompt((3, 5, 7, 2))]  # different lengths -> left padding
    s = M.sample(model, tok, prompts, 3, 1.0, 1.0, 12, torch.Generator().manual_seed(0))
    assert s.logp_sum.shape == (2, 3) and s.tokens.shape[:2] == (2, 3)
    for i, p in enumerate(prompts):
        for j in range(3):
            L = int(s.n_tokens[i, j])
            ids = [tok.stoi[M.BOS]] + tok.encode(p) + s.tokens[i, j, :L].tolist()
            x = torch.tensor([ids])
            T = x.shape[1]
            with torch.no_grad():
                logits = model(x, torch.arange(T)[None], M.causal_mask(torch.ones(1, T, dtype=torch.bool)))
            lp = logits[0, :-1].log_softmax(-1).gather(1, x[0, 1:, None])[:, 0]
            ref = float(lp[len(ids) - L - 1:].sum())
            assert float(s.logp_sum[i, j]) == pytest.approx(ref, abs=1e-4)


def test_sampling_stops_and_is_batched():
    tok, model = _tiny_model(1)
    s = M.sample(model, tok, [tasks.prompt((1, 2))], 8, 1.5, 0.95, 30, torch.Generator().manual_seed(3))
    assert len(s.completions) == 1 and len(s.completions[0]) == 8
    for text in s.completions[0]:
        assert not any(stop in text for stop in M.STOP_SEQUENCES)
    # greedy decoding gives identical samples
    s0 = M.sample(model, tok, [tasks.prompt((1, 2))], 4, 0.0, 1.0, 10, torch.Generator().manual_seed(0))
    assert len(set(s0.completions[0])) == 1


def test_bleu():
    ref = "    s = s.lower()\n    return s\n"
    assert M.bleu(ref, ref) == pytest.approx(1.0)
    assert M.bleu("", ref) == 0.0
    assert 0 < M.bleu("    s = s.upper()\n    return s\n", ref) < 1


# ---------------------------------------------------------------- analyses

def test_pass_at_k_table_and_ranking():
    rng = np.random.default_rng(0)
    passed = rng.random((2, 3, 7, 10)) < 0.3
    tab = pass_at_k_table(passed, (1, 5))
    assert tab.shape == (2, 3, 2)
    c = passed[1, 2].sum(-1)
    assert tab[1, 2, 1] == pytest.approx(pass_at_k(np.full(7, 10), c, 5).mean())
    assert tab[..., 0] == pytest.approx(passed.mean((-1, -2)))
    lm = rng.normal(size=passed.shape[-2:])
    r = ranking(passed[0, 0], lm, lm)
    assert r["random"] == pytest.approx(passed[0, 0].mean())
    assert r["oracle"] >= r["mean logp"] and r["oracle"] >= r["random"]
    oracle_scores = passed[0, 0].astype(float)
    assert ranking(passed[0, 0], oracle_scores, oracle_scores)["mean logp"] == r["oracle"]


def test_estimator_bias_experiment():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.05, 0.6, size=30)
    passed = rng.random((30, 40)) < p[:, None]
    eb = estimator_bias(passed, 5, 400, seed=0)
    assert np.all(np.abs(eb["unbiased"] - eb["reference"]) < 4 * eb["unbiased_se"] + 1e-3)
    assert eb["naive"][-1] < eb["reference"][-1] - 0.03
    assert eb["unbiased"][0] == pytest.approx(eb["naive"][0])  # k = 1: both are c/n


def test_pass_by_ops():
    problems = [{"n_ops": 1}, {"n_ops": 2}, {"n_ops": 2}]
    passed = np.array([[1, 1], [1, 0], [0, 0]], bool)
    lengths, rate = pass_by_ops(passed, problems)
    assert lengths.tolist() == [1, 2] and rate.tolist() == [1.0, 0.25]


def test_config_validation():
    with pytest.raises(ConfigError):
        CodexConfig.for_profile("book", rank_temperature=0.3)
    with pytest.raises(ConfigError):
        CodexConfig.for_profile("book", bias_n=1000)
    with pytest.raises(ConfigError):
        CodexConfig.for_profile("book", d_model=30)
    assert CodexConfig.for_profile("book").ks[-1] == CodexConfig.for_profile("book").n_samples


# ---------------------------------------------------------------- paper profile

def _tiny_hf_model(path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from repro.codex.humaneval import read_problems

    texts = [p["prompt"] + p["canonical_solution"] for p in list(read_problems().values())[:20]]
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                     initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=t, eos_token="<|endoftext|>")
    tok.save_pretrained(path)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=16, n_layer=1, n_head=2,
                               eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)).save_pretrained(path)


def test_paper_profile_construction(tmp_path):
    """The paper config, its tiny-model architecture for a training step, and the HF path on a random model."""
    _tiny_hf_model(tmp_path / "hf")
    cfg = CodexConfig.for_profile("paper", hf_model=str(tmp_path / "hf"), hf_n_samples=2, hf_problems=2,
                                  hf_max_new_tokens=6, hf_batch=2, train_docs=200, steps=1, batch=8, n_models=1)
    assert cfg.d_model == 128 and cfg.n_samples == 200 and cfg.hf_temperatures == (0.2, 0.8)
    tok, split, models, hists = train_models(cfg, torch.device("cpu"))
    assert len(models) == 1 and np.isfinite(hists[0]["loss"][-1])
    assert sum(p.numel() for p in models[0].parameters()) > 500_000
    from repro.codex.sandbox import Limits, Sandbox
    with Sandbox(1, Limits(timeout_s=3.0)) as sb:
        hf = hf_humaneval(cfg, sb, torch.device("cpu"))
    rows = hf["rows"]
    assert set(rows) == {0.2, 0.8} and hf["n_problems"] == 2
    assert all(0.0 <= v <= 1.0 for r in rows.values() for v in r.values()) and "pass@1" in rows[0.2]
    assert set(hf["per_problem"][0.2]) == {1}  # pass@10 and pass@100 need more than 2 samples
    from repro.chapters.codex.experiments import table1_deviation
    dev = table1_deviation(hf, "Codex-12B", 1)
    best = max(rows.values(), key=lambda r: r["pass@1"])["pass@1"]
    assert dev.shape == (2,) and dev.mean() == pytest.approx(100 * best - 28.81)
    assert table1_deviation(hf, "Codex-12B", 10) is None


def test_execution_cache_runs_each_program_once():
    from repro.codex.sandbox import Limits, Sandbox
    with Sandbox(1, Limits(timeout_s=2.0)) as sb:
        cache = ExecutionCache(sb)
        outs = cache.run(["assert True", "assert False", "assert True"])
        outs2 = cache.run(["assert True"])
    assert [o.passed for o in outs + outs2] == [True, False, True, True]
    assert cache.executed == 2 and cache.requested == 4


# ---------------------------------------------------------------- the chapter at smoke

@pytest.mark.chapter
def test_smoke_chapter(smoke_run):
    m = smoke_run("codex").metrics
    status = {c["id"]: c["status"] for c in m["scorecard"]}
    kind = {c["id"]: c["kind"] for c in m["scorecard"]}
    for claim in ("harness-canonical", "harness-hostile", "harness-agreement", "passk-exact", "passk-rises"):
        assert status[claim] == "passes", claim
    assert kind["passk-rises"] == "theorem" and kind["harness-speed"] == "check"
    assert status["humaneval-table"] == "not evaluated"  # no hf_model at smoke
    assert all(status[f"humaneval-pass{k}"] == "not evaluated" for k in (1, 10, 100))
    assert "reproduced" not in [status[c] for c in status if kind[c] == "finding"]  # one model: never enough seeds
    n = m["numbers"]
    assert n["canon_pass"] == n["canon_n"] > 0
    assert n["hostile_ok"] == n["hostile_n"]
    assert n["passk_worst"] < 1e-10
    assert 0.0 <= n["rank_random"] <= n["rank_oracle"] <= 1.0
    assert n["ours_rate"] > 0 and n["he_rate"] > 0
