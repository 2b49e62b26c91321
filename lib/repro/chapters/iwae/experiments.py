"""The IWAE chapter's experiment runs, built on :mod:`repro.vae`; each returns plain data.

1. Table 1 (:func:`run_table1`): every (layers, k) trains one ensemble of the
   VAE and IWAE models of all seeds; each model is scored by test NLL
   (-L_eval_k), the L_k ordering of eq. iwae-monotone and its active units.
2. The L_k-versus-k curve of fixed models (:func:`bound_curve`).
3. Table 2 (:func:`run_table2`): trained models continued with the other
   objective and, as the control, with their own.

:func:`per_seed` and :func:`table2_per_seed` pick the per-seed values the
scorecard's rules compare.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from repro.checkpoint import make_identity
from repro.data import fixed_binarise, load_images
from repro.seed import generator
from repro.vae import (IWAE, AdamSettings, Architecture, active_units, concat_models, estimate_bound,
                       ordered_within_error, paper_schedule, train)

from .config import OBJECTIVES, IWAEConfig

TEST_BINARISATION_SEED = 0   # one fixed binarised test set for every model and run

# the config fields that decide how a model trains (its checkpoint identity); evaluation-only fields
# (eval_k, max_test, ...) and the choice of rows (layers, ks) may change between sessions of one run
TRAINING_FIELDS = ("dataset", "n_test", "seed", "n_seeds", "batch_size", "lr", "beta1", "beta2", "adam_eps",
                   "n_stages")


# ---------------------------------------------------------------------------
# The config, as the algorithm's arguments
# ---------------------------------------------------------------------------

def architecture(cfg: IWAEConfig, n_layers: int, x_dim: int) -> Architecture:
    """The chapter's net with ``n_layers`` stochastic layers on ``x_dim`` pixels."""
    hidden, latent = cfg.widths(n_layers)
    return Architecture(x_dim, hidden, latent)


def schedule(cfg: IWAEConfig) -> list[tuple[int, float]]:
    """The paper's stages, cut to ``cfg.n_stages``: [(passes, learning rate)]."""
    return paper_schedule(cfg.n_stages, cfg.lr)


def adam_settings(cfg: IWAEConfig) -> AdamSettings:
    """Adam's constants from the config."""
    return AdamSettings(cfg.beta1, cfg.beta2, cfg.adam_eps)


def training_identity(cfg: IWAEConfig, experiment: str, n_layers: int, **extra) -> dict:
    """The checkpoint identity of one training group: experiment name + the config fields that shape it."""
    fields = {f: getattr(cfg, f) for f in TRAINING_FIELDS}
    hidden, latent = cfg.widths(n_layers)
    return make_identity(experiment, {**fields, "layers": n_layers, "hidden": hidden, "latent": latent, **extra})


def _checkpoint(cfg: IWAEConfig, name: str) -> Path | None:
    return Path(cfg.checkpoint_dir) / f"{name}.pt" if cfg.checkpoint_dir else None


def _layers(n_layers: int) -> str:
    return f"{n_layers} layer{'s' if n_layers > 1 else ''}"


# ---------------------------------------------------------------------------
# Data and evaluation
# ---------------------------------------------------------------------------

def load_data(cfg: IWAEConfig):
    """(ImageData of intensities on CPU, the fixed-binarised test set [N_test, D]) for ``cfg``."""
    kw = dict(n_test=cfg.n_test) if cfg.dataset == "digits" else {}
    data = load_images(cfg.dataset, cfg.data_root, cfg.download, **kw)
    test = fixed_binarise(data.test, TEST_BINARISATION_SEED)
    if cfg.max_test:
        test = test[:cfg.max_test]
    return data, test


