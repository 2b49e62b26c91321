"""The prover–verifier game at toy scale: prover SFT, verifier training, RL rounds, attacker probe, evaluation.

Pieces (Kirchner et al. 2024; book: pvg-bt, pvg-rewards, pvg-kl):

* **Prover**: one :class:`~repro.tinygpt.TinyGPT` with two roles (a role
  token starts the prompt).  It is first trained by supervised learning
  (:func:`train_prover_sft`) on correct solutions in three styles for the
  helpful role and subtly wrong ones for the sneaky role
  (:func:`repro.pvg.task.sft_examples`), then by RL against the current
  verifier (:func:`rl_steps`): REINFORCE with a per-role batch-mean baseline
  and a KL penalty to the SFT policy on the sampled tokens (stated: not
  PPO; with one gradient step per batch the PPO ratio is 1 and its clip never
  acts).
* **Verifier**: a much smaller :class:`~repro.tinygpt.ScoredGPT` (a scalar
  score at the last token) that sees the problem and the solution, not the
  role.  Every round it is retrained *from its initial weights*
  (:func:`train_verifier`) on a balanced set of correct and incorrect
  solutions from all provers so far, with the pairwise Bradley–Terry loss on
  correct vs incorrect solutions to the same problem.  Problems come from
  the verifier's half of the pool; the prover trains on the other half.
* **Attacker probe** (:func:`attacker_steps`): a sneaky-only copy of the SFT
  prover trained by RL against a frozen verifier (reward V if incorrect,
  else -2); robustness = RL steps until its incorrect solutions score on
  average as high as the helpful prover's correct ones (capped).
* **Evaluation** (:func:`evaluate`): accuracy of the helpful role, the sneaky
  role's success (incorrect and scored at least the median helpful-correct
  score), the time-limited checker's accuracy on each role
  (:mod:`repro.pvg.checker`), lengths and style shares.

Every function takes explicit settings and a seed; nothing here reads a
chapter config.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..tinygpt import GPTConfig, ScoredGPT, TinyGPT, generate, sequence_logprobs
from .checker import check
from .rewards import bradley_terry_loss, kl_penalty, reward, role_baseline
from .task import (STYLE_GUESSES, DigitTokeniser, Problem, grade, prompt_text, sft_examples, solution_stats)


@dataclass(frozen=True)
class GameSettings:
    """Everything one play of the game needs (sizes, steps, learning rates, the checker's budget)."""

    prover: tuple[int, int, int] = (64, 2, 4)      # d, layers, heads
    verifier: tuple[int, int, int] = (16, 1, 2)    # much smaller
    max_len: int = 96
    max_new_tokens: int = 72
    sft_steps: int = 1500
    sft_batch: int = 64
    sft_lr: float = 3e-3
    verifier_steps: int = 200
    verifier_batch: int = 64
    verifier_lr: float = 3e-3
    verifier_samples: int = 256      # verifier-half problems each prover writes solutions for, per round
    rl_steps: int = 40               # prover RL steps per round
    rl_batch: int = 64
    rl_lr: float = 3e-4
    kl_coef: float = 0.02
    temperature: float = 1.0
    attacker_steps: int = 30         # cap of the robustness probe
    checker_budget: int = 8
    eval_problems: int = 128
    styles: tuple[str, ...] = ("stepwise", "verbose", "compressed")
    wrong_fraction: float = 0.5      # SFT examples in the sneaky role (subtly wrong solutions)


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------


def prover_prompts(tok: DigitTokeniser, problems: Sequence[Problem], roles: Sequence[str]) -> list[list[int]]:
    """<bos> role problem '=' as token ids, one row per (problem, role)."""
    return [tok.encode(prompt_text(p, r), bos=True) for p, r in zip(problems, roles)]


def verifier_prompts(tok: DigitTokeniser, problems: Sequence[Problem]) -> list[list[int]]:
    """<bos> problem '=' as token ids: what the verifier sees before the solution (no role)."""
    return [tok.encode(p.text + "=", bos=True) for p in problems]


def completion_ids(tok: DigitTokeniser, texts: Sequence[str]) -> list[list[int]]:
    """Solutions as token ids followed by <eos> (the stop the prover must learn)."""
    return [tok.encode(t) + [tok.eos_id] for t in texts]


# ---------------------------------------------------------------------------
# Prover: supervised start, sampling, RL
# ---------------------------------------------------------------------------


def new_prover(tok: DigitTokeniser, s: GameSettings, seed: int) -> TinyGPT:
    """A freshly initialised prover (seeded)."""
    torch.manual_seed(seed)
    d, n_layer, n_head = s.prover
    return TinyGPT.from_config(GPTConfig(len(tok), d, n_layer, n_head, s.max_len))


def train_prover_sft(tok: DigitTokeniser, problems: Sequence[Problem], s: GameSettings, seed: int) -> TinyGPT:
    """Supervised start: mean token cross-entropy on (role prompt -> solution <eos>) examples."""
    rng = np.random.default_rng(seed)
    examples = sft_examples(problems, rng, styles=s.styles, wrong_fraction=s.wrong_fraction)
    model = new_prover(tok, s, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=s.sft_lr, weight_decay=0.01)
    # constant rate after a short warm-up: a one-cycle schedule that anneals to ~0 stopped the step arithmetic
    # on a plateau (per-step accuracy 23% vs 96% at 1,500 steps, measured)
    warmup = max(1, s.sft_steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warmup))
    prompts = prover_prompts(tok, [e.problem for e in examples], [e.role for e in examples])
    comps = completion_ids(tok, [e.solution for e in examples])
    for _ in range(s.sft_steps):
        idx = rng.integers(len(examples), size=s.sft_batch)
        out = sequence_logprobs(model, [prompts[i] for i in idx], [comps[i] for i in idx])
        loss = -out.tokens.sum() / out.mask.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    return model


