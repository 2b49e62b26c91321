"""Grokking (Power et al., 2022): small transformers on binary-operation tables.

An experiment (seeds x training fractions x regularisers x operations) trains
as one *ensemble*: every parameter carries a leading model axis ``M`` and the
forward pass, the loss and the AdamW update are batched over it, so dozens of
tiny transformers cost one set of batched matrix multiplies per step.  A plain
one-model ``torch.nn`` reference lives in ``tests/test_grokking.py`` and must
agree with this ensemble step for step.

This module is the algorithm only: the chapter's config, claims and experiment
runs live in :mod:`repro.chapters.grokking`.

Shapes: M models, B examples, T = 4 tokens ``a OP b =``, d model width,
H heads, V vocabulary (n elements + OP + =), n answer classes.
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .checkpoint import load_checkpoint, make_identity, save_checkpoint
from .config import ConfigError
from .device import get_device
from .distributed import DistContext
from .progress import Progress
from .seed import generator

# ---------------------------------------------------------------------------
# Data: every equation a OP b = c of one operation
# ---------------------------------------------------------------------------

MODULAR_OPS = ("x+y", "x-y", "x/y", "x/y if y odd else x-y", "x^2+y^2", "x^2+xy+y^2",
               "x^2+xy+y^2+x", "x^3+xy", "x^3+xy^2+y")
S5_OPS = ("x.y", "x.y.x^-1", "x.y.x")
OPERATIONS = MODULAR_OPS + S5_OPS
SEQ_LEN = 4  # a, OP, b, =


def is_prime(p: int) -> bool:
    """True when ``p`` is a prime number."""
    return p >= 2 and all(p % q for q in range(2, int(math.isqrt(p)) + 1))


def s5_elements() -> torch.Tensor:
    """The 120 permutations of (0..4) in lexicographic order, shape [120, 5]."""
    return torch.tensor(list(itertools.permutations(range(5))), dtype=torch.long)


def _perm_index(perms: torch.Tensor) -> torch.Tensor:
    """Lexicographic index of each permutation row (Lehmer code), [N, 5] -> [N]."""
    n = perms.shape[1]
    idx = torch.zeros(perms.shape[0], dtype=torch.long)
    for i in range(n):
        smaller_later = (perms[:, i + 1:] < perms[:, i:i + 1]).sum(1)
        idx = idx * (n - i) + smaller_later
    return idx


def compose(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(x . y)(i) = x(y(i)) for permutation rows [N, 5]."""
    return torch.gather(x, 1, y)


def invert(x: torch.Tensor) -> torch.Tensor:
    """The inverse of each permutation row [N, 5]."""
    inv = torch.empty_like(x)
    inv.scatter_(1, x, torch.arange(x.shape[1]).expand_as(x).contiguous())
    return inv


def n_elements(operation: str, p: int) -> int:
    """How many symbols the operation acts on: p for modular ops, 120 for S5."""
    return 120 if operation in S5_OPS else p


