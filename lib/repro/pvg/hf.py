"""The prover–verifier game on real language models: the paper profile's engine (Kirchner et al. 2024).

The toy game (:mod:`repro.pvg.game`) runs on the in-house small GPT; this
module plays the same game with local Hugging Face models on GSM8K-format
grade-school maths:

* **Data** (:func:`load_gsm8k_jsonl`): one ``{"question": ..., "answer":
  "... #### 42"}`` per line; :func:`split_halves` deals the problems into a
  prover half and a verifier half, disjoint by question text.  Evaluation
  uses a separate file (``eval_path``) or, without one, the last
  ``eval_problems`` problems of the prover half, which RL then never sees.
* **Grading** (:func:`grade_math`): the final answer is the number after the
  last ``####`` of a completion, or, when it writes no ``####``, its last
  number; answers are compared as normalised strings (:func:`normalise_answer`).
* **Prompts**: the prover reads ``Role: helpful`` or ``Role: sneaky``, the
  question and ``Solution:`` (:func:`prover_prompt`); the verifier reads the
  question and the solution, never the role (:func:`verifier_text`).
* **Players** (:class:`HFPlayers`): the prover (a causal LM), a frozen copy of
  it as the KL reference, and the verifier, a smaller language model's body
  with a scalar head on the final hidden state of the last real token
  (:class:`HFVerifier`).  Its initial weights are kept, and every round it is
  retrained from them (:meth:`HFPlayers.reset_verifier`).
* **A round** (:func:`play_rounds`): the current prover writes a solution in
  each role to ``verifier_samples`` verifier-half problems; the verifier is
  retrained from its initial weights with the Bradley–Terry loss on every
  (correct, incorrect) pair of solutions to the same problem among all
  solutions so far (:func:`train_verifier_bt`, pvg-bt); then the prover takes
  ``rl_steps`` REINFORCE steps against it (:func:`prover_rl_step`) with the
  reward of :func:`repro.pvg.rewards.reward` (pvg-rewards), a per-role
  batch-mean baseline and a KL penalty to the initial prover on the sampled
  tokens (pvg-kl); finally the prover is evaluated against this round's
  verifier (:func:`evaluate_players`).  The losses and rewards are the ones of
  :mod:`repro.pvg.rewards` and the pairs those of
  :func:`repro.pvg.game.correct_incorrect_pairs`, so the toy and the paper
  profiles train with the same code for the same equations.

What the paper profile does **not** do, stated here so nobody reads more into
its numbers:

* **No checker.**  There is no time-limited checker for free-text GSM8K
  solutions: the checker accuracy of the toy profile
  (:mod:`repro.pvg.checker`) is a toy-profile measure only, and the paper's
  legibility results rest on time-limited human raters, which we do not have.
  Here a round reports accuracy, the sneaky role's success against the
  verifier, lengths, reward and KL.
* **REINFORCE, not PPO.**  The paper trains the prover with PPO.  We take one
  gradient step per sampled batch, and with one step per batch the PPO ratio
  is 1 at the only update and its clip never acts, so PPO reduces to the
  policy gradient with a baseline; we write that directly (as the toy game does).
* **Sizes.**  The models are whatever local models the user provides (the
  paper's prover and verifier are GPT-4-family models of undisclosed size, the
  verifier about 1e-3 of the prover's compute); the number of RL steps per
  round is a setting (the paper takes a few thousand or stops when sneaky
  solutions score as high as helpful ones).  No attacker probe is run here.

Every model is loaded in float32 (a learning rate of 1e-6 moves bfloat16
weights not at all) and stays in ``eval`` mode: sampling, scoring and
teacher forcing run with dropout off, so a score or a log-probability is a function of the weights
and the text.  Sampling is plain ancestral sampling at ``temperature`` (no
top-k, top-p, repetition penalty or any other processor a model's own
generation config might ask for), and the policy whose gradient REINFORCE
takes is that tempered distribution, so the log-probabilities of
:func:`completion_logprobs` are those of the distribution the tokens were
drawn from.

Randomness: Hugging Face ``generate`` draws from torch's global stream (it
takes no generator), so, like the RL trainer (``rl/trainer.py``),
:func:`play_rounds` seeds that stream once with
:func:`repro.seed.seed_everything` on a fresh start and saves and restores it
(CPU and CUDA) in its checkpoints; numpy choices (problems, roles, pairs) come
from generators seeded by ``(seed, round, purpose)``.

Importing this module does not import transformers (it is the optional extra
``hf``): the functions that need it import it when called.

Shapes: B solutions, P pairs, Lp prompt tokens (left-padded), N completion tokens.
"""
from __future__ import annotations

import copy
import hashlib
import inspect
import json
import math
import re
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..checkpoint import load_checkpoint, make_identity, save_checkpoint
from ..device import get_device
from ..progress import Progress
from ..seed import seed_everything
from ..tinygpt import SequenceLogprobs
from .game import correct_incorrect_pairs
from .rewards import REWARDS, bradley_terry_loss, kl_penalty, reward, role_baseline
from .task import split_pool

