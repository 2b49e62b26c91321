"""Grokking (Power et al., 2022): small transformers on binary-operation tables.

The whole chapter's sweep (seeds x training fractions x regularisers) trains
as one *ensemble*: every parameter carries a leading model axis ``M`` and the
forward pass, the loss and the AdamW update are batched over it, so dozens of
tiny transformers cost one set of batched matrix multiplies per step.  A plain
one-model ``torch.nn`` reference lives in ``tests/test_grokking.py`` and must
agree with this ensemble step for step.

Shapes: M models, B examples, T = 4 tokens ``a OP b =``, d model width,
H heads, V vocabulary (n elements + OP + =), n answer classes.
"""
from __future__ import annotations

import itertools
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import ConfigError, ProfileConfig, param
from .device import get_device

# ---------------------------------------------------------------------------
# Data: every equation a OP b = c of one operation
# ---------------------------------------------------------------------------

MODULAR_OPS = ("x+y", "x-y", "x/y", "x/y if y odd else x-y", "x^2+y^2", "x^2+xy+y^2",
               "x^2+xy+y^2+x", "x^3+xy", "x^3+xy^2+y")
S5_OPS = ("x.y", "x.y.x^-1", "x.y.x")
OPERATIONS = MODULAR_OPS + S5_OPS
SEQ_LEN = 4  # a, OP, b, =


def is_prime(p: int) -> bool:
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
    g = torch.Generator().manual_seed(2 * seed)
    perm = torch.randperm(n_rows, generator=g)
    n_train = max(1, min(n_rows - 1, round(fraction * n_rows)))
    return perm[:n_train], perm[n_train:]


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------

INTERVENTIONS = ("none", "weight_decay", "decay_to_init")


@dataclass(frozen=True)
class GrokkingConfig(ProfileConfig):
    """All knobs of the grokking chapter; see ``python -m repro params grokking``."""

    operation: str = param("x/y", "operation of Figure 1 and the fraction sweep", choices=OPERATIONS)
    p: int = param(31, "prime modulus (the paper uses 97)", min=3, max=211)
    train_fraction: float = param(0.7, "training fraction of Figure 1 left and of the regulariser comparison",
                                  min=0.01, max=0.99)
    fractions: tuple[float, ...] = param((0.5, 0.6, 0.7, 0.8), "training fractions swept for Figure 1 centre",
                                         min=0.01, max=0.99)
    n_seeds: int = param(3, "seeds per setting (seed, seed+1, ...)", min=1, max=64)
    interventions: tuple[str, ...] = param(INTERVENTIONS, "regularisers compared in Figure 2", choices=INTERVENTIONS)
    embed_operation: str = param("x+y", "operation whose embeddings Figure 3 analyses", choices=MODULAR_OPS)
    n_layers: int = param(1, "transformer layers (paper: 2)", min=1, max=12)
    d_model: int = param(32, "residual width (paper: 128)", min=8, max=1024)
    n_heads: int = param(4, "attention heads (paper: 4)", min=1, max=32)
    lr: float = param(3e-3, "AdamW learning rate (paper: 1e-3)", min=1e-6, max=1.0)
    beta1: float = param(0.9, "AdamW beta1", min=0.0, max=0.999999)
    beta2: float = param(0.98, "AdamW beta2 (paper: 0.98)", min=0.0, max=0.999999)
    warmup_steps: int = param(10, "linear learning-rate warm-up steps (paper: 10)", min=0)
    weight_decay: float = param(1.0, "decoupled weight decay of the regularised runs (paper: 1)", min=0.0, max=100.0)
    batch_size: int = param(0, "0: full batch; otherwise min(batch_size, N_train/2) as in the paper", min=0)
    steps: int = param(3000, "optimisation steps per run (paper: 1e5)", min=1)
    embed_steps: int = param(2000, "steps for the embedding-structure run", min=1)
    n_evals: int = param(120, "log-spaced evaluation points", min=2, max=10000)
    early_stop: bool = param(True, "stop once every model has generalised and plateaued")
    checkpoint_every: int = param(0, "steps between checkpoints (0: none)", min=0)

    PROFILES = {
        "smoke": dict(p=13, fractions=(0.5, 0.8), n_seeds=2, steps=200, embed_steps=150, n_evals=20,
                      d_model=16, n_heads=2, interventions=("none", "weight_decay"), train_fraction=0.5),
        "book": {},
        "paper": dict(p=97, n_layers=2, d_model=128, n_heads=4, lr=1e-3, batch_size=512, steps=100_000,
                      embed_steps=100_000, fractions=tuple(round(0.1 * i, 1) for i in range(1, 10)),
                      n_evals=400, early_stop=False, checkpoint_every=5000, n_seeds=3),
    }

    def check(self) -> None:
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if not is_prime(self.p):
            raise ConfigError(f"parameter 'p' must be prime, got {self.p}")
        if self.n_evals > self.steps:
            raise ConfigError(f"n_evals ({self.n_evals}) cannot exceed steps ({self.steps})")

    def model(self, n: int) -> "ModelShape":
        return ModelShape(n_elements=n, n_layers=self.n_layers, d_model=self.d_model, n_heads=self.n_heads)

    def optim(self) -> "OptimSettings":
        return OptimSettings(lr=self.lr, betas=(self.beta1, self.beta2), warmup_steps=self.warmup_steps)