def evaluate(model: IWAE, x_test: torch.Tensor, cfg: IWAEConfig, seed: int, bounds: bool = True) -> dict:
    """Test NLL (-L_eval_k), L_k for ``bound_ks`` and their ordering test (if ``bounds``), active units.

    Returns per-model lists: ``nll``, ``bounds`` {k: [M]}, ``ordered`` and
    ``order_z`` (eq. iwae-monotone within 3 s.e.), ``activity`` (A_u per
    layer) and ``active`` (count per layer).
    """
    device = next(model.parameters()).device
    x = x_test.to(device)
    g = generator(seed, device)
    ll = estimate_bound(model, x, cfg.eval_k, 1, cfg.eval_chunk, cfg.eval_batch, g)               # [M, N]
    ks = sorted(set(cfg.bound_ks) - {cfg.eval_k}) if bounds else []
    points = [estimate_bound(model, x, k, max(1, cfg.bound_samples // k), cfg.eval_chunk, cfg.eval_batch, g)
              for k in ks]
    ok, z = ordered_within_error([p for k, p in zip(ks, points) if k < cfg.eval_k] + [ll]
                                 + [p for k, p in zip(ks, points) if k > cfg.eval_k])
    acts, counts = active_units(model, x, cfg.active_threshold, cfg.active_samples, g)
    return {"nll": (-ll.mean(-1)).tolist(), "bounds": {k: p.mean(-1).tolist() for k, p in zip(ks, points)},
            "ordered": ok.tolist(), "order_z": z.tolist(),
            "activity": [a.tolist() for a in acts], "active": [c.tolist() for c in counts]}


# ---------------------------------------------------------------------------
# Experiment 1: Table 1
# ---------------------------------------------------------------------------

def train_group(cfg: IWAEConfig, data, x_test: torch.Tensor, n_layers: int, k: int,
                device: torch.device) -> tuple[IWAE, list[dict], dict]:
    """Train and evaluate all models of one (layers, k): VAE and IWAE (only one objective at k = 1) x seeds.

    Returns (the ensemble, one record per model, the training history).  The
    VAE and IWAE models of one seed start from the same weights.
    """
    objectives = OBJECTIVES if k > 1 else ("VAE",)
    runs = [(obj, s) for obj in objectives for s in cfg.seeds]
    model = IWAE(architecture(cfg, n_layers, data.dim), len(runs), seeds=[s for _, s in runs],
                 x_mean=data.train.mean(0)).to(device)
    name = f"{data.name}-L{n_layers}-k{k}"
    hist = train(model, data.train, k, [obj == "IWAE" for obj, _ in runs], schedule(cfg), cfg.batch_size,
                 adam_settings(cfg), seed=1_000_003 * cfg.seed + 7919 * k + n_layers,
                 checkpoint=_checkpoint(cfg, name), checkpoint_every=cfg.checkpoint_every,
                 identity=training_identity(cfg, f"iwae table 1 {name}", n_layers, k=k),
                 label=f"{_layers(n_layers)}, k={k}", progress=cfg.progress)
    ev = evaluate(model, x_test, cfg, seed=cfg.seed + 101 * k + n_layers)
    records = []
    for m, (obj, s) in enumerate(runs):
        records.append({"layers": n_layers, "k": k, "objective": obj, "seed": s, "nll": ev["nll"][m],
                        "bounds": {kk: v[m] for kk, v in ev["bounds"].items()},
                        "ordered": ev["ordered"][m], "order_z": ev["order_z"][m],
                        "active": [c[m] for c in ev["active"]], "activity": [a[m] for a in ev["activity"]],
                        "train_seconds": hist["seconds"] / len(runs)})
    return model, records, hist


def run_table1(cfg: IWAEConfig, data, x_test: torch.Tensor, device: torch.device) -> tuple[list[dict], dict]:
    """Experiment 1: every (layers, k, objective, seed) of Table 1.

    Returns (records, {(layers, k): (ensemble, [(objective, seed), ...], history)}).
    """
    records, models = [], {}
    for n_layers in cfg.layers:
        for k in cfg.ks:
            model, recs, hist = train_group(cfg, data, x_test, n_layers, k, device)
            records += recs
            models[(n_layers, k)] = (model, [(r["objective"], r["seed"]) for r in recs], hist)
    return records, models


def summarise(records: list[dict], key: str = "nll") -> dict:
    """{(layers, k, objective): (mean, std over seeds, n)}; the k = 1 model counts for both objectives."""
    groups: dict = {}
    for r in records:
        objs = OBJECTIVES if r["k"] == 1 else (r["objective"],)
        for o in objs:
            val = r[key] if key != "active" else sum(r["active"])
            groups.setdefault((r["layers"], r["k"], o), []).append(val)
    out = {}
    for g, v in groups.items():
        t = torch.tensor(v, dtype=torch.float64)
        out[g] = (float(t.mean()), float(t.std()) if len(v) > 1 else 0.0, len(v))
    return out


def per_seed(records: list[dict], n_layers: int, k: int, objective: str, key: str = "nll") -> list[float]:
    """One value per seed (in seed order) of (layers, k, objective); ``active`` sums over layers.

    At k = 1 the one model serves both objectives.
    """
    rows = sorted((r for r in records if r["layers"] == n_layers and r["k"] == k
                   and (r["objective"] == objective or k == 1)), key=lambda r: r["seed"])
    return [float(sum(r["active"]) if key == "active" else r[key]) for r in rows]


# ---------------------------------------------------------------------------
# Experiment 2: the bound of fixed models against k
# ---------------------------------------------------------------------------

def bound_curve(model: IWAE, x_test: torch.Tensor, cfg: IWAEConfig, seed: int) -> dict:
    """Experiment 2: L_k of fixed models for every k in ``curve_ks``.

    Each point averages max(1, curve_samples // k) independent k-sample
    estimates; returns per-model means and standard errors over test images.
    """
    device = next(model.parameters()).device
    x = x_test.to(device)
    g = generator(seed, device)
    out = {"k": list(cfg.curve_ks), "mean": [], "sem": []}
    for k in cfg.curve_ks:
        b = estimate_bound(model, x, k, max(1, cfg.curve_samples // k), cfg.eval_chunk, cfg.eval_batch, g)  # [M, N]
        out["mean"].append(b.mean(-1).tolist())
        out["sem"].append((b.std(-1) / math.sqrt(b.shape[-1])).tolist())
    return out


# ---------------------------------------------------------------------------
# Experiment 3: Table 2
# ---------------------------------------------------------------------------

def run_table2(cfg: IWAEConfig, models: dict, records: list[dict], data, x_test: torch.Tensor,
               n_layers: int = 1) -> list[dict]:
    """Experiment 3 (Table 2 in miniature): continue trained models with each objective.

    The VAE models (k = 1) and the IWAE models (k = continue_k) of every seed
    are continued for ``continue_passes`` passes at the last stage's learning
    rate, once with the IWAE objective at ``continue_k`` and once with the VAE
    objective (k = 1): the swaps VAE→IWAE and IWAE→VAE, and their controls
    VAE→VAE and IWAE→IWAE.  The "before" numbers are the Table 1 ``records``
    of the same models.  One row per (first, then, seed).
    """
    vae, vae_runs, _ = models[(n_layers, 1)]
    iwae, iwae_runs, _ = models[(n_layers, cfg.continue_k)]
    vae_idx = [i for i, (o, _) in enumerate(vae_runs) if o == "VAE"]
    iwae_idx = [i for i, (o, _) in enumerate(iwae_runs) if o == "IWAE"]
    seeds = [vae_runs[i][1] for i in vae_idx]
    lr = schedule(cfg)[-1][1]
    rows = []
    for k, tag in ((cfg.continue_k, "IWAE"), (1, "VAE")):
        # one ensemble per k: [VAE models..., IWAE models...], all continued with objective `tag`
        model = concat_models([vae.select(vae_idx), iwae.select(iwae_idx)])
        name = f"{data.name}-L{n_layers}-continue-{tag}"
        hist = train(model, data.train, k, [tag == "IWAE"] * model.n_models, [(cfg.continue_passes, lr)],
                     cfg.batch_size, adam_settings(cfg), seed=1_000_003 * cfg.seed + 17 * k + 5,
                     checkpoint=_checkpoint(cfg, name), checkpoint_every=cfg.checkpoint_every,
                     identity=training_identity(cfg, f"iwae table 2 {name}", n_layers, ks=[1, cfg.continue_k],
                                                continue_passes=cfg.continue_passes),
                     label=f"continue with {tag}", progress=cfg.progress)
        after = evaluate(model, x_test, cfg, seed=cfg.seed + 11, bounds=False)
        rows += _table2_rows(cfg, records, after, hist, seeds, n_layers, tag, model.n_models)
    return rows


def _table2_rows(cfg: IWAEConfig, records: list[dict], after: dict, hist: dict, seeds: list[int], n_layers: int,
                 then: str, n_models: int) -> list[dict]:
    """Rows of one continued ensemble [VAE models..., IWAE models...], each next to its Table 1 record."""
    rows = []
    for j, first in enumerate(OBJECTIVES):
        first_k = 1 if first == "VAE" else cfg.continue_k
        for r, s in enumerate(seeds):
            m = j * len(seeds) + r
            (rec,) = [x for x in records if (x["layers"], x["k"], x["objective"], x["seed"])
                      == (n_layers, first_k, first, s)]
            rows.append({"first": first, "then": then, "seed": s,
                         "nll_before": rec["nll"], "nll_after": after["nll"][m],
                         "active_before": rec["active"][0], "active_after": after["active"][0][m],
                         "passes": cfg.continue_passes, "seconds": hist["seconds"] / n_models})
    return rows


def table2_per_seed(rows: list[dict], first: str, then: str, key: str = "nll_after") -> list[float]:
    """``key`` per seed (in seed order) of the models trained with ``first`` and continued with ``then``."""
    return [float(r[key]) for r in sorted((r for r in rows if r["first"] == first and r["then"] == then),
                                          key=lambda r: r["seed"])]
