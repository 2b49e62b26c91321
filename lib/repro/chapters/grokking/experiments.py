"""The grokking chapter's experiment runs, built on :mod:`repro.grokking`.

Each function trains one ensemble (or a few, one per table size) and returns
plain data the notebook plots and feeds to the scorecard:

* :func:`fraction_sweep`: Figure 1 (left: one fraction; centre: the sweep),
* :func:`intervention_sweep`: Figure 2 left in miniature (regularisers),
* :func:`symmetry_sweep`: Figure 2 right in miniature (operations x fractions),
* :func:`embedding_run`: Figure 3 (the Fourier structure of x+y's embeddings).

A model that never reaches 99% validation accuracy is *censored* at the step
budget: its steps-to-generalise is only known to exceed the budget.
"""
from __future__ import annotations

import math
from pathlib import Path

import dataclasses
import os

from repro.config import ConfigError
from repro.distributed import DistContext, run_parallel
from repro.grokking import (EnsembleSettings, GrokRun, History, OptimSettings, fourier_power, merge_histories,
                            n_elements, top_k_share, train, train_shard)

from .config import CHANCE_MARGIN, DELAY_RATIO, FOURIER_FACTOR, GENERALISED, INTERVENTIONS, GrokkingConfig


def ensemble_settings(cfg: GrokkingConfig, steps: int | None = None) -> EnsembleSettings:
    """The algorithm-level settings of the chapter config (optionally with another step budget)."""
    return EnsembleSettings(
        p=cfg.p, n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads,
        optim=OptimSettings(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), warmup_steps=cfg.warmup_steps),
        batch_size=cfg.batch_size, steps=steps or cfg.steps, n_evals=min(cfg.n_evals, steps or cfg.steps),
        early_stop=cfg.early_stop, checkpoint_every=cfg.checkpoint_every, device=cfg.device)


def seeds(cfg: GrokkingConfig) -> list[int]:
    """The seeds of every setting: seed, seed + 1, ..., seed + n_seeds - 1."""
    return [cfg.seed + s for s in range(cfg.n_seeds)]


def _work_folder(folder: str | Path | None, cfg: GrokkingConfig) -> Path | None:
    """Where checkpoints (and data-parallel results) live: ``checkpoint_dir``, else ``<folder>/checkpoints``."""
    if cfg.checkpoint_dir:
        return Path(cfg.checkpoint_dir)
    return Path(folder) / "checkpoints" if folder is not None else None


def _checkpoint(folder: str | Path | None, name: str, cfg: GrokkingConfig) -> Path | None:
    """Where experiment ``name`` checkpoints (None when checkpointing is off)."""
    work = _work_folder(folder, cfg)
    return work / f"{name}.pt" if work is not None and cfg.checkpoint_every else None


def _train(runs: list[GrokRun], cfg: GrokkingConfig, name: str, folder, steps: int | None = None) -> History:
    if cfg.world_size > 1:  # every ensemble of the chapter was trained by one torchrun launch
        work = _work_folder(folder, cfg)
        if work is None:
            raise ConfigError("a data-parallel run needs a folder for its results: pass the run folder or set "
                              "checkpoint_dir")
        trained = run_parallel("repro.chapters.grokking.experiments:train_parallel", cfg, work)
        if name not in trained or trained[name].runs != runs:
            raise RuntimeError(f"ensemble {name!r} is not in planned_ensembles(cfg) as the notebook asks for it")
        return trained[name]
    return train(runs, ensemble_settings(cfg, steps), experiment=f"grokking/{name}",
                 checkpoint=_checkpoint(folder, name, cfg))


def planned_ensembles(cfg: GrokkingConfig) -> list[tuple[str, list[GrokRun], int | None]]:
    """Every ensemble the chapter trains, as (name, runs, step budget or None for ``cfg.steps``), in notebook order.

    The notebook's four experiment cells ask for them one by one; a
    data-parallel run trains them all in one launch (:func:`train_parallel`).
    """
    plan = [("fraction-sweep", sweep_runs(cfg), None)]
    if intervention_new_runs(cfg):
        plan.append(("interventions", intervention_new_runs(cfg), None))
    plan += [(f"symmetry-{n}", runs, None) for n, runs in symmetry_groups(cfg).items()]
    if embedding_source(cfg) is None:
        plan.append(("embeddings", embedding_runs(cfg), cfg.embed_steps))
    return plan


