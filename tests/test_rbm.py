"""Binary RBMs, exact partition functions, the RBM annealing path, AIS and RAISE; the chapter at smoke."""
from __future__ import annotations

import math

import pytest
import torch

from repro import ais
from repro import rbm as R
from repro.config import ConfigError

D = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny ops: see conftest


def _random_rbm(V, H, scale=1.0, seed=0) -> R.RBM:
    g = torch.Generator().manual_seed(seed)
    return R.RBM(torch.randn(V, H, generator=g, dtype=D) * scale, torch.randn(V, generator=g, dtype=D) * scale,
                 torch.randn(H, generator=g, dtype=D) * scale)


def _brute_log_Z(rbm: R.RBM) -> float:
    """Sum exp(-E(v, h)) over every joint state, both layers enumerated."""
    V, H = rbm.n_visible, rbm.n_hidden
    v = R.binary_states(0, 2**V, V)  # [2^V, V]
    h = R.binary_states(0, 2**H, H)  # [2^H, H]
    neg_E = (v @ rbm.b)[:, None] + (h @ rbm.c)[None, :] + v @ rbm.W @ h.T  # [2^V, 2^H]
    return float(torch.logsumexp(neg_E.reshape(-1), 0))


def _all_visible_probs(rbm: R.RBM) -> tuple[torch.Tensor, torch.Tensor]:
    v = R.binary_states(0, 2**rbm.n_visible, rbm.n_visible)
    return v, torch.softmax(R.log_f(rbm, v), 0)


def _gibbs_matrix(rbm: R.RBM) -> torch.Tensor:
    """Exact v -> h -> v transition matrix T[v, v'] = sum_h p(h|v) p(v'|h)."""
    V, H = rbm.n_visible, rbm.n_hidden
    v, h = R.binary_states(0, 2**V, V), R.binary_states(0, 2**H, H)
    ph = R.p_h_given_v(rbm, v)  # [2^V, H]
    P_h = torch.exp((h[None] * ph[:, None].log() + (1 - h[None]) * (1 - ph[:, None]).log()).sum(-1))  # [2^V, 2^H]
    pv = R.p_v_given_h(rbm, h)  # [2^H, V]
    P_v = torch.exp((v[None] * pv[:, None].log() + (1 - v[None]) * (1 - pv[:, None]).log()).sum(-1))  # [2^H, 2^V]
    return P_h @ P_v


def _intermediate(base: R.RBM, target: R.RBM, beta: float) -> R.RBM:
    """p_beta of the annealing path written as an ordinary RBM."""
    return R.RBM(beta * target.W, (1 - beta) * base.b + beta * target.b, beta * target.c)


@pytest.mark.parametrize("V,H", [(8, 6), (6, 8), (5, 5)])
def test_exact_log_Z_matches_brute_force(V, H):
    rbm = _random_rbm(V, H, scale=0.8, seed=V * 10 + H)
    want = _brute_log_Z(rbm)
    assert abs(float(R.log_partition_exact(rbm)) - want) < 1e-9
    assert abs(float(R.log_partition_exact(rbm, chunk_rows=7)) - want) < 1e-9  # chunking changes nothing
    with pytest.raises(ValueError):
        R.log_partition_exact(rbm, max_units=4)


def test_exact_log_likelihood_normalises():
    rbm = _random_rbm(7, 4, seed=3)
    v = R.binary_states(0, 2**7, 7)
    assert abs(float(R.log_likelihood_exact(rbm, v).exp().sum()) - 1.0) < 1e-10