@dataclass(frozen=True)
class ModelShape:
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
class RunSpec:
    """One member of an ensemble."""

    operation: str
    fraction: float
    seed: int
    weight_decay: float = 1.0
    decay_to_init: bool = False  # decay toward the initial weights instead of zero

    @property
    def label(self) -> str:
        reg = ("decay→init" if self.decay_to_init else "wd") + f" {self.weight_decay:g}" if self.weight_decay else "no wd"
        return f"{self.operation} f={self.fraction:g} {reg} s={self.seed}"


def intervention_run(name: str, operation: str, fraction: float, seed: int, weight_decay: float) -> RunSpec:
    """The RunSpec of one of the regulariser comparisons of Figure 2."""
    if name == "none":
        return RunSpec(operation, fraction, seed, 0.0)
    if name == "weight_decay":
        return RunSpec(operation, fraction, seed, weight_decay)
    if name == "decay_to_init":
        return RunSpec(operation, fraction, seed, weight_decay, decay_to_init=True)
    raise ConfigError(f"unknown intervention {name!r}; choose one of {', '.join(INTERVENTIONS)}")


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
        g = torch.Generator().manual_seed(2 * seed + 1)

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
    def build(cls, runs: list[RunSpec], p: int, shape: ModelShape, device) -> "EnsembleData":
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


def sample_batch(data: EnsembleData, bs: torch.Tensor, generator: torch.Generator):
    """A minibatch per model, drawn without replacement from its training rows."""
    M, N = data.train.shape
    B = int(bs.max())
    keys = torch.rand(M, N, generator=generator, device=data.train.device)
    keys = keys.masked_fill(~data.train, 2.0)
    idx = keys.topk(B, dim=1, largest=False).indices  # [M, B]
    w = (torch.arange(B, device=idx.device)[None, :] < bs[:, None]).float()
    tok = torch.gather(data.tokens, 1, idx[..., None].expand(-1, -1, SEQ_LEN))
    return tok, torch.gather(data.answers, 1, idx), w


@dataclass
class History:
    """What ``train`` returns: curves on log-spaced steps, one row per model."""

    runs: list[RunSpec]
    steps: torch.Tensor  # [E]
    train_acc: torch.Tensor  # [M, E]
    val_acc: torch.Tensor
    train_loss: torch.Tensor
    val_loss: torch.Tensor
    params: dict[str, torch.Tensor] = field(repr=False)
    init: dict[str, torch.Tensor] = field(repr=False)
    wall_time_s: float = 0.0
    steps_done: int = 0

    def first_step_above(self, curve: torch.Tensor, threshold: float = 0.99) -> list[float]:
        """First evaluated step with accuracy >= threshold, per model (nan if never)."""
        out = []
        for row in curve:
            hit = (row >= threshold).nonzero()
            out.append(float(self.steps[hit[0, 0]]) if len(hit) else float("nan"))
        return out

    @property
    def train_99(self) -> list[float]:
        return self.first_step_above(self.train_acc)

    @property
    def val_99(self) -> list[float]:
        return self.first_step_above(self.val_acc)

    def select(self, **where) -> list[int]:
        """Indices of the runs whose fields equal ``where``."""
        return [i for i, r in enumerate(self.runs) if all(getattr(r, k) == v for k, v in where.items())]


def eval_steps(total: int, n: int) -> torch.Tensor:
    """About ``n`` log-spaced distinct steps in [1, total], always including total."""
    s = torch.logspace(0, math.log10(total), n).round().long().unique()
    return torch.unique(torch.cat([s, torch.tensor([total])]))


def _checkpoint_state(params, init, state, gen, evals, step, identity) -> dict:
    return {"params": params, "init": init, "exp_avg": state.exp_avg, "exp_avg_sq": state.exp_avg_sq,
            "opt_step": state.step, "generator": gen.get_state(), "evals": evals, "step": step,
            "identity": identity}