def train_parallel(cfg: GrokkingConfig, ctx: DistContext, folder: Path) -> dict[str, History] | None:
    """One process of the chapter's data-parallel run: every planned ensemble, sharded over the processes.

    Each process trains every ``world``-th model of each ensemble on its own
    device (:func:`repro.grokking.train_shard`; no gradient is shared), with
    its own checkpoints ``<name>-shard<r>of<w>.pt``; the histories are
    gathered and merged on rank 0, which returns ``{name: History}``.

    At full batch (``batch_size`` 0) a model trains on the same data as in the
    one-process ensemble.  With minibatches, each ensemble draws its batches
    from one generator over its members, so a sharded model sees other
    (equally random) batches than it would in the whole ensemble.
    """
    device = "cuda" if ctx.device.type == "cuda" else "cpu"  # cuda = this process's GPU (torch.cuda.set_device)
    quiet = None if ctx.is_main else open(os.devnull, "w")
    out: dict[str, History] = {}
    try:
        for name, runs, steps in planned_ensembles(cfg):
            settings = dataclasses.replace(ensemble_settings(cfg, steps), device=device)
            ckpt = folder / f"{name}-shard{ctx.rank}of{ctx.world}.pt" if cfg.checkpoint_every else None
            part = train_shard(runs, settings, ctx, experiment=f"grokking/{name}", checkpoint=ckpt, stream=quiet)
            parts = ctx.all_gather(part)
            if ctx.is_main:
                out[name] = merge_histories(parts, runs)
    finally:
        if quiet is not None:
            quiet.close()
    return out if ctx.is_main else None


def censored(value: float, budget: int) -> float:
    """Steps to generalise, with a run that never did counted at the budget (a lower bound)."""
    return float(budget) if math.isnan(value) else float(value)


def val_99_of(hist: History, run: GrokRun) -> float:
    """Steps until ``run`` reached 99% validation accuracy in ``hist`` (nan if never)."""
    return hist.val_99[hist.runs.index(run)]


# ---------------------------------------------------------------------------
# Figure 1
# ---------------------------------------------------------------------------

def sweep_runs(cfg: GrokkingConfig) -> list[GrokRun]:
    """Figure 1's runs: every training fraction (the sweep plus ``train_fraction``) x seeds, with weight decay."""
    fractions = sorted(set(cfg.fractions) | {cfg.train_fraction})
    return [GrokRun(cfg.operation, f, s, cfg.weight_decay) for f in fractions for s in seeds(cfg)]


def fraction_sweep(cfg: GrokkingConfig, folder=None) -> History:
    """Train Figure 1's ensemble (``folder``: where checkpoints go when ``checkpoint_every`` > 0)."""
    return _train(sweep_runs(cfg), cfg, "fraction-sweep", folder)


def delay_table(hist: History, cfg: GrokkingConfig) -> dict:
    """Figure 1 left, per seed at ``train_fraction``: steps to 99% train / val, their ratio, val acc at train-99%.

    ``passed`` is the per-seed condition of the ``grokking-delay`` claim:
    validation accuracy at the train-99% step at most chance + CHANCE_MARGIN,
    and validation reaching 99% within the budget at least DELAY_RATIO times later.
    """
    idx = [hist.runs.index(GrokRun(cfg.operation, cfg.train_fraction, s, cfg.weight_decay)) for s in seeds(cfg)]
    t99 = [hist.train_99[i] for i in idx]
    v99 = [hist.val_99[i] for i in idx]
    at_t99 = [hist.val_at_train_99()[i] for i in idx]
    chance = 1.0 / n_elements(cfg.operation, cfg.p)
    ratio = [v / t if not (math.isnan(v) or math.isnan(t)) else float("nan") for t, v in zip(t99, v99)]
    passed = [(not math.isnan(r)) and r >= DELAY_RATIO and a <= chance + CHANCE_MARGIN
              for r, a in zip(ratio, at_t99)]
    return {"index": idx, "train_99": t99, "val_99": v99, "ratio": ratio, "val_at_train_99": at_t99,
            "chance": chance, "passed": passed}


