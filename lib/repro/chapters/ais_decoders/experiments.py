"""The AIS-for-decoders chapter's experiments: one call per latent size does everything that size needs.

For each latent size: train VAE, GAN and GMMN decoders (``n_seeds`` each, one
ensemble), choose each model's observation variance on validation data, then
AIS on test and training examples, BDMC on data simulated from the models
(at the Table 2 K and along ``K_sweep``), the KDE and the IWAE bound.
Latent sizes are independent, so with ``workers`` > 1 they run in separate
one-thread processes (measured faster than two threads in one process for
these small networks: see the chapter).  Trained ensembles and finished
results are checkpointed in the run folder (or ``checkpoint_dir``) and reused.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from repro.ais import sigmoidal_schedule
from repro.chapters.ais_decoders.config import METHODS, AISDecodersConfig
from repro.checkpoint import load_checkpoint, make_identity, save_checkpoint
from repro.data import load_images
from repro.decoders import (DecoderEnsemble, DecoderTraining, choose_bandwidth, dequantise, parzen_log_density,
                            prior_samples)
from repro.latent_ais import HMCSettings, ais_latent, bdmc_latent
from repro.seed import generator
from repro.vae import Architecture, iwae_bound
from repro.workers import run_jobs


def load_data(cfg: AISDecodersConfig) -> dict[str, torch.Tensor]:
    """Dequantised continuous data: ``train`` (n_train), ``valid`` (n_valid), ``test``, each [N, D] in [0, 1).

    Digits: 17 levels ((v + u)/17); MNIST: 256 levels.  The validation set is
    cut from the training pool before the training subset; the noise is drawn
    once from ``cfg.seed``.
    """
    data = load_images(cfg.dataset, cfg.data_root, cfg.download)
    levels = 17 if cfg.dataset == "digits" else 256
    g = generator(10_007 + cfg.seed)
    pool = data.train[torch.randperm(len(data.train), generator=g)]
    if cfg.n_valid >= len(pool):
        raise ValueError(f"n_valid ({cfg.n_valid}) leaves no training data (pool of {len(pool)})")
    valid, rest = pool[:cfg.n_valid], pool[cfg.n_valid:]
    train = rest[:cfg.n_train] if cfg.n_train else rest
    return {"train": dequantise(train, levels, g), "valid": dequantise(valid, levels, g),
            "test": dequantise(data.test, levels, g), "shape": data.shape}


def models(cfg: AISDecodersConfig) -> tuple[list[str], list[int]]:
    """The ensemble's members: every method × seeds cfg.seed, cfg.seed + 1, ... (method-major)."""
    seeds = [cfg.seed + r for r in range(cfg.n_seeds)]
    return [m for m in METHODS for _ in seeds], seeds * len(METHODS)


def architecture(cfg: AISDecodersConfig, latent: int, x_dim: int) -> Architecture:
    hidden = cfg.hidden_large if cfg.hidden_large and latent == max(cfg.latents) else cfg.hidden
    return Architecture(x_dim, (tuple(hidden),), (latent,))


def training(cfg: AISDecodersConfig) -> DecoderTraining:
    return DecoderTraining(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, train_sigma2=cfg.train_sigma2)


def hmc(cfg: AISDecodersConfig) -> HMCSettings:
    return HMCSettings(n_leapfrog=cfg.leapfrog)


def _identity(cfg: AISDecodersConfig, latent: int, what: str) -> dict:
    keep = {k: v for k, v in cfg.to_dict().items() if k not in ("device", "workers", "checkpoint_dir", "profile")}
    return make_identity(f"ais_decoders/{what}", keep, latent=latent)


def train_ensemble(cfg: AISDecodersConfig, latent: int, data: dict, device, folder: Path) -> tuple[DecoderEnsemble, float]:
    """The trained ensemble of one latent size (loaded from its checkpoint when present) and the training time."""
    methods, seeds = models(cfg)
    ens = DecoderEnsemble(architecture(cfg, latent, data["train"].shape[1]), methods, seeds,
                          data["train"].mean(0), training(cfg), device)
    path, ident = folder / f"decoders-d{latent}.pt", _identity(cfg, latent, "decoders")
    state = load_checkpoint(path, ident, map_location=device)
    if state is not None:
        ens.model.load_state_dict(state["model"])
        ens.disc.load_state_dict(state["disc"])
        return ens, float(state["seconds"])
    hist = ens.train(data["train"], seed=cfg.seed, label=f"decoders d={latent}")
    save_checkpoint(path, {"model": ens.model.state_dict(), "disc": ens.disc.state_dict(),
                           "seconds": hist.seconds, "loss": hist.loss}, ident)
    return ens, hist.seconds


def _fns(model, x: torch.Tensor):
    """(log_prior, log_likelihood) of every model of the ensemble for data x [M, B, D]."""
    return (lambda z: model.log_prior([z])), (lambda z: model.log_likelihood(x, [z]))


