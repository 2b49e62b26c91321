"""Binary RBMs, exact partition functions, the RBM annealing path, AIS and RAISE; the chapter at smoke."""
from __future__ import annotations

import math

import pytest
import torch

from repro import ais
from repro import rbm as R
from repro.chapters.raise_rbm import config as raise_config
from repro.chapters.raise_rbm import experiments as raise_ex
from repro.config import ConfigError

D = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny ops: see conftest


def _random_rbm(V, H, scale=1.0, seed=0) -> R.RBM:
    return raise_ex.random_rbm(V, H, scale, torch.Generator().manual_seed(seed))


_brute_log_Z = raise_ex.brute_force_log_Z  # both layers enumerated: the plain reference


def _all_visible_probs(rbm: R.RBM) -> tuple[torch.Tensor, torch.Tensor]:
    v = R.binary_states(0, 2**rbm.n_visible, rbm.n_visible)
    return v, torch.softmax(R.log_f(rbm, v), 0)


def _gibbs_matrix(rbm: R.RBM) -> torch.Tensor:
    return R.gibbs_transition_matrix(rbm)


def _intermediate(base: R.RBM, target: R.RBM, beta: float) -> R.RBM:
    """p_beta of the annealing path written as an ordinary RBM."""
    return R.intermediate_rbm(R.RBMAnnealingPath(base, target), beta)


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
    return R.annealing_marginal_exact(path, betas)


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
    train, test = raise_ex.load_binary_data("digits")
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
        raise_config.RaiseConfig.for_profile("book", small_hidden=30)
    with pytest.raises(ConfigError):
        raise_config.RaiseConfig.for_profile("book", small_methods=("cd7",))
    with pytest.raises(ConfigError):
        raise_config.RaiseConfig.for_profile("book", Ks=(1, 2))
    with pytest.raises(ConfigError):
        raise_config.RaiseConfig.for_profile("book", schedule="piecewise", K_grid=(2, 10))
    with pytest.raises(ConfigError):
        raise_config.RaiseConfig.for_profile("book", K_grid=(100, 10))
    with pytest.raises(ConfigError):
        raise_config.RaiseConfig.for_profile("book", small_methods=())
    assert raise_config.RaiseConfig.for_profile("book", large_methods=()).large_methods == ()


def test_paper_profile_builds_and_runs_briefly(tmp_path):
    cfg = raise_config.RaiseConfig.for_profile("paper")
    assert cfg.dataset == "mnist" and cfg.large_hidden == 500 and max(cfg.K_grid) == 100_000 and not cfg.download
    assert set(cfg.large_methods) == {"cd1", "cd3", "cd25", "pcd"}
    # the real MNIST pipeline on tiny IDX files, then a step or two of every phase on CPU
    from repro.data import write_idx

    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (120, 28, 28), generator=g, dtype=torch.uint8).numpy()
    labels = torch.randint(0, 10, (120,), generator=g, dtype=torch.uint8).numpy()
    mnist = tmp_path / "mnist"  # data_root holds one folder per data set
    mnist.mkdir()
    write_idx(mnist / "train-images-idx3-ubyte", imgs[:100])
    write_idx(mnist / "train-labels-idx1-ubyte", labels[:100])
    write_idx(mnist / "t10k-images-idx3-ubyte.gz", imgs[100:])
    write_idx(mnist / "t10k-labels-idx1-ubyte.gz", labels[100:])
    tiny = raise_config.RaiseConfig.for_profile(
        "paper", device="cpu", data_root=str(tmp_path), epochs=1, small_hidden=4, large_hidden=6,
        small_methods=("cd1",), large_methods=("cd3",), K_grid=(3,), large_K_grid=(3,), ais_chains=4, ais_reps=2,
        raise_reps=2, bias_reps=5)
    train, test = raise_ex.load_binary_data(tiny.dataset, tiny.data_root, tiny.binarise)
    assert train.shape == (100, 784) and test.shape == (20, 784)
    assert set(train.unique().tolist()) <= {0.0, 1.0}
    out = raise_ex.run_experiments(tiny, log=lambda *a: None)
    assert out["n_train"] == 100 and out["n_test"] == 20
    assert len(out["small"]) == 1 and len(out["large"]) == 1
    small, large = out["small"][0], out["large"][0]
    assert small.exact is not None and large.exact is None
    assert len(small.ais[0]) == 2 and len(small.raise_[0]) == 2
    assert len(small.ais_bias_runs) == 5 and large.ais_bias_runs is None
    assert all(math.isfinite(x) for x in small.ais[0] + small.raise_[0] + large.ais[0] + large.raise_[0])