@dataclass
class Rollout:
    """Solutions sampled from the prover: their problems, roles, texts, token ids and lengths."""

    problems: list[Problem]
    roles: list[str]
    texts: list[str]
    prompts: list[list[int]]
    tokens: torch.Tensor        # [B, N] sampled ids incl. the stop token
    lengths: torch.Tensor       # [B] scored length (stop included)
    correct: torch.Tensor       # [B] bool


@torch.no_grad()
def sample_solutions(model: TinyGPT, tok: DigitTokeniser, problems: Sequence[Problem], roles: Sequence[str],
                     s: GameSettings, generator: torch.Generator, temperature: float | None = None) -> Rollout:
    """One solution per (problem, role) at ``temperature`` (default ``s.temperature``); graded."""
    prompts = prover_prompts(tok, problems, roles)
    g = generate(model, prompts, 1, s.temperature if temperature is None else temperature, 1.0,
                 s.max_new_tokens, generator, tok.eos_id)
    texts = [tok.decode(row[:n]) for row, n in zip(g.tokens.tolist(), g.lengths.tolist())]
    correct = torch.tensor([grade(p, t) for p, t in zip(problems, texts)])
    return Rollout(list(problems), list(roles), texts, prompts, g.tokens, g.scored_lengths(True), correct)


@torch.no_grad()
def verifier_scores(verifier: ScoredGPT, tok: DigitTokeniser, problems: Sequence[Problem],
                    texts: Sequence[str]) -> torch.Tensor:
    """V(x, z) for B (problem, solution) pairs [B]."""
    comps = [tok.encode(t) for t in texts]
    return verifier.score(verifier_prompts(tok, problems), comps)


