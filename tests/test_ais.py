"""The model-agnostic AIS core: schedules, forward/reverse annealing, bookkeeping."""
from __future__ import annotations

import math

import pytest
import torch

from repro import ais


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny ops: see conftest


@pytest.mark.parametrize("name", ais.SCHEDULES)
@pytest.mark.parametrize("K", [3, 10, 1001])
def test_schedules_monotone_from_0_to_1(name, K):
    b = ais.make_schedule(name, K)
    assert b.shape == (K + 1,)
    assert b.dtype == torch.float64
    assert float(b[0]) == 0.0 and float(b[-1]) == 1.0
    assert bool((b[1:] > b[:-1]).all()), "schedule must be strictly increasing"


def test_linear_schedule_values():
    assert torch.allclose(ais.linear_schedule(4), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))


def test_sigmoidal_schedule_is_symmetric_and_denser_at_the_ends():
    b = ais.sigmoidal_schedule(100, delta=4.0)
    assert torch.allclose(b + b.flip(0), torch.ones(101, dtype=torch.float64), atol=1e-12)
    steps = b[1:] - b[:-1]
    assert float(steps[0]) < float(steps[50])


def test_piecewise_schedule_follows_segment_weights():
    K = 1450
    b = ais.piecewise_schedule(K)  # 500 : 4000 : 10000 steps on [0,.5], [.5,.9], [.9,1]
    assert int(((b > 0) & (b <= 0.5)).sum()) == 50
    assert int(((b > 0.5) & (b <= 0.9)).sum()) == 400
    assert int((b > 0.9).sum()) == 1000
    with pytest.raises(ValueError):
        ais.piecewise_schedule(2)


def test_bad_schedules_are_rejected():
    with pytest.raises(ValueError):
        ais.make_schedule("cosine", 10)
    with pytest.raises(ValueError):
        ais.linear_schedule(0)
    with pytest.raises(ValueError):
        ais.ais(ais.FunctionalPath(lambda x, b: x, lambda x, b: x), torch.zeros(3), [0.0, 0.5])


def test_effective_sample_size_and_log_mean_exp():
    lw = torch.zeros(4, 10, dtype=torch.float64)
    assert torch.allclose(ais.effective_sample_size(lw, dim=1), torch.full((4,), 10.0, dtype=torch.float64))
    lw2 = torch.tensor([0.0, -1e3, -1e3], dtype=torch.float64)
    assert abs(float(ais.effective_sample_size(lw2)) - 1.0) < 1e-9
    x = torch.randn(7, 5, dtype=torch.float64)
    assert torch.allclose(ais.log_mean_exp(x, 1), x.exp().mean(1).log())
    assert torch.allclose(ais.normalised_weights(x, 1).sum(1), torch.ones(7, dtype=torch.float64))


# A tractable path on the real line: f_beta(x) = exp(-x^2 / (2 s_beta^2)) with
# 1 / s_beta^2 = (1 - beta) / s0^2 + beta / s1^2, so Z_beta = sqrt(2 pi) s_beta.
S0, S1 = 3.0, 0.5


def _s(beta: float) -> float:
    return 1.0 / math.sqrt((1 - beta) / S0**2 + beta / S1**2)


def _gauss_path(generator):
    def log_f(x, beta):
        return -0.5 * x**2 / _s(beta) ** 2

    def transition(x, beta):  # any p_beta-invariant kernel: an autoregressive (Crank-Nicolson) step
        rho = 0.5
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return rho * x + math.sqrt(1 - rho**2) * _s(beta) * noise

    return ais.FunctionalPath(log_f, transition)


def test_ais_k1_is_simple_importance_sampling():
    g = torch.Generator().manual_seed(0)
    path = _gauss_path(g)
    x0 = torch.randn(1000, generator=g, dtype=torch.float64) * S0
    res = ais.ais(path, x0, ais.linear_schedule(1))
    assert torch.allclose(res.log_w, path.log_f(x0, 1.0) - path.log_f(x0, 0.0))
    assert torch.equal(res.x, x0), "K=1 AIS must not move the proposal samples"


def test_ais_and_bdmc_on_a_gaussian_path():
    g = torch.Generator().manual_seed(1)
    path = _gauss_path(g)
    log_Z0, log_Z1 = math.log(math.sqrt(2 * math.pi) * S0), math.log(math.sqrt(2 * math.pi) * S1)
    n = 4000
    x0 = torch.randn(n, generator=g, dtype=torch.float64) * S0
    x1 = torch.randn(n, generator=g, dtype=torch.float64) * S1  # exact target samples
    betas = ais.sigmoidal_schedule(1000)
    res = ais.bdmc(path, x0, x1, betas, log_Z0)
    # the forward half averages to an unbiased Z; each per-chain log is a lower bound in expectation
    assert abs(float(ais.log_mean_exp(res.lower, 0)) - log_Z1) < 0.02
    assert float(res.lower.mean()) <= log_Z1 + 1e-3
    assert float(res.upper.mean()) >= log_Z1 - 1e-3
    assert 0 <= float(res.gap.mean()) < 0.03  # the gap shrinks like 1/K (0.08 at K=200)
    # with few steps the bracket is wide and still brackets the truth
    coarse = ais.bdmc(path, x0, x1, ais.linear_schedule(2), log_Z0)
    assert float(coarse.lower.mean()) < log_Z1 < float(coarse.upper.mean())
    assert float(coarse.gap.mean()) > float(res.gap.mean())


def test_ais_record_trace_matches_final_weight():
    g = torch.Generator().manual_seed(2)
    path = _gauss_path(g)
    x0 = torch.randn(50, generator=g, dtype=torch.float64) * S0
    res = ais.ais(path, x0, ais.linear_schedule(20), record=(5, 20))
    assert res.trace.shape == (2, 50)
    assert torch.equal(res.trace[-1], res.log_w)
    rev = ais.reverse_anneal(path, x0, ais.linear_schedule(20), record=(20,))
    assert torch.equal(rev.trace[-1], rev.log_w)


def test_hmc_leaves_a_gaussian_invariant_and_drives_ais():
    g = torch.Generator().manual_seed(5)
    log_f = lambda x, beta: -0.5 * (x**2).sum(-1) / _s(beta) ** 2  # noqa: E731  [B, D] -> [B]
    hmc = ais.HMC(log_f, n_leapfrog=10, step_size=0.05, adapt=False, generator=g)
    x = torch.randn(20000, 2, generator=g, dtype=torch.float64) * _s(0.5)  # exact samples of p_0.5
    for _ in range(5):
        x = hmc(x, 0.5)
    assert 0.0 < float(hmc.accept_rate) <= 1.0
    assert abs(float(x.var(0).mean()) / _s(0.5) ** 2 - 1.0) < 0.05
    assert abs(float(x.mean())) < 0.03
    # AIS with adaptive HMC transitions on the 2-d Gaussian path: log Z_1 = 2 log(sqrt(2 pi) s_1)
    hmc = ais.HMC(log_f, n_leapfrog=5, step_size=0.01, generator=g)
    path = ais.FunctionalPath(log_f, hmc)
    x0 = torch.randn(1000, 2, generator=g, dtype=torch.float64) * S0
    res = ais.ais(path, x0, ais.linear_schedule(200))
    log_Z0, log_Z1 = 2 * math.log(math.sqrt(2 * math.pi) * S0), 2 * math.log(math.sqrt(2 * math.pi) * S1)
    assert abs(float(ais.log_Z_estimate(res.log_w, log_Z0, 0)) - log_Z1) < 0.05
    assert float(hmc.step.min()) > 0.01, "the step size should have grown from its start of 0.01"