ROLE_NAMES = ("helpful", "sneaky")
CHECKPOINT_NAME = "pvg_hf.pt"
MAX_LOSS_PAIRS = 1024   # pairs a round's verifier loss is measured on (a random subset beyond that)


def _require_transformers():
    try:
        import transformers
    except ImportError as err:  # transformers is the optional extra `hf`
        raise ImportError("the prover-verifier paper profile needs transformers: pip install -e '.[hf]'") from err
    return transformers


# ---------------------------------------------------------------------------
# Data and grading
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class MathProblem:
    """A GSM8K-format problem: the question, the reference answer text and its normalised final answer."""

    question: str
    answer_text: str
    answer: str

    @property
    def text(self) -> str:
        """The question (what :func:`repro.pvg.game.correct_incorrect_pairs` and :func:`split_halves` group by)."""
        return self.question


_NUMBER_RE = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\$?\.\d+")


def normalise_answer(text: str) -> str:
    """A final answer in one canonical spelling: commas, spaces, ``$`` and a trailing ``.`` removed, and a
    number written in its shortest form (``"1,234"`` -> ``"1234"``, ``"$5.00"`` -> ``"5"``, ``"-0"`` -> ``"0"``).

    A text that is not a number after the removals is returned as it then stands.
    """
    s = re.sub(r"[\s,$]", "", text).rstrip(".")
    try:
        d = Decimal(s)
    except InvalidOperation:
        return s
    if not d.is_finite():
        return s
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def load_gsm8k_jsonl(path: str | Path, limit: int | None = None) -> list[MathProblem]:
    """The problems of a GSM8K-format JSONL file (at most ``limit``, in file order).

    Each non-blank line is a JSON object with a string ``question`` and a
    string ``answer`` whose final answer follows its last ``####``.  A
    malformed line raises ``ValueError`` naming the file and the line number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: expected a GSM8K-format JSONL file "
                                '(one {"question": ..., "answer": "... #### 42"} per line)')
    out: list[MathProblem] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if limit is not None and len(out) >= limit:
                break
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("question"), str) \
                    or not isinstance(row.get("answer"), str):
                raise ValueError(f'{where}: expected an object with string fields "question" and "answer"')
            if "####" not in row["answer"]:
                raise ValueError(f'{where}: the answer has no "####" before its final answer')
            final = normalise_answer(row["answer"].rsplit("####", 1)[1])
            if not final:
                raise ValueError(f'{where}: nothing follows the last "####" of the answer')
            out.append(MathProblem(row["question"].strip(), row["answer"], final))
    return out


def final_math_answer(completion: str) -> str | None:
    """The final answer of a completion, normalised, or ``None`` if it has none.

    It is the first number after the last ``####``; a completion without
    ``####`` is given its last number instead (the usual lenient GSM8K
    convention, so a prover that has not learned the ``####`` format is still
    graded on what it computed).  ``####`` followed by no number has no answer.
    """
    if "####" in completion:
        m = _NUMBER_RE.search(completion.rsplit("####", 1)[1])
        return normalise_answer(m.group()) if m else None
    found = _NUMBER_RE.findall(completion)
    return normalise_answer(found[-1]) if found else None


def grade_math(problem: MathProblem, completion: str) -> bool:
    """True iff the final answer of ``completion`` (:func:`final_math_answer`) equals ``problem.answer``."""
    return final_math_answer(completion) == problem.answer


def split_halves(problems: Sequence[MathProblem]) -> tuple[list[MathProblem], list[MathProblem]]:
    """A prover half and a verifier half, disjoint by question text (:func:`repro.pvg.task.split_pool`)."""
    return split_pool(problems)


def _file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------

def prover_prompt(problem: MathProblem, role: str) -> str:
    """The prover's prompt: ``Role: <role>``, the question and ``Solution:``; the completion follows.

    The role is written in words on the first line so that one model plays
    both roles (the paper's prover is one policy with two roles).  The
    completion is expected to end with ``#### <answer>``.
    """
    if role not in ROLE_NAMES:
        raise ValueError(f"unknown role {role!r}; expected one of {ROLE_NAMES}")
    return f"Role: {role}\nQuestion: {problem.question}\nSolution:"


def verifier_text(problem: MathProblem, solution: str) -> str:
    """What the verifier reads: the question and the solution, without the role."""
    return f"Question: {problem.question}\nSolution:{solution}"


# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------

_MODEL_EXPECTED = ("a folder holding a Hugging Face model and its tokenizer (config.json, the weights and the "
                   "tokenizer files, as written by save_pretrained)")


@dataclass(frozen=True)
class HFGameSettings:
    """One play of the game on local Hugging Face models; validated on construction.

    ``device`` and ``micro_batch`` say how to compute, not what, so they are
    left out of the checkpoint identity (a run may resume on another device);
    so is ``rounds``, so that a finished run can be extended by more rounds.
    """

    prover_path: str
    verifier_path: str
    data_path: str
    eval_path: str = ""            # '' = hold out the last eval_problems problems of the prover half
    rounds: int = 5                # rounds 0..rounds-1
    rl_steps: int = 50             # prover REINFORCE steps per round
    batch: int = 16                # solutions per RL step (roles 50/50)
    micro_batch: int = 8           # rows per forward pass (sampling, log-probs, scores; gradients accumulate)
    lr: float = 1e-6               # prover Adam learning rate
    kl_coef: float = 0.02          # KL penalty to the initial prover
    reward: str = "src"            # src | cgc | goodhart | correctness
    verifier_samples: int = 256    # verifier-half problems the prover solves (both roles) per round
    verifier_steps: int = 200      # Bradley–Terry steps per round (from the initial weights)
    verifier_batch: int = 16       # pairs per Bradley–Terry step
    verifier_lr: float = 1e-5
    max_new_tokens: int = 256
    temperature: float = 1.0
    eval_problems: int = 128
    max_problems: int = 0          # problems read from data_path (0 = all)
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        for name in ("prover_path", "verifier_path"):
            value = getattr(self, name)
            if not value:
                raise ValueError(f"{name} is empty: expected {_MODEL_EXPECTED}")
            p = Path(value)
            if not p.is_dir():
                raise ValueError(f"{name} {value!r} does not exist or is not a folder: expected {_MODEL_EXPECTED}")
            if not (p / "config.json").is_file():
                raise ValueError(f"{name} {value!r} has no config.json: expected {_MODEL_EXPECTED}")
        jsonl = 'a GSM8K-format JSONL file (one {"question": ..., "answer": "... #### 42"} per line)'
        if not self.data_path or not Path(self.data_path).is_file():
            raise ValueError(f"data_path {self.data_path!r} does not exist: expected {jsonl}")
        if self.eval_path and not Path(self.eval_path).is_file():
            raise ValueError(f"eval_path {self.eval_path!r} does not exist: expected {jsonl}, or '' to hold out "
                             "evaluation problems from the prover half")
        if self.reward not in REWARDS:
            raise ValueError(f"unknown reward {self.reward!r}: choose one of {', '.join(REWARDS)}")
        minima = {"rounds": 1, "rl_steps": 0, "batch": 2, "micro_batch": 1, "verifier_samples": 1,
                  "verifier_steps": 0, "verifier_batch": 1, "max_new_tokens": 1, "eval_problems": 1,
                  "max_problems": 0}
        for name, least in minima.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        for name in ("lr", "kl_coef", "verifier_lr"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 (sampling), got {self.temperature!r}")
        try:
            if self.device != "auto":
                torch.device(self.device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device {self.device!r} is not a torch device (cpu, cuda, cuda:0, auto)") from err

    def identity_fields(self) -> dict:
        """The settings that decide the numbers (all but ``device``, ``micro_batch`` and ``rounds``)."""
        return {k: v for k, v in asdict(self).items() if k not in ("device", "micro_batch", "rounds")}


# ---------------------------------------------------------------------------
# Players
# ---------------------------------------------------------------------------

class HFVerifier(nn.Module):
    """A language model's body with a linear scalar head on the final hidden state of each row's last real token.

    ``body`` is a transformers base model (``AutoModel``: the causal LM's
    transformer without its language-model head).  The head starts at zero,
    so the initial verifier scores every solution 0 (no preference).
    """

    def __init__(self, body: nn.Module, hidden_size: int):
        super().__init__()
        self.body = body
        self.head = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Scores [B] of right- or left-padded rows [B, T] (``attention_mask`` 1 on real tokens)."""
        mask = attention_mask.long()
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        h = self.body(input_ids=input_ids, attention_mask=mask, position_ids=pos).last_hidden_state  # [B, T, d]
        last = torch.where(mask.bool(), torch.arange(mask.shape[1], device=mask.device), -1).max(1).values  # [B]
        return self.head(h[torch.arange(len(h), device=h.device), last].float()).squeeze(-1)


def _hidden_size(config) -> int:
    for name in ("hidden_size", "n_embd", "d_model"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise ValueError(f"cannot read the hidden size of a {type(config).__name__}")


def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tok.pad_token_id is None:
        if tok.eos_token is None:
            raise ValueError(f"the tokenizer at {path} has neither a pad nor an end-of-sequence token")
        tok.pad_token = tok.eos_token
    return tok


class HFPlayers:
    """The prover, its frozen reference (the initial prover, for the KL), the verifier and their tokenizers.

    Build with :meth:`load`.  ``eos_ids`` are the prover's end-of-sequence
    ids (the tokenizer's and the generation config's); ``initial_verifier``
    is the verifier's initial state dict (on the CPU), restored by
    :meth:`reset_verifier` at the start of every round.
    """

    def __init__(self, tokenizer, prover: nn.Module, reference: nn.Module, verifier_tokenizer,
                 verifier: HFVerifier, device: torch.device):
        self.tokenizer, self.prover, self.reference = tokenizer, prover, reference
        self.verifier_tokenizer, self.verifier, self.device = verifier_tokenizer, verifier, device
        self.initial_verifier = {k: v.detach().cpu().clone() for k, v in verifier.state_dict().items()}
        eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        cfg_eos = getattr(getattr(prover, "generation_config", None), "eos_token_id", None)
        eos |= set(cfg_eos) if isinstance(cfg_eos, (list, tuple)) else ({cfg_eos} if cfg_eos is not None else set())
        if not eos:
            raise ValueError("the prover has no end-of-sequence token (tokenizer or generation config)")
        self.eos_ids = sorted(int(e) for e in eos)

    @classmethod
    def load(cls, prover_path: str, verifier_path: str, device: str | torch.device = "cpu") -> "HFPlayers":
        """Load the prover (causal LM) twice, as policy and as frozen reference, and the verifier's body from
        local folders; every model in float32 (small RL updates are lost in bfloat16 weights) and in ``eval``
        mode (dropout off) on ``device``."""
        _require_transformers()
        from transformers import AutoModel, AutoModelForCausalLM

        device = torch.device(device)
        tok = _load_tokenizer(prover_path)
        tok.padding_side = "left"
        prover = AutoModelForCausalLM.from_pretrained(prover_path, local_files_only=True,
                                                      dtype=torch.float32).to(device).eval()
        reference = copy.deepcopy(prover).eval()
        reference.requires_grad_(False)
        vtok = _load_tokenizer(verifier_path)
        vtok.padding_side = "right"
        vtok.truncation_side = "left"   # a long solution loses its start, never its final answer
        body = AutoModel.from_pretrained(verifier_path, local_files_only=True, dtype=torch.float32)
        verifier = HFVerifier(body, _hidden_size(body.config)).to(device).eval()
        return cls(tok, prover, reference, vtok, verifier, device)

    def reset_verifier(self) -> None:
        """Put the verifier back at its initial weights."""
        self.verifier.load_state_dict(self.initial_verifier)

    def sizes(self) -> dict:
        """Parameter counts of the prover and the verifier and their ratio."""
        p = sum(x.numel() for x in self.prover.parameters())
        v = sum(x.numel() for x in self.verifier.parameters())
        return {"prover_params": p, "verifier_params": v, "verifier_to_prover": v / p}


# ---------------------------------------------------------------------------
# Sampling and teacher forcing
# ---------------------------------------------------------------------------

@dataclass
class HFSamples:
    """Completions sampled from a causal LM.

    ``completion_ids[i]`` holds the sampled tokens of row ``i`` up to and
    including its end-of-sequence token (when one was produced within
    ``max_new_tokens``), so ``lengths[i] == len(completion_ids[i])`` and the
    choice to stop is scored too; ``texts`` are the decoded completions
    without special tokens.  ``logprobs`` [B, N] (0 beyond a row's length) are
    the sampled tokens' log-probabilities from ``generate``'s own scores, kept
    when asked for (:func:`sample_completions` with ``with_scores=True``).
    """

    texts: list[str]
    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    lengths: torch.Tensor          # [B]
    finished: torch.Tensor         # [B] bool: an end-of-sequence token was sampled
    logprobs: torch.Tensor | None = None


@contextmanager
def _plain_generation_config(model, eos_ids, pad_id):
    """The model's generation config replaced, for the duration, by one that asks for nothing.

    ``generate`` fills every setting a call leaves unset from the model's own
    generation config (a repetition penalty, top-k, ...); with this in place
    only the call's settings and the library's neutral defaults apply.
    """
    from transformers import GenerationConfig

    saved = model.generation_config
    model.generation_config = GenerationConfig(eos_token_id=list(eos_ids), pad_token_id=pad_id,
                                               bos_token_id=getattr(saved, "bos_token_id", None))
    try:
        yield
    finally:
        model.generation_config = saved


@torch.no_grad()
def sample_completions(model, tokenizer, prompts: Sequence[str], temperature: float = 1.0,
                       max_new_tokens: int = 64, eos_ids: Sequence[int] | None = None,
                       micro_batch: int | None = None, with_scores: bool = False) -> HFSamples:
    """One completion per prompt by ancestral sampling at ``temperature`` (no top-k, top-p or penalties).

    Prompts are left-padded (``tokenizer.padding_side`` is set to ``left``) and
    sampled ``micro_batch`` at a time (all at once by default).  Sampling draws
    from torch's global random stream.  ``eos_ids`` default to the tokenizer's
    end-of-sequence token.
    """
    _require_transformers()
    from transformers import GenerationConfig

    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    tokenizer.padding_side = "left"
    eos_ids = list(eos_ids) if eos_ids is not None else [tokenizer.eos_token_id]
    eos_set = set(eos_ids)
    pad_id = tokenizer.pad_token_id
    device = next(model.parameters()).device
    step = micro_batch or max(1, len(prompts))
    texts, prompt_ids, comps, finished, scores = [], [], [], [], []
    config = GenerationConfig(do_sample=True, temperature=float(temperature), top_k=0, top_p=1.0,
                              max_new_tokens=int(max_new_tokens), eos_token_id=eos_ids, pad_token_id=pad_id,
                              num_beams=1, return_dict_in_generate=True, output_scores=with_scores)
    with _plain_generation_config(model, eos_ids, pad_id):
        for start in range(0, len(prompts), step):
            chunk = list(prompts[start:start + step])
            enc = tokenizer(chunk, return_tensors="pt", padding=True)
            out = model.generate(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
                                 generation_config=config)
            width = enc["input_ids"].shape[1]
            new = out.sequences[:, width:].tolist()                      # [b, n]
            if with_scores:
                lp = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True).float().cpu()
            for i, row in enumerate(new):
                n = next((j + 1 for j, t in enumerate(row) if t in eos_set), len(row))
                comps.append(row[:n])
                finished.append(n > 0 and row[n - 1] in eos_set)
                ids, m = enc["input_ids"][i], enc["attention_mask"][i].bool()
                prompt_ids.append(ids[m].tolist())
                if with_scores:
                    scores.append(lp[i, :n])
            texts += tokenizer.batch_decode([c for c in comps[len(texts):]], skip_special_tokens=True)
    lengths = torch.tensor([len(c) for c in comps], dtype=torch.long)
    logprobs = None
    if with_scores:
        logprobs = torch.zeros(len(comps), int(lengths.max()) if len(comps) else 0)
        for i, s in enumerate(scores):
            logprobs[i, :len(s)] = s
    return HFSamples(texts, prompt_ids, comps, lengths, torch.tensor(finished, dtype=torch.bool), logprobs)


def _accepts(model, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def completion_logprobs(model, prompt_ids: Sequence[Sequence[int]], completion_ids, lengths=None,
                        pad_id: int = 0, temperature: float = 1.0) -> SequenceLogprobs:
    """log p(completion | prompt) of each row by teacher forcing, with gradients (per token and summed).

    ``completion_ids`` is a list of token lists or a [B, N] tensor with
    ``lengths`` [B] (tokens beyond a row's length are ignored).  Rows are laid
    out as ``generate`` lays them out: prompts left-padded to a common width,
    completions right-padded, position ids counting real tokens only.  The
    log-probabilities are those of the tempered distribution
    softmax(logits / ``temperature``), the one :func:`sample_completions`
    draws from; tokens [B, N] are 0 where ``mask`` [B, N] is False.
    """
    if isinstance(completion_ids, torch.Tensor):
        n_rows = completion_ids.shape[0]
        lens = [completion_ids.shape[1]] * n_rows if lengths is None else [int(x) for x in lengths]
        comps = [completion_ids[i, :lens[i]].tolist() for i in range(n_rows)]
    else:
        comps = [list(c) if lengths is None else list(c)[:int(n)]
                 for c, n in zip(completion_ids, lengths if lengths is not None else [None] * len(completion_ids))]
    device = next(model.parameters()).device
    B = len(prompt_ids)
    Lp = max(len(p) for p in prompt_ids)
    N = max((len(c) for c in comps), default=0)
    if N == 0:
        z = torch.zeros(B, 0, device=device)
        return SequenceLogprobs(torch.zeros(B, device=device), z, z.bool())
    ids = torch.full((B, Lp + N), pad_id, dtype=torch.long)
    mask = torch.zeros(B, Lp + N, dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompt_ids, comps)):
        ids[i, Lp - len(p):Lp] = torch.tensor(list(p), dtype=torch.long)
        mask[i, Lp - len(p):Lp] = 1
        if c:
            ids[i, Lp:Lp + len(c)] = torch.tensor(c, dtype=torch.long)
            mask[i, Lp:Lp + len(c)] = 1
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    kwargs = {"logits_to_keep": N + 1} if _accepts(model, "logits_to_keep") else {}
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, **kwargs).logits
    logits = logits[:, -(N + 1):-1].float() / temperature                 # [B, N]: position t predicts t + 1
    lp = logits.log_softmax(-1).gather(-1, ids[:, Lp:, None]).squeeze(-1)  # [B, N]
    cmask = mask[:, Lp:].bool()
    lp = torch.where(cmask, lp, 0.0)
    return SequenceLogprobs(lp.sum(1), lp, cmask)