def steps_by_fraction(hist: History, cfg: GrokkingConfig) -> dict[float, list[float]]:
    """Figure 1 centre: per training fraction, the per-seed steps to 99% validation accuracy (nan: censored)."""
    fractions = sorted({r.fraction for r in hist.runs})
    return {f: [val_99_of(hist, GrokRun(cfg.operation, f, s, cfg.weight_decay)) for s in seeds(cfg)]
            for f in fractions}


# ---------------------------------------------------------------------------
# Figure 2 left: regularisers
# ---------------------------------------------------------------------------

def intervention_run(name: str, operation: str, fraction: float, seed: int, weight_decay: float) -> GrokRun:
    """The run of one of the regulariser comparisons of Figure 2 left."""
    if name == "none":
        return GrokRun(operation, fraction, seed, 0.0)
    if name == "weight_decay":
        return GrokRun(operation, fraction, seed, weight_decay)
    if name == "decay_to_init":
        return GrokRun(operation, fraction, seed, weight_decay, decay_to_init=True)
    raise ConfigError(f"unknown intervention {name!r}; choose one of {', '.join(INTERVENTIONS)}")


def intervention_spec(cfg: GrokkingConfig) -> dict[str, list[GrokRun]]:
    """Per regulariser of ``cfg.interventions``, its runs at ``train_fraction`` (one per seed)."""
    return {name: [intervention_run(name, cfg.operation, cfg.train_fraction, s, cfg.weight_decay)
                   for s in seeds(cfg)] for name in cfg.interventions}


def intervention_new_runs(cfg: GrokkingConfig, trained: list[GrokRun] | None = None) -> list[GrokRun]:
    """The regulariser runs the fraction sweep (``trained``, by default :func:`sweep_runs`) does not already hold."""
    trained = sweep_runs(cfg) if trained is None else trained
    return [r for runs in intervention_spec(cfg).values() for r in runs if r not in trained]


def intervention_sweep(cfg: GrokkingConfig, sweep: History, folder=None) -> tuple[History | None, dict]:
    """Train the regularisers at ``train_fraction`` (weight decay is reused from ``sweep``).

    Returns the new ensemble's History (None if nothing new) and, per
    intervention, the per-seed steps to 99% validation accuracy (nan: censored).
    """
    spec = intervention_spec(cfg)
    new = intervention_new_runs(cfg, sweep.runs)
    reg = _train(new, cfg, "interventions", folder) if new else None
    out = {}
    for name, runs in spec.items():
        out[name] = [val_99_of(sweep if r in sweep.runs else reg, r) for r in runs]
    return reg, out


# ---------------------------------------------------------------------------
# Figure 2 right: operations of different symmetry
# ---------------------------------------------------------------------------

def symmetry_runs(cfg: GrokkingConfig) -> list[GrokRun]:
    """Figure 2 right's runs: symmetry_operations x symmetry_fractions x seeds, with weight decay."""
    return [GrokRun(op, f, s, cfg.weight_decay) for op in cfg.symmetry_operations
            for f in cfg.symmetry_fractions for s in seeds(cfg)]


def symmetry_groups(cfg: GrokkingConfig) -> dict[int, list[GrokRun]]:
    """Figure 2 right's runs grouped by table size (S5's 120 symbols vs p), smaller tables first."""
    by_size: dict[int, list[GrokRun]] = {}
    for r in symmetry_runs(cfg):
        by_size.setdefault(n_elements(r.operation, cfg.p), []).append(r)
    return dict(sorted(by_size.items()))