def rl_steps(prover: TinyGPT, ref: TinyGPT, verifier: ScoredGPT | None, tok: DigitTokeniser,
             problems: Sequence[Problem], s: GameSettings, kind: str, steps: int, seed: int,
             roles: str = "both", stop=None) -> list[dict]:
    """``steps`` REINFORCE steps of ``prover`` on reward ``kind`` with a KL penalty to ``ref`` (pvg-kl).

    ``roles``: ``both`` (50/50 helpful/sneaky), ``helpful`` or ``sneaky``.
    ``stop(record) -> bool`` ends early (the attacker probe).  Returns one
    record per step (reward, accuracy, verifier score, KL).
    """
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(prover.parameters(), lr=s.rl_lr)
    records = []
    for step in range(steps):
        idx = rng.integers(len(problems), size=s.rl_batch)
        probs = [problems[i] for i in idx]
        if roles == "both":
            rs = ["helpful" if b else "sneaky" for b in rng.random(s.rl_batch) < 0.5]
        else:
            rs = [roles] * s.rl_batch
        roll = sample_solutions(prover, tok, probs, rs, s, gen)
        helpful = torch.tensor([r == "helpful" for r in rs])
        scores = verifier_scores(verifier, tok, probs, roll.texts) if verifier is not None else torch.zeros(len(rs))
        if kind == "attack":
            r = torch.where(roll.correct, torch.full_like(scores, -2.0), scores)
        else:
            r = reward(kind, scores, roll.correct, helpful)
        adv = role_baseline(r, helpful)
        new = sequence_logprobs(prover, roll.prompts, roll.tokens, roll.lengths)
        with torch.no_grad():
            old = sequence_logprobs(ref, roll.prompts, roll.tokens, roll.lengths)
        kl = kl_penalty(new.tokens, old.tokens, new.mask.float())
        loss = -(adv * new.total).mean() + s.kl_coef * kl.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prover.parameters(), 1.0)
        opt.step()
        wrong = ~roll.correct
        rec = {"step": step + 1, "reward": float(r.mean()), "kl": float(kl.detach().mean()),
               "accuracy_helpful": float(roll.correct[helpful].float().mean()) if helpful.any() else math.nan,
               "score_incorrect": float(scores[wrong].mean()) if wrong.any() else math.nan}
        records.append(rec)
        if stop is not None and stop(rec):
            break
    return records


# ---------------------------------------------------------------------------
# Verifier
# ---------------------------------------------------------------------------


def new_verifier(tok: DigitTokeniser, s: GameSettings, seed: int) -> ScoredGPT:
    """The verifier at its initial weights (the same for every round of one seed)."""
    torch.manual_seed(seed)
    d, n_layer, n_head = s.verifier
    return ScoredGPT.from_config(GPTConfig(len(tok), d, n_layer, n_head, s.max_len))


def correct_incorrect_pairs(data: Sequence[tuple[Problem, str, bool]]) -> list[tuple[Problem, str, str]]:
    """Every (problem, a correct solution, an incorrect solution) pair among ``data`` (same problem)."""
    by_problem: dict[str, tuple[Problem, list[str], list[str]]] = {}
    for p, text, ok in data:
        entry = by_problem.setdefault(p.text, (p, [], []))
        entry[1 if ok else 2].append(text)
    return [(p, good, bad) for p, goods, bads in by_problem.values() for good in goods for bad in bads]


def train_verifier(tok: DigitTokeniser, data: Sequence[tuple[Problem, str, bool]], s: GameSettings,
                   seed: int) -> ScoredGPT:
    """Retrain from the initial weights with the Bradley–Terry loss on correct vs incorrect pairs (pvg-bt).

    Each batch draws pairs uniformly, so correct and incorrect solutions are
    balanced by construction.
    """
    pairs = correct_incorrect_pairs(data)
    model = new_verifier(tok, s, seed)
    if not pairs:
        return model
    rng = np.random.default_rng(seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=s.verifier_lr, weight_decay=0.01)
    for _ in range(s.verifier_steps):
        idx = rng.integers(len(pairs), size=s.verifier_batch)
        probs = [pairs[i][0] for i in idx]
        prompts = verifier_prompts(tok, probs)
        good = model.score(prompts, [tok.encode(pairs[i][1]) for i in idx])
        bad = model.score(prompts, [tok.encode(pairs[i][2]) for i in idx])
        loss = bradley_terry_loss(good, bad)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model