def ais_estimate(model, x: torch.Tensor, cfg: AISDecodersConfig, K: int, chains: int, gen):
    """AIS from the prior for every model on x [M, B, D] (or [B, D]): the LatentAIS result."""
    x = x.expand(model.n_models, *x.shape) if x.dim() == 2 else x
    M, B, _ = x.shape
    z0 = torch.randn(M, chains, B, model.arch.latent[0], generator=gen, device=x.device)
    lp, ll = _fns(model, x)
    return ais_latent(lp, ll, z0, sigmoidal_schedule(K, device=x.device), hmc(cfg), generator=gen)


def choose_sigma2(model, valid: torch.Tensor, cfg: AISDecodersConfig, gen) -> tuple[list[float], list[list[float]]]:
    """Per model, the sigma² of ``sigma2_grid`` with the highest short-AIS validation log-likelihood.

    Every model is scored at every grid value with ``select_K`` intermediate
    distributions and 2 chains on the validation set; the winner is written
    into ``model.log_sigma2``.  Returns (chosen [M], scores [G][M]).
    """
    scores = []
    for s2 in cfg.sigma2_grid:
        model.log_sigma2.fill_(math.log(s2))
        res = ais_estimate(model, valid, cfg, cfg.select_K, 2, gen)
        scores.append(res.log_px.mean(1))
    scores_t = torch.stack(scores)                                            # [G, M]
    grid = torch.tensor(cfg.sigma2_grid, dtype=scores_t.dtype, device=scores_t.device)
    chosen = grid[scores_t.argmax(0)]
    model.log_sigma2.copy_(torch.log(chosen).to(model.log_sigma2))
    return chosen.tolist(), scores_t.tolist()


