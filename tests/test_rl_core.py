"""The RL core: GAE against a plain loop, normalisers against numpy, the PPO loss, PPO on CartPole."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from repro.rl.normalise import RewardForwardFilter, RunningMeanStd, merge_moments
from repro.rl.ppo import MLPActorCritic, PPOSettings, gae, ppo_loss


def gae_plain(rewards, values, dones, last_values, gammas, lam, episodic):
    """One stream, one env, one step at a time, with Python floats."""
    T, N, K = len(rewards), len(rewards[0]), len(rewards[0][0])
    adv = [[[0.0] * K for _ in range(N)] for _ in range(T)]
    for k in range(K):
        for n in range(N):
            a = 0.0
            for t in reversed(range(T)):
                d = float(dones[t][n]) if episodic[k] else 0.0
                v_next = last_values[n][k] if t == T - 1 else values[t + 1][n][k]
                delta = rewards[t][n][k] + gammas[k] * (1 - d) * v_next - values[t][n][k]
                a = delta + gammas[k] * lam * (1 - d) * a
                adv[t][n][k] = a
    return adv


@pytest.mark.parametrize("episodic", [(True,), (False,), (True, False), (False, True, True)])
def test_gae_matches_plain_loop(episodic):
    g = torch.Generator().manual_seed(len(episodic))
    T, N, K = 17, 5, len(episodic)
    rewards = torch.randn(T, N, K, generator=g, dtype=torch.float64)
    values = torch.randn(T, N, K, generator=g, dtype=torch.float64)
    dones = (torch.rand(T, N, generator=g) < 0.2).double()
    dones[3, :] = 1.0  # every env has at least one episode end
    last = torch.randn(N, K, generator=g, dtype=torch.float64)
    gammas = [0.99, 0.9, 0.5][:K]
    lam = 0.95
    adv, ret = gae(rewards, values, dones, last, torch.tensor(gammas, dtype=torch.float64), lam,
                   torch.tensor(episodic))
    ref = torch.tensor(gae_plain(rewards.tolist(), values.tolist(), dones.tolist(), last.tolist(),
                                 gammas, lam, episodic), dtype=torch.float64)
    torch.testing.assert_close(adv, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ret, ref + values)


def test_gae_episode_end_cuts_only_episodic_streams():
    # one env, reward only after the episode end: the episodic stream must not see it before the end
    T = 6
    rewards = torch.zeros(T, 1, 2)
    rewards[4, 0, :] = 1.0
    dones = torch.zeros(T, 1)
    dones[2, 0] = 1.0
    values = torch.zeros(T, 1, 2)
    adv, _ = gae(rewards, values, dones, torch.zeros(1, 2), torch.tensor([0.9, 0.9]), 1.0,
                 torch.tensor([True, False]))
    assert adv[0, 0, 0] == 0 and adv[2, 0, 0] == 0      # episodic: the future episode is cut off
    assert adv[0, 0, 1] == pytest.approx(0.9 ** 4)       # non-episodic: flows across the end
    assert adv[3, 0, 0] == pytest.approx(0.9)


def test_gae_lambda_one_is_discounted_return_minus_value():
    g = torch.Generator().manual_seed(0)
    T = 8
    r = torch.randn(T, 1, 1, generator=g, dtype=torch.float64)
    v = torch.randn(T, 1, 1, generator=g, dtype=torch.float64)
    last = torch.randn(1, 1, generator=g, dtype=torch.float64)
    gamma = 0.97
    adv, ret = gae(r, v, torch.zeros(T, 1, dtype=torch.float64), last, torch.tensor([gamma], dtype=torch.float64),
                   1.0, torch.tensor([True]))
    mc = sum(gamma ** k * r[k, 0, 0] for k in range(T)) + gamma ** T * last[0, 0]
    assert ret[0, 0, 0].item() == pytest.approx(mc.item(), rel=1e-12)


# ---------------------------------------------------------------------------
# normalisers
# ---------------------------------------------------------------------------


def test_running_mean_std_matches_numpy_on_concatenated_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(int(rng.integers(1, 50)), 3, 2)) for _ in range(20)]
    rms = RunningMeanStd((3, 2), eps=0.0 + 1e-12)
    for b in batches:
        rms.update(torch.as_tensor(b))
    allx = np.concatenate(batches)
    np.testing.assert_allclose(rms.mean.numpy(), allx.mean(0), rtol=1e-9)
    np.testing.assert_allclose(rms.var.numpy(), allx.var(0), rtol=1e-9)
    assert rms.count.item() == pytest.approx(len(allx))


def test_running_mean_std_merge_equals_concatenation():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(100, 4)) * 5 + 1, rng.normal(size=(37, 4)) - 2
    ra, rb = RunningMeanStd((4,), eps=1e-12), RunningMeanStd((4,), eps=1e-12)
    ra.update(torch.as_tensor(a))
    rb.update(torch.as_tensor(b))
    m = ra.merge(rb)
    both = np.concatenate([a, b])
    np.testing.assert_allclose(m.mean.numpy(), both.mean(0), rtol=1e-10)
    np.testing.assert_allclose(m.var.numpy(), both.var(0), rtol=1e-10)


def test_running_mean_std_stable_at_huge_counts():
    # after ~1e10 samples of mean 1e4, a batch still moves the statistics by the right amount
    mean, var, n = merge_moments(torch.tensor(1e4, dtype=torch.float64), torch.tensor(4.0, dtype=torch.float64),
                                 torch.tensor(1e10, dtype=torch.float64),
                                 torch.tensor(1e4 + 1e3, dtype=torch.float64), torch.tensor(4.0, dtype=torch.float64),
                                 torch.tensor(1e4, dtype=torch.float64))
    exact_mean = 1e4 + 1e3 * 1e4 / (1e10 + 1e4)
    exact_var = 4.0 + 1e6 * 1e10 * 1e4 / (1e10 + 1e4) ** 2
    assert mean.item() == pytest.approx(exact_mean, rel=1e-14)
    assert var.item() == pytest.approx(exact_var, rel=1e-9)


def test_normalise_clips_and_whitens():
    rms = RunningMeanStd((2,))
    x = torch.randn(1000, 2) * 3 + 7
    rms.update(x)
    y = rms.normalise(x)
    assert y.mean(0).abs().max() < 1e-2 and (y.std(0) - 1).abs().max() < 1e-2
    assert rms.normalise(torch.full((1, 2), 1e6), clip=5.0).max().item() == 5.0


def test_reward_forward_filter_is_discounted_sum_across_calls():
    f = RewardForwardFilter(0.5, 2)
    r = torch.tensor([[1.0, 0.0], [0.0, 2.0], [4.0, 0.0]])
    out = f.run(r[:2])
    out3 = f(r[2])
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.0], [0.5, 2.0]]))
    torch.testing.assert_close(out3, torch.tensor([4.25, 1.0]))


# ---------------------------------------------------------------------------
# PPO
# ---------------------------------------------------------------------------


def test_ppo_loss_clipping_and_value_loss():
    old = torch.zeros(4)
    new = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5]))  # ratios
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    v_old = torch.zeros(4, 1)
    v_new = torch.full((4, 1), 1.0)
    ret = torch.full((4, 1), 2.0)
    loss, st = ppo_loss(new, old, torch.zeros(4), v_new, v_old, ret, adv, clip_coef=0.2, vf_coef=1.0,
                        ent_coef=0.0, clip_value_loss=True)
    # pessimistic bound: min(r A, clip(r) A) per sample -> 1.2, -1.5, 0.5, -0.8
    assert st["pg_loss"].item() == pytest.approx(-(1.2 - 1.5 + 0.5 - 0.8) / 4)
    # value: unclipped (1-2)^2 = 1, clipped (0.2-2)^2 = 3.24 -> max 3.24, times 1/2
    assert st["v_loss"].item() == pytest.approx(0.5 * 3.24)
    _, st2 = ppo_loss(new, old, torch.zeros(4), v_new, v_old, ret, adv, 0.2, 1.0, 0.0, clip_value_loss=False)
    assert st2["v_loss"].item() == pytest.approx(0.5)
    assert st["clipfrac"].item() == 1.0


def test_lr_annealing():
    s = PPOSettings(lr=1.0, anneal_lr=True)
    assert [s.lr_at(u, 4) for u in (1, 2, 4)] == [1.0, 0.75, 0.25]
    assert PPOSettings(lr=1.0).lr_at(4, 4) == 1.0



def test_ppo_learns_cartpole(one_thread):
    from repro.rl.trainer import RLRun, Trainer, train

    ppo = PPOSettings(lr=2.5e-3, anneal_lr=True, gammas=(0.99,), episodic=(True,), adv_coefs=(1.0,),
                      clip_coef=0.2, ent_coef=0.01, vf_coef=0.5, clip_value_loss=True)
    spec = RLRun(env="CartPole-v1", num_envs=8, num_steps=128, seed=0, hidden=64, ppo=ppo)
    trainer = Trainer(spec, torch.device("cpu"), num_updates=20)
    hist = train(trainer, progress=False)
    trainer.close()
    assert set(hist) >= {"update", "global_step", "return_mean"} and len(hist["update"]) == 20
    first = np.nanmean(hist["return_mean"][:2])
    last = np.nanmean(hist["return_mean"][-3:])
    assert first < 50            # a random policy balances for ~20 steps
    assert last > 120, (first, last)


def test_ppo_with_cleanrl_defaults_learns_cartpole(one_thread):
    """CleanRL's ppo.py defaults, 50k steps, seed 1: separate actor and critic reach a final return near 200
    (measured 198-226 over seeds 1-3); the old shared-body network reached 34-37, so the bar of 100 fails a
    core with that defect (see ``python -m repro.rl.benchmark`` for the 100k-step comparison with CleanRL)."""
    from repro.rl.benchmark import run

    sps, ret = run(seed=1, total_steps=50_000)
    assert ret > 100, ret
    assert sps > 500, sps


def test_mlp_actor_critic_keeps_policy_and_value_apart():
    net = MLPActorCritic((4,), 2, n_streams=1, hidden=8)
    obs = torch.randn(5, 4)
    logits, values = net(obs)
    values.sum().backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in list(net.actor.parameters()) + list(net.pi.parameters()))
    assert all(p.grad is not None for p in net.critic.parameters())


# ---------------------------------------------------------------------------
# Intrinsic rewards as a plug-in; trackers; the network registry
# ---------------------------------------------------------------------------


def _cartpole_bonus_run(bonus, ext_coef=1.0, episodic_int=False, **kw):
    from repro.rl.trainer import RLRun

    ppo = PPOSettings(lr=1e-3, gammas=(0.99, 0.99), episodic=(True, episodic_int), adv_coefs=(ext_coef, 1.0),
                      epochs=1, minibatches=2)
    return RLRun(env="CartPole-v1", num_envs=2, num_steps=8, seed=0, hidden=8, ppo=ppo, bonus=bonus, **kw)


def test_a_new_bonus_plugs_in_without_touching_the_trainer():
    """A bonus the trainer has never heard of: its reward lands in stream 1, normalised by the running std of
    the discounted intrinsic return; its loss is trained on PPO's minibatches; observe() sees the random walk."""
    from dataclasses import dataclass, field

    from repro.rl.bonus import BonusSettings, IntrinsicBonus, channel_view
    from repro.rl.trainer import Trainer

    class Speed:
        """Bonus = |next cart velocity| (channel 1 of CartPole's state); a scalar weight trained to fit it."""

        def __init__(self):
            self.view_shape, self.w, self.calls = (1,), torch.nn.Parameter(torch.zeros(())), []

        def view(self, obs):
            return channel_view(obs, (1,))

        def observe(self, obs_view, random_walk):
            self.calls.append(("observe", random_walk, obs_view.shape[0]))

        @torch.no_grad()
        def bonus(self, obs_view, actions, next_obs_view):
            assert obs_view.shape == next_obs_view.shape == (actions.shape[0], 1)
            return next_obs_view[:, 0].abs()

        def loss(self, obs_view, actions, next_obs_view):
            self.calls.append(("loss", actions.shape[0]))
            return (self.w - next_obs_view[:, 0].abs()).square().mean()

        def parameters(self):
            return [self.w]

        def state_dict(self):
            return {"w": self.w.detach().clone()}

        def load_state_dict(self, state):
            self.w.data.copy_(state["w"])

    @dataclass(frozen=True)
    class SpeedSettings(BonusSettings):
        kind: str = field(default="speed", init=False)

        def build(self, obs_shape, n_actions, device):
            return Speed()

    assert isinstance(Speed(), IntrinsicBonus)
    tr = Trainer(_cartpole_bonus_run(SpeedSettings(), random_walk_steps=3), torch.device("cpu"), num_updates=2)
    tr.random_walk()
    assert tr.bonus.calls == [("observe", True, 3 * 2)]
    w0 = tr.bonus.w.item()
    tr.step()
    st = tr.storage
    raw = st.next_obs[:, :, 0].abs()
    torch.testing.assert_close(st.rewards[:, :, 1], raw / tr.int_rms.std.float())
    assert tr.bonus.calls[1] == ("observe", False, 8 * 2)
    assert [c for c in tr.bonus.calls if c[0] == "loss"] == [("loss", 8)] * 2  # 1 epoch x 2 minibatches of 8
    assert tr.bonus.w.item() != w0  # in the optimiser
    assert tr.identity()["config"]["bonus"]["kind"] == "speed"
    tr.close()


