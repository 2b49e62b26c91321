"""Decoders trained three ways, the KDE, dequantisation, the chapter's config and claims, and the paper profile
on a tiny MNIST the test writes.  (AIS over latents: tests/test_latent_ais.py; densities: tests/test_vae.py.)"""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from repro.chapters.ais_decoders import experiments as ex
from repro.chapters.ais_decoders.config import CLAIMS, METHODS, AISDecodersConfig
from repro.config import ConfigError
from repro.decoders import (METHODS as LIB_METHODS, DecoderEnsemble, DecoderTraining, choose_bandwidth, dequantise,
                            mmd2, parzen_log_density)
from repro.scorecard import FINDING, INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Scorecard
from repro.vae import Architecture


def test_config_is_torch_free_and_mirrors_the_library():
    code = ("import sys; import repro.chapters.ais_decoders.config as c; "
            "assert 'torch' not in sys.modules, 'config imported torch'; print(len(c.CLAIMS))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert METHODS == LIB_METHODS


def test_bad_parameters_fail_early():
    with pytest.raises(ConfigError, match="K_sweep"):
        AISDecodersConfig.for_profile("book", K_sweep=(100, 10))
    with pytest.raises(ConfigError, match="n_eval"):
        AISDecodersConfig.for_profile("book", n_train=100, n_eval=200)
    with pytest.raises(ConfigError):
        AISDecodersConfig.for_profile("book", dataset="cifar")
    with pytest.raises(ConfigError, match="latents"):
        AISDecodersConfig.for_profile("book", latents=())


def test_dequantise_keeps_the_level_and_spreads_it_uniformly():
    v = torch.randint(0, 17, (2000, 3)).float()
    y = dequantise(v / 16, 17, torch.Generator().manual_seed(0))
    assert torch.equal(torch.floor(y * 17), v) and bool(((y >= 0) & (y < 1)).all())
    frac = y * 17 - v
    assert abs(frac.mean().item() - 0.5) < 0.02 and abs(frac.var().item() - 1 / 12) < 0.01
    with pytest.raises(ValueError):
        dequantise(torch.tensor([1.2]), 17)


def _mmd2_reference(x, y, bandwidths):
    def k(a, b):
        return sum(math.exp(-float(((a - b) ** 2).sum()) / (2 * s * s)) for s in bandwidths)
    n, m = len(x), len(y)
    kxx = sum(k(a, b) for a in x for b in x) / n**2
    kyy = sum(k(a, b) for a in y for b in y) / m**2
    kxy = sum(k(a, b) for a in x for b in y) / (n * m)
    return kxx + kyy - 2 * kxy


def test_mmd_matches_a_plain_reference_and_vanishes_for_equal_sets():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 6, 3, generator=g, dtype=torch.float64), torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    got = mmd2(x, y, (0.5, 2.0))
    for m in range(2):
        assert got[m].item() == pytest.approx(_mmd2_reference(x[m], y[m], (0.5, 2.0)), rel=1e-10)
    assert mmd2(x, x.clone(), (1.0,)).abs().max().item() < 1e-12
    assert bool((got > 0).all())


def test_parzen_matches_a_brute_force_reference_in_any_chunking():
    g = torch.Generator().manual_seed(1)
    x, s = torch.rand(2, 7, 4, generator=g, dtype=torch.float64), torch.rand(2, 9, 4, generator=g, dtype=torch.float64)
    h = torch.tensor([0.2, 0.5], dtype=torch.float64)
    ref = torch.empty(2, 7, dtype=torch.float64)
    for m in range(2):
        for i in range(7):
            dens = [torch.distributions.Normal(s[m, j], h[m]).log_prob(x[m, i]).sum() for j in range(9)]
            ref[m, i] = torch.logsumexp(torch.stack(dens), 0) - math.log(9)
    for chunk in (1, 3, 100):
        torch.testing.assert_close(parzen_log_density(x, s, h, chunk=chunk), ref)
    best, scores = choose_bandwidth(x, s, [0.05, 0.2, 0.5, 2.0])
    assert scores.shape == (4, 2) and torch.equal(best, torch.tensor([0.05, 0.2, 0.5, 2.0], dtype=best.dtype)[scores.argmax(0)])


