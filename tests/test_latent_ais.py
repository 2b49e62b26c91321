"""AIS over latents on a linear-Gaussian decoder, where log p(x) is exact: forward ≤ exact ≤ reverse,
the gap closing with K, AIS+encoder with the exact posterior, and the reverse run's replayed step sizes."""
from __future__ import annotations

import math

import pytest
import torch

from repro.ais import sigmoidal_schedule
from repro.latent_ais import (HMCSettings, ReplayHMC, ais_latent, bdmc_latent, gaussian_posterior_log_density,
                              replay_schedule)

LOG_2PI = math.log(2 * math.pi)


def _linear_gaussian(M=2, B=3, d=2, D=5, s2=0.1, seed=0):
    """z ~ N(0, I), x | z ~ N(W z + b, s2 I): p(x) = N(b, W W^T + s2 I); x simulated from the model."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(M, D, d, generator=g, dtype=torch.float64)
    b = torch.randn(M, 1, D, generator=g, dtype=torch.float64) * 0.5
    z_true = torch.randn(M, B, d, generator=g, dtype=torch.float64)
    x = torch.einsum("mdk,mbk->mbd", W, z_true) + b + math.sqrt(s2) * torch.randn(M, B, D, generator=g,
                                                                                   dtype=torch.float64)
    cov = W @ W.transpose(1, 2) + s2 * torch.eye(D, dtype=torch.float64)
    exact = torch.distributions.MultivariateNormal(b[:, 0][:, None], cov[:, None]).log_prob(x)   # [M, B]

    def log_prior(z):                                         # [M, C, B, d] -> [M, C, B]
        return -0.5 * (z ** 2 + LOG_2PI).sum(-1)

    def log_lik(z):
        mean = torch.einsum("mdk,mcbk->mcbd", W, z) + b[:, None]
        return -0.5 * (((x[:, None] - mean) ** 2).sum(-1) / s2 + D * (math.log(s2) + LOG_2PI))

    # exact posterior N(mu, Sigma) with Sigma = (I + W^T W / s2)^-1, mu = Sigma W^T (x - b) / s2
    prec = torch.eye(d, dtype=torch.float64) + W.transpose(1, 2) @ W / s2
    sigma = torch.linalg.inv(prec)                            # [M, d, d]
    mu = torch.einsum("mij,mdj,mbd->mbi", sigma, W, x - b) / s2
    return dict(x=x, z_true=z_true, exact=exact, log_prior=log_prior, log_lik=log_lik, mu=mu, sigma=sigma)


def test_forward_and_reverse_ais_sandwich_the_exact_log_likelihood_and_close_with_K():
    m = _linear_gaussian(s2=0.5)
    M, B, d = m["z_true"].shape
    C = 32
    gaps, errors = [], []
    for K in (10, 100, 1000):
        g = torch.Generator().manual_seed(K)
        z_exact = m["z_true"][:, None].expand(M, C, B, d).contiguous()
        res = bdmc_latent(m["log_prior"], m["log_lik"], z_exact, sigmoidal_schedule(K), generator=g)
        lower, upper = res.lower.mean(1), res.upper.mean(1)   # [M, B]: mean over chains
        se_l = res.lower.std(1) / math.sqrt(C)
        se_u = res.upper.std(1) / math.sqrt(C)
        # stochastic bounds: E[lower] <= exact <= E[upper], checked within 4 standard errors (+ slack for tiny se)
        assert bool((lower <= m["exact"] + 4 * se_l + 1e-3).all()), (K, lower - m["exact"])
        assert bool((upper >= m["exact"] - 4 * se_u - 1e-3).all()), (K, upper - m["exact"])
        gaps.append(float(res.gap.mean()))
        errors.append(float((res.forward.log_px - m["exact"]).abs().mean()))
        assert len(res.forward.accept) == K and len(res.forward.step) == K
    assert gaps[0] > gaps[1] > gaps[2] >= -0.05, gaps
    assert gaps[2] < 0.5 and gaps[2] < 0.05 * gaps[0] and errors[2] < 0.3, (gaps, errors)


def test_hmc_adapts_toward_the_target_acceptance():
    m = _linear_gaussian(M=1, B=2)
    z0 = torch.randn(1, 16, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    res = ais_latent(m["log_prior"], m["log_lik"], z0, sigmoidal_schedule(300),
                     generator=torch.Generator().manual_seed(2))
    late = res.accept[-100:]
    assert 0.45 < sum(late) / len(late) < 0.9, sum(late) / len(late)
    assert all(1e-4 <= s <= 0.5 for s in res.step) and res.step[-1] != res.step[0]


def test_ais_from_the_exact_posterior_is_exact_with_zero_variance():
    """With q = p(z|x) the encoder path is p(x)^β q(z): every weight increment is Δβ log p(x)."""
    m = _linear_gaussian(M=2, B=3)
    M, B, d = m["z_true"].shape
    C = 4
    chol = torch.linalg.cholesky(m["sigma"])                  # [M, d, d]
    g = torch.Generator().manual_seed(3)
    eps = torch.randn(M, C, B, d, generator=g, dtype=torch.float64)
    z0 = m["mu"][:, None] + torch.einsum("mij,mcbj->mcbi", chol, eps)
    prec = torch.linalg.inv(m["sigma"])
    logdet = torch.logdet(m["sigma"])

    def log_q(z):
        r = z - m["mu"][:, None]
        return -0.5 * (torch.einsum("mcbi,mij,mcbj->mcb", r, prec, r) + logdet[:, None, None] + d * LOG_2PI)

    res = ais_latent(m["log_prior"], m["log_lik"], z0, sigmoidal_schedule(20), log_proposal=log_q, generator=g)
    torch.testing.assert_close(res.log_w, m["exact"][:, None].expand(M, C, B), rtol=0, atol=1e-8)


def test_gaussian_encoder_density_matches_torch():
    mean, log_var = torch.randn(2, 1, 3, 4), torch.randn(2, 1, 3, 4)
    z = torch.randn(2, 5, 3, 4)
    ref = torch.distributions.Normal(mean, torch.exp(0.5 * log_var)).log_prob(z).sum(-1)
    torch.testing.assert_close(gaussian_posterior_log_density(mean, log_var)(z), ref)


def test_reverse_run_replays_the_forward_step_sizes_without_adapting():
    hist = [torch.full((3,), 0.01 * (k + 1), dtype=torch.float64) for k in range(4)]
    order = replay_schedule(hist, 4)
    assert [float(s[0]) for s in order] == [0.04, 0.03, 0.02, 0.01]
    with pytest.raises(ValueError, match="one recorded step size"):
        replay_schedule(hist, 5)
    hmc = HMCSettings().make(lambda x, beta: -0.5 * (x ** 2).sum(-1), adapt=False, generator=None)
    hmc.replay = order
    x = torch.zeros(3, 2, dtype=torch.float64)
    for _ in range(4):
        x = hmc(x, 1.0)
    assert hmc.step_trace == pytest.approx([0.04, 0.03, 0.02, 0.01])
    with pytest.raises(RuntimeError, match="shorter"):
        hmc(x, 1.0)
    assert isinstance(hmc, ReplayHMC)
