"""The prover–verifier game's losses and rewards (Kirchner et al. 2024), as pure tensor functions.

Symbols: x a problem, z a solution, V(x, z) the verifier's score (a real
number, higher = more convincing), c = correct(x, z) in {0, 1} (the grader),
h in {0, 1} the prover's role (1 helpful, 0 sneaky).  Shapes: B solutions.

**Verifier** (book: pvg-bt).  Pairwise Bradley–Terry loss on a correct and an
incorrect solution to the same problem:

    L_V = - E[ log sigma(V(x, z_correct) - V(x, z_incorrect)) ]

**Prover rewards** (book: pvg-rewards).  V' is the score centred over the
batch, V' = V - mean_batch(V); "role-aligned" means c = h (helpful and
correct, or sneaky and incorrect).

* SRC, signed relative convincingness (the paper's best):
  R = (2c - 1)(2h - 1) V'  if V' > 0,  else  -1;
* CGC, correctness-gated convincingness:  R = V  if role-aligned, else a constant -2;
* goodharting:  R = V  (convincingness alone, whatever the role and correctness);
* the correctness-only baseline (helpful role only):  R = c.

**Prover objective** (book: pvg-kl).  REINFORCE with a per-role batch-mean
baseline and a KL penalty to the initial policy pi_0, estimated on the
sampled tokens y_1..y_L of each solution:

    J = E[(R - b_role) log pi(z | x, role)] - beta E[ sum_t (log pi(y_t) - log pi_0(y_t)) ]
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

REWARDS = ("src", "cgc", "goodhart", "correctness")


def bradley_terry_loss(score_correct: torch.Tensor, score_incorrect: torch.Tensor) -> torch.Tensor:
    """-mean log sigma(V_correct - V_incorrect) over P pairs: [P], [P] -> scalar   (pvg-bt)."""
    return -F.logsigmoid(score_correct - score_incorrect).mean()


def centred(scores: torch.Tensor) -> torch.Tensor:
    """V' = V - mean over the batch, [B] -> [B]."""
    return scores - scores.mean()


def role_aligned(correct: torch.Tensor, helpful: torch.Tensor) -> torch.Tensor:
    """True where the solution does what its role asks: helpful and correct, or sneaky and incorrect. [B] bool."""
    return correct.bool() == helpful.bool()


def src_reward(scores: torch.Tensor, correct: torch.Tensor, helpful: torch.Tensor) -> torch.Tensor:
    """Signed relative convincingness: (2c - 1)(2h - 1) V' if V' > 0 else -1   (pvg-rewards). [B]."""
    v = centred(scores)
    sign = (2 * correct.float() - 1) * (2 * helpful.float() - 1)
    return torch.where(v > 0, sign * v, torch.full_like(v, -1.0))


def cgc_reward(scores: torch.Tensor, correct: torch.Tensor, helpful: torch.Tensor,
               penalty: float = -2.0) -> torch.Tensor:
    """Correctness-gated convincingness: V if role-aligned else ``penalty``   (pvg-rewards). [B]."""
    return torch.where(role_aligned(correct, helpful), scores, torch.full_like(scores, penalty))


def goodhart_reward(scores: torch.Tensor, correct: torch.Tensor, helpful: torch.Tensor) -> torch.Tensor:
    """Goodharting: the verifier's score alone   (pvg-rewards). [B]."""
    return scores.clone()


def correctness_reward(scores: torch.Tensor, correct: torch.Tensor, helpful: torch.Tensor) -> torch.Tensor:
    """The correctness-only baseline: 1 for a correct final answer, 0 otherwise. [B]."""
    return correct.float()


def reward(kind: str, scores: torch.Tensor, correct: torch.Tensor, helpful: torch.Tensor) -> torch.Tensor:
    """The reward ``kind`` (src, cgc, goodhart, correctness) of B solutions."""
    fns = {"src": src_reward, "cgc": cgc_reward, "goodhart": goodhart_reward, "correctness": correctness_reward}
    if kind not in fns:
        raise ValueError(f"unknown reward {kind!r}: choose one of {', '.join(REWARDS)}")
    return fns[kind](scores, correct, helpful)


def role_baseline(rewards: torch.Tensor, helpful: torch.Tensor) -> torch.Tensor:
    """Advantages R - b with b the mean reward of the solution's role in the batch. [B]."""
    adv = torch.zeros_like(rewards)
    for role in (True, False):
        m = helpful.bool() == role
        if m.any():
            adv[m] = rewards[m] - rewards[m].mean()
    return adv


def kl_penalty(logp_tokens: torch.Tensor, ref_logp_tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sampled-token KL estimate per sequence: sum_t (log pi - log pi_0) over the valid tokens [B, L] -> [B]."""
    return ((logp_tokens - ref_logp_tokens) * mask).sum(1)