# ---------------------------------------------------------------------------
# The verifier
# ---------------------------------------------------------------------------

def _verifier_inputs(tokenizer, verifier: nn.Module, texts: Sequence[str]):
    max_len = getattr(verifier.body.config, "max_position_embeddings", None) or tokenizer.model_max_length
    enc = tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True, max_length=int(max_len))
    device = next(verifier.parameters()).device
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


def verifier_scores(verifier: HFVerifier, tokenizer, problems: Sequence[MathProblem], solutions: Sequence[str],
                    micro_batch: int = 16, grad: bool = False) -> torch.Tensor:
    """V(x, z) for B (problem, solution) pairs [B] (the verifier sees :func:`verifier_text`, not the role)."""
    texts = [verifier_text(p, s) for p, s in zip(problems, solutions)]
    out = []
    with torch.set_grad_enabled(grad):
        for start in range(0, len(texts), micro_batch):
            out.append(verifier(*_verifier_inputs(tokenizer, verifier, texts[start:start + micro_batch])))
    return torch.cat(out) if out else torch.zeros(0)


def pair_loss(verifier: HFVerifier, tokenizer, pairs, micro_batch: int = 16) -> float:
    """The Bradley–Terry loss (pvg-bt) of ``verifier`` on ``pairs`` (problem, correct, incorrect), no gradient."""
    if not pairs:
        return math.nan
    probs = [p for p, _, _ in pairs]
    good = verifier_scores(verifier, tokenizer, probs, [g for _, g, _ in pairs], micro_batch)
    bad = verifier_scores(verifier, tokenizer, probs, [b for _, _, b in pairs], micro_batch)
    return float(bradley_terry_loss(good, bad))