def symmetry_sweep(cfg: GrokkingConfig, folder=None) -> list[History]:
    """Train Figure 2 right's runs: one ensemble per table size (S5's 120 symbols vs p)."""
    return [_train(runs, cfg, f"symmetry-{n}", folder) for n, runs in symmetry_groups(cfg).items()]


def steps_by_operation(hists: list[History], cfg: GrokkingConfig) -> dict[str, dict[float, list[float]]]:
    """Per operation and fraction, the per-seed steps to 99% validation accuracy (nan: censored)."""
    where = {r: h for h in hists for r in h.runs}
    return {op: {f: [val_99_of(where[r], r) for s in seeds(cfg) for r in [GrokRun(op, f, s, cfg.weight_decay)]]
                 for f in cfg.symmetry_fractions} for op in cfg.symmetry_operations}


# ---------------------------------------------------------------------------
# Figure 3: embeddings
# ---------------------------------------------------------------------------

def embedding_runs(cfg: GrokkingConfig) -> list[GrokRun]:
    """Figure 3's runs: the embedding operation at ``train_fraction`` x seeds, with weight decay."""
    return [GrokRun(cfg.embed_operation, cfg.train_fraction, s, cfg.weight_decay) for s in seeds(cfg)]


def embedding_source(cfg: GrokkingConfig) -> int | None:
    """The table size of the symmetry ensemble that already trains Figure 3's runs (None: they train on their own)."""
    runs = embedding_runs(cfg)
    for n, group in symmetry_groups(cfg).items():
        if all(r in group for r in runs):
            return n
    return None


def embedding_run(cfg: GrokkingConfig, symmetry: list[History] = (), folder=None) -> tuple[History, list[int]]:
    """The History holding Figure 3's models and their indices in it.

    Reuses the symmetry sweep when it already trained them (same operation,
    fraction, seeds and decay); otherwise trains them for ``embed_steps``.
    """
    runs = embedding_runs(cfg)
    for h in symmetry:
        if all(r in h.runs for r in runs):
            return h, [h.runs.index(r) for r in runs]
    hist = _train(runs, cfg, "embeddings", folder, steps=cfg.embed_steps)
    return hist, list(range(len(runs)))


def embedding_shares(hist: History, index: list[int], cfg: GrokkingConfig, top: int) -> dict:
    """Per seed: top-``top`` Fourier share of the number embeddings at init and once generalised, final val acc.

    The trained embeddings are those of the generalised model: the snapshot taken when the model's
    validation accuracy first reached 99% (the final ones for a model that never did; it fails).

    ``passed`` is the per-seed condition of the ``embedding-structure`` claim: the model reached 99%
    validation accuracy within the budget and its top-``top`` share at that moment is at least
    FOURIER_FACTOR times the share at initialisation.
    """
    p = n_elements(cfg.embed_operation, cfg.p)
    init = [top_k_share(fourier_power(hist.init["tok_emb"][m, :p]), top) for m in index]
    reached = [hist.first_step_above(hist.val_acc[m:m + 1], GENERALISED)[0] for m in index]
    grokked = [hist.grokked_emb[m, :p] if not math.isnan(s) else hist.params["tok_emb"][m, :p]
               for m, s in zip(index, reached)]
    final = [top_k_share(fourier_power(e), top) for e in grokked]
    val = [float(hist.val_acc[m, -1]) for m in index]
    ratio = [f / i for f, i in zip(final, init)]
    passed = [not math.isnan(s) and r >= FOURIER_FACTOR for s, r in zip(reached, ratio)]
    return {"init": init, "final": final, "ratio": ratio, "val_acc": val, "val_99": reached, "passed": passed,
            "embeddings": grokked}


__all__ = ["censored", "delay_table", "embedding_run", "embedding_runs", "embedding_shares", "embedding_source",
           "ensemble_settings", "fraction_sweep", "intervention_new_runs", "intervention_run", "intervention_spec",
           "intervention_sweep", "planned_ensembles", "seeds", "steps_by_fraction", "steps_by_operation",
           "sweep_runs", "symmetry_groups", "symmetry_runs", "symmetry_sweep", "train_parallel", "val_99_of"]