def verifier_data(prover: TinyGPT, tok: DigitTokeniser, problems: Sequence[Problem], s: GameSettings,
                  seed: int) -> list[tuple[Problem, str, bool]]:
    """Solutions from ``prover`` to ``s.verifier_samples`` verifier-half problems, each once per role, graded."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    idx = rng.choice(len(problems), size=min(s.verifier_samples, len(problems)), replace=False)
    probs = [problems[i] for i in idx] * 2
    roles = ["helpful"] * len(idx) + ["sneaky"] * len(idx)
    roll = sample_solutions(prover, tok, probs, roles, s, gen)
    return [(p, t, bool(c)) for p, t, c in zip(roll.problems, roll.texts, roll.correct.tolist())]


# ---------------------------------------------------------------------------
# Evaluation and the robustness probe
# ---------------------------------------------------------------------------


def evaluate(prover: TinyGPT, verifier: ScoredGPT | None, tok: DigitTokeniser, problems: Sequence[Problem],
             s: GameSettings, seed: int, roles: Sequence[str] = ("helpful", "sneaky")) -> dict:
    """Accuracy, sneaky success, checker accuracy per role, mean length and style shares on ``problems``."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    out: dict = {}
    by_role: dict = {}  # role -> (verifier scores, correct), with a verifier
    for role in roles:
        roll = sample_solutions(prover, tok, problems, [role] * len(problems), s, gen)
        correct = roll.correct.numpy()
        checks = [check(p, t, s.checker_budget, rng) for p, t in zip(problems, roll.texts)]
        verdict = np.array([c.verdict for c in checks])
        stats = [solution_stats(t) for t in roll.texts]
        out[f"{role}_accuracy"] = float(correct.mean())
        out[f"{role}_checker_accuracy"] = float((verdict == correct).mean())  # judged correctly
        out[f"{role}_checker_accepts"] = float(verdict.mean())
        out[f"{role}_accepts_incorrect"] = float(verdict[~correct].mean()) if (~correct).any() else math.nan
        out[f"{role}_length"] = float(np.mean([st.length for st in stats]))
        for style in STYLE_GUESSES:
            out[f"{role}_share_{style}"] = float(np.mean([st.style == style for st in stats]))
        out[f"{role}_examples"] = list(zip([p.text for p in problems[:4]], roll.texts[:4], correct[:4].tolist()))
        if verifier is not None:
            scores = verifier_scores(verifier, tok, problems, roll.texts).numpy()
            by_role[role] = (scores, correct)
    if {"helpful", "sneaky"} <= set(by_role):
        (hs, hc), (ss, sc) = by_role["helpful"], by_role["sneaky"]
        if hc.any():  # sneaky success: incorrect and scored at least the median helpful-correct score
            out["sneaky_success"] = float(((~sc) & (ss >= np.median(hs[hc]))).mean())
        both = hc & ~sc  # does the verifier rank helpful-correct above sneaky-incorrect on the same problem?
        out["verifier_pair_accuracy"] = float((hs[both] > ss[both]).mean()) if both.any() else math.nan
    return out


def attacker_steps(sft: TinyGPT, verifier: ScoredGPT, tok: DigitTokeniser, problems: Sequence[Problem],
                   reference_score: float, s: GameSettings, seed: int) -> int:
    """RL steps a sneaky-only attacker (from the SFT prover) needs to make its incorrect solutions score
    on average at least ``reference_score`` (the helpful prover's correct solutions); ``s.attacker_steps``
    + 1 if it never does (capped)."""
    attacker = copy.deepcopy(sft)
    recs = rl_steps(attacker, sft, verifier, tok, problems, s, "attack", s.attacker_steps, seed, roles="sneaky",
                    stop=lambda r: r["score_incorrect"] >= reference_score)
    hit = recs and recs[-1]["score_incorrect"] >= reference_score
    return len(recs) if hit else s.attacker_steps + 1


def helpful_reference_score(prover: TinyGPT, verifier: ScoredGPT, tok: DigitTokeniser,
                            problems: Sequence[Problem], s: GameSettings, seed: int) -> float:
    """Mean verifier score of the helpful role's correct solutions on ``problems`` (the attacker's bar)."""
    roll = sample_solutions(prover, tok, problems, ["helpful"] * len(problems), s,
                            torch.Generator().manual_seed(seed))
    scores = verifier_scores(verifier, tok, problems, roll.texts)
    return float(scores[roll.correct].mean()) if roll.correct.any() else float(scores.max())