def train_verifier_bt(players: HFPlayers, data: Sequence[tuple[MathProblem, str, bool]], steps: int, lr: float,
                      batch: int, seed: int | Sequence[int], micro_batch: int = 16) -> dict:
    """Retrain the verifier from its initial weights with the Bradley–Terry loss (pvg-bt); returns columns.

    Pairs are every (correct, incorrect) pair of solutions to the same
    problem in ``data`` (:func:`repro.pvg.game.correct_incorrect_pairs`);
    each step draws ``batch`` of them uniformly (so correct and incorrect
    solutions are balanced by construction) and takes one AdamW step, the
    gradient accumulated over ``micro_batch`` pairs at a time.  Without pairs
    the verifier stays at its initial weights.  Returns ``{"step", "loss",
    "pairs"}`` (``loss`` per step, the batch's loss before the step).
    """
    players.reset_verifier()
    pairs = correct_incorrect_pairs(data)
    hist: dict = {"step": [], "loss": [], "pairs": len(pairs)}
    if not pairs or steps == 0:
        return hist
    verifier, tok = players.verifier, players.verifier_tokenizer
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(verifier.parameters(), lr=lr, weight_decay=0.01)
    for step in range(steps):
        idx = rng.integers(len(pairs), size=batch)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for start in range(0, batch, micro_batch):
            chunk = [pairs[i] for i in idx[start:start + micro_batch]]
            probs = [p for p, _, _ in chunk]
            good = verifier_scores(verifier, tok, probs, [g for _, g, _ in chunk], micro_batch, grad=True)
            bad = verifier_scores(verifier, tok, probs, [b for _, _, b in chunk], micro_batch, grad=True)
            loss = bradley_terry_loss(good, bad) * len(chunk) / batch
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(verifier.parameters(), 1.0)
        opt.step()
        hist["step"].append(step + 1)
        hist["loss"].append(total)
    return hist