def train(runs: list[RunSpec], cfg: GrokkingConfig, steps: int | None = None, *, device=None,
          checkpoint: str | Path | None = None, log_every_s: float = 15.0, stream=None,
          interrupt_at: int | None = None) -> History:
    """Train one ensemble (one model per RunSpec) and return its History.

    Phases: build data and parameters; loop {sample batch, loss, backward,
    AdamW}; evaluate on the whole table at log-spaced steps (kept on the
    device); optionally checkpoint and stop early once every model has
    generalised and stayed there.
    """
    stream = stream or sys.stdout
    steps = steps or cfg.steps
    device = get_device(device or cfg.device)
    ops = {r.operation for r in runs}
    n = {n_elements(op, cfg.p) for op in ops}
    if len(n) != 1:
        raise ConfigError("an ensemble's operations must act on the same number of elements")
    shape = cfg.model(n.pop())
    opt = cfg.optim()
    # -- data and parameters
    data = EnsembleData.build(runs, cfg.p, shape, device)
    params = init_params(shape, [r.seed for r in runs], device)
    init = {k: v.clone() for k, v in params.items()}
    wd = torch.tensor([r.weight_decay for r in runs], device=device)
    to_init = torch.tensor([r.decay_to_init for r in runs], device=device)
    anchor = ({k: v * to_init.view(-1, *([1] * (v.dim() - 1))) for k, v in init.items()}
              if bool(to_init.any()) else None)
    state = AdamWState.zeros_like(params)
    gen = torch.Generator(device=device).manual_seed(runs[0].seed * 7919 + 17)
    bs = batch_sizes(data.n_train, cfg.batch_size)
    full = cfg.batch_size <= 0
    if full:
        fb = data.full_train_batch()
    at = eval_steps(steps, cfg.n_evals).to(device)
    E, M = len(at), len(runs)
    evals = torch.full((4, M, E), float("nan"), device=device)  # train acc, val acc, train loss, val loss
    start = 0
    ckpt = Path(checkpoint) if checkpoint else None
    identity = {"runs": [r.label for r in runs], "steps": steps, "config": cfg.to_dict()}
    if ckpt and ckpt.exists():
        saved = torch.load(ckpt, map_location=device, weights_only=False)
        if saved["identity"] != identity:
            raise ValueError(f"checkpoint {ckpt} belongs to a different experiment; move it away to start afresh")
        params, init = saved["params"], saved["init"]
        state = AdamWState(saved["exp_avg"], saved["exp_avg_sq"], saved["opt_step"])
        gen.set_state(saved["generator"])
        evals, start = saved["evals"], saved["step"]
        print(f"resumed from {ckpt} at step {start}", file=stream, flush=True)
    for v in params.values():
        v.requires_grad_(True)

    def evaluate(e: int) -> None:
        with torch.no_grad():
            w_all = torch.ones_like(data.answers, dtype=torch.float)
            logits = forward(params, data.tokens, shape)
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), data.answers.reshape(-1),
                                 reduction="none").view_as(data.answers)
            correct = (logits.argmax(-1) == data.answers).float()
            for j, (mask, what) in enumerate([(data.train, correct), (data.val, correct),
                                              (data.train, ce), (data.val, ce)]):
                mw = mask.float() * w_all
                evals[j, :, e] = (what * mw).sum(1) / mw.sum(1).clamp_min(1)

    t0 = last_log = time.time()
    e_next = int((at <= start).sum())
    step = start
    for step in range(start + 1, steps + 1):
        tok, ans, w = fb if full else sample_batch(data, bs, gen)
        total, _, _ = loss_and_accuracy(params, tok, ans, w, shape)
        grads = torch.autograd.grad(total, list(params.values()))
        adamw_update(params, dict(zip(params.keys(), grads)), state, opt, wd, anchor)
        if e_next < E and step == int(at[e_next]):
            evaluate(e_next)
            e_next += 1
            if cfg.early_stop:
                val = evals[1, :, :e_next]
                done = (val >= 0.99).any(1)
                if bool(done.all()):
                    first = torch.where(val >= 0.99, at[:e_next].float(), float("inf")).amin(1)
                    if step >= 1.5 * float(first.max()) and bool((val[:, -1] >= 0.99).all()):
                        break
            now = time.time()
            if now - last_log > log_every_s:
                last_log = now
                print(f"  step {step}/{steps}  {step / (now - t0 + 1e-9):.0f} steps/s  "
                      f"train acc {evals[0, :, e_next - 1].mean():.3f}  val acc {evals[1, :, e_next - 1].mean():.3f}  "
                      f"generalised {int((evals[1, :, e_next - 1] >= 0.99).sum())}/{M}", file=stream, flush=True)
        if ckpt and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            tmp = ckpt.with_suffix(".tmp")
            torch.save(_checkpoint_state({k: v.detach() for k, v in params.items()}, init, state, gen, evals, step,
                                         identity), tmp)
            tmp.replace(ckpt)
        if interrupt_at is not None and step >= interrupt_at:
            break
    wall = time.time() - t0
    keep = at <= step
    hist = History(runs, at[keep].cpu(), *(evals[j][:, keep].cpu() for j in range(4)),
                   params={k: v.detach().cpu() for k, v in params.items()},
                   init={k: v.cpu() for k, v in init.items()}, wall_time_s=wall, steps_done=step)
    print(f"  trained {M} models for {step} steps in {wall:.1f}s; generalised (val>=99%): "
          f"{sum(not math.isnan(s) for s in hist.val_99)}/{M}", file=stream, flush=True)
    return hist


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