def test_bonus_and_streams_must_agree():
    from repro.rl.rnd import RNDSettings
    from repro.rl.trainer import RLRun, Trainer

    with pytest.raises(ValueError, match="two reward streams"):
        one = PPOSettings(gammas=(0.99,), episodic=(True,), adv_coefs=(1.0,))
        Trainer(RLRun(env="CartPole-v1", num_envs=1, num_steps=4, ppo=one, bonus=RNDSettings()),
                torch.device("cpu"), 1)
    with pytest.raises(ValueError, match="two reward streams"):
        Trainer(_cartpole_bonus_run(None), torch.device("cpu"), 1)
    with pytest.raises(ValueError, match="network kind"):
        RNDSettings(net="resnet")


def test_trackers_count_visits_and_step_shares():
    from repro.rl.tracking import StepShare, VisitCounts

    visits, share = VisitCounts("cell").build(), StepShare("tv").build()
    info0 = {"cell": np.array([3, 3, 5]), "_cell": np.array([True, True, True])}
    visits.update(info0, 3, reset=True)
    share.update({"tv": np.array([1, 1, 1])}, 3, reset=True)  # a reset is not a step
    visits.update({"cell": np.array([5, 9, 0]), "_cell": np.array([True, False, True])}, 3)
    share.update({"tv": np.array([1, 0, 0]), "_tv": np.array([True, True, True])}, 3)
    share.update({}, 3)  # an env without the key: not watching
    np.testing.assert_array_equal(visits.counts, [1, 0, 0, 2, 0, 2])
    assert visits.record() == {"distinct_cells": 3}
    assert share.record() == {"share_tv": 1 / 6, "total_tv": 1}
    share.update({"tv": np.array([1, 1, 0])}, 3)
    assert share.record() == {"share_tv": 2 / 3, "total_tv": 3}  # per update; total over the run
    # env 2's episode ended on this step while watching: the step is in final_info, the reset's tv=0 on top
    share.update({"tv": np.array([0, 1, 0]), "final_info": {"tv": np.array([0, 0, 1])},
                  "_final_info": np.array([False, False, True])}, 3)
    assert share.record() == {"share_tv": 2 / 3, "total_tv": 5}
    other = StepShare("tv").build()
    other.load_state_dict(share.state_dict())
    assert other.state_dict() == share.state_dict()


def test_network_registry():
    from repro.rl.ppo import NETWORKS, MinAtarActorCritic, build_network, register_network

    assert {"mlp", "grid", "minatar", "atari"} <= set(NETWORKS)
    net = build_network("minatar", (4, 10, 10), 3, 2, hidden=32)
    assert isinstance(net, MinAtarActorCritic)
    logits, values = net(torch.zeros(5, 4, 10, 10, dtype=torch.uint8))
    assert logits.shape == (5, 3) and values.shape == (5, 2)
    with pytest.raises(ValueError, match="unknown network 'nope'.*registered are"):
        build_network("nope", (4,), 2, 1)
    with pytest.raises(ValueError, match="already registered"):
        register_network("mlp")(lambda *a: None)


def test_recent_return_is_episode_weighted():
    from repro.rl.trainer import recent_return

    h = {"episodes": np.array([1, 0, 3, 1]), "return_mean": np.array([100.0, np.nan, 2.0, 6.0])}
    assert recent_return(h, 3) == (3 * 2.0 + 6.0) / 4
    assert recent_return(h, 4) == (100 + 3 * 2.0 + 6.0) / 5
    assert np.isnan(recent_return({"episodes": np.array([0]), "return_mean": np.array([np.nan])}, 1))