# ---------------------------------------------------------------------------
# The prover
# ---------------------------------------------------------------------------

def _sample_roles(players: HFPlayers, problems: Sequence[MathProblem], roles: Sequence[str], s: HFGameSettings,
                  with_scores: bool = False) -> tuple[HFSamples, torch.Tensor]:
    prompts = [prover_prompt(p, r) for p, r in zip(problems, roles)]
    samples = sample_completions(players.prover, players.tokenizer, prompts, s.temperature, s.max_new_tokens,
                                 players.eos_ids, s.micro_batch, with_scores)
    correct = torch.tensor([grade_math(p, t) for p, t in zip(problems, samples.texts)], dtype=torch.bool)
    return samples, correct


def collect_verifier_data(players: HFPlayers, problems: Sequence[MathProblem], s: HFGameSettings,
                          seed: int | Sequence[int]) -> list[tuple[MathProblem, str, bool]]:
    """Solutions of the current prover to ``s.verifier_samples`` of ``problems`` (chosen without replacement),
    each once per role, graded: (problem, solution, correct) triples."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(problems), size=min(s.verifier_samples, len(problems)), replace=False)
    probs = [problems[i] for i in idx] * 2
    roles = ["helpful"] * len(idx) + ["sneaky"] * len(idx)
    samples, correct = _sample_roles(players, probs, roles, s)
    return [(p, t, bool(c)) for p, t, c in zip(probs, samples.texts, correct.tolist())]


def prover_rl_step(players: HFPlayers, optimiser: torch.optim.Optimizer, problems: Sequence[MathProblem],
                   s: HFGameSettings, rng: np.random.Generator) -> dict:
    """One REINFORCE step of the prover against the current verifier (pvg-rewards, pvg-kl).

    ``s.batch`` problems are drawn from ``problems`` with roles 50/50 (the
    helpful role only for the correctness-only reward); the solutions are
    graded and scored by the verifier; the reward is
    :func:`repro.pvg.rewards.reward` of kind ``s.reward``, the advantage its
    per-role batch-mean baseline (:func:`~repro.pvg.rewards.role_baseline`),
    and the loss ``-mean(A log pi(z)) + kl_coef * mean(KL)`` with the sampled-token
    KL to the frozen initial prover (:func:`~repro.pvg.rewards.kl_penalty`),
    end-of-sequence tokens included.  Gradients accumulate over
    ``s.micro_batch`` rows; the norm is clipped at 1.  Returns the step's
    reward, KL, score, accuracy per role and mean length.
    """
    idx = rng.integers(len(problems), size=s.batch)
    probs = [problems[i] for i in idx]
    if s.reward == "correctness":
        roles = ["helpful"] * s.batch
    else:
        roles = ["helpful" if h else "sneaky" for h in rng.random(s.batch) < 0.5]
    helpful = torch.tensor([r == "helpful" for r in roles])
    samples, correct = _sample_roles(players, probs, roles, s)
    scores = verifier_scores(players.verifier, players.verifier_tokenizer, probs, samples.texts, s.micro_batch).cpu()
    r = reward(s.reward, scores, correct, helpful)
    adv = role_baseline(r, helpful)
    pad = players.tokenizer.pad_token_id
    optimiser.zero_grad(set_to_none=True)
    kls = []
    for start in range(0, s.batch, s.micro_batch):
        sl = slice(start, start + s.micro_batch)
        new = completion_logprobs(players.prover, samples.prompt_ids[sl], samples.completion_ids[sl],
                                  pad_id=pad, temperature=s.temperature)
        with torch.no_grad():
            old = completion_logprobs(players.reference, samples.prompt_ids[sl], samples.completion_ids[sl],
                                      pad_id=pad, temperature=s.temperature)
        kl = kl_penalty(new.tokens, old.tokens, new.mask.float())          # [b]
        a = adv[sl].to(new.total.device)
        loss = (-(a * new.total).sum() + s.kl_coef * kl.sum()) / s.batch
        loss.backward()
        kls.append(kl.detach().cpu())
    torch.nn.utils.clip_grad_norm_(players.prover.parameters(), 1.0)
    optimiser.step()
    kl_all = torch.cat(kls)
    return {"reward": float(r.mean()), "kl": float(kl_all.mean()), "score": float(scores.mean()),
            "accuracy_helpful": float(correct[helpful].float().mean()) if helpful.any() else math.nan,
            "accuracy_sneaky": float(correct[~helpful].float().mean()) if (~helpful).any() else math.nan,
            "length": float(samples.lengths.float().mean())}


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------

def evaluate_players(players: HFPlayers, problems: Sequence[MathProblem], s: HFGameSettings,
                     n_examples: int = 2) -> dict:
    """Each role's accuracy, mean length (tokens, end-of-sequence included) and mean verifier score on
    ``problems``, and the sneaky role's success: the share of its solutions that are incorrect and scored at
    least the median score of the helpful role's correct ones (NaN when the helpful role solves none)."""
    out: dict = {}
    helpful_correct = None
    for role in ROLE_NAMES:
        samples, correct = _sample_roles(players, problems, [role] * len(problems), s)
        scores = verifier_scores(players.verifier, players.verifier_tokenizer, problems, samples.texts,
                                 s.micro_batch).cpu()
        out[f"{role}_accuracy"] = float(correct.float().mean())
        out[f"{role}_length"] = float(samples.lengths.float().mean())
        out[f"{role}_score"] = float(scores.mean())
        out[f"{role}_examples"] = [(p.question, t, bool(c)) for p, t, c in
                                   zip(problems[:n_examples], samples.texts[:n_examples], correct.tolist())]
        if role == "helpful":
            helpful_correct = scores[correct]
        else:
            if helpful_correct is not None and len(helpful_correct):
                bar = float(helpful_correct.median())
                out["sneaky_success"] = float(((~correct) & (scores >= bar)).float().mean())
            else:
                out["sneaky_success"] = math.nan
    return out