def test_train_rbm_checkpoint_resume_and_mismatch(tmp_path, monkeypatch):
    from repro.checkpoint import CheckpointMismatch

    train, _ = raise_ex.load_binary_data("digits")
    train = train[:300]
    s = R.TrainSettings(n_hidden=5, method="pcd", epochs=6, batch_size=30, lr=0.1, seed=3)
    want, want_hist = R.train_rbm(train, s)
    # a run interrupted during epoch 5 (last checkpoint: epoch 4), then resumed, gives the same RBM
    ck = tmp_path / "rbm.pt"
    real_epoch = R._train_epoch

    def interrupted(st, *args):
        if st.epoch == 4:
            raise KeyboardInterrupt
        return real_epoch(st, *args)

    monkeypatch.setattr(R, "_train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        R.train_rbm(train, s, checkpoint=ck, checkpoint_every=2, identity=R.make_identity("t", s.__dict__))
    monkeypatch.setattr(R, "_train_epoch", real_epoch)
    got, got_hist = R.train_rbm(train, s, checkpoint=ck, checkpoint_every=2, identity=R.make_identity("t", s.__dict__))
    for a, b in zip((want.W, want.b, want.c), (got.W, got.b, got.c)):
        assert torch.equal(a, b)
    assert got_hist.recon_error == want_hist.recon_error
    # resuming a finished run does no more work and returns the same model
    again, _ = R.train_rbm(train, s, checkpoint=ck, identity=R.make_identity("t", s.__dict__))
    assert torch.equal(again.W, want.W)
    # a checkpoint written with other hyperparameters is refused
    other = R.TrainSettings(**{**s.__dict__, "lr": 0.05})
    with pytest.raises(CheckpointMismatch):
        R.train_rbm(train, other, checkpoint=ck)  # default identity: the settings
    with pytest.raises(CheckpointMismatch):
        R.train_rbm(train, s, checkpoint=ck, identity=R.make_identity("t", other.__dict__))


def test_chapter_checkpoints_through_the_config(tmp_path):
    train, _ = raise_ex.load_binary_data("digits")
    cfg = raise_config.RaiseConfig.for_profile("smoke", epochs=2, checkpoint_dir=str(tmp_path))
    m1, _ = raise_ex.train_one(cfg, train[:200], "small", 4, "cd1", 0)
    assert (tmp_path / "raise-small-cd1-4h.pt").exists()
    m2, _ = raise_ex.train_one(cfg, train[:200], "small", 4, "cd1", 0)  # resumed from the finished checkpoint
    assert torch.equal(m1.W, m2.W)
    from repro.checkpoint import CheckpointMismatch

    with pytest.raises(CheckpointMismatch):
        other = raise_config.RaiseConfig.for_profile("smoke", epochs=2, lr=0.2, checkpoint_dir=str(tmp_path))
        raise_ex.train_one(other, train[:200], "small", 4, "cd1", 0)


def test_config_imports_no_torch_and_params_is_fast():
    import subprocess
    import sys

    code = "import sys, repro.chapters.raise_rbm.config; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    out = subprocess.run([sys.executable, "-m", "repro", "params", "raise"], capture_output=True, text=True,
                         check=True).stdout
    assert "K_grid" in out and "checkpoint_dir" in out


def test_config_mirrors_the_library_constants():
    assert raise_config.MAX_ENUMERATION_UNITS == R.MAX_ENUMERATION_UNITS
    assert raise_config.SCHEDULES == ais.SCHEDULES
    assert raise_config.DTYPE_CHOICES == tuple(raise_ex.DTYPES)
    for m in raise_config.METHOD_CHOICES:
        R.parse_method(m)
    ids = [c.id for c in raise_config.CLAIMS]
    assert len(ids) == len(set(ids))
    assert {c.id for c in raise_config.CLAIMS if c.kind == "finding"} == {
        "ais_above_exact_small_K", "raise_below_exact_small_K", "bracket_every_K", "converge_at_large_K",
        "ais_raise_agree_large"}


def _status(claim_id: str, **values) -> str:
    from repro.scorecard import Scorecard

    sc = Scorecard("raise", "book", raise_config.CLAIMS)
    return sc.evaluate(claim_id, **values).status