def test_base_rate_rbm_is_the_product_of_data_marginals():
    g = torch.Generator().manual_seed(0)
    data = (torch.rand(200, 6, generator=g, dtype=D) < torch.tensor([0.1, 0.5, 0.9, 0.3, 0.7, 0.2], dtype=D)).to(D)
    base = R.base_rate_rbm(data, n_hidden=4, smoothing=0.0)
    assert torch.allclose(torch.sigmoid(base.b), data.mean(0))
    path = R.RBMAnnealingPath(base, _random_rbm(6, 4))
    assert abs(float(path.log_Z0) - float(R.log_partition_exact(base))) < 1e-10
    # log p_0(v) of the base-rate RBM is the independent-Bernoulli log-likelihood
    p = data.mean(0)
    want = (data * p.log() + (1 - data) * (1 - p).log()).sum(1)
    assert torch.allclose(R.log_likelihood_exact(base, data), want)


def test_gibbs_matrix_leaves_intermediate_distributions_invariant():
    target = _random_rbm(5, 3, scale=1.5, seed=4)
    base = R.base_rate_rbm(R.binary_states(0, 32, 5)[::3], 3)
    for beta in (0.0, 0.3, 1.0):
        m = _intermediate(base, target, beta)
        _, p = _all_visible_probs(m)
        T = _gibbs_matrix(m)
        assert torch.allclose(T.sum(1), torch.ones(32, dtype=D))
        assert torch.allclose(p @ T, p, atol=1e-12)
        # detailed balance: the kernel is reversible, so RAISE can reuse it in reverse
        assert torch.allclose(p[:, None] * T, (p[:, None] * T).T, atol=1e-12)


def test_sampled_path_transition_preserves_the_exact_marginal():
    """Draw exact samples of p_beta, apply one sampled transition of the path, compare histograms."""
    target = _random_rbm(5, 3, scale=1.5, seed=5)
    base = R.base_rate_rbm(R.binary_states(0, 32, 5)[1::2], 3)
    g = torch.Generator().manual_seed(0)
    path = R.RBMAnnealingPath(base, target, g)
    beta = 0.6
    v_all, p = _all_visible_probs(_intermediate(base, target, beta))
    n = 200_000
    idx = torch.multinomial(p, n, replacement=True, generator=g)
    v1, _ = path.transition(path.state(v_all[idx]), beta)
    code = (v1 * (2 ** torch.arange(5, dtype=D))).sum(1).long()
    freq = torch.bincount(code, minlength=32).to(D) / n
    sigma = (p * (1 - p) / n).sqrt()
    assert float(((freq - p).abs() / sigma).max()) < 5.0


def test_path_endpoints_and_increments_agree_with_the_rbm():
    target = _random_rbm(6, 4, seed=6)
    base = R.base_rate_rbm(R.binary_states(0, 64, 6)[::5], 4)
    path = R.RBMAnnealingPath(base, target)
    v = R.binary_states(0, 64, 6)
    x = path.state(v)
    assert torch.allclose(path.log_f(x, 1.0), R.log_f(target, v))
    assert torch.allclose(path.log_f(x, 0.0), R.log_f(base, v))  # includes the H log 2 of the base's hiddens
    for beta in (0.25, 0.8):
        assert torch.allclose(path.log_f(x, beta), R.log_f(_intermediate(base, target, beta), v))
    assert torch.allclose(path.log_weight_increment(x, 0.2, 0.7), path.log_f(x, 0.7) - path.log_f(x, 0.2))


def test_ais_with_one_step_is_importance_sampling_from_the_base_rates():
    target = _random_rbm(6, 4, seed=7)
    base = R.base_rate_rbm(R.binary_states(0, 64, 6)[::3], 4)
    g = torch.Generator().manual_seed(1)
    path = R.RBMAnnealingPath(base, target, g)
    x0 = path.sample_base(50_000)
    res = ais.ais(path, x0, ais.linear_schedule(1))
    v0 = x0[0]
    assert torch.allclose(res.log_w, R.log_f(target, v0) - R.log_f(base, v0))
    # and plain importance sampling is unbiased for Z_B / Z_A
    est = float(ais.log_Z_estimate(res.log_w, float(path.log_Z0), 0))
    assert abs(est - float(R.log_partition_exact(target))) < 0.05