def simulate(model, n: int, gen) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, x) with z ~ p(z), x ~ N(decoder mean, sigma² I) per model: [M, n, d], [M, n, D]."""
    z = prior_samples(model, n, gen)
    mean = model.decode_mean(z)
    sd = torch.exp(0.5 * model.log_sigma2).view(-1, 1, 1)
    return z, mean + sd * torch.randn(mean.shape, generator=gen, device=mean.device)


def bdmc_gap(model, cfg: AISDecodersConfig, K: int, gen, n: int) -> dict:
    """BDMC on n examples simulated from each model: per model the mean lower and upper bound and the gap."""
    z, x = simulate(model, n, gen)
    z_exact = z[:, None].expand(model.n_models, cfg.ais_chains, n, z.shape[-1]).contiguous()
    lp, ll = _fns(model, x)
    res = bdmc_latent(lp, ll, z_exact, sigmoidal_schedule(K, device=x.device), hmc(cfg), generator=gen)
    return {"K": K, "lower": res.lower.mean((1, 2)).tolist(), "upper": res.upper.mean((1, 2)).tolist(),
            "gap": res.gap.mean(1).tolist()}


def kde_curve(model, data: dict, cfg: AISDecodersConfig, gen, n_test: int) -> dict:
    """Parzen estimates of the test log-likelihood vs the number of model samples, bandwidth chosen on validation."""
    samples = model.decode_mean(prior_samples(model, max(cfg.kde_samples), gen))
    valid = data["valid"].to(samples.device).expand(model.n_models, *data["valid"].shape)
    test = data["test"][:n_test].to(samples.device).expand(model.n_models, n_test, data["test"].shape[1])
    h, _ = choose_bandwidth(valid, samples, cfg.kde_bandwidths)
    curve = [parzen_log_density(test, samples[:, :S], h).mean(1).tolist() for S in cfg.kde_samples]
    return {"bandwidth": h.tolist(), "samples": list(cfg.kde_samples), "loglik": curve}


def iwae_test(model, x: torch.Tensor, k: int, gen, chunk: int = 25) -> list[float]:
    """The IWAE bound L_k on test examples x [B, D] for every model (meaningful for the VAEs): mean per model."""
    out = []
    for i in range(0, x.shape[0], chunk):
        out.append(iwae_bound(model.log_weights(x[i:i + chunk], k, gen), dim=1))   # [M, b]
    return torch.cat(out, 1).mean(1).tolist()


def _per_example_stats(log_px: torch.Tensor) -> tuple[list[float], list[float]]:
    """Mean and standard error over examples per model: [M, B] -> ([M], [M])."""
    return log_px.mean(1).tolist(), (log_px.std(1) / math.sqrt(log_px.shape[1])).tolist()


def evaluate_latent(cfg: AISDecodersConfig, latent: int, folder: str, device: str = "cpu", threads: int = 0) -> dict:
    """Everything one latent size contributes (see the module docstring); cached as results-d<latent>.pt."""
    if threads:
        torch.set_num_threads(threads)
    folder = Path(folder)
    path, ident = folder / f"results-d{latent}.pt", _identity(cfg, latent, "results")
    done = load_checkpoint(path, ident)
    if done is not None:
        return done["results"]
    t0 = time.perf_counter()
    device = torch.device(device)
    data = load_data(cfg)
    ens, train_s = train_ensemble(cfg, latent, data, device, folder)
    model = ens.model.requires_grad_(False)
    gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + latent)
    test = data["test"][:cfg.n_eval].to(device)
    train = data["train"][:cfg.n_eval].to(device)
    out: dict = {"latent": latent, "methods": list(ens.methods), "seeds": models(cfg)[1], "train_s": train_s}
    t = time.perf_counter()
    out["sigma2"], out["sigma2_scores"] = choose_sigma2(model, data["valid"].to(device), cfg, gen)
    out["select_s"] = time.perf_counter() - t
    t = time.perf_counter()
    res_test = ais_estimate(model, test, cfg, cfg.ais_K, cfg.ais_chains, gen)
    res_train = ais_estimate(model, train, cfg, cfg.ais_K, cfg.ais_chains, gen)
    out["ais_s"] = time.perf_counter() - t
    out["ais_test"], out["ais_test_se"] = _per_example_stats(res_test.log_px)
    out["ais_train"], out["ais_train_se"] = _per_example_stats(res_train.log_px)
    out["accept"], out["step"] = res_test.accept, res_test.step
    out["posterior_means"] = model.decode_mean(res_test.z[:, 0]).cpu()           # [M, B, D] (first chain)
    t = time.perf_counter()
    out["bdmc"] = bdmc_gap(model, cfg, cfg.ais_K, gen, cfg.n_simulated)
    out["sweep"] = [bdmc_gap(model, cfg, K, gen, cfg.n_simulated) for K in cfg.K_sweep]
    out["bdmc_s"] = time.perf_counter() - t
    t = time.perf_counter()
    out["kde"] = kde_curve(model, data, cfg, gen, cfg.n_eval)
    out["iwae"] = iwae_test(model, test, cfg.iwae_k, gen)
    out["samples"] = ens.sample(16, gen).cpu()                                     # [M, 16, D]
    out["kde_s"] = time.perf_counter() - t
    out["test_images"] = test.cpu()
    out["seconds"] = time.perf_counter() - t0
    save_checkpoint(path, {"results": out}, ident)
    return out


def run_all(cfg: AISDecodersConfig, device: torch.device, folder: str | Path) -> dict[int, dict]:
    """Every latent size, in ``workers`` one-thread processes when there are several (CPU), else in turn."""
    folder = Path(cfg.checkpoint_dir or folder)
    folder.mkdir(parents=True, exist_ok=True)
    sizes = list(cfg.latents)

    def report(d: int, r: dict) -> dict:
        print(f"[ais_decoders] latent size {d} done in {r['seconds']:.0f}s (training {r['train_s']:.0f}s)", flush=True)
        return r

    results = run_jobs(evaluate_latent, [(cfg, d, str(folder), str(device)) for d in sizes], cfg.workers, device)
    return {d: report(d, r) for d, r in zip(sizes, results)}


def model_indices(result: dict, method: str) -> list[int]:
    """Positions of ``method``'s models (one per seed, in seed order) in one latent size's result."""
    return [i for i, k in enumerate(result["methods"]) if k == method]


def table(results: dict[int, dict]) -> list[dict]:
    """One row per (method, latent size): means over seeds of the Table 2 columns."""
    rows = []
    for d, r in results.items():
        for m in METHODS:
            idx = model_indices(r, m)
            mean = lambda key: sum(r[key][i] for i in idx) / len(idx)  # noqa: E731
            rows.append({"method": m, "latent": d, "ais_test": mean("ais_test"), "ais_train": mean("ais_train"),
                         "bdmc_gap": sum(r["bdmc"]["gap"][i] for i in idx) / len(idx),
                         "kde_test": sum(r["kde"]["loglik"][-1][i] for i in idx) / len(idx),
                         "iwae_test": mean("iwae") if m == "vae" else None,
                         "ais_test_se": math.sqrt(sum(r["ais_test_se"][i] ** 2 for i in idx)) / len(idx),
                         "n_seeds": len(idx)})
    return rows


def per_pair(results: dict[int, dict], key_fn) -> dict[str, list[float]]:
    """Per method, ``key_fn(result, model index)`` for every (latent size, seed) in a fixed order (pairs align)."""
    out: dict[str, list[float]] = {m: [] for m in METHODS}
    for d, r in results.items():
        for m in METHODS:
            out[m] += [key_fn(r, i) for i in model_indices(r, m)]
    return out


def misordered_pairs(results: dict[int, dict], seed_index: int) -> int:
    """For one seed: how many (latent size, method pair) KDE orders differently from AIS."""
    bad = 0
    for r in results.values():
        idx = {m: model_indices(r, m)[seed_index] for m in METHODS}
        kde = r["kde"]["loglik"][-1]
        for a in range(len(METHODS)):
            for b in range(a + 1, len(METHODS)):
                ia, ib = idx[METHODS[a]], idx[METHODS[b]]
                bad += (r["ais_test"][ia] > r["ais_test"][ib]) != (kde[ia] > kde[ib])
    return bad