def operation_table(operation: str, p: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All equations ``a OP b = c`` as three long tensors (a, b, c).

    Division needs b != 0 (b is inverted with Fermat's little theorem); every
    other operation is defined on the whole table.  S5 elements are indexed by
    their lexicographic rank; ``p`` is ignored for S5.
    """
    if operation not in OPERATIONS:
        raise ConfigError(f"unknown operation {operation!r}; choose one of {', '.join(OPERATIONS)}")
    if operation in S5_OPS:
        perms = s5_elements()
        a, b = torch.meshgrid(torch.arange(120), torch.arange(120), indexing="ij")
        a, b = a.reshape(-1), b.reshape(-1)
        x, y = perms[a], perms[b]
        if operation == "x.y":
            z = compose(x, y)
        elif operation == "x.y.x^-1":
            z = compose(compose(x, y), invert(x))
        else:
            z = compose(compose(x, y), x)
        return a, b, _perm_index(z)
    if not is_prime(p):
        raise ConfigError(f"p must be prime for modular operations, got {p}")
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    if operation == "x/y":
        keep = b != 0
        a, b = a[keep], b[keep]
    binv = torch.tensor([pow(int(v), p - 2, p) if v else 0 for v in range(p)])[b]
    c = {
        "x+y": lambda: a + b,
        "x-y": lambda: a - b,
        "x/y": lambda: a * binv,
        "x/y if y odd else x-y": lambda: torch.where(b % 2 == 1, a * binv, a - b),
        "x^2+y^2": lambda: a**2 + b**2,
        "x^2+xy+y^2": lambda: a**2 + a * b + b**2,
        "x^2+xy+y^2+x": lambda: a**2 + a * b + b**2 + a,
        "x^3+xy": lambda: a**3 + a * b,
        "x^3+xy^2+y": lambda: a**3 + a * b**2 + b,
    }[operation]()
    return a, b, c % p


def split_table(n_rows: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded permutation of the table's rows cut into (train, val) index sets.

    Runs that share a seed share the permutation, so a smaller training set is
    a subset of a larger one.
    """
    perm = torch.randperm(n_rows, generator=generator(2 * seed))
    n_train = max(1, min(n_rows - 1, round(fraction * n_rows)))
    return perm[:n_train], perm[n_train:]


# ---------------------------------------------------------------------------
# What one ensemble trains: its members and its settings
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelShape:
    """The transformer's size: ``n_elements`` symbols, layers, width and heads."""

    n_elements: int
    n_layers: int = 1
    d_model: int = 64
    n_heads: int = 4

    @property
    def vocab(self) -> int:  # elements, the operation symbol, '='
        return self.n_elements + 2

    @property
    def d_mlp(self) -> int:
        return 4 * self.d_model

    @property
    def op_token(self) -> int:
        return self.n_elements

    @property
    def eq_token(self) -> int:
        return self.n_elements + 1


@dataclass(frozen=True)
class OptimSettings:
    """AdamW's learning rate (with linear warm-up), betas and epsilon (eq. grok-adamw)."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    warmup_steps: int = 10

    def lr_at(self, step: int) -> float:
        """Learning rate of update number ``step`` (1-based): linear warm-up, then constant."""
        if self.warmup_steps <= 0:
            return self.lr
        return self.lr * min(1.0, step / self.warmup_steps)


@dataclass(frozen=True)
class EnsembleSettings:
    """Everything :func:`train` needs besides the members: table size, model, optimiser, schedule.

    ``batch_size`` 0 means full batch, otherwise the paper's min(batch_size,
    N_train / 2) per model; ``steps`` is the budget; the models are evaluated
    on their whole table at ``n_evals`` log-spaced steps; ``early_stop`` ends
    the run once every model has generalised and stayed there;
    ``checkpoint_every`` (0: never) is in steps.
    """

    p: int
    n_layers: int = 1
    d_model: int = 32
    n_heads: int = 4
    optim: OptimSettings = OptimSettings()
    batch_size: int = 0
    steps: int = 3000
    n_evals: int = 120
    early_stop: bool = True
    checkpoint_every: int = 0
    device: str = "auto"

    def shape(self, n_elements: int) -> ModelShape:
        """The model for a table of ``n_elements`` symbols."""
        return ModelShape(n_elements=n_elements, n_layers=self.n_layers, d_model=self.d_model,
                          n_heads=self.n_heads)


@dataclass(frozen=True)
class GrokRun:
    """One member of an ensemble: operation, training fraction, seed and regulariser."""

    operation: str
    fraction: float
    seed: int
    weight_decay: float = 1.0
    decay_to_init: bool = False  # decay toward the initial weights instead of zero

    @property
    def label(self) -> str:
        """A short human-readable name, e.g. ``x/y f=0.5 wd 1 s=0``."""
        reg = ("decay→init" if self.decay_to_init else "wd") + f" {self.weight_decay:g}" if self.weight_decay else "no wd"
        return f"{self.operation} f={self.fraction:g} {reg} s={self.seed}"


# ---------------------------------------------------------------------------
# The ensemble transformer as pure functions of a parameter dict
# ---------------------------------------------------------------------------

def init_params(shape: ModelShape, seeds: list[int], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Parameters of len(seeds) models, each drawn from its own seeded generator.

    Model m's slice equals ``init_params(shape, [seeds[m]])`` exactly, which is
    what lets the tests compare one ensemble member with a one-model reference.
    """
    d, L, V, n, f = shape.d_model, shape.n_layers, shape.vocab, shape.n_elements, shape.d_mlp

    def one(seed: int) -> dict[str, torch.Tensor]:
        g = generator(2 * seed + 1)

        def normal(*size, fan_in):
            return torch.randn(*size, generator=g) / math.sqrt(fan_in)

        return {
            "tok_emb": normal(V, d, fan_in=d),
            "pos_emb": normal(SEQ_LEN, d, fan_in=d),
            "ln1_g": torch.ones(L, d), "ln1_b": torch.zeros(L, d),
            "w_qkv": normal(L, d, 3 * d, fan_in=d),
            "w_o": normal(L, d, d, fan_in=d), "b_o": torch.zeros(L, d),
            "ln2_g": torch.ones(L, d), "ln2_b": torch.zeros(L, d),
            "w_1": normal(L, d, f, fan_in=d), "b_1": torch.zeros(L, f),
            "w_2": normal(L, f, d, fan_in=f), "b_2": torch.zeros(L, d),
            "lnf_g": torch.ones(d), "lnf_b": torch.zeros(d),
            "w_out": normal(d, n, fan_in=d),
        }

    per_model = [one(s) for s in seeds]
    return {k: torch.stack([pm[k] for pm in per_model]).to(device) for k in per_model[0]}


def _layer_norm(x: torch.Tensor, g: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the last axis with per-model gain/bias g, b: [M, d] broadcast over [M, ..., d]."""
    shape = (g.shape[0],) + (1,) * (x.dim() - 2) + (g.shape[-1],)
    return F.layer_norm(x, x.shape[-1:]) * g.view(shape) + b.view(shape)


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x [M, ..., i] @ w [M, i, o] + b [M, o]."""
    M = x.shape[0]
    y = torch.bmm(x.reshape(M, -1, x.shape[-1]), w) + b[:, None, :]
    return y.view(*x.shape[:-1], w.shape[-1])


def forward(params: dict[str, torch.Tensor], tokens: torch.Tensor, shape: ModelShape) -> torch.Tensor:
    """Logits for the answer of each equation: tokens [M, B, T] -> [M, B, n].

    Pre-LayerNorm decoder with causal attention and a ReLU MLP.  Only the
    last position's output is read, so the last layer computes its query,
    residual and MLP for that position alone (an exact shortcut).
    """
    M, B, T = tokens.shape
    H, d = shape.n_heads, shape.d_model
    dh = d // H
    model_idx = torch.arange(M, device=tokens.device)[:, None, None]
    h = params["tok_emb"][model_idx, tokens] + params["pos_emb"][:, None, :T, :]  # [M, B, T, d]
    causal = torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril()
    for l in range(shape.n_layers):
        last = l == shape.n_layers - 1
        a = _layer_norm(h, params["ln1_g"][:, l], params["ln1_b"][:, l])
        # no q/k/v bias: a key bias cannot change attention (softmax is shift-invariant), so its
        # true gradient is zero and Adam would only amplify rounding noise in it
        M_, *_ = a.shape
        qkv = torch.bmm(a.reshape(M_, -1, d), params["w_qkv"][:, l]).view(M, B, T, 3 * d)
        q, k, v = qkv.split(d, dim=-1)
        if last:
            q = q[:, :, -1:]  # [M, B, 1, d]: only the answer position is needed
        tq = q.shape[2]
        q = q.reshape(M, B, tq, H, dh).transpose(2, 3)  # [M, B, H, tq, dh]
        k = k.reshape(M, B, T, H, dh).transpose(2, 3)
        v = v.reshape(M, B, T, H, dh).transpose(2, 3)
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh)  # [M, B, H, tq, T]
        scores = scores.masked_fill(~causal[T - tq:], float("-inf"))
        att = scores.softmax(-1) @ v  # [M, B, H, tq, dh]
        att = att.transpose(2, 3).reshape(M, B, tq, d)
        h = h[:, :, T - tq:] + _linear(att, params["w_o"][:, l], params["b_o"][:, l])
        a = _layer_norm(h, params["ln2_g"][:, l], params["ln2_b"][:, l])
        h = h + _linear(torch.relu(_linear(a, params["w_1"][:, l], params["b_1"][:, l])),
                        params["w_2"][:, l], params["b_2"][:, l])
    h = _layer_norm(h[:, :, -1], params["lnf_g"], params["lnf_b"])  # [M, B, d]
    return torch.bmm(h, params["w_out"])  # [M, B, n]


def loss_and_accuracy(params, tokens, answers, weights, shape) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-model weighted mean cross-entropy and accuracy on the answer token.

    tokens [M, B, T], answers [M, B], weights [M, B] (0 marks padding).
    Returns (sum of per-model losses, loss [M], accuracy [M]); the sum keeps
    the models' gradients independent.
    """
    logits = forward(params, tokens, shape)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), answers.reshape(-1),
                         reduction="none").view_as(answers)
    denom = weights.sum(1).clamp_min(1.0)
    loss = (ce * weights).sum(1) / denom
    acc = ((logits.argmax(-1) == answers).float() * weights).sum(1) / denom
    return loss.sum(), loss.detach(), acc


@dataclass
class AdamWState:
    """Ensemble AdamW: per-model weight decay (toward zero or toward the initial weights)."""

    exp_avg: dict[str, torch.Tensor]
    exp_avg_sq: dict[str, torch.Tensor]
    step: int = 0

    @classmethod
    def zeros_like(cls, params: dict[str, torch.Tensor]) -> "AdamWState":
        """A fresh optimiser state (zero moments) shaped like ``params``."""
        return cls({k: torch.zeros_like(v) for k, v in params.items()},
                   {k: torch.zeros_like(v) for k, v in params.items()})


@torch.no_grad()
def adamw_update(params, grads, state: AdamWState, opt: OptimSettings, weight_decay: torch.Tensor,
                 anchor: dict[str, torch.Tensor] | None = None) -> None:
    """One AdamW step in place, the same arithmetic as ``torch.optim.AdamW``.

    weight_decay [M] is per model; ``anchor`` (per parameter, zeros where a
    model decays toward 0) is what the decay pulls toward:
    theta <- theta - lr * wd * (theta - anchor), then the Adam step.
    """
    state.step += 1
    lr = opt.lr_at(state.step)
    b1, b2 = opt.betas
    bc1 = 1 - b1 ** state.step
    bc2_sqrt = math.sqrt(1 - b2 ** state.step)
    for k, p in params.items():
        g = grads[k]
        decay = (lr * weight_decay).view(-1, *([1] * (p.dim() - 1)))
        if anchor is None:
            p.mul_(1 - decay)
        else:
            p.sub_(decay * (p - anchor[k]))
        state.exp_avg[k].lerp_(g, 1 - b1)
        state.exp_avg_sq[k].mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (state.exp_avg_sq[k].sqrt() / bc2_sqrt).add_(opt.eps)
        p.addcdiv_(state.exp_avg[k], denom, value=-lr / bc1)


# ---------------------------------------------------------------------------
# Training an ensemble
# ---------------------------------------------------------------------------

@dataclass
class EnsembleData:
    """Every model's whole table, padded to a common length, with train/val masks.

    tokens [M, N, T], answers [M, N], train/val [M, N] boolean masks.
    """

    tokens: torch.Tensor
    answers: torch.Tensor
    train: torch.Tensor
    val: torch.Tensor
    n_train: torch.Tensor  # [M]

    @classmethod
    def build(cls, runs: list[GrokRun], p: int, shape: ModelShape, device) -> "EnsembleData":
        """Each run's table (eq. grok-data) split by its seed and fraction, stacked along the model axis."""
        tables = {}
        rows = []
        for r in runs:
            if r.operation not in tables:
                tables[r.operation] = operation_table(r.operation, p)
            a, b, c = tables[r.operation]
            tr, va = split_table(len(a), r.fraction, r.seed)
            rows.append((a, b, c, tr, va))
        N = max(len(a) for a, *_ in rows)
        M = len(runs)
        tokens = torch.zeros(M, N, SEQ_LEN, dtype=torch.long)
        answers = torch.zeros(M, N, dtype=torch.long)
        train = torch.zeros(M, N, dtype=torch.bool)
        val = torch.zeros(M, N, dtype=torch.bool)
        for m, (a, b, c, tr, va) in enumerate(rows):
            n = len(a)
            tokens[m, :n] = torch.stack([a, torch.full_like(a, shape.op_token), b,
                                         torch.full_like(a, shape.eq_token)], 1)
            answers[m, :n] = c
            train[m, tr] = True
            val[m, va] = True
        return cls(tokens.to(device), answers.to(device), train.to(device), val.to(device),
                   train.sum(1).to(device))

    def full_train_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The padded training sets: tokens [M, Ntr, T], answers [M, Ntr], weights [M, Ntr]."""
        Ntr = int(self.n_train.max())
        order = torch.argsort((~self.train).to(torch.int8), dim=1, stable=True)[:, :Ntr]  # train rows first
        tok = torch.gather(self.tokens, 1, order[..., None].expand(-1, -1, SEQ_LEN))
        ans = torch.gather(self.answers, 1, order)
        w = torch.gather(self.train, 1, order).float()
        return tok, ans, w


def batch_sizes(n_train: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The paper's rule min(batch_size, N_train / 2) per model (0 means full batch)."""
    if batch_size <= 0:
        return n_train
    return torch.minimum(torch.full_like(n_train, batch_size), (n_train // 2).clamp_min(1))


def sample_batch(data: EnsembleData, bs: torch.Tensor, gen: torch.Generator):
    """A minibatch per model, drawn without replacement from its training rows."""
    M, N = data.train.shape
    B = int(bs.max())
    keys = torch.rand(M, N, generator=gen, device=data.train.device)
    keys = keys.masked_fill(~data.train, 2.0)
    idx = keys.topk(B, dim=1, largest=False).indices  # [M, B]
    w = (torch.arange(B, device=idx.device)[None, :] < bs[:, None]).float()
    tok = torch.gather(data.tokens, 1, idx[..., None].expand(-1, -1, SEQ_LEN))
    return tok, torch.gather(data.answers, 1, idx), w


@dataclass
class History:
    """What ``train`` returns: curves on log-spaced steps, one row per model."""

    runs: list[GrokRun]
    steps: torch.Tensor  # [E]
    train_acc: torch.Tensor  # [M, E]
    val_acc: torch.Tensor
    train_loss: torch.Tensor
    val_loss: torch.Tensor
    params: dict[str, torch.Tensor] = field(repr=False)
    init: dict[str, torch.Tensor] = field(repr=False)
    wall_time_s: float = 0.0
    steps_done: int = 0
    budget: int = 0  # the step budget the run was given (a model that never generalised is censored here)
    # token embeddings [M, V, d] at each model's first evaluation with validation accuracy >= 99%
    # (nan rows for a model that never got there): the embeddings of the generalised model (Figure 3)
    grokked_emb: torch.Tensor | None = field(default=None, repr=False)

    def first_step_above(self, curve: torch.Tensor, threshold: float = 0.99) -> list[float]:
        """First evaluated step with accuracy >= threshold, per model (nan if never)."""
        out = []
        for row in curve:
            hit = (row >= threshold).nonzero()
            out.append(float(self.steps[hit[0, 0]]) if len(hit) else float("nan"))
        return out

    @property
    def train_99(self) -> list[float]:
        """Steps until 99% training accuracy, per model (nan if never)."""
        return self.first_step_above(self.train_acc)

    @property
    def val_99(self) -> list[float]:
        """Steps until 99% validation accuracy, per model (nan if never within the budget)."""
        return self.first_step_above(self.val_acc)

    def select(self, **where) -> list[int]:
        """Indices of the runs whose fields equal ``where``."""
        return [i for i, r in enumerate(self.runs) if all(getattr(r, k) == v for k, v in where.items())]

    def val_at_train_99(self) -> list[float]:
        """Validation accuracy at the first evaluated step with training accuracy >= 99%, per model."""
        out = []
        for m, row in enumerate(self.train_acc):
            hit = (row >= 0.99).nonzero()
            out.append(float(self.val_acc[m, hit[0, 0]]) if len(hit) else float("nan"))
        return out


def eval_steps(total: int, n: int) -> torch.Tensor:
    """About ``n`` log-spaced distinct steps in [1, total], always including total."""
    s = torch.logspace(0, math.log10(total), n).round().long().unique()
    return torch.unique(torch.cat([s, torch.tensor([total])]))


@dataclass
class _Loop:
    """What :func:`train` carries from one step to the next (tensors live on the device)."""

    data: EnsembleData
    shape: ModelShape
    params: dict[str, torch.Tensor]
    init: dict[str, torch.Tensor]
    weight_decay: torch.Tensor  # [M]
    anchor: dict[str, torch.Tensor] | None  # what the decay pulls toward (None: zero for every model)
    adam: AdamWState
    gen: torch.Generator  # draws the minibatches
    batch: torch.Tensor  # per-model batch size [M]
    full_batch: tuple | None  # the padded training sets when batch_size is 0
    at: torch.Tensor  # evaluation steps [E]
    evals: torch.Tensor  # [4, M, E]: train acc, val acc, train loss, val loss
    grokked_emb: torch.Tensor  # [M, V, d]: token embeddings when val acc first reached 99% (nan before)
    step: int = 0

    @property
    def n_evaluated(self) -> int:
        """How many evaluation points lie at or before the current step."""
        return int((self.at <= self.step).sum())


def _elements(runs: list[GrokRun], p: int) -> int:
    """The common number of symbols of the runs' operations (an ensemble shares one vocabulary)."""
    n = {n_elements(r.operation, p) for r in runs}
    if len(n) != 1:
        raise ConfigError("an ensemble's operations must act on the same number of elements")
    return n.pop()


def _start(runs: list[GrokRun], settings: EnsembleSettings, device) -> _Loop:
    """Phase 1: the data, the seeded initial parameters, the decay anchors and a fresh optimiser."""
    shape = settings.shape(_elements(runs, settings.p))
    data = EnsembleData.build(runs, settings.p, shape, device)
    params = init_params(shape, [r.seed for r in runs], device)
    init = {k: v.clone() for k, v in params.items()}
    wd = torch.tensor([r.weight_decay for r in runs], device=device)
    to_init = torch.tensor([r.decay_to_init for r in runs], device=device)
    anchor = ({k: v * to_init.view(-1, *([1] * (v.dim() - 1))) for k, v in init.items()}
              if bool(to_init.any()) else None)
    gen = generator(runs[0].seed * 7919 + 17, device)
    at = eval_steps(settings.steps, settings.n_evals).to(device)
    evals = torch.full((4, len(runs), len(at)), float("nan"), device=device)
    full = data.full_train_batch() if settings.batch_size <= 0 else None
    grokked = torch.full_like(params["tok_emb"], float("nan"))
    return _Loop(data, shape, params, init, wd, anchor, AdamWState.zeros_like(params), gen,
                 batch_sizes(data.n_train, settings.batch_size), full, at, evals, grokked)


def _checkpoint_state(loop: _Loop) -> dict:
    """Everything needed to continue ``loop`` exactly where it stopped."""
    return {"params": {k: v.detach() for k, v in loop.params.items()}, "init": loop.init,
            "exp_avg": loop.adam.exp_avg, "exp_avg_sq": loop.adam.exp_avg_sq, "opt_step": loop.adam.step,
            "generator": loop.gen.get_state(), "evals": loop.evals, "step": loop.step,
            "grokked_emb": loop.grokked_emb}


def _resume(loop: _Loop, saved: dict) -> None:
    """Phase 1b: continue from a checkpoint's state (the anchors are recomputed identically by _start)."""
    loop.params, loop.init = saved["params"], saved["init"]
    loop.adam = AdamWState(saved["exp_avg"], saved["exp_avg_sq"], saved["opt_step"])
    loop.gen.set_state(saved["generator"].cpu())
    loop.evals, loop.step, loop.grokked_emb = saved["evals"], saved["step"], saved["grokked_emb"]


def _update(loop: _Loop, settings: EnsembleSettings) -> None:
    """Phase 2: one optimisation step of every model: batch, loss (eq. grok-loss), gradient, AdamW."""
    tok, ans, w = loop.full_batch if loop.full_batch is not None else sample_batch(loop.data, loop.batch, loop.gen)
    total, _, _ = loss_and_accuracy(loop.params, tok, ans, w, loop.shape)
    grads = torch.autograd.grad(total, list(loop.params.values()))
    adamw_update(loop.params, dict(zip(loop.params.keys(), grads)), loop.adam, settings.optim, loop.weight_decay,
                 loop.anchor)


@torch.no_grad()
def _evaluate(loop: _Loop, e: int) -> None:
    """Phase 3: accuracy and loss of every model on its whole table, stored in column ``e`` (on the device)."""
    data = loop.data
    logits = forward(loop.params, data.tokens, loop.shape)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), data.answers.reshape(-1),
                         reduction="none").view_as(data.answers)
    correct = (logits.argmax(-1) == data.answers).float()
    for j, (mask, what) in enumerate([(data.train, correct), (data.val, correct), (data.train, ce), (data.val, ce)]):
        mw = mask.float()
        loop.evals[j, :, e] = (what * mw).sum(1) / mw.sum(1).clamp_min(1)
    first = (loop.evals[1, :, e] >= 0.99) & loop.grokked_emb[:, 0, 0].isnan()  # models generalising just now
    loop.grokked_emb[first] = loop.params["tok_emb"].detach()[first]


def _generalised_and_stayed(loop: _Loop) -> bool:
    """Phase 4: every model reached 99% validation accuracy, is still there, and 1.5x the last such step passed."""
    n = loop.n_evaluated
    val = loop.evals[1, :, :n]
    if not bool((val >= 0.99).any(1).all()):
        return False
    first = torch.where(val >= 0.99, loop.at[:n].float(), float("inf")).amin(1)
    return loop.step >= 1.5 * float(first.max()) and bool((val[:, -1] >= 0.99).all())


def _history(loop: _Loop, runs: list[GrokRun], wall: float, budget: int) -> "History":
    """Phase 5: the curves up to the last step taken, moved to the CPU."""
    keep = loop.at <= loop.step
    return History(runs, loop.at[keep].cpu(), *(loop.evals[j][:, keep].cpu() for j in range(4)),
                   params={k: v.detach().cpu() for k, v in loop.params.items()},
                   init={k: v.cpu() for k, v in loop.init.items()}, wall_time_s=wall, steps_done=loop.step,
                   budget=budget, grokked_emb=loop.grokked_emb.cpu())


def checkpoint_identity(experiment: str, runs: list[GrokRun], settings: EnsembleSettings) -> dict:
    """What a checkpoint of this ensemble must match: experiment name, settings (incl. steps) and members."""
    return make_identity(experiment, asdict(settings), runs=[asdict(r) for r in runs])


def train(runs: list[GrokRun], settings: EnsembleSettings, *, experiment: str = "grokking",
          checkpoint: str | Path | None = None, stream=None, interrupt_at: int | None = None,
          stop_together: Callable[[bool], bool] | None = None) -> History:
    """Train one ensemble (one model per :class:`GrokRun`) and return its :class:`History`.

    Phases: :func:`_start` (data, parameters, optimiser) or :func:`_resume`
    from ``checkpoint`` (whose identity must match: experiment, settings and
    members, else :class:`~repro.checkpoint.CheckpointMismatch`); then per step
    :func:`_update`, at log-spaced steps :func:`_evaluate` (kept on the device)
    and, with ``early_stop``, :func:`_generalised_and_stayed`; a checkpoint
    every ``checkpoint_every`` steps; :func:`_history` at the end.
    ``interrupt_at`` stops after that step (to test resuming).  When the
    ensemble is one shard of a bigger one trained by several processes,
    ``stop_together(done)`` turns this shard's early-stop decision into the
    decision of all shards (:func:`train_shard`).
    """
    device = get_device(settings.device)
    loop = _start(runs, settings, device)
    identity = checkpoint_identity(experiment, runs, settings)
    saved = load_checkpoint(checkpoint, identity, map_location=device) if checkpoint else None
    progress = Progress(settings.steps, experiment, stream=stream, start=saved["step"] if saved else 0)
    if saved is not None:
        _resume(loop, saved)
        progress.log(f"resumed from {checkpoint} at step {loop.step}")
    for v in loop.params.values():
        v.requires_grad_(True)
    t0 = time.time()
    e_next, E, M = loop.n_evaluated, len(loop.at), len(runs)
    with progress:
        for step in range(loop.step + 1, settings.steps + 1):
            _update(loop, settings)
            loop.step = step
            if e_next < E and step == int(loop.at[e_next]):
                _evaluate(loop, e_next)
                e_next += 1
                if settings.early_stop and (_generalised_and_stayed(loop) if stop_together is None
                                            else stop_together(_generalised_and_stayed(loop))):
                    break
                progress.update(step, **{"train acc": float(loop.evals[0, :, e_next - 1].mean()),
                                         "val acc": float(loop.evals[1, :, e_next - 1].mean()),
                                         "generalised": f"{int((loop.evals[1, :, e_next - 1] >= 0.99).sum())}/{M}"})
            if checkpoint and settings.checkpoint_every and step % settings.checkpoint_every == 0:
                save_checkpoint(checkpoint, _checkpoint_state(loop), identity)
            if interrupt_at is not None and step >= interrupt_at:
                break
        progress.update(loop.step)
    hist = _history(loop, runs, time.time() - t0, settings.steps)
    progress.log(f"trained {M} models for {loop.step} steps in {hist.wall_time_s:.1f}s; generalised "
                 f"(val>=99%): {sum(not math.isnan(s) for s in hist.val_99)}/{M}")
    return hist


# ---------------------------------------------------------------------------
# An ensemble sharded over processes (data parallelism without gradients to share)
# ---------------------------------------------------------------------------

def shard(runs: list[GrokRun], rank: int, world: int) -> list[GrokRun]:
    """The members process ``rank`` of ``world`` trains: every ``world``-th run from ``rank`` (may be empty)."""
    return runs[rank::world]


def train_shard(runs: list[GrokRun], settings: EnsembleSettings, ctx: DistContext, *, experiment: str = "grokking",
                checkpoint: str | Path | None = None, stream=None) -> History | None:
    """Train this process's shard (:func:`shard`) of the ensemble ``runs``; None if it holds no member.

    The models are independent, so no gradient crosses processes.  With
    ``early_stop`` the shards stop together: at each evaluation they vote
    (``ctx.all_true``) and stop once every shard's models have generalised and
    stayed, which is the one-ensemble rule.  A process whose shard would be
    empty trains a copy of the first member, so that it votes like the others
    (its copy behaves as the original; its history is dropped).  Shards
    resuming from checkpoints must all resume at the same step.  Merge the
    shards' histories with :func:`merge_histories`.
    """
    members = shard(runs, ctx.rank, ctx.world) or runs[:1]
    saved = load_checkpoint(checkpoint, checkpoint_identity(experiment, members, settings)) if checkpoint else None
    starts = ctx.all_gather(saved["step"] if saved is not None else 0)
    if len(set(starts)) > 1:
        raise RuntimeError(f"the shards' checkpoints of {experiment} stopped at different steps {starts}; move "
                           f"them away (next to {checkpoint}) to start afresh")
    hist = train(members, settings, experiment=experiment, checkpoint=checkpoint, stream=stream,
                 stop_together=ctx.all_true)
    return hist if shard(runs, ctx.rank, ctx.world) else None


def merge_histories(parts: list[History | None], runs: list[GrokRun]) -> History:
    """The History of ensemble ``runs`` from its shards' histories (in any order; None for empty shards).

    Curves, parameters and embeddings are concatenated along the model axis in
    the order of ``runs``; the shards stopped together, so they share the
    evaluation steps.
    """
    parts = [p for p in parts if p is not None]
    if any(p.steps_done != parts[0].steps_done or not torch.equal(p.steps, parts[0].steps) for p in parts):
        raise ValueError("the shards did not stop at the same step; they cannot form one history")
    where = {r: (i, m) for i, p in enumerate(parts) for m, r in enumerate(p.runs)}
    if set(where) != set(runs):
        raise ValueError("the shards' members are not the ensemble's runs")
    order = [where[r] for r in runs]

    def stack(get) -> torch.Tensor:
        return torch.stack([get(parts[i])[m] for i, m in order])

    first = parts[0]
    params = {k: stack(lambda p, k=k: p.params[k]) for k in first.params}
    init = {k: stack(lambda p, k=k: p.init[k]) for k in first.init}
    grokked = stack(lambda p: p.grokked_emb) if first.grokked_emb is not None else None
    return History(list(runs), first.steps, stack(lambda p: p.train_acc), stack(lambda p: p.val_acc),
                   stack(lambda p: p.train_loss), stack(lambda p: p.val_loss), params=params, init=init,
                   wall_time_s=max(p.wall_time_s for p in parts), steps_done=first.steps_done,
                   budget=first.budget, grokked_emb=grokked)


# ---------------------------------------------------------------------------
# Analysis
# ---------------------------------------------------------------------------

def fourier_power(emb: torch.Tensor) -> torch.Tensor:
    """Share of an element embedding's energy in each frequency k = 0..p//2.

    emb [p, d]: row a is the embedding of element a.  Modular addition is
    solved with a few Fourier features, so a grokked model concentrates its
    energy on a handful of k.
    """
    spec = torch.fft.rfft(emb.double(), dim=0)  # [p//2+1, d]
    power = (spec.abs() ** 2).sum(1)
    power[1:] *= 2  # fold in the negative frequencies (p is odd)
    return (power / power.sum()).float()


def top_k_share(power: torch.Tensor, k: int, skip_dc: bool = True) -> float:
    """Fraction of the non-constant energy held by the k strongest frequencies."""
    p = power[1:] if skip_dc else power
    p = p / p.sum()
    return float(p.topk(min(k, len(p))).values.sum())


def circle_coordinates(emb: torch.Tensor, k: int) -> torch.Tensor:
    """Project embeddings onto the plane of frequency k: [p, d] -> [p, 2]."""
    p = emb.shape[0]
    spec = torch.fft.rfft(emb.double(), dim=0)[k]  # [d] complex
    basis = torch.stack([spec.real, spec.imag])  # [2, d]
    basis = torch.linalg.qr(basis.T).Q.T  # orthonormal plane
    centred = emb.double() - emb.double().mean(0)
    return (centred @ basis.T).float()
