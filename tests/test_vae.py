"""IWAE / VAE: the bound, its gradient, exact log p(x) by quadrature, chunked estimates, training, configs,
the chapter's claims and its smoke run."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Normal

from repro.chapters.iwae.config import CLAIMS, IWAEConfig
from repro.chapters.iwae.experiments import (adam_settings, architecture, load_data, per_seed, schedule,
                                             table2_per_seed, training_identity)
from repro.checkpoint import CheckpointMismatch, make_identity
from repro.config import ConfigError
from repro.device import configure_threads
from repro.scorecard import INCONCLUSIVE, NOT_EVALUATED, NOT_REPRODUCED, PASSES, REPRODUCED, Scorecard
from repro.vae import (Architecture, IWAE, concat_models, estimate_bound, grouped_bound, importance_weights,
                       iwae_bound, iwae_surrogate, log_mean_exp, objective, ordered_within_error,
                       paper_architecture, paper_schedule, streaming_log_mean_exp, train, unit_activity,
                       active_units, vae_bound)

ARCH1 = Architecture(12, (10,), (3,))
ARCH2 = Architecture(12, (10, 8), (4, 2))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The book's thread policy (one thread on 2-core machines): these tiny models are slower with more."""
    before = torch.get_num_threads()
    configure_threads()
    yield
    torch.set_num_threads(before)


def binary_data(n, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.rand(n, d, generator=g) * 0.8 + 0.1, generator=g)


# ---------------------------------------------------------------------------
# The bound as a function of log-weights
# ---------------------------------------------------------------------------

def test_k1_bound_is_the_elbo_sample():
    log_w = torch.randn(3, 1, 5)
    assert torch.allclose(iwae_bound(log_w, 1), log_w[:, 0])
    assert torch.allclose(vae_bound(log_w, 1), log_w[:, 0])


def test_log_mean_exp_is_stable_and_exact():
    a = torch.tensor([[1000.0, 1000.0 + math.log(3.0)], [-1000.0, -1000.0]])
    out = log_mean_exp(a, 1)
    assert torch.allclose(out, torch.tensor([1000.0 + math.log(2.0), -1000.0]), atol=1e-4)
    b = torch.randn(4, 7, dtype=torch.float64)
    assert torch.allclose(log_mean_exp(b, 1), b.exp().mean(1).log())


