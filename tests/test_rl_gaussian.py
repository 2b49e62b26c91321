"""The RL core's continuous-action policy: the diagonal Gaussian against torch.distributions, the
shared act/evaluate/ppo_update path, and a PPO run that learns a 1-D control task."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, Normal

from repro.rl.ppo import (GaussianActorCritic, MLPActorCritic, PPOSettings, act, build_network,
                          diag_gaussian_entropy, diag_gaussian_logprob, evaluate, gae, ppo_update)



def test_log_prob_and_entropy_equal_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean, log_std = torch.randn(5, 7, 3, generator=g), torch.randn(3, generator=g)
    a = torch.randn(5, 7, 3, generator=g)
    ref = Independent(Normal(mean, log_std.exp()), 1)
    assert torch.allclose(diag_gaussian_logprob(mean, log_std, a), ref.log_prob(a), atol=1e-5)
    assert torch.allclose(diag_gaussian_entropy(log_std.expand(5, 7, 3)), ref.entropy(), atol=1e-5)
    # state-dependent sigma broadcasts the same way
    ls = torch.randn(5, 7, 3, generator=g)
    ref = Independent(Normal(mean, ls.exp()), 1)
    assert torch.allclose(diag_gaussian_logprob(mean, ls, a), ref.log_prob(a), atol=1e-5)


def test_act_and_evaluate_serve_both_distributions():
    torch.manual_seed(0)
    obs = torch.randn(64, 4)
    gauss = build_network("gaussian", (4,), 2, 1, 16)
    assert isinstance(gauss, GaussianActorCritic)
    a, logp, v = act(gauss, obs)
    assert a.shape == (64, 2) and logp.shape == (64,) and v.shape == (64, 1)
    logp2, ent, _ = evaluate(gauss, obs, a)
    assert torch.allclose(logp, logp2)
    mean, log_std = gauss.policy(obs)
    assert torch.allclose(ent, torch.full((64,), float((log_std.detach() + 0.5 * (1 + math.log(2 * math.pi))).sum())))
    # samples come from N(mu, sigma^2): the standardised residuals have mean ~0 and variance ~1
    many = torch.stack([act(gauss, obs)[0] for _ in range(200)])
    z = (many - mean.detach()) / log_std.exp().detach()
    assert abs(float(z.mean())) < 0.03 and abs(float(z.var()) - 1) < 0.05
    cat = MLPActorCritic((4,), 3, 1, 16)
    a, logp, _ = act(cat, obs)
    assert a.shape == (64,) and a.dtype == torch.long
    assert torch.allclose(evaluate(cat, obs, a)[0], logp)


def test_ppo_update_trains_a_gaussian_policy_towards_the_rewarded_action(one_thread):
    """A one-step bandit with reward -(a - 0.7)^2: PPO's mean action moves to 0.7 and sigma shrinks."""
    torch.manual_seed(1)
    net = GaussianActorCritic((1,), 1, 1, 16)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    s = PPOSettings(lr=3e-3, gammas=(0.99,), episodic=(True,), adv_coefs=(1.0,), epochs=4, minibatches=4,
                    clip_coef=0.2, ent_coef=0.0, vf_coef=0.5)
    obs = torch.ones(256, 1)
    for _ in range(150):
        with torch.no_grad():
            a, logp, v = act(net, obs)
        r = -(a[:, 0] - 0.7).square()
        adv, ret = gae(r.view(1, -1, 1), v.view(1, -1, 1), torch.ones(1, 256), torch.zeros(256, 1),
                       torch.tensor([0.99]), 0.95, torch.tensor([True]))
        ppo_update(net, opt, {"obs": obs, "actions": a, "logprobs": logp, "values": v,
                              "returns": ret[0], "advantages": adv[0]}, s)
    mean, log_std = net.policy(obs[:1])
    assert abs(float(mean) - 0.7) < 0.05
    assert float(log_std) < -0.5 - 0.3  # sigma shrank from its initial exp(-0.5)
