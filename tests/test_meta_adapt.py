"""The meta-learner of Al-Shedivat et al. (2018) in ``repro.meta.adapt``: importance weights,
second-order meta-gradients against finite differences, the meta-gradient clip, per-group batched
collection, learning on a toy task family where adaptation is needed, checkpoint/resume, settings."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.func import functional_call

from repro.checkpoint import CheckpointMismatch
from repro.meta.adapt import (MetaPolicy, MetaSettings, Trajectories, actor_parameters, adapt, advantages, collect,
                              evaluate_sequences, importance_weighted_pg_loss, importance_weights, init_alpha,
                              meta_gradients, meta_objective, meta_train, policy_logprob, rewards_to_go,
                              stack_params, tracking_update, train_fixed)
from repro.rl.ppo import GaussianActorCritic, diag_gaussian_logprob


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class ToyGoalEnv:
    """N points on a line that walk towards their task's goal g: x += 0.25 clip(a, -1, 1),
    reward -|x - g|, obs (x, t / T); fixed horizon, every arena resets together."""

    def __init__(self, num_envs: int, episode_steps: int = 10):
        self.num_envs, self.episode_steps = num_envs, episode_steps
        self.observation_space = SimpleNamespace(shape=(num_envs, 2))
        self.action_space = SimpleNamespace(shape=(num_envs, 1))
        self.goals = np.zeros((num_envs, 1))
        self.rng = np.random.default_rng(0)

    def set_tasks(self, params):
        self.goals = np.broadcast_to(np.asarray(params, float), (self.num_envs, 1)).copy()

    def _obs(self):
        return np.concatenate([self.x, np.full((self.num_envs, 1), self.t / self.episode_steps)], 1).astype(np.float32)

    def reset(self, seed=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.x = 0.05 * self.rng.standard_normal((self.num_envs, 1))
        self.t = 0
        return self._obs(), {}

    def step(self, actions):
        a = np.clip(np.asarray(actions, float).reshape(self.num_envs, 1), -1, 1)
        self.x = self.x + 0.25 * a
        self.t += 1
        reward = -np.abs(self.x - self.goals)[:, 0]
        truncated = np.full(self.num_envs, self.t >= self.episode_steps)
        return self._obs(), reward, np.zeros(self.num_envs, bool), truncated, {}


def sign_pairs(groups, rng):
    """Consecutive tasks with the same goal, on a random side: no single policy serves both sides."""
    goal = rng.choice([-1.0, 1.0], size=(groups, 1)) * rng.uniform(0.6, 1.0, size=(groups, 1))
    return goal, goal


TOY = MetaSettings(hidden=16, groups=8, alpha_init=0.05, outer_lr=0.01, outer_epochs=3, gamma=0.9)


def _tiny_policy(seed=0, dtype=torch.float64):
    policy = MetaPolicy(2, 1, hidden=3, init_log_std=-0.3, generator=torch.Generator().manual_seed(seed)).to(dtype)
    return policy, {k: v.detach().clone() for k, v in policy.named_parameters()}


def _random_traj(policy, params_g, gen, groups=2, m=3, steps=4):
    """Trajectories of random observations whose actions and behaviour log-probs come from params_g [G, ...]."""
    obs = torch.randn(groups, m, steps, 2, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        mean, log_std = torch.func.vmap(lambda p, o: functional_call(policy, p, (o,)))(params_g, obs)
        actions = mean + log_std.exp() * torch.randn(mean.shape, generator=gen, dtype=torch.float64)
        logq = diag_gaussian_logprob(mean, log_std, actions)
    rewards = torch.randn(groups, m, steps, generator=gen, dtype=torch.float64)
    return Trajectories(obs, actions, rewards, logq)


def _perturbed(theta, groups, scale, gen):
    return {k: (v.unsqueeze(0) + scale * torch.randn(groups, *v.shape, generator=gen, dtype=v.dtype))
            for k, v in theta.items()}


def test_rewards_to_go_and_group_baseline():
    r = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]]], dtype=torch.float64)  # [G=1, M=2, T=3]
    rtg = rewards_to_go(r, 0.5)
    assert torch.allclose(rtg[0, 0], torch.tensor([1 + 1 + 0.75, 2 + 1.5, 3.0], dtype=torch.float64))
    adv = advantages(r, 0.5, normalise=False)
    assert torch.allclose(adv.mean(1), torch.zeros(1, 3, dtype=torch.float64))  # per-time baseline over M
    assert torch.allclose(adv[0, 0], (rtg[0, 0] - rtg[0, 1]) / 2)
    norm = advantages(r, 0.5, normalise=True)
    assert torch.allclose(norm.std(dim=(1, 2), correction=0), torch.ones(1, dtype=torch.float64))


def test_importance_weights_are_one_and_the_gradient_is_reinforce_on_policy():
    policy, theta = _tiny_policy()
    gen = torch.Generator().manual_seed(1)
    params_g = _perturbed(theta, 2, 0.3, gen)
    traj = _random_traj(policy, params_g, gen)
    phi = {k: v.clone().requires_grad_() for k, v in params_g.items()}
    logp, _ = policy_logprob(policy, phi, traj.obs, traj.actions)
    w = importance_weights(logp, traj.logprobs)
    assert torch.allclose(w, torch.ones_like(w), atol=1e-12)
    adv = advantages(traj.rewards, 0.99)
    iw = torch.autograd.grad(importance_weighted_pg_loss(logp, traj.logprobs, adv).sum(), list(phi.values()),
                             retain_graph=True)
    reinforce = torch.autograd.grad(-(logp * adv).flatten(1).mean(1).sum(), list(phi.values()))
    for a, b in zip(iw, reinforce):
        assert torch.allclose(a, b, atol=1e-12)
    # off-policy the weights differ from 1
    logp_theta, _ = policy_logprob(policy, stack_params(theta, 2), traj.obs, traj.actions)
    assert (importance_weights(logp_theta, traj.logprobs) - 1).abs().max() > 1e-3


@pytest.mark.parametrize("alpha_per", ["tensor", "element"])
def test_meta_gradient_matches_central_finite_differences(alpha_per):
    policy, theta = _tiny_policy(seed=2)
    gen = torch.Generator().manual_seed(3)
    settings = MetaSettings(hidden=3, inner_steps=3, alpha_per=alpha_per, clip_coef=50.0, ent_coef=0.05, gamma=0.9)
    tau_i = _random_traj(policy, _perturbed(theta, 2, 0.2, gen), gen)        # played by an older theta
    tau_next = _random_traj(policy, _perturbed(theta, 2, 0.2, gen), gen)     # played by an older phi
    alpha = {k: (0.05 + 0.05 * torch.rand(a.shape, generator=gen, dtype=torch.float64))
             for k, a in init_alpha(theta, settings).items()}

    def loss_of(th, al):
        return meta_objective(policy, th, al, tau_i, tau_next, settings)[0]

    th = {k: v.clone().requires_grad_() for k, v in theta.items()}
    al = {k: v.clone().requires_grad_() for k, v in alpha.items()}
    names = [("theta", k) for k in th] + [("alpha", k) for k in al]
    tensors = [th[k] if kind == "theta" else al[k] for kind, k in names]
    grads = torch.autograd.grad(loss_of(th, al), tensors)
    eps, checked = 1e-6, 0
    for (kind, k), g in zip(names, grads):
        for idx in np.ndindex(*g.shape):
            def shifted(delta):
                t2 = {n: v.clone() for n, v in theta.items()}
                a2 = {n: v.clone() for n, v in alpha.items()}
                (t2 if kind == "theta" else a2)[k][idx] += delta
                with torch.no_grad():
                    return float(loss_of(t2, a2))
            fd = (shifted(eps) - shifted(-eps)) / (2 * eps)
            assert abs(fd - float(g[idx])) < 1e-6 + 1e-5 * abs(fd), (kind, k, idx, fd, float(g[idx]))
            checked += 1
    assert checked == 26 + (7 if alpha_per == "tensor" else 26)
    assert any(float(g.abs().max()) > 1e-3 for (kind, _), g in zip(names, grads) if kind == "alpha")


def test_meta_gradients_are_clipped():
    policy, theta = _tiny_policy(seed=4)
    gen = torch.Generator().manual_seed(5)
    settings = MetaSettings(hidden=3, alpha_init=0.1, normalise_advantages=False, meta_grad_clip=0.1)
    tau_i = _random_traj(policy, stack_params(theta, 2), gen)
    tau_next = _random_traj(policy, stack_params(theta, 2), gen)
    tau_next = tau_next._replace(rewards=50.0 * tau_next.rewards)  # large raw gradients
    th = {k: v.clone().requires_grad_() for k, v in theta.items()}
    al = {k: v.requires_grad_() for k, v in init_alpha(th, settings).items()}
    raw = torch.autograd.grad(meta_objective(policy, th, al, tau_i, tau_next, settings)[0], list(th.values()))
    assert max(float(g.abs().max()) for g in raw) > 1.0
    g_theta, g_alpha, _, _ = meta_gradients(policy, th, al, tau_i, tau_next, settings)
    assert set(g_theta) == set(th) and set(g_alpha) == set(al)
    for g in [*g_theta.values(), *g_alpha.values()]:
        assert float(g.abs().max()) <= 0.1
    for r, g in zip(raw, g_theta.values()):
        inside = r.abs() < 0.1
        assert torch.equal(g[inside], r[inside]) and torch.all(g[~inside].abs() == 0.1)


def test_collect_batches_groups_like_separate_evaluation():
    env = ToyGoalEnv(6, episode_steps=5)
    env.set_tasks(np.array([[1.0], [1.0], [-1.0], [-1.0], [0.5], [0.5]]))
    policy, theta = _tiny_policy(seed=6, dtype=torch.float32)
    gen = torch.Generator().manual_seed(7)
    params_g = {k: v.to(torch.float32) for k, v in _perturbed(theta, 3, 0.5, gen).items()}
    traj = collect(env, params_g, 3, policy, generator=torch.Generator().manual_seed(11), reset_seed=3)
    assert traj.obs.shape == (3, 2, 5, 2) and traj.actions.shape == (3, 2, 5, 1)
    assert traj.rewards.shape == traj.logprobs.shape == (3, 2, 5)
    replay = torch.Generator().manual_seed(11)
    eps = torch.stack([torch.randn(3, 2, 1, generator=replay) for _ in range(5)], 2)  # [G, M, T, A]
    for g in range(3):
        one = {k: v[g] for k, v in params_g.items()}
        with torch.no_grad():
            mean, log_std = functional_call(policy, one, (traj.obs[g],))
        assert torch.allclose(traj.actions[g], mean + log_std.exp() * eps[g], atol=1e-6)
        assert torch.allclose(traj.logprobs[g], diag_gaussian_logprob(mean, log_std, traj.actions[g]), atol=1e-5)
    # the env saw arena n under group n // M: rewards follow its goal
    x = traj.obs[:, :, 1:, 0]  # positions after steps 1..T-1
    assert torch.allclose(traj.rewards[:, :, :-1], -(x - torch.tensor([1.0, -1.0, 0.5]).view(3, 1, 1)).abs(), atol=1e-5)


def test_theta_from_a_gaussian_actor_critic():
    net = GaussianActorCritic((2,), 3, hidden=5)
    theta = actor_parameters(net)
    policy = MetaPolicy(2, 3, hidden=5)
    obs = torch.randn(4, 2)
    mean, log_std = functional_call(policy, theta, (obs,))
    ref_mean, ref_log_std = net.policy(obs)
    assert torch.equal(mean, ref_mean) and torch.equal(log_std, ref_log_std.expand_as(mean))


def test_tracking_update_is_a_policy_gradient_step():
    policy, theta = _tiny_policy(seed=8)
    gen = torch.Generator().manual_seed(9)
    phi = _perturbed(theta, 2, 0.2, gen)
    traj = _random_traj(policy, phi, gen)
    settings = MetaSettings(hidden=3, tracking_steps=1, tracking_lr=0.05)
    new, _ = tracking_update(policy, phi, traj, settings)
    req = {k: v.clone().requires_grad_() for k, v in phi.items()}
    logp, _ = policy_logprob(policy, req, traj.obs, traj.actions)
    loss = importance_weighted_pg_loss(logp, traj.logprobs, advantages(traj.rewards, settings.gamma)).sum()
    grads = torch.autograd.grad(loss, list(req.values()))
    for (k, v), g in zip(phi.items(), grads):
        assert torch.allclose(new[k], v - 0.05 * g, atol=1e-12)
    # test-time meta adaptation with zero inner steps is theta itself
    same = adapt(policy, theta, init_alpha(theta, settings), traj, MetaSettings(hidden=3, inner_steps=0))
    assert all(torch.equal(same[k], stack_params(theta, 2)[k]) for k in theta)


def test_meta_train_learns_to_adapt_and_beats_no_adaptation():
    env = ToyGoalEnv(32, episode_steps=10)  # G = 8 task pairs x M = 4 arenas
    _, theta0, alpha0 = meta_train(env, sign_pairs, TOY, iterations=0, seed=0)
    hist, theta, alpha = meta_train(env, sign_pairs, TOY, iterations=40, seed=0)
    assert len(hist["iteration"]) == 40 and hist["iteration"][-1] == 40
    assert set(hist) >= {"return_before", "return_after", "outer_loss", "alpha_mean", "wall_time"}
    after = np.asarray(hist["return_after"])
    assert after[-10:].mean() > after[:3].mean() + 0.25, after
    # paired evaluation on fixed sequences: goals on both sides, so no single policy serves them all
    goals = np.array([0.6, 0.7, 0.8, 0.9, -0.6, -0.7, -0.8, -0.9])
    seqs = np.repeat(goals[:, None, None], 2, axis=1)  # [S=8, K=2, P=1]
    meta = evaluate_sequences(env, theta, alpha, "meta", seqs, TOY, seed=1)
    meta0 = evaluate_sequences(env, theta0, alpha0, "meta", seqs, TOY, seed=1)
    none = evaluate_sequences(env, theta, alpha, "none", seqs, TOY, seed=1)
    tracking = evaluate_sequences(env, theta, None, "tracking", seqs, TOY, seed=1)
    assert meta.shape == none.shape == tracking.shape == (8, 2)
    assert np.allclose(meta[:, 0], none[:, 0]) and np.allclose(tracking[:, 0], none[:, 0])  # episode 1: theta
    assert meta[:, 1].mean() > meta0[:, 1].mean() + 1.0, (meta, meta0)  # meta-training improved adaptation
    assert meta[:, 1].mean() > none[:, 1].mean() + 1.5, (meta, none)


def test_train_fixed_learns_a_fixed_task():
    env = ToyGoalEnv(16, episode_steps=10)
    settings = MetaSettings(hidden=16, groups=2, outer_lr=0.01, outer_epochs=4, gamma=0.9)
    hist, theta = train_fixed(env, np.array([0.8]), settings, iterations=25, seed=0)
    ret = np.asarray(hist["return"])
    assert ret[-5:].mean() > ret[:3].mean() + 1.0, ret


class _Interrupt(Exception):
    pass


def _interrupting(sampler, at_call):
    calls = {"n": 0}

    def sample(groups, rng):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise _Interrupt
        return sampler(groups, rng)
    return sample


@pytest.mark.parametrize("driver", ["meta_train", "train_fixed"])
def test_interrupted_run_resumes_to_the_identical_result(tmp_path, driver):
    settings = MetaSettings(hidden=8, groups=2, alpha_init=0.05, outer_lr=0.01, outer_epochs=2, gamma=0.9)
    env = ToyGoalEnv(4, episode_steps=6)
    if driver == "meta_train":
        def run(sampler, path):
            h, th, al = meta_train(env, sampler, settings, iterations=5, seed=3, checkpoint=path, checkpoint_every=2)
            return h, {**th, **{f"alpha.{k}": v for k, v in al.items()}}
        sampler = sign_pairs
    else:
        def run(sampler, path):
            return train_fixed(env, sampler, settings, iterations=5, seed=3, checkpoint=path, checkpoint_every=2)
        sampler = lambda g, rng: sign_pairs(g, rng)[0]  # noqa: E731
    h_full, p_full = run(sampler, tmp_path / "full.pt")
    with pytest.raises(_Interrupt):
        run(_interrupting(sampler, at_call=4), tmp_path / "cut.pt")  # dies in iteration 4, last save after 2
    h_res, p_res = run(sampler, tmp_path / "cut.pt")
    for k in h_full:
        if k != "wall_time":
            assert h_full[k] == h_res[k], k
    assert all(torch.equal(p_full[k], p_res[k]) for k in p_full)
    with pytest.raises(CheckpointMismatch):  # another configuration refuses the checkpoint
        meta_train(env, sign_pairs, MetaSettings(hidden=8, groups=2, outer_lr=0.02), iterations=6, seed=3,
                   checkpoint=tmp_path / "full.pt") if driver == "meta_train" else \
            train_fixed(env, sampler, MetaSettings(hidden=8, groups=2, outer_lr=0.02), iterations=6, seed=3,
                        checkpoint=tmp_path / "full.pt")


@pytest.mark.parametrize("bad", [dict(inner_steps=-1), dict(alpha_per="row"), dict(gamma=1.5), dict(groups=0),
                                 dict(meta_grad_clip=0.0), dict(tracking_optimizer="rmsprop"), dict(hidden=2.5),
                                 dict(outer_lr=float("nan")), dict(ent_coef=-0.1), dict(outer_epochs=0),
                                 dict(alpha_lr=-1.0)])
def test_bad_settings_raise(bad):
    with pytest.raises(ValueError):
        MetaSettings(**bad)


def test_bad_arguments_raise():
    env = ToyGoalEnv(6)
    with pytest.raises(ValueError, match="groups"):  # 6 arenas into 4 groups
        meta_train(env, sign_pairs, MetaSettings(groups=4), iterations=1, seed=0)
    with pytest.raises(ValueError, match=">= 2 arenas"):  # M = 1: no baseline
        meta_train(env, sign_pairs, MetaSettings(groups=6), iterations=1, seed=0)
    _, theta = _tiny_policy()
    with pytest.raises(ValueError, match="method"):
        evaluate_sequences(env, theta, None, "rl2", np.zeros((2, 3, 1)), TOY, seed=0)
    with pytest.raises(ValueError, match="alpha"):
        evaluate_sequences(env, theta, None, "meta", np.zeros((2, 3, 1)), TOY, seed=0)