def test_each_models_loss_reaches_only_its_own_parameters():
    ens = DecoderEnsemble(Architecture(6, ((8,),), (2,)), ["vae", "gan", "gmmn"], [0, 0, 0], torch.full((6,), 0.4),
                          DecoderTraining(batch_size=4, disc_hidden=5, mmd_bandwidths=(1.0,)))
    x = torch.rand(3, 4, 6, generator=torch.Generator().manual_seed(0))
    for m in range(3):
        ens.model.zero_grad()
        loss, _ = ens.losses(x, torch.Generator().manual_seed(1))
        loss[m].backward()
        for p in ens.model.decoders[0].parameters():
            others = [i for i in range(3) if i != m]
            assert p.grad[others].abs().max().item() == 0.0
            assert p.grad[m].abs().max().item() > 0.0, (m, p.shape)
    with pytest.raises(ValueError, match="unknown method"):
        DecoderEnsemble(Architecture(6, ((8,),), (2,)), ["flow"], [0], torch.full((6,), 0.4))


def test_training_lowers_every_models_loss():
    g = torch.Generator().manual_seed(0)
    data = dequantise((torch.rand(64, 16, generator=g) > 0.5).float(), 2, g)
    ens = DecoderEnsemble(Architecture(16, ((16,),), (2,)), ["vae", "gmmn"], [0, 0], data.mean(0),
                          DecoderTraining(steps=200, batch_size=16, log_every=20))
    hist = ens.train(data, seed=0, label="test")
    first, last = np.array(hist.loss[0]), np.array(hist.loss[-1])
    assert (last < first).all(), (first, last)


# synthetic per-seed values for each finding: (reproduced, inconclusive, not reproduced)
_PAIRED = (dict(a=[5.0, 5.5, 4.8, 5.2], b=[1.0, 1.2, 0.9, 1.1]), dict(a=[1.0, 2.0, 1.5, 1.2], b=[1.1, 0.2, 1.4, 1.0]),
           dict(a=[1.0, 1.2, 0.9, 1.1], b=[5.0, 5.5, 4.8, 5.2]))
_SYNTHETIC = {
    "EverySeed": (dict(passed=[True] * 4), dict(passed=[True, True, True, False]), dict(passed=[False] * 4)),
    "Greater": _PAIRED,
    "Below": (dict(values=[0.3, 0.4, 0.35]), dict(values=[0.9, 1.2, 0.5]), dict(values=[2.0, 2.5, 3.0])),
}


@pytest.mark.parametrize("claim", [c for c in CLAIMS if c.kind == FINDING], ids=lambda c: c.id)
def test_finding_rules_give_each_status(claim):
    for values, status in zip(_SYNTHETIC[type(claim.rule).__name__], (REPRODUCED, INCONCLUSIVE, NOT_REPRODUCED)):
        sc = Scorecard("ais_decoders", "book", CLAIMS)
        assert sc.evaluate(claim.id, **values).status == status, (claim.id, values)


def test_misordered_pairs_counts_disagreements():
    r = {"methods": ["vae", "gan", "gmmn"], "ais_test": [10.0, 1.0, 5.0], "kde": {"loglik": [[3.0, 9.0, 1.0]]}}
    assert ex.misordered_pairs({2: r}, 0) == 2          # vae>gan and gan<gmmn reversed; vae>gmmn kept
    r2 = dict(r, kde={"loglik": [[9.0, 1.0, 5.0]]})
    assert ex.misordered_pairs({2: r2}, 0) == 0


def test_paper_profile_constructs_and_steps_on_tiny_mnist(tiny_mnist, tmp_path):
    cfg = AISDecodersConfig.for_profile("paper", data_root=str(tiny_mnist), n_train=20, n_valid=10, n_eval=2,
                                        steps=1, batch_size=4, n_seeds=1, device="cpu")
    data = ex.load_data(cfg)
    assert data["train"].shape == (20, 784) and data["valid"].shape == (10, 784)
    assert float(data["train"].max()) < 1.0 and bool((torch.floor(data["train"] * 256) <= 255).all())
    for latent in cfg.latents:
        arch = ex.architecture(cfg, latent, 784)
        widths = [tuple(layer.weight.shape[1:]) for layer in
                  DecoderEnsemble(arch, ["vae"], [0], data["train"].mean(0)).model.decoders[0].layers]
        expected = (latent, *(cfg.hidden_large if latent == 50 else cfg.hidden), 784)
        assert [w[0] for w in widths] + [widths[-1][1]] == list(expected)
        methods, seeds = ex.models(cfg)
        ens = DecoderEnsemble(arch, methods, seeds, data["train"].mean(0), ex.training(cfg))
        hist = ens.train(data["train"], seed=0, label="tiny")
        assert all(math.isfinite(v) for v in hist.loss[-1])
        model = ens.model.requires_grad_(False)
        res = ex.ais_estimate(model, data["test"][:2], cfg, 2, 2, torch.Generator().manual_seed(0))
        assert res.log_px.shape == (3, 2) and torch.isfinite(res.log_px).all()
