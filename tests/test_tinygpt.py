"""The shared small GPT (repro.tinygpt): config, sampler, teacher-forced log-probabilities, the scalar head."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from repro.tinygpt import (GPTConfig, Generation, ScoredGPT, TinyGPT, causal_mask, generate, pack_sequences,
                           sequence_logprobs)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny ops: see conftest

EOS = 2
PROMPTS = [[1, 5], [1, 7, 4, 9, 3, 6, 8], [1, 10, 4, 4]]   # different lengths -> left padding


def _model(seed: int = 0, vocab: int = 12) -> TinyGPT:
    torch.manual_seed(seed)
    return TinyGPT.from_config(GPTConfig(vocab, d=16, n_layer=2, n_head=2, max_len=64)).eval()


def _rows(prompts, n):
    return [p for p in prompts for _ in range(n)]


def test_config_round_trip_and_seeded_construction():
    cfg = GPTConfig(vocab=12, d=16, n_layer=3, n_head=2, max_len=40)
    assert GPTConfig(**dataclasses.asdict(cfg)) == cfg
    assert GPTConfig(12) == GPTConfig(12, 64, 2, 4, 160)                  # the Codex defaults
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.d = 32
    with pytest.raises(ValueError, match="multiple of n_head"):
        GPTConfig(12, d=10, n_head=4)
    torch.manual_seed(3)
    a = TinyGPT(12, 16, 3, 2, 40)
    torch.manual_seed(3)
    b = TinyGPT.from_config(cfg)
    assert a.config == b.config == cfg
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_hidden_states_feed_the_head():
    model = _model()
    x = torch.tensor([[1, 5, 6, 7], [0, 1, 3, 4]])
    valid = x != 0
    pos = (valid.long().cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        h = model.hidden_states(x, pos, causal_mask(valid))
        assert h.shape == (2, 4, 16)
        assert torch.equal(model.head(h), model(x, pos, causal_mask(valid)))


@pytest.mark.parametrize("include_stop", [False, True])
def test_sequence_logprobs_equal_the_samplers(include_stop):
    """Teacher forcing gives generate's log-probabilities (temperature 1, top-p 1), early stops included."""
    model = _model()
    n = 4
    g = generate(model, PROMPTS, n, 1.0, 1.0, 10, torch.Generator().manual_seed(0), eos_id=EOS)
    assert isinstance(g, Generation) and g.tokens.shape == (len(PROMPTS) * n, 10)
    assert g.stopped.any() and (~g.stopped).any(), "want rows that stopped early and rows that ran out"
    stopped = g.stopped.nonzero()[:, 0]
    assert torch.equal(g.tokens[stopped, g.lengths[stopped]], torch.full((len(stopped),), EOS))
    lengths = g.scored_lengths(include_stop)
    out = sequence_logprobs(model, _rows(PROMPTS, n), g.tokens, lengths)
    torch.testing.assert_close(out.total, g.logp_sum(include_stop), atol=1e-5, rtol=0)
    assert out.tokens.shape == out.mask.shape == (len(PROMPTS) * n, int(lengths.max()))
    assert torch.equal(out.mask.sum(1), lengths)
    # the same numbers from lists of token ids
    comps = [row[:k] for row, k in zip(g.tokens.tolist(), lengths.tolist())]
    torch.testing.assert_close(sequence_logprobs(model, _rows(PROMPTS, n), comps).total, out.total)


def test_sequence_logprobs_equal_codex_sample_logp_sum():
    """The key property on the Codex chapter's sampler: Samples.logp_sum (stop token excluded)."""
    from repro.codex import model as codex
    from repro.codex import tasks

    tok = codex.Tokeniser.for_tasks()
    torch.manual_seed(0)
    model = codex.TinyGPT(len(tok), d=16, n_layer=2, n_head=2, max_len=200).eval()
    prompts = [tasks.prompt((0,)), tasks.prompt((3, 5, 7, 2)), tasks.prompt((1, 4))]
    n = 3
    s = codex.sample(model, tok, prompts, n, 1.0, 1.0, 12, torch.Generator().manual_seed(0))
    assert (s.n_tokens < 12).any() and (s.n_tokens == 12).any()
    enc = [[tok.stoi[codex.BOS]] + tok.encode(p) for p in prompts]
    out = sequence_logprobs(model, _rows(enc, n), s.tokens.flatten(0, 1), s.n_tokens.flatten())
    torch.testing.assert_close(out.total.view(len(prompts), n), s.logp_sum, atol=1e-5, rtol=0)