def test_ais_converges_to_the_exact_log_Z():
    target = _random_rbm(12, 8, scale=0.7, seed=8)
    base = R.base_rate_rbm(R.binary_states(0, 4096, 12)[::7], 8)
    g = torch.Generator().manual_seed(2)
    path = R.RBMAnnealingPath(base, target, g)
    log_Z = float(R.log_partition_exact(target))
    est, log_w = R.ais_log_Z(path, ais.linear_schedule(500), n_chains=100, n_reps=4)
    assert est.shape == (4,) and log_w.shape == (4, 100)
    assert float((est - log_Z).abs().max()) < 0.05
    coarse, _ = R.ais_log_Z(path, ais.linear_schedule(3), n_chains=100, n_reps=4)
    assert float((coarse - log_Z).abs().mean()) > float((est - log_Z).abs().mean())


def _p_ann(path: R.RBMAnnealingPath, betas: list[float]) -> torch.Tensor:
    """Exact visible marginal of the annealing model: p_0 T_1 ... T_K (tiny RBMs only)."""
    V = path.target.n_visible
    v = R.binary_states(0, 2**V, V)
    p = torch.softmax(R.log_f(path.base, v), 0)
    for beta in betas[1:]:
        p = p @ _gibbs_matrix(_intermediate(path.base, path.target, beta))
    return p


def test_raise_is_unbiased_for_p_ann_and_conservative():
    target = _random_rbm(5, 4, scale=2.0, seed=9)
    base = R.base_rate_rbm(R.binary_states(0, 32, 5)[::2], 4)
    g = torch.Generator().manual_seed(3)
    path = R.RBMAnnealingPath(base, target, g)
    betas = ais.linear_schedule(4)
    v_all = R.binary_states(0, 32, 5)
    p_ann = _p_ann(path, betas.tolist())
    p_exact = torch.softmax(R.log_f(target, v_all), 0)
    assert float((p_ann - p_exact).abs().max()) > 1e-3, "K=4 should leave p_ann visibly different from p"
    reps = 20_000
    est = R.raise_log_likelihood(path, v_all, betas, n_reps=reps)  # [reps, 32]
    assert est.shape == (reps, 32)
    # unbiased in probability space: E[p_hat(v)] = p_ann(v)
    ratio = est.exp().mean(0) / p_ann
    se = est.exp().std(0) / math.sqrt(reps) / p_ann
    assert float(((ratio - 1).abs() / se).max()) < 5.0
    # conservative in log space: E[log p_hat(v)] <= log p_ann(v)
    assert bool((est.mean(0) <= p_ann.log() + 3 * est.std(0) / math.sqrt(reps)).all())
    assert float((p_ann.log() - est.mean(0)).mean()) > 0.01


def test_raise_approaches_the_exact_log_likelihood_at_large_K():
    target = _random_rbm(10, 6, scale=0.8, seed=10)
    base = R.base_rate_rbm(R.binary_states(0, 1024, 10)[::5], 6)
    g = torch.Generator().manual_seed(4)
    path = R.RBMAnnealingPath(base, target, g)
    v = R.binary_states(0, 1024, 10)[::8]  # 128 test points
    exact = float(R.log_likelihood_exact(target, v).mean())
    fine = float(R.raise_log_likelihood(path, v, ais.linear_schedule(500), n_reps=4).mean())
    coarse = float(R.raise_log_likelihood(path, v, ais.linear_schedule(5), n_reps=4).mean())
    assert coarse < fine <= exact + 0.02
    assert exact - fine < 0.05


def test_training_improves_the_exact_log_likelihood_over_the_base_rates():
    train, test = R.load_binary_data("digits")
    train, test = train[:400], test[:200]
    base = R.base_rate_rbm(train, 6)
    base_ll = float(R.log_likelihood_exact(base, test).mean())
    for method in ("cd1", "pcd"):
        rbm, hist = R.train_rbm(train, R.TrainSettings(n_hidden=6, method=method, epochs=30, batch_size=20, lr=0.1))
        assert len(hist.recon_error) == 30
        assert hist.recon_error[-1] < hist.recon_error[0]
        assert float(R.log_likelihood_exact(rbm, test).mean()) > base_ll + 2.0