def test_bound_orders_with_k_on_one_draw_by_jensen():
    # the log-mean-exp of a set is >= the mean of the log-mean-exps of any partition of it
    log_w = torch.randn(50, 5000, dtype=torch.float64) * 2
    groups = lambda k: iwae_bound(log_w.reshape(50, 5000 // k, k), -1).mean(-1)
    vals = [groups(k) for k in (1, 5, 50, 5000)]
    for lo, hi in zip(vals, vals[1:]):
        assert (hi >= lo - 1e-12).all()


def test_importance_weights_and_gradient_of_the_bound():
    log_w = torch.randn(2, 6, 4, requires_grad=True)
    (g,) = torch.autograd.grad(iwae_bound(log_w, 1).sum(), log_w)
    assert torch.allclose(g, importance_weights(log_w, 1))          # d L_k / d log w_i = w~_i
    assert torch.allclose(importance_weights(log_w, 1).sum(1), torch.ones(2, 4))
    (gv,) = torch.autograd.grad(vae_bound(log_w, 1).sum(), log_w)
    assert torch.allclose(gv, torch.full_like(gv, 1 / 6))             # the VAE weighs samples uniformly


def _grads(model, x, k, seed, fn):
    g = torch.Generator().manual_seed(seed)
    lw = model.log_weights(x, k, g)
    return torch.autograd.grad(fn(lw, 1).sum(), list(model.parameters()))


@pytest.mark.parametrize("arch", [ARCH1, ARCH2])
def test_iwae_gradient_estimator_matches_autograd_of_the_bound(arch):
    model = IWAE(arch, 2, seeds=[0, 1], x_mean=torch.full((12,), 0.4))
    x = binary_data(5)
    auto = _grads(model, x, 7, 3, iwae_bound)
    explicit = _grads(model, x, 7, 3, iwae_surrogate)   # sum_i w~_i grad log w_i, same noise
    vae = _grads(model, x, 7, 3, vae_bound)
    for a, e in zip(auto, explicit):
        assert torch.isfinite(a).all() and a.shape == e.shape
        assert torch.allclose(a, e, atol=1e-5, rtol=1e-4)
    assert max(float((a - v).abs().max()) for a, v in zip(auto, vae)) > 1e-3   # the two estimators differ at k > 1
    # at k = 1 they coincide
    for a, v in zip(_grads(model, x, 1, 4, iwae_bound), _grads(model, x, 1, 4, vae_bound)):
        assert torch.allclose(a, v)


def test_objective_picks_the_estimator_per_model_and_gradients_are_independent():
    model = IWAE(ARCH2, 3, seeds=[0, 0, 1])
    x = binary_data(4)
    g = torch.Generator().manual_seed(0)
    lw = model.log_weights(x, 5, g)
    assert lw.shape == (3, 5, 4)
    obj = objective(lw, torch.tensor([False, True, True]))
    assert obj.shape == (3,)
    assert torch.allclose(obj[0], vae_bound(lw[0], 0).mean()) and torch.allclose(obj[1], iwae_bound(lw[1], 0).mean())
    grads = torch.autograd.grad(obj[1], list(model.parameters()))
    for p in grads:   # model 1's objective does not touch models 0 and 2
        assert torch.isfinite(p).all()
        assert float(p[0].abs().max()) == 0.0 and float(p[2].abs().max()) == 0.0


# ---------------------------------------------------------------------------
# The networks against a plain torch.distributions reference
# ---------------------------------------------------------------------------

def reference_log_weights(model: IWAE, x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """One model at a time, torch.distributions densities, the same noise draws in the same order."""
    M, B = model.n_models, x.shape[0]
    g = torch.Generator().manual_seed(seed)
    eps = [torch.randn((M, k, B, d), generator=g) for d in model.arch.latent]

    def mlp(net, m, h):
        for i, lin in enumerate(net.layers):
            h = h @ lin.weight[m] + lin.bias[m, 0]
            h = torch.tanh(h) if i < 2 else h
        return h

    out = []
    for m in range(M):
        inp, hs, log_q = x.expand(k, *x.shape), [], 0.0
        for l, enc in enumerate(model.encoders):
            mu, log_var = mlp(enc, m, inp).chunk(2, -1)
            h = mu + torch.exp(0.5 * log_var) * eps[l][m]
            log_q = log_q + Normal(mu, torch.exp(0.5 * log_var)).log_prob(h).sum(-1)
            hs.append(h)
            inp = h
        log_p = Normal(0.0, 1.0).log_prob(hs[-1]).sum(-1)
        for l in range(len(hs) - 1, 0, -1):
            mu, log_var = mlp(model.decoders[l], m, hs[l]).chunk(2, -1)
            log_p = log_p + Normal(mu, torch.exp(0.5 * log_var)).log_prob(hs[l - 1]).sum(-1)
        log_p = log_p + Bernoulli(logits=mlp(model.decoders[0], m, hs[0])).log_prob(x).sum(-1)
        out.append(log_p - log_q)
    return torch.stack(out)


@pytest.mark.parametrize("arch", [ARCH1, ARCH2])
def test_log_weights_match_plain_reference(arch):
    model = IWAE(arch, 3, seeds=[0, 1, 2], x_mean=torch.linspace(0.1, 0.9, 12))
    x = binary_data(6)
    with torch.no_grad():
        ours = model.log_weights(x, 4, torch.Generator().manual_seed(9))
        ref = reference_log_weights(model, x, 4, 9)
    assert ours.shape == (3, 4, 6)
    assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-5)


def test_ensemble_members_equal_separately_built_models():
    ens = IWAE(ARCH2, 3, seeds=[4, 5, 6], x_mean=torch.full((12,), 0.3))
    single = IWAE(ARCH2, 1, seeds=[5], x_mean=torch.full((12,), 0.3))
    for a, b in zip(ens.select([1]).parameters(), single.parameters()):
        assert torch.equal(a, b)
    both = concat_models([ens.select([2]), single])
    for p, q, r in zip(both.parameters(), ens.parameters(), single.parameters()):
        assert torch.equal(p[0], q[2]) and torch.equal(p[1], r[0])


def test_output_bias_is_the_logit_of_the_data_mean():
    mean = torch.tensor([0.5, 0.25, 0.9] + [0.5] * 9)
    model = IWAE(ARCH1, 2, seeds=[0, 1], x_mean=mean)
    bias = model.decoders[0].layers[-1].bias
    assert torch.allclose(torch.sigmoid(bias[1, 0]), mean, atol=1e-6)


def test_paper_architectures():
    a1, a2 = paper_architecture(1), paper_architecture(2)
    assert (a1.hidden, a1.latent) == ((200,), (50,))
    assert (a2.hidden, a2.latent) == ((200, 100), (100, 50))
    m = IWAE(a2, 1)
    shapes = [tuple(l.weight.shape[1:]) for net in m.encoders for l in net.layers]
    assert shapes == [(784, 200), (200, 200), (200, 200), (100, 100), (100, 100), (100, 100)]
    shapes = [tuple(l.weight.shape[1:]) for net in m.decoders for l in net.layers]
    assert shapes == [(100, 200), (200, 200), (200, 784), (50, 100), (100, 100), (100, 200)]


# ---------------------------------------------------------------------------
# Exact log p(x) on a one-latent model, by quadrature
# ---------------------------------------------------------------------------

def exact_log_px(model: IWAE, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log \\int p(x|h) N(h; 0, 1) dh on a fine grid (1 latent unit, 1 layer): [M, B]."""
    grid = torch.linspace(-12, 12, 24001, dtype=torch.float64)
    with torch.no_grad():
        logits = model.decoders[0](grid.float()[None, :, None].expand(model.n_models, -1, 1)).double()  # [M, G, D]
    log_px_h = (x.double()[None, None] * logits[:, :, None] - torch.nn.functional.softplus(logits)[:, :, None]).sum(-1)
    log_prior = Normal(0.0, 1.0).log_prob(grid)[None, :, None]
    return torch.logsumexp(log_px_h + log_prior, 1) + math.log(float(grid[1] - grid[0]))


def test_bound_approaches_exact_log_likelihood():
    arch = Architecture(10, (16,), (1,))
    model = IWAE(arch, 2, seeds=[3, 4])
    with torch.no_grad():   # a sharper decoder than the init, so the posterior is far from q
        for lin in model.decoders[0].layers:
            lin.weight.mul_(2.0)
    x = binary_data(8, d=10, seed=2)
    log_px = exact_log_px(model, x).float()                                   # [M, B]
    g = torch.Generator().manual_seed(0)
    est = {k: estimate_bound(model, x, k, max(1, 8000 // k), chunk=2000, batch_size=8, generator=g)
           for k in (1, 10, 100, 5000)}
    gaps = {k: float((log_px - v).mean()) for k, v in est.items()}
    assert gaps[1] > 0.2                                    # the ELBO is visibly loose here
    assert gaps[1] > gaps[10] > gaps[100] > -0.01           # L_k rises towards log p(x) ...
    assert abs(gaps[5000]) < 0.02                           # ... and reaches it
    assert ((log_px - est[5000]).mean(-1).abs() < 0.04).all()


def test_bound_is_monotone_in_expectation_for_a_fixed_model():
    model = IWAE(ARCH2, 2, seeds=[0, 1], x_mean=torch.full((12,), 0.5))
    x = binary_data(30, seed=5)
    g = torch.Generator().manual_seed(1)
    ks = (1, 2, 5, 20, 100)
    est = [estimate_bound(model, x, k, max(1, 2000 // k), chunk=500, batch_size=30, generator=g) for k in ks]
    means = torch.stack([e.mean(-1) for e in est])                            # [n_k, M]
    assert (means[1:] > means[:-1]).all()
    ok, z = ordered_within_error(est)
    assert ok.all() and (z > 3).all()
    # and the ordering test does catch a decreasing sequence
    ok_rev, _ = ordered_within_error(est[::-1])
    assert not ok_rev.any()


# ---------------------------------------------------------------------------
# Memory-bounded estimates
# ---------------------------------------------------------------------------

def _drawer(table):
    pos = [0]

    def draw(n):
        out = table[..., pos[0]:pos[0] + n, :]
        pos[0] += n
        assert out.shape[-2] == n, "drew past the table"
        return out
    return draw


@pytest.mark.parametrize("k,groups,chunk", [(1000, 1, 1000), (1000, 1, 64), (1000, 2, 7), (10, 100, 1000),
                                            (10, 100, 25), (10, 100, 3), (7, 13, 20), (1, 50, 8)])
def test_chunked_estimate_equals_unchunked(k, groups, chunk):
    table = torch.randn(2, 3, k * groups, 5, dtype=torch.float64) * 4
    expected = iwae_bound(table.reshape(2, 3, groups, k, 5), -2).mean(-2)
    got = grouped_bound(_drawer(table), k, groups, chunk)
    assert got.shape == (2, 3, 5)
    assert torch.allclose(got, expected, atol=1e-10)


def test_streaming_log_mean_exp():
    a = torch.randn(4, 103, dtype=torch.float64) * 10
    chunks = a.split(10, dim=1)
    assert torch.allclose(streaming_log_mean_exp(chunks, 1), log_mean_exp(a, 1))
    with pytest.raises(ValueError):
        streaming_log_mean_exp([], 1)


def test_model_estimate_does_not_depend_on_chunking_beyond_noise():
    model = IWAE(ARCH1, 2, seeds=[0, 1])
    x = binary_data(10)
    big = estimate_bound(model, x, 300, 8, chunk=3000, batch_size=10, generator=torch.Generator().manual_seed(0))
    small = estimate_bound(model, x, 300, 8, chunk=70, batch_size=5, generator=torch.Generator().manual_seed(1))
    assert big.shape == small.shape == (2, 10)
    # the same estimator: per-point estimates agree up to Monte Carlo noise, their means closely
    assert torch.allclose(big, small, atol=0.5)
    assert torch.allclose(big.mean(-1), small.mean(-1), atol=0.1)


# ---------------------------------------------------------------------------
# Active units
# ---------------------------------------------------------------------------

def test_unit_activity_is_the_variance_of_posterior_means():
    means = torch.randn(2, 50, 4, dtype=torch.float64)
    assert torch.allclose(unit_activity(means), torch.tensor(np.var(means.numpy(), axis=1)))


def test_a_unit_whose_posterior_mean_ignores_x_is_inactive():
    model = IWAE(ARCH2, 2, seeds=[0, 1])
    with torch.no_grad():
        model.encoders[0].layers[-1].weight[:, :, 0] = 0.0      # mean of h1 unit 0 is a constant bias
    x = binary_data(40)
    acts, counts = active_units(model, x, threshold=1e-2, n_samples=50, generator=torch.Generator().manual_seed(0))
    assert [a.shape for a in acts] == [(2, 4), (2, 2)]
    assert torch.all(acts[0][:, 0] < 1e-12)
    for a, c in zip(acts, counts):
        assert torch.equal(c, (a > 1e-2).sum(-1))
    assert (counts[0] <= 3).all()


# ---------------------------------------------------------------------------
# Training, schedule, checkpoints
# ---------------------------------------------------------------------------

def test_paper_schedule():
    s = paper_schedule(8)
    assert [p for p, _ in s] == [1, 3, 9, 27, 81, 243, 729, 2187] and sum(p for p, _ in s) == 3280
    assert math.isclose(s[0][1], 1e-3) and math.isclose(s[7][1], 1e-4)


def test_training_improves_the_bound():
    pattern = torch.tensor([0.95] * 6 + [0.05] * 6)
    x = torch.stack([pattern, 1 - pattern]).repeat(30, 1)        # two prototypes: a latent variable pays off
    model = IWAE(ARCH1, 2, seeds=[0, 0], x_mean=x.mean(0))
    xt = torch.bernoulli(x[:20], generator=torch.Generator().manual_seed(0))
    before = estimate_bound(model, xt, 5, 40, generator=torch.Generator().manual_seed(0)).mean(-1)
    hist = train(model, x, 5, [False, True], [(15, 3e-3)], batch_size=10, seed=0)
    after = estimate_bound(model, xt, 5, 40, generator=torch.Generator().manual_seed(0)).mean(-1)
    assert (after > before + 0.5).all()
    assert len(hist["train_bound"]) == 15 and len(hist["train_bound"][0]) == 2


def test_checkpoint_resume_equals_uninterrupted_run(tmp_path):
    x = torch.rand(40, 12)
    sched = [(1, 1e-3), (2, 5e-4)]
    ref = IWAE(ARCH2, 2, seeds=[0, 1])
    ref_hist = train(ref, x, 3, [False, True], sched, batch_size=10, seed=7)
    ckpt = tmp_path / "group.pt"
    ident = make_identity("test group", {"lr": 1e-3})
    first = IWAE(ARCH2, 2, seeds=[0, 1])
    train(first, x, 3, [False, True], sched, batch_size=10, seed=7, checkpoint=ckpt, identity=ident,
          max_passes=1)                                                        # "interrupted" after stage 1
    assert ckpt.exists()
    resumed = IWAE(ARCH2, 2, seeds=[0, 1])
    hist = train(resumed, x, 3, [False, True], sched, batch_size=10, seed=7, checkpoint=ckpt, identity=ident)
    assert hist["epoch"] == [1, 2, 3] and hist["train_bound"] == ref_hist["train_bound"]
    for a, b in zip(ref.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_checkpoint_resume_within_a_stage(tmp_path, capsys):
    x = torch.rand(40, 12)
    sched = [(1, 1e-3), (3, 5e-4)]
    ref = IWAE(ARCH1, 2, seeds=[0, 1])
    train(ref, x, 2, [False, True], sched, batch_size=10, seed=3)
    ckpt = tmp_path / "group.pt"
    cut = IWAE(ARCH1, 2, seeds=[0, 1])   # "killed" after pass 3 of 4, in the middle of stage 2
    train(cut, x, 2, [False, True], sched, batch_size=10, seed=3, checkpoint=ckpt, checkpoint_every=1, max_passes=3)
    resumed = IWAE(ARCH1, 2, seeds=[0, 1])
    hist = train(resumed, x, 2, [False, True], sched, batch_size=10, seed=3, checkpoint=ckpt, checkpoint_every=1,
                 label="resume test")
    assert "[resume test] resumed from" in capsys.readouterr().out
    assert hist["epoch"] == [1, 2, 3, 4] and hist["stage"] == [0, 1, 1, 1]
    for a, b in zip(ref.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_checkpoint_of_another_run_is_refused(tmp_path):
    x = torch.rand(40, 12)
    ckpt = tmp_path / "group.pt"
    cfg = IWAEConfig.for_profile("smoke")
    ident = training_identity(cfg, "iwae table 1 test", 1, k=2)
    train(IWAE(ARCH1, 2, seeds=[0, 1]), x, 2, [False, True], [(1, 1e-3)], batch_size=10, seed=3, checkpoint=ckpt,
          identity=ident)
    other_cfg = training_identity(IWAEConfig.for_profile("smoke", lr=3e-3), "iwae table 1 test", 1, k=2)
    for kwargs in (dict(identity=other_cfg),                                   # other config
                   dict(identity=ident, seed=4),                               # other training seed
                   dict(identity=make_identity("iwae table 1 other", None))):  # other experiment
        with pytest.raises(CheckpointMismatch):
            train(IWAE(ARCH1, 2, seeds=[0, 1]), x, 2, [False, True], [(1, 1e-3)], batch_size=10,
                  **{"seed": 3, **kwargs}, checkpoint=ckpt)
    # evaluation-only settings do not change a training group's identity (a run may be split into sessions)
    assert training_identity(IWAEConfig.for_profile("smoke", eval_k=7, max_test=3, layers=(1,)),
                             "iwae table 1 test", 1, k=2) == ident


# ---------------------------------------------------------------------------
# Config and the paper profile
# ---------------------------------------------------------------------------

def test_params_lists_the_chapter_parameters():
    out = subprocess.run([sys.executable, "-m", "repro", "params", "iwae"], check=True, capture_output=True,
                         text=True).stdout
    assert "continue_passes" in out and "eval_k" in out


def test_profiles_build_and_validate():
    for p in ("smoke", "book", "paper"):
        cfg = IWAEConfig.for_profile(p)
        assert architecture(cfg, 1, 64).n_layers == 1 and architecture(cfg, 2, 64).n_layers == 2
        assert cfg.total_passes == sum(passes for passes, _ in schedule(cfg))
    paper = IWAEConfig.for_profile("paper")
    assert paper.total_passes == 3280 and paper.dataset == "mnist" and paper.layers == (1, 2)
    assert paper.eval_k == 5000 and paper.batch_size == 20 and adam_settings(paper).eps == 1e-4
    assert architecture(paper, 2, 784) == paper_architecture(2)
    with pytest.raises(ConfigError):
        IWAEConfig.for_profile("book", ks=(1, 5))          # Table 2 needs k = continue_k
    with pytest.raises(ConfigError):
        IWAEConfig.for_profile("book", dataset="cifar")
    with pytest.raises(ConfigError):
        IWAEConfig.for_profile("book", latent_2l=(3,))
    assert IWAEConfig.for_profile("book", ks=(1, 5), continue_passes=0).ks == (1, 5)


def test_paper_profile_constructs_and_steps_on_tiny_mnist(tiny_mnist, tmp_path):
    cfg = IWAEConfig.for_profile("paper", data_root=str(tiny_mnist), checkpoint_dir=str(tmp_path / "ckpt"),
                                 device="cpu", max_test=2)
    data, x_test = load_data(cfg)
    assert data.dim == 784 and x_test.shape == (2, 784)
    for n_layers in cfg.layers:
        model = IWAE(architecture(cfg, n_layers, data.dim), 2, seeds=cfg.seeds[:1] * 2, x_mean=data.train.mean(0))
        hist = train(model, data.train, max(cfg.ks), [False, True], [(1, schedule(cfg)[0][1])], cfg.batch_size,
                     adam_settings(cfg), checkpoint=tmp_path / "ckpt" / f"L{n_layers}.pt",
                     identity=training_identity(cfg, "tiny", n_layers))
        assert all(math.isfinite(v) for v in hist["train_bound"][-1])
        ll = estimate_bound(model, x_test[:1], cfg.eval_k, 1, cfg.eval_chunk, cfg.eval_batch)
        assert ll.shape == (2, 1) and torch.isfinite(ll).all()
    assert (tmp_path / "ckpt" / "L2.pt").exists()


# ---------------------------------------------------------------------------
# The claims: each finding's rule on synthetic per-seed values
# ---------------------------------------------------------------------------

FINDINGS = [c for c in CLAIMS if c.kind == "finding"]
# per claim: values that must give reproduced, inconclusive and not reproduced
SYNTHETIC = {
    # test NLL: IWAE (a) below VAE (b), paired per seed
    "iwae-beats-vae": (dict(a=[30.0, 31.0, 29.5], b=[31.0, 32.1, 30.4]),
                       dict(a=[30.0, 31.0, 29.5], b=[30.1, 30.9, 30.5]),
                       dict(a=[30.0, 31.0, 29.5], b=[29.9, 30.8, 29.4])),
    # active units: IWAE (a) above VAE (b), paired per seed
    "active-units": (dict(a=[12, 13, 12], b=[9, 10, 10]), dict(a=[12, 13, 12], b=[12, 10, 12]),
                     dict(a=[12, 13, 12], b=[12, 13, 13])),
    "vae-then-iwae": (dict(a=[29.0, 29.5, 29.2], b=[29.6, 30.0, 29.9]), dict(a=[29.0, 29.5, 29.2], b=[29.6, 29.4, 29.3]),
                      dict(a=[29.0, 29.5, 29.2], b=[28.9, 29.4, 29.3])),
    "iwae-then-vae": (dict(a=[29.6, 30.0, 29.9], b=[29.0, 29.5, 29.2]), dict(a=[29.6, 29.4, 29.3], b=[29.0, 29.5, 29.2]),
                      dict(a=[28.9, 29.4, 29.1], b=[29.0, 29.5, 29.2])),
    "mnist-nll": (dict(values=[82.8, 83.0, 82.9]), dict(values=[83.5, 82.6, 83.7]), dict(values=[84.5, 84.2, 84.9])),
}


def _synthetic(claim_id):
    return SYNTHETIC[claim_id if claim_id in SYNTHETIC else claim_id.rsplit("-", 1)[0]]


@pytest.mark.parametrize("claim", FINDINGS, ids=[c.id for c in FINDINGS])
def test_each_finding_rule_gives_each_status(claim):
    for values, expected in zip(_synthetic(claim.id), (REPRODUCED, INCONCLUSIVE, NOT_REPRODUCED)):
        sc = Scorecard("iwae", "book", CLAIMS)
        assert sc.evaluate(claim.id, **values).status == expected, (claim.id, values)
    sc = Scorecard("iwae", "book", CLAIMS)      # two seeds are never enough for "reproduced"
    two = {k: v[:2] for k, v in _synthetic(claim.id)[0].items()}
    assert sc.evaluate(claim.id, **two).status == INCONCLUSIVE


def test_claims_declare_kinds_and_both_layer_counts():
    kinds = {c.id: c.kind for c in CLAIMS}
    assert kinds["bound-monotone"] == "theorem"
    assert {"iwae-beats-vae-1l", "iwae-beats-vae-2l", "active-units-1l", "active-units-2l"} <= set(kinds)
    assert "nll-improves-with-k" not in kinds     # merged into iwae-beats-vae (the same comparison)
    mnist = next(c for c in CLAIMS if c.id == "mnist-nll")
    assert "--profile paper" in mnist.needs and "download=true" in mnist.needs


def test_per_seed_pairs_models_by_seed():
    recs = [{"layers": 1, "k": 1, "objective": "VAE", "seed": s, "nll": 30.0 + s, "active": [3]} for s in (1, 0)]
    recs += [{"layers": 1, "k": 5, "objective": o, "seed": s, "nll": 20.0 + s + (o == "VAE"), "active": [2, 1]}
             for o in ("VAE", "IWAE") for s in (1, 0)]
    assert per_seed(recs, 1, 1, "IWAE") == per_seed(recs, 1, 1, "VAE") == [30.0, 31.0]   # k = 1 serves both
    assert per_seed(recs, 1, 5, "VAE") == [21.0, 22.0] and per_seed(recs, 1, 5, "IWAE", "active") == [3.0, 3.0]
    rows = [{"first": "VAE", "then": "IWAE", "seed": s, "nll_after": float(s)} for s in (2, 0, 1)]
    assert table2_per_seed(rows, "VAE", "IWAE") == [0.0, 1.0, 2.0]


# ---------------------------------------------------------------------------
# The chapter at the smoke profile
# ---------------------------------------------------------------------------

@pytest.mark.chapter
def test_smoke_chapter(smoke_run):
    m = smoke_run("iwae").metrics
    claims = {c["id"]: c for c in m["scorecard"]}
    assert set(claims) == {c.id for c in CLAIMS}
    assert claims["bound-monotone"]["status"] == PASSES     # a theorem: holds at every profile
    for cid in ("iwae-beats-vae-1l", "iwae-beats-vae-2l", "active-units-1l", "active-units-2l",
                "vae-then-iwae", "iwae-then-vae"):
        # two seeds at smoke: never "reproduced"
        assert claims[cid]["status"] in (INCONCLUSIVE, NOT_REPRODUCED), claims[cid]
    assert claims["mnist-nll"]["status"] == NOT_EVALUATED
    records = m["numbers"]["table1"]
    cfg = m["config"]
    n_models = sum(len(cfg["ks"]) * 2 - (1 in cfg["ks"]) for _ in cfg["layers"]) * cfg["n_seeds"]
    assert len(records) == n_models
    for r in records:
        assert math.isfinite(r["nll"]) and 0 < r["nll"] < 64 * math.log(2) * 2
        latents = [cfg["latent_1l"]] if r["layers"] == 1 else cfg["latent_2l"]
        assert all(0 <= a <= d for a, d in zip(r["active"], latents))
        assert r["bounds"]["1"] <= -r["nll"] + 0.5


# ---------------------------------------------------------------------------
# One place for a decoder's densities: log_prior, log_likelihood, log_joint
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("arch", [ARCH1, ARCH2], ids=["1 layer", "2 layers"])
@pytest.mark.parametrize("observation", ["bernoulli", "gaussian"])
def test_decoder_densities_match_torch_distributions(arch, observation):
    g = torch.Generator().manual_seed(0)
    model = IWAE(arch, 2, seeds=[0, 1], observation=observation, sigma2=0.05)
    model.log_sigma2[1] = math.log(0.2)                       # one sigma^2 per model
    x = torch.rand(5, arch.x_dim, generator=g)
    if observation == "bernoulli":
        x = torch.bernoulli(x, generator=g)
    hs, log_q = model.sample_posterior(x, 3, g)                # hs: [2, 3, 5, d_l]
    with torch.no_grad():
        prior = Normal(0.0, 1.0).log_prob(hs[-1]).sum(-1)
        for l in range(arch.n_layers - 1, 0, -1):
            mean, log_var = model.decoders[l](hs[l]).chunk(2, -1)
            prior = prior + Normal(mean, torch.exp(0.5 * log_var)).log_prob(hs[l - 1]).sum(-1)
        out = model.decoders[0](hs[0])
        if observation == "bernoulli":
            lik = Bernoulli(logits=out).log_prob(x.expand_as(out)).sum(-1)
        else:
            sd = torch.exp(0.5 * model.log_sigma2).reshape(2, 1, 1, 1)
            lik = Normal(torch.sigmoid(out), sd).log_prob(x.expand_as(out)).sum(-1)
        torch.testing.assert_close(model.log_prior(hs), prior, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(model.log_likelihood(x, hs), lik, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(model.log_joint(x, hs), prior + lik, rtol=1e-5, atol=1e-4)
    # the bound's weights are the joint over q, with the same samples
    lw = model.log_weights(x, 3, torch.Generator().manual_seed(7))
    hs2, lq2 = model.sample_posterior(x, 3, torch.Generator().manual_seed(7))
    torch.testing.assert_close(lw, model.log_joint(x, hs2) - lq2)


def test_log_likelihood_broadcasts_over_chains_and_keeps_sigma_through_select_and_concat():
    model = IWAE(ARCH1, 3, seeds=[0, 1, 2], observation="gaussian", sigma2=0.1)
    model.log_sigma2.copy_(torch.log(torch.tensor([0.1, 0.2, 0.3])))
    x = torch.rand(4, 12)
    h = torch.randn(3, 6, 2, 4, 3)                            # [M, chains, extra, B, d]
    assert model.log_likelihood(x, [h]).shape == (3, 6, 2, 4)
    sub = model.select([2, 0])
    torch.testing.assert_close(sub.log_sigma2, torch.log(torch.tensor([0.3, 0.1])))
    assert sub.observation == "gaussian"
    both = concat_models([sub, model])
    assert both.n_models == 5 and torch.allclose(both.log_sigma2[2:], model.log_sigma2)
    with pytest.raises(ValueError, match="observation"):
        concat_models([model, IWAE(ARCH1, 1)])
    with pytest.raises(ValueError, match="observation"):
        IWAE(ARCH1, 1, observation="poisson")
    with pytest.raises(ValueError, match="sigma2"):
        IWAE(ARCH1, 1, observation="gaussian", sigma2=0.0)