# ---------------------------------------------------------------------------
# The rounds, checkpointed
# ---------------------------------------------------------------------------

def _encode_data(data):
    return [(p.question, p.answer_text, p.answer, t, c) for p, t, c in data]


def _decode_data(rows):
    return [(MathProblem(q, at, a), t, c) for q, at, a, t, c in rows]


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def hf_identity(s: HFGameSettings) -> dict:
    """The checkpoint identity of a play: the settings that decide its numbers and the data files' digests."""
    extra = {"data_sha256": _file_sha256(s.data_path)}
    if s.eval_path:
        extra["eval_sha256"] = _file_sha256(s.eval_path)
    return make_identity("pvg-hf", s.identity_fields(), **extra)


def _mean(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows if not math.isnan(r[key])]
    return float(np.mean(vals)) if vals else math.nan


class _Quiet:
    def update(self, *args, **kwargs) -> None:
        pass

    def log(self, message: str) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def play_rounds(settings: HFGameSettings, checkpoint_dir: str | Path, progress: bool = True) -> list[dict]:
    """Play rounds 0..``settings.rounds``-1 of the game on local Hugging Face models; one record per round.

    A round: the current prover writes a solution in each role to
    ``verifier_samples`` verifier-half problems; the verifier is retrained from
    its initial weights on all solutions so far; the prover takes
    ``rl_steps`` REINFORCE steps against it on prover-half problems; then it is
    evaluated against this round's verifier.  A record holds ``round``,
    ``verifier_data`` and ``verifier_pairs`` (solutions and pairs so far),
    ``verifier_loss`` (the trained verifier's Bradley–Terry loss on the pairs,
    at most :data:`MAX_LOSS_PAIRS` of them drawn at random; NaN without pairs;
    it is log 2 at the initial weights, whose head is zero), ``rl_reward``, ``rl_kl``, ``rl_score``
    and ``rl_accuracy_helpful`` (means over the round's RL steps), the
    evaluation (:func:`evaluate_players`: ``helpful_accuracy``,
    ``sneaky_accuracy``, ``sneaky_success``, ``*_length``, ``*_score``,
    ``*_examples``) and ``wall_s``.

    After each round the prover's weights, the verifier data so far, the
    records and torch's random state are saved atomically to
    ``checkpoint_dir/pvg_hf.pt``; a later call with the same settings resumes
    after the last finished round (and loads no model when all rounds are
    done); a checkpoint written with other settings (or other data files)
    raises :class:`repro.checkpoint.CheckpointMismatch`.
    """
    _require_transformers()
    s = settings
    path = Path(checkpoint_dir) / CHECKPOINT_NAME
    identity = hf_identity(s)
    state = load_checkpoint(path, identity)
    if state is not None and len(state["records"]) >= s.rounds:
        return [dict(r) for r in state["records"][:s.rounds]]
    device = get_device(s.device)

    problems = load_gsm8k_jsonl(s.data_path, limit=s.max_problems or None)
    prover_half, verifier_half = split_halves(problems)
    if s.eval_path:
        eval_set, rl_set = load_gsm8k_jsonl(s.eval_path, limit=s.eval_problems), prover_half
    else:
        if len(prover_half) <= s.eval_problems:
            raise ValueError(f"the prover half holds {len(prover_half)} problems, not more than eval_problems="
                             f"{s.eval_problems}: give more data, fewer eval_problems or an eval_path")
        eval_set, rl_set = prover_half[-s.eval_problems:], prover_half[:-s.eval_problems]
    if not verifier_half or not eval_set:
        raise ValueError(f"{s.data_path} holds too few problems for a prover half, a verifier half and evaluation")

    players = HFPlayers.load(s.prover_path, s.verifier_path, device)
    if state is None:
        seed_everything(s.seed)
        records, data = [], []
    else:
        players.prover.load_state_dict(state["prover"])
        records, data = list(state["records"]), _decode_data(state["verifier_data"])
        _set_rng_state(state["rng"], device)

    bar = Progress(s.rounds * max(1, s.rl_steps), "pvg-hf", start=len(records) * max(1, s.rl_steps)) \
        if progress else _Quiet()
    with bar:
        if records:
            bar.log(f"resumed after round {len(records) - 1} from {path}")
        for rnd in range(len(records), s.rounds):
            t0 = time.perf_counter()
            data = data + collect_verifier_data(players, verifier_half, s, seed=[s.seed, rnd, 1])
            vh = train_verifier_bt(players, data, s.verifier_steps, s.verifier_lr, s.verifier_batch,
                                   seed=[s.seed, rnd, 2], micro_batch=s.micro_batch)
            pairs = correct_incorrect_pairs(data)
            if len(pairs) > MAX_LOSS_PAIRS:
                pick = np.random.default_rng([s.seed, rnd, 4]).choice(len(pairs), MAX_LOSS_PAIRS, replace=False)
                pairs_seen = [pairs[i] for i in pick]
            else:
                pairs_seen = pairs
            loss = pair_loss(players.verifier, players.verifier_tokenizer, pairs_seen, s.micro_batch)
            rng = np.random.default_rng([s.seed, rnd, 3])
            opt = torch.optim.Adam(players.prover.parameters(), lr=s.lr)
            steps = []
            for k in range(s.rl_steps):
                rec = prover_rl_step(players, opt, rl_set, s, rng)
                steps.append(rec)
                bar.update(rnd * s.rl_steps + k + 1, round=rnd, reward=rec["reward"], kl=rec["kl"])
            ev = evaluate_players(players, eval_set, s)

            record = {"round": rnd, "verifier_data": len(data), "verifier_pairs": len(pairs),
                      "verifier_loss": loss, "rl_steps": len(steps), "rl_reward": _mean(steps, "reward"),
                      "rl_kl": _mean(steps, "kl"), "rl_score": _mean(steps, "score"),
                      "rl_accuracy_helpful": _mean(steps, "accuracy_helpful"), **ev,
                      "wall_s": time.perf_counter() - t0}
            records.append(record)
            save_checkpoint(path, {"records": records, "verifier_data": _encode_data(data),
                                   "prover": {k: v.detach().cpu() for k, v in players.prover.state_dict().items()},
                                   "rng": _rng_state(device)}, identity)
            bar.log(f"round {rnd}: helpful accuracy {record['helpful_accuracy']:.3f}, sneaky accuracy "
                    f"{record['sneaky_accuracy']:.3f}, sneaky success {record['sneaky_success']:.3f}, "
                    f"{record['wall_s']:.0f}s")
    return [dict(r) for r in records]
