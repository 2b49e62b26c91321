"""A small decoder-only transformer (GPT-2 style, pre-LayerNorm), shared by the chapters that need a language model.

- :class:`GPTConfig` and :class:`TinyGPT`: the model, with explicit positions
  and an optional key/value cache; :meth:`TinyGPT.hidden_states` gives the
  final-LayerNorm features under the language-model head.
- :func:`generate`: ``n`` samples per prompt, all rows in one batch with a KV
  cache, temperature and nucleus (:func:`top_p_filter`) sampling, stopping at
  ``<eos>`` or a caller's rule; it keeps each token's log-probability.
- :func:`sequence_logprobs`: the same log-probabilities by teacher forcing,
  with gradients (policy gradients, KL penalties).
- :class:`ScoredGPT`: a :class:`TinyGPT` body with a scalar head (a verifier
  or reward model).

The Codex chapter (:mod:`repro.codex.model`: its tokeniser, training, stop
sequences) and the prover-verifier chapter build on it; nothing here knows a
task.

**Layout convention** (shared by :func:`generate`, :func:`sequence_logprobs`
and :func:`pack_sequences`).  Prompts are left-padded to a common width so
the first completion token of every row sits in the same column; a token's
position is its column minus the row's number of left pads (pads themselves
get position 0, attend only to themselves and are never attended to), so a
row's numbers do not depend on the other rows of the batch.

Shapes: B rows, T tokens, d model width, H heads, V vocabulary, N new tokens.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------
# The transformer (pre-LayerNorm GPT) with a key/value cache for sampling
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class GPTConfig:
    """The architecture of a :class:`TinyGPT`: vocabulary size, width, depth, heads and the longest sequence."""

    vocab: int
    d: int = 64
    n_layer: int = 2
    n_head: int = 4
    max_len: int = 160

    def __post_init__(self):
        if self.d % self.n_head:
            raise ValueError(f"the width d={self.d} must be a multiple of n_head={self.n_head}")


class Block(nn.Module):
    """One pre-LayerNorm transformer block: causal self-attention then a 4×-wide GELU MLP, both residual."""

    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x, mask, cache=None, start: int = 0):
        """x: [B, T, d]; mask: bool [B, 1, T, T_keys]; ``cache`` (optional) stores keys/values from ``start``."""
        B, T, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        # [B, T, d] -> [B, H, T, d/H]
        q, k, v = (t.view(B, T, self.n_head, d // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is not None:  # cache: [2, B, H, T_max, d/H], filled up to `start`
            cache[0, :, :, start:start + T] = k
            cache[1, :, :, start:start + T] = v
            k, v = cache[0, :, :, :start + T], cache[1, :, :, :start + T]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, d))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """A small decoder-only transformer (GPT-2 style, pre-LayerNorm) with an optional key/value cache.

    ``TinyGPT(vocab, d, n_layer, n_head, max_len)`` or
    ``TinyGPT.from_config(GPTConfig(...))``: token and learned position
    embeddings of width ``d``, ``n_layer`` :class:`Block` s of ``n_head``
    heads, a final LayerNorm and an untied linear head to ``vocab`` logits;
    ``model.config`` is its :class:`GPTConfig`.  Positions are passed
    explicitly (``pos``), so left-padded rows can start at position 0;
    attention masks are built by :func:`causal_mask`.  For incremental
    decoding pass ``caches`` (one ``[2, B, H, T_max, d/H]`` tensor per block)
    and the column ``start`` of the first new token.  Sample with
    :func:`generate`, score given completions with :func:`sequence_logprobs`.
    """

    def __init__(self, vocab: int, d: int = 64, n_layer: int = 2, n_head: int = 4, max_len: int = 160):
        super().__init__()
        self.config = GPTConfig(vocab, d, n_layer, n_head, max_len)
        self.max_len = max_len
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(max_len, d)
        self.blocks = nn.ModuleList(Block(d, n_head) for _ in range(n_layer))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    @classmethod
    def from_config(cls, cfg: GPTConfig) -> "TinyGPT":
        """A freshly initialised model of architecture ``cfg`` (the same draws as the positional constructor)."""
        return cls(cfg.vocab, cfg.d, cfg.n_layer, cfg.n_head, cfg.max_len)

    def hidden_states(self, idx, pos, mask, caches=None, start: int = 0):
        """The final-LayerNorm features [B, T, d] under the language-model head (arguments as :meth:`forward`)."""
        x = self.tok(idx) + self.pos(pos)
        for i, blk in enumerate(self.blocks):
            x = blk(x, mask, None if caches is None else caches[i], start)
        return self.ln(x)

    def forward(self, idx, pos, mask, caches=None, start: int = 0):
        """idx, pos: [B, T]; mask: bool [B, 1, T, T_keys] (True = may attend); returns logits [B, T, V]."""
        return self.head(self.hidden_states(idx, pos, mask, caches, start))


def causal_mask(valid: torch.Tensor) -> torch.Tensor:
    """valid: bool [B, T] (False = padding) -> bool [B, 1, T, T]: causal and no attention to padding."""
    T = valid.shape[1]
    tri = torch.ones(T, T, dtype=torch.bool, device=valid.device).tril()
    m = tri[None, None] & valid[:, None, None, :]
    return m | torch.eye(T, dtype=torch.bool, device=valid.device)[None, None]  # pads attend to themselves


def positions(valid: torch.Tensor, max_len: int) -> torch.Tensor:
    """valid: bool [B, T] -> long [B, T]: each token's index among its row's valid tokens (pads: 0 or the last).

    For a left-padded row this is the column minus the number of left pads,
    the convention of :func:`generate`; clamped to ``max_len - 1``.
    """
    return (valid.long().cumsum(1) - 1).clamp(min=0, max=max_len - 1)


# ---------------------------------------------------------------------------
# Sampling with a key/value cache
# ---------------------------------------------------------------------------

def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of tokens whose probability reaches top_p."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    before = probs.cumsum(-1) - probs           # mass of strictly more likely tokens
    drop_sorted = before >= top_p               # never drops the most likely token
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


@dataclass
class Generation:
    """What :func:`generate` returns; row ``j * n + i`` is sample ``i`` of prompt ``j``.

    A row's completion is ``tokens[row, :lengths[row]]``.  If the row stopped
    (``stopped``), its stop token (``<eos>`` or the token that made
    ``stop_fn`` fire) sits at column ``lengths[row]`` and its log-probability
    is ``stop_logp``; ``logp`` holds the other tokens' log-probabilities.
    """

    tokens: torch.Tensor     # [B, N] sampled ids, the stop token included, 0 after it
    logp: torch.Tensor       # [B, N] log p(token | prefix) at temperature 1; 0 at the stop token and after it
    lengths: torch.Tensor    # [B] completion tokens before the stop
    stopped: torch.Tensor    # [B] bool: the row drew a stop token within N tokens
    stop_logp: torch.Tensor  # [B] log-probability of the stop token (0 where the row did not stop)

    def scored_lengths(self, include_stop: bool = False) -> torch.Tensor:
        """[B] how many leading tokens of ``tokens`` a score covers: the completion, plus the stop token if asked."""
        return self.lengths + self.stopped.long() if include_stop else self.lengths

    def logp_sum(self, include_stop: bool = False) -> torch.Tensor:
        """[B] the completion's log-probability; with ``include_stop`` the stop token's term too (policy gradients).

        :func:`sequence_logprobs` of ``(tokens, scored_lengths(include_stop))`` recomputes it with gradients.
        """
        s = self.logp.sum(1)
        return s + self.stop_logp if include_stop else s


@torch.no_grad()
def generate(model: TinyGPT, prompt_ids: Sequence[Sequence[int]], n: int, temperature: float, top_p: float,
             max_new_tokens: int, generator: torch.Generator, eos_id: int,
             stop_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
             pad_id: int = 0) -> Generation:
    """``n`` samples per prompt (token ids, e.g. ``<bos>`` + the prompt), all rows in one batch with a KV cache.

    Tokens are drawn from softmax(logits / temperature) restricted to the
    top-p nucleus (greedy at temperature 0) with ``generator``.  A row stops
    at ``eos_id`` or where ``stop_fn(prev, next)`` (previous and new token
    ids, long [B] each -> bool [B]) is True; the stop token is not part of
    the completion.  Log-probabilities are those of the model at temperature
    1, whatever the sampling temperature.  Prompts are left-padded with
    ``pad_id`` (see the module's layout convention).
    """
    device = next(model.parameters()).device
    P = len(prompt_ids)
    Lp = max(map(len, prompt_ids))
    B = P * n
    # Left-pad prompts so every row's next token sits at the same column.
    ids = torch.full((P, Lp), pad_id, dtype=torch.long)
    valid = torch.zeros(P, Lp, dtype=torch.bool)
    for j, e in enumerate(prompt_ids):
        ids[j, Lp - len(e):] = torch.as_tensor(e)
        valid[j, Lp - len(e):] = True
    ids = ids.to(device).repeat_interleave(n, 0)                          # [B, Lp]
    valid = valid.to(device).repeat_interleave(n, 0)
    pad = (~valid).sum(1, keepdim=True)                                   # [B, 1]
    T_max = Lp + max_new_tokens
    d, H = model.config.d, model.config.n_head
    caches = [torch.zeros(2, B, H, T_max, d // H, device=device) for _ in model.blocks]
    keys_valid = torch.zeros(B, T_max, dtype=torch.bool, device=device)
    keys_valid[:, :Lp] = valid
    pos = (torch.arange(Lp, device=device)[None] - pad).clamp(min=0)
    logits = model(ids, pos, causal_mask(valid)[..., :Lp], caches, 0)[:, -1]  # prefill
    out = torch.zeros(B, max_new_tokens, dtype=torch.long, device=device)
    logp = torch.zeros(B, max_new_tokens, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    length = torch.zeros(B, dtype=torch.long, device=device)   # completion tokens before the stop
    stop_logp = torch.zeros(B, device=device)
    prev = ids[:, -1]
    for t in range(max_new_tokens):
        scaled = logits / max(temperature, 1e-6)
        probs = top_p_filter(scaled, top_p).softmax(-1)
        nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1) if temperature > 0 else scaled.argmax(-1)
        lp = logits.log_softmax(-1).gather(1, nxt[:, None]).squeeze(1)
        stop_now = nxt == eos_id
        if stop_fn is not None:
            stop_now = stop_now | stop_fn(prev, nxt)
        live = ~done
        out[:, t] = torch.where(live, nxt, 0)
        logp[:, t] = torch.where(live & ~stop_now, lp, 0.0)
        stop_logp += torch.where(live & stop_now, lp, 0.0)
        length += live & ~stop_now
        done |= stop_now
        prev = nxt
        if t % 8 == 7 and bool(done.all()):
            break
        keys_valid[:, Lp + t] = True
        mask = keys_valid[:, None, None, :Lp + t + 1]
        step_pos = (Lp + t - pad).clamp(max=model.max_len - 1)
        logits = model(nxt[:, None], step_pos, mask, caches, Lp + t)[:, -1]
    return Generation(out, logp, length, done, stop_logp)


# ---------------------------------------------------------------------------
# Teacher forcing: log-probabilities of given completions, with gradients
# ---------------------------------------------------------------------------

@dataclass
class TokenBatch:
    """Prompts and completions laid out as :func:`generate` lays them out (see :func:`pack_sequences`)."""

    ids: torch.Tensor          # [B, Lp + L] left-padded prompt, then the completion, then right padding
    valid: torch.Tensor        # [B, Lp + L] bool: a prompt or completion token
    pos: torch.Tensor          # [B, Lp + L] positions (:func:`positions`)
    prompt_width: int          # Lp: the completion starts at this column in every row
    lengths: torch.Tensor      # [B] completion lengths


def pack_sequences(prompt_ids: Sequence[Sequence[int]], completion_ids=None, lengths=None, pad_id: int = 0,
                   device=None, max_len: int = 10**9) -> TokenBatch:
    """Lay out prompts (a list of id lists) and completions in one batch, as :func:`generate` does.

    ``completion_ids`` is a list of id lists, or a long tensor [B, L] whose
    row ``b`` holds its completion in its first ``lengths[b]`` columns (all
    ``L`` when ``lengths`` is None; later columns are ignored), e.g.
    ``Generation.tokens`` with ``Generation.scored_lengths(...)``.  Without
    completions the batch holds the prompts alone.
    """
    B = len(prompt_ids)
    if completion_ids is None:
        comp, lengths = torch.zeros(B, 0, dtype=torch.long), torch.zeros(B, dtype=torch.long)
    elif isinstance(completion_ids, torch.Tensor):
        comp = completion_ids.long()
        lengths = (torch.full((B,), comp.shape[1], dtype=torch.long) if lengths is None
                   else torch.as_tensor(lengths, dtype=torch.long))
    else:
        if lengths is not None:
            raise ValueError("lengths goes with a completion tensor; a list of completions carries its own")
        lengths = torch.tensor([len(c) for c in completion_ids], dtype=torch.long)
        comp = torch.full((B, max(map(len, completion_ids), default=0)), pad_id, dtype=torch.long)
        for b, c in enumerate(completion_ids):
            comp[b, :len(c)] = torch.as_tensor(c, dtype=torch.long)
    if comp.shape[0] != B or lengths.shape != (B,):
        raise ValueError(f"{B} prompts but completions {tuple(comp.shape)} and lengths {tuple(lengths.shape)}")
    device = comp.device if device is None else torch.device(device)
    lengths = lengths.to(device)
    L = int(lengths.max()) if B else 0
    if L > comp.shape[1] or bool((lengths < 0).any()):
        raise ValueError(f"lengths must lie in [0, {comp.shape[1]}], the completions' width")
    Lp = max(map(len, prompt_ids))
    ids = torch.full((B, Lp + L), pad_id, dtype=torch.long)
    valid = torch.zeros(B, Lp + L, dtype=torch.bool)
    for b, e in enumerate(prompt_ids):
        if len(e) == 0:
            raise ValueError(f"prompt {b} is empty: every row needs a first token (e.g. <bos>)")
        ids[b, Lp - len(e):Lp] = torch.as_tensor(e, dtype=torch.long)
        valid[b, Lp - len(e):Lp] = True
    ids, valid = ids.to(device), valid.to(device)
    in_comp = torch.arange(L, device=device)[None] < lengths[:, None]     # [B, L]
    ids[:, Lp:] = torch.where(in_comp, comp[:, :L].to(device), pad_id)
    valid[:, Lp:] = in_comp
    return TokenBatch(ids, valid, positions(valid, max_len), Lp, lengths)


@dataclass
class SequenceLogprobs:
    """What :func:`sequence_logprobs` returns (differentiable)."""

    total: torch.Tensor    # [B] sum of the completion tokens' log-probabilities
    tokens: torch.Tensor   # [B, L] per-token log-probabilities, 0 where ``mask`` is False
    mask: torch.Tensor     # [B, L] bool: a completion token (column < lengths)


def sequence_logprobs(model: TinyGPT, prompt_ids: Sequence[Sequence[int]], completion_ids, lengths=None,
                      pad_id: int = 0) -> SequenceLogprobs:
    """log p(completion | prompt) of each row by teacher forcing, with gradients.

    Arguments as :func:`pack_sequences`; the completion's tokens are exactly
    the ones scored, so whether a stop token counts is the caller's choice:
    for the rows of a :class:`Generation` ``g`` of prompts ``prompts``,
    ``sequence_logprobs(model, rows, g.tokens, g.scored_lengths(include_stop))``
    with ``rows = [p for p in prompts for _ in range(n)]`` equals
    ``g.logp_sum(include_stop)`` (to float error: one pass instead of the KV
    cache).  ``include_stop=False`` is what the Codex chapter's ``sample``
    reports; a policy gradient wants ``True``, so that the choice to stop is
    trained too.
    """
    device = next(model.parameters()).device
    batch = pack_sequences(prompt_ids, completion_ids, lengths, pad_id, device, model.max_len)
    Lp, L = batch.prompt_width, batch.ids.shape[1] - batch.prompt_width
    if L == 0:
        B = len(prompt_ids)
        return SequenceLogprobs(torch.zeros(B, device=device), torch.zeros(B, 0, device=device), batch.valid[:, :0])
    x, valid = batch.ids[:, :-1], batch.valid[:, :-1]
    h = model.hidden_states(x, batch.pos[:, :-1], causal_mask(valid))[:, Lp - 1:]  # predicts columns Lp..Lp+L-1
    lp = model.head(h).log_softmax(-1).gather(-1, batch.ids[:, Lp:, None]).squeeze(-1)  # [B, L]
    mask = batch.valid[:, Lp:]
    lp = torch.where(mask, lp, 0.0)
    return SequenceLogprobs(lp.sum(1), lp, mask)


# ---------------------------------------------------------------------------
# A scalar head: verifiers and reward models
# ---------------------------------------------------------------------------

class ScoredGPT(nn.Module):
    """A :class:`TinyGPT` body with a linear scalar head on the hidden state of each row's last token.

    ``ScoredGPT(body)`` wraps an existing model (e.g. a copy of a trained
    policy, to start a verifier from it); ``ScoredGPT.from_config(cfg)``
    builds a fresh one.  The body's language-model head is kept (so its
    state dict loads into the body) but not used.  ``forward(idx, valid)``
    reads the last valid column of each row, so left or right padding does
    not change a score; :meth:`score` takes prompts and completions laid out
    as :func:`pack_sequences` does.
    """

    def __init__(self, body: TinyGPT):
        super().__init__()
        self.body = body
        self.score_head = nn.Linear(body.config.d, 1)

    @classmethod
    def from_config(cls, cfg: GPTConfig) -> "ScoredGPT":
        """A freshly initialised body of architecture ``cfg`` with a fresh scalar head."""
        return cls(TinyGPT.from_config(cfg))

    def forward(self, idx: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """idx: long [B, T]; valid: bool [B, T] (False = padding, at least one True per row) -> scores [B]."""
        h = self.body.hidden_states(idx, positions(valid, self.body.max_len), causal_mask(valid))  # [B, T, d]
        T = valid.shape[1]
        last = T - 1 - valid.flip(1).long().argmax(1)                    # [B] last valid column
        return self.score_head(h[torch.arange(len(idx), device=idx.device), last]).squeeze(-1)

    def score(self, prompt_ids: Sequence[Sequence[int]], completion_ids=None, lengths=None,
              pad_id: int = 0) -> torch.Tensor:
        """Scores [B] of prompts followed by completions (arguments as :func:`pack_sequences`)."""
        device = next(self.parameters()).device
        batch = pack_sequences(prompt_ids, completion_ids, lengths, pad_id, device, self.body.max_len)
        return self(batch.ids, batch.valid)