def test_left_padding_does_not_change_a_row():
    model = _model(1)
    prompt, comp = [1, 5, 6], [7, 8, 2]
    alone = sequence_logprobs(model, [prompt], [comp])
    batch = sequence_logprobs(model, [prompt, [1, 3, 3, 3, 4, 4, 9, 9]], [comp, [5, 5, 5, 5, 5, 5]])
    torch.testing.assert_close(batch.total[0], alone.total[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(batch.tokens[0, :3], alone.tokens[0], atol=1e-6, rtol=0)
    assert batch.mask[0].tolist() == [True] * 3 + [False] * 3
    packed = pack_sequences([prompt, [1, 3, 3, 3, 4]], [comp, [5]])
    assert packed.prompt_width == 5 and packed.pos[0].tolist() == [0, 0, 0, 1, 2, 3, 4, 5]


def test_gradients_flow_through_sequence_logprobs():
    model = _model().train()
    g = generate(model, PROMPTS, 2, 1.0, 1.0, 6, torch.Generator().manual_seed(1), eos_id=EOS)
    out = sequence_logprobs(model, _rows(PROMPTS, 2), g.tokens, g.scored_lengths(include_stop=True))
    out.total.mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name != "pos.weight":   # positions beyond the longest row get no gradient, the rest do
            assert p.grad.abs().sum() > 0, name


def test_identical_policies_have_zero_kl():
    model = _model(2)
    ref = copy.deepcopy(model)
    g = generate(model, PROMPTS, 3, 1.0, 1.0, 8, torch.Generator().manual_seed(2), eos_id=EOS)
    rows, k = _rows(PROMPTS, 3), g.scored_lengths(True)
    a, b = sequence_logprobs(model, rows, g.tokens, k), sequence_logprobs(ref, rows, g.tokens, k)
    assert torch.equal(a.tokens, b.tokens)
    assert float(((a.tokens - b.tokens) * a.mask).sum().detach()) == 0.0   # so any KL estimate is 0


def test_stop_rule_and_greedy_decoding():
    model = _model(3)

    def after_nine(prev, nxt):  # a caller's stop rule: any token right after a 9
        return prev == 9

    g = generate(model, [[1, 9], [1, 4]], 2, 1.0, 0.9, 8, torch.Generator().manual_seed(0), eos_id=EOS,
                 stop_fn=after_nine)
    assert g.stopped[:2].all() and (g.lengths[:2] == 0).all()   # the prompt ends in 9: stop at once
    assert (g.logp[:2] == 0).all() and (g.stop_logp[:2] < 0).all()
    for row, k in zip(g.tokens.tolist(), g.lengths.tolist()):
        assert all(t == 0 for t in row[k + 1:])                     # nothing after the stop token
    greedy = generate(model, [[1, 4]], 3, 0.0, 1.0, 8, torch.Generator().manual_seed(0), eos_id=EOS)
    assert (greedy.tokens == greedy.tokens[0]).all()


def test_scored_model_gives_one_score_per_row_and_ignores_pads():
    torch.manual_seed(0)
    verifier = ScoredGPT.from_config(GPTConfig(12, d=16, n_layer=1, n_head=2, max_len=32)).eval()
    ids = torch.tensor([[1, 5, 6, 7], [1, 3, 0, 0]])
    valid = torch.tensor([[True] * 4, [True, True, False, False]])
    with torch.no_grad():
        s = verifier(ids, valid)
        assert s.shape == (2,)
        right = verifier(torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], 1),
                         torch.cat([valid, torch.zeros(2, 3, dtype=torch.bool)], 1))
        left = verifier(torch.cat([torch.zeros(2, 2, dtype=torch.long), ids], 1),
                        torch.cat([torch.zeros(2, 2, dtype=torch.bool), valid], 1))
        torch.testing.assert_close(right, s, atol=1e-6, rtol=0)
        torch.testing.assert_close(left, s, atol=1e-6, rtol=0)
        alone = verifier.score([[1, 3]])
        torch.testing.assert_close(alone[0], s[1], atol=1e-6, rtol=0)
        torch.testing.assert_close(verifier.score([[1, 5], [1]], [[6, 7], [3]]), s, atol=1e-6, rtol=0)
    # a verifier can start from a trained policy's weights
    body = _model()
    assert ScoredGPT(body).body is body
    assert all(torch.equal(p, q) for p, q in zip(ScoredGPT(body).body.parameters(), body.parameters()))