def test_finding_rules_give_each_status_on_synthetic_values():
    # AIS − exact per AIS run: clearly above 0 / above but within 2 s.e. / below
    assert _status("ais_above_exact_small_K", values=[0.30, 0.35, 0.40, 0.32]) == "reproduced"
    assert _status("ais_above_exact_small_K", values=[0.5, -0.4, 0.3, -0.2]) == "inconclusive"
    assert _status("ais_above_exact_small_K", values=[-0.1, -0.05, 0.02]) == "not reproduced"
    assert _status("ais_above_exact_small_K", values=[0.3, 0.31]) == "inconclusive"  # too few runs
    # RAISE − exact per RAISE run
    assert _status("raise_below_exact_small_K", values=[-1.3, -1.35, -1.32]) == "reproduced"
    assert _status("raise_below_exact_small_K", values=[-0.5, 0.4, -0.3]) == "inconclusive"
    assert _status("raise_below_exact_small_K", values=[0.1, 0.2, 0.15]) == "not reproduced"
    # every (RBM, K) case
    assert _status("bracket_every_K", passed=[True] * 21, values=[0.0] * 21) == "reproduced"
    assert _status("bracket_every_K", passed=[True] * 20 + [False]) == "inconclusive"
    assert _status("bracket_every_K", passed=[False] * 15 + [True] * 6) == "not reproduced"
    # estimate − exact at the largest K, tolerance 0.1
    tol = raise_config.CONVERGE_TOL
    assert _status("converge_at_large_K", values=[0.01, -0.01, 0.0, 0.005]) == "reproduced"
    assert _status("converge_at_large_K", values=[0.9 * tol, 0.5 * tol, 1.3 * tol]) == "inconclusive"
    assert _status("converge_at_large_K", values=[2 * tol, 2.1 * tol, 1.9 * tol]) == "not reproduced"
    # AIS − RAISE on the large RBM
    tol = raise_config.AGREE_TOL
    assert _status("ais_raise_agree_large", values=[0.1 * tol, 0.12 * tol, 0.08 * tol]) == "reproduced"
    assert _status("ais_raise_agree_large", values=[0.2 * tol, 1.5 * tol, 0.4 * tol]) == "inconclusive"
    assert _status("ais_raise_agree_large", values=[3 * tol, 2.5 * tol, 3.2 * tol]) == "not reproduced"


def _curve(name, exact, ais_rows, raise_rows):
    K = list(range(1, len(ais_rows) + 1))
    return raise_ex.EstimateCurve(name, "cd1", 3, K, ais_rows, raise_rows, exact, [1.0] * len(K), 0.0)


def test_weakest_case_decides_like_requiring_every_case():
    a = _curve("A", -10.0, [[-9.0, -9.1, -8.9], [-10.0, -9.99, -10.01]],
               [[-11.0, -11.1, -10.9], [-10.0, -10.01, -9.99]])
    b = _curve("B", -20.0, [[-19.99, -19.95, -20.02], [-20.0, -20.01, -19.99]],
               [[-20.5, -20.6, -20.4], [-20.2, -20.3, -20.0]])
    name, vals = raise_ex.small_K_values([a, b], "ais")
    assert name == "B" and _status("ais_above_exact_small_K", values=vals) == "inconclusive"
    name, vals = raise_ex.small_K_values([a, b], "raise")
    assert name == "A" or name == "B"
    assert _status("raise_below_exact_small_K", values=vals) == "reproduced"
    name, vals = raise_ex.converge_values([a, b], raise_config.CONVERGE_TOL)
    assert name == "B RAISE"  # mean error 0.17 misses the 0.1 tolerance
    assert _status("converge_at_large_K", values=vals) == "not reproduced"
    passed, violation, labels = raise_ex.bracket_values([a, b], raise_config.Z)
    assert len(passed) == 4 and all(passed) and labels[0] == "A K=1"
    assert raise_ex.margin_in_se([1.0, 1.0], lambda m: m) == math.inf


def test_implementation_checks_pass():
    for check in (raise_ex.check_enumeration, raise_ex.check_ais_unbiased, raise_ex.check_raise_unbiased):
        ok, text = check(0)
        assert ok, text


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
    rows = {c["id"]: c for c in m["scorecard"]}
    assert set(rows) == {c.id for c in raise_config.CLAIMS}
    for cid in ("exact_logZ_enumeration", "ais_unbiased_in_Z", "raise_unbiased_for_p_ann"):
        assert rows[cid]["status"] == "passes", rows[cid]
    assert rows["sm2008_cd25"]["status"] == "not evaluated"
    assert rows["raise_below_exact_small_K"]["status"] == "reproduced"