def test_parse_method_and_config_validation():
    assert R.parse_method("cd1") == (False, 1)
    assert R.parse_method("CD25") == (False, 25)
    assert R.parse_method("pcd") == (True, 1)
    assert R.method_label("cd25") == "CD-25"
    with pytest.raises(ValueError):
        R.parse_method("cd0")
    with pytest.raises(ConfigError):
        R.RaiseConfig.for_profile("book", small_hidden=30)
    with pytest.raises(ConfigError):
        R.RaiseConfig.for_profile("book", small_methods=("cd7",))
    with pytest.raises(ConfigError):
        R.RaiseConfig.for_profile("book", Ks=(1, 2))
    with pytest.raises(ConfigError):
        R.RaiseConfig.for_profile("book", schedule="piecewise", K_grid=(2, 10))
    with pytest.raises(ConfigError):
        R.RaiseConfig.for_profile("book", K_grid=(100, 10))
    with pytest.raises(ConfigError):
        R.RaiseConfig.for_profile("book", small_methods=())
    assert R.RaiseConfig.for_profile("book", large_methods=()).large_methods == ()


def test_paper_profile_builds_and_runs_briefly(tmp_path):
    cfg = R.RaiseConfig.for_profile("paper")
    assert cfg.dataset == "mnist" and cfg.large_hidden == 500 and max(cfg.K_grid) == 100_000 and not cfg.download
    assert set(cfg.large_methods) == {"cd1", "cd3", "cd25", "pcd"}
    # the real MNIST pipeline on tiny IDX files, then a step or two of every phase on CPU
    from repro.data import write_idx

    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (120, 28, 28), generator=g, dtype=torch.uint8).numpy()
    labels = torch.randint(0, 10, (120,), generator=g, dtype=torch.uint8).numpy()
    write_idx(tmp_path / "train-images-idx3-ubyte", imgs[:100])
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels[:100])
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs[100:])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[100:])
    tiny = R.RaiseConfig.for_profile("paper", device="cpu", data_root=str(tmp_path), epochs=1, small_hidden=4,
                                     large_hidden=6, small_methods=("cd1",), large_methods=("cd3",), K_grid=(3,),
                                     large_K_grid=(3,), ais_chains=4, ais_reps=2, raise_reps=2)
    train, test = R.load_binary_data(tiny.dataset, tiny.data_root, tiny.binarize)
    assert train.shape == (100, 784) and test.shape == (20, 784)
    assert set(train.unique().tolist()) <= {0.0, 1.0}
    out = R.run_experiments(tiny, log=lambda *a: None)
    assert out["n_train"] == 100 and out["n_test"] == 20
    assert len(out["small"]) == 1 and len(out["large"]) == 1
    small, large = out["small"][0], out["large"][0]
    assert small.exact is not None and large.exact is None
    assert len(small.ais[0]) == 2 and len(small.raise_[0]) == 2
    assert all(math.isfinite(x) for x in small.ais[0] + small.raise_[0] + large.ais[0] + large.raise_[0])


@pytest.mark.chapter
def test_smoke_chapter(smoke_run):
    m = smoke_run("raise").metrics
    n = m["numbers"]
    # invariants that hold at any scale: RAISE sits below AIS at the smallest K on every RBM,
    # and every estimate is a finite log-probability below zero
    for name, curve in n["curves"].items():
        assert curve["raise_mean"][0] < curve["ais_mean"][0], name
        assert all(x < 0 for x in curve["ais_mean"] + curve["raise_mean"]), name
        if curve["exact"] is not None:
            assert curve["raise_mean"][0] < curve["exact"], name
    ids = {c["id"] for c in m["scorecard"]}
    assert {"ais_above_exact_small_K", "raise_below_exact_small_K", "converge_at_large_K",
            "large_gap_shrinks"} <= ids
