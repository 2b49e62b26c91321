"""Forward-dynamics curiosity (repro.rl.curiosity): the bonus, gradient flow, feature spaces, statistics, resume."""
from __future__ import annotations

import io

import pytest
import torch

from repro.rl.bonus import IntrinsicBonus
from repro.rl.curiosity import (Curiosity, CuriositySettings, ForwardModel, forward_error, forward_loss,
                                inverse_loss)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny ops: see conftest

CPU = torch.device("cpu")


def _leaky(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, x, 0.01 * x)


def _dense(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return x @ layer.weight.T + layer.bias


def _reference_forward(fm: ForwardModel, feat: torch.Tensor, actions: torch.Tensor, n_actions: int) -> torch.Tensor:
    """The forward model written out by hand: the one-hot action concatenated before every dense layer."""
    onehot = torch.zeros(len(actions), n_actions)
    onehot[torch.arange(len(actions)), actions] = 1.0
    x = _leaky(_dense(fm.inp, torch.cat([feat, onehot], 1)))
    for first, second in fm.blocks:
        res = _leaky(_dense(first, torch.cat([x, onehot], 1)))
        x = x + _dense(second, torch.cat([res, onehot], 1))
    return _dense(fm.out, torch.cat([x, onehot], 1))


def _whiten_by_hand(cur: Curiosity, obs: torch.Tensor) -> torch.Tensor:
    mean, var = cur.obs_rms.mean.float(), cur.obs_rms.var.float()
    return ((obs.float() - mean) / (var + 1e-8).sqrt()).clamp(-5, 5)


# ---------------------------------------------------------------------------
# The bonus is the formula
# ---------------------------------------------------------------------------


def test_error_and_loss_formulas():
    pred, target = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    torch.testing.assert_close(forward_error(pred, target), torch.tensor([2.0, 12.5]))
    assert forward_loss(pred, target).item() == pytest.approx((4 + 25) / 4)
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    expected = -(torch.log(torch.tensor(0.5)) + torch.log_softmax(logits[1], 0)[1]) / 2
    assert inverse_loss(logits, torch.tensor([0, 1])).item() == pytest.approx(expected.item())


@pytest.mark.parametrize("features", ["rf", "pixels"])
def test_bonus_equals_hand_computation(features):
    torch.manual_seed(0)
    d, a_n, b = 5, 3, 7
    cur = CuriositySettings(features=features, feat_dim=4, hidden=6, n_residual=2).build((d,), a_n, CPU)
    cur.observe(torch.randn(50, d) * 3 + 1, random_walk=True)
    obs, nxt = torch.randn(b, d) * 3 + 1, torch.randn(b, d) * 3 + 1
    obs[0, 0] = 1e3                                   # exercises the clip to [-5, 5]
    actions = torch.randint(0, a_n, (b,))

    def phi(x):
        w = _whiten_by_hand(cur, x)
        if features == "pixels":
            return w
        return _dense(cur.phi[3], _leaky(_dense(cur.phi[1], w)))

    with torch.no_grad():
        pred = _reference_forward(cur.forward_model, phi(obs), actions, a_n)
        ref = 0.5 * (pred - phi(nxt)).square().sum(1)
    got = cur.bonus(obs, actions, nxt)
    assert got.shape == (b,) and not got.requires_grad
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(cur.bonus(obs, actions, nxt, chunk=3), got)   # chunking changes nothing
    fwd, inv = cur.losses(obs, actions, nxt)
    assert fwd.item() == pytest.approx((2 * ref / cur.feat_dim).mean().item(), rel=1e-5)
    assert inv.item() == 0.0


def test_bonus_satisfies_the_interface_and_views_channels():
    cur = CuriositySettings(channels=(-1,), net="minatar").build((4, 10, 10), 5, CPU)
    assert isinstance(cur, IntrinsicBonus)
    assert cur.view_shape == (1, 10, 10)
    obs = torch.randint(0, 255, (3, 4, 10, 10), dtype=torch.uint8)
    assert torch.equal(cur.view(obs), obs[:, 3:4])
    assert CuriositySettings().kind == "curiosity"
    assert CuriositySettings(features="pixels").build((2, 3, 3), 4, CPU).feat_dim == 18


# ---------------------------------------------------------------------------
# Gradient flow and frozen features
# ---------------------------------------------------------------------------


def _batch(n: int = 16, d: int = 6, a_n: int = 3):
    return torch.randn(n, d), torch.randint(0, a_n, (n,)), torch.randn(n, d)


def test_idf_features_are_trained_only_by_the_inverse_loss():
    torch.manual_seed(0)
    cur = CuriositySettings(features="idf", feat_dim=8, hidden=16, n_residual=2).build((6,), 3, CPU)
    s, a, s2 = _batch()
    cur.observe(torch.cat([s, s2]), random_walk=True)
    fwd, inv = cur.losses(s, a, s2)
    phi_p, fm_p, inv_p = (list(m.parameters()) for m in (cur.phi, cur.forward_model, cur.inverse_head))
    g_fwd_phi = torch.autograd.grad(fwd, phi_p + inv_p, allow_unused=True, retain_graph=True)
    assert all(g is None or not g.any() for g in g_fwd_phi)           # nothing from the forward loss
    assert all(g.abs().sum() > 0 for g in torch.autograd.grad(fwd, fm_p, retain_graph=True))
    g_inv = torch.autograd.grad(inv, phi_p, retain_graph=True)
    assert all(g.abs().sum() > 0 for g in g_inv)
    g_total = torch.autograd.grad(cur.loss(s, a, s2), phi_p)           # the full loss: phi's grads = inverse's
    for gt, gi in zip(g_total, g_inv):
        torch.testing.assert_close(gt, gi)
    assert {id(p) for p in cur.parameters()} == {id(p) for p in phi_p + fm_p + inv_p}


@pytest.mark.parametrize("features", ["rf", "pixels"])
def test_rf_and_pixel_features_are_frozen_and_not_trained(features):
    torch.manual_seed(0)
    cur = CuriositySettings(features=features, feat_dim=8, hidden=16).build((6,), 3, CPU)
    assert all(not p.requires_grad for p in cur.phi.parameters())
    assert cur.inverse_head is None
    assert {id(p) for p in cur.parameters()} == {id(p) for p in cur.forward_model.parameters()}
    before = {k: v.clone() for k, v in cur.phi.state_dict().items()}
    opt = torch.optim.Adam(cur.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        cur.loss(*_batch()).backward()
        opt.step()
    assert all(torch.equal(v, cur.phi.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in cur.phi.parameters())


# ---------------------------------------------------------------------------
# Learning: predictable transitions lose their bonus, noise keeps it (the noisy TV)
# ---------------------------------------------------------------------------

D_TOY, N_TOY, A_TOY = 8, 32, 4


def _train_toy(seed: int, noisy: bool, steps: int = 300):
    """32 random states x 4 actions; s' = s rolled by a+1 (deterministic) or fresh N(0, I) noise.

    Returns (bonus before, bonus after training, the noise floor 1/2 E||phi(s') - E phi(s')||^2)."""
    torch.manual_seed(seed)
    s = torch.randn(N_TOY, D_TOY).repeat_interleave(A_TOY, 0)
    a = torch.arange(A_TOY).repeat(N_TOY)
    shifted = torch.stack([torch.roll(x, int(k) + 1) for x, k in zip(s, a)])

    def nxt(reps: int = 1):
        return torch.randn(reps * len(s), D_TOY) if noisy else shifted.repeat(reps, 1)

    cur = CuriositySettings(features="rf", feat_dim=64, hidden=64, n_residual=4).build((D_TOY,), A_TOY, CPU)
    cur.observe(torch.cat([s, nxt()]), random_walk=True)
    opt = torch.optim.Adam(cur.parameters(), lr=1e-3)
    before = cur.bonus(s, a, nxt()).mean().item()
    for _ in range(steps):
        opt.zero_grad()
        cur.loss(s, a, nxt()).backward()
        opt.step()
    after = cur.bonus(s.repeat(16, 1), a.repeat(16), nxt(16)).mean().item()
    with torch.no_grad():
        floor = 0.5 * cur.embed(torch.randn(20_000, D_TOY)).var(0).sum().item()
    return before, after, floor


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bonus_falls_on_predictable_transitions_but_not_on_noise(seed):
    det_before, det_after, _ = _train_toy(seed, noisy=False)
    noise_before, noise_after, floor = _train_toy(seed, noisy=True)
    assert det_after < 0.03 * det_before          # seen deterministic transitions: error ~vanishes (~0.007x)
    # pure noise: the best predictor outputs E phi(s') and still pays the variance - the bonus stays at
    # the irreducible floor (measured ~1.0x floor), far above the deterministic case (measured >20x)
    assert noise_after > 0.8 * floor
    assert noise_after > 5 * det_after


def test_idf_inverse_head_learns_the_action():
    torch.manual_seed(0)

    def batch(n):
        s, a = torch.randn(n, D_TOY), torch.randint(0, A_TOY, (n,))
        s2 = s.clone()
        s2[torch.arange(n), a] += 2.0                 # action k pushes coordinate k
        return s, a, s2

    cur = CuriositySettings(features="idf", feat_dim=32, hidden=32, n_residual=1).build((D_TOY,), A_TOY, CPU)
    s, _, s2 = batch(1024)
    cur.observe(torch.cat([s, s2]), random_walk=True)
    test = batch(2000)

    def accuracy():
        return (cur.inverse_logits(test[0], test[2]).argmax(-1) == test[1]).float().mean().item()

    assert accuracy() < 0.5                            # chance is 0.25
    opt = torch.optim.Adam(cur.parameters(), lr=1e-3)
    for _ in range(150):
        opt.zero_grad()
        cur.loss(*batch(128)).backward()
        opt.step()
    assert accuracy() > 0.9


# ---------------------------------------------------------------------------
# Observation statistics, resume, settings
# ---------------------------------------------------------------------------


def test_statistics_come_from_the_random_walk_only():
    torch.manual_seed(0)
    cur = CuriositySettings(net="minatar").build((4, 10, 10), 3, CPU)
    obs = torch.randint(0, 255, (32, 4, 10, 10), dtype=torch.uint8)
    a = torch.randint(0, 3, (32,))
    fresh = {k: v.clone() for k, v in cur.obs_rms.state_dict().items()}
    cur.observe(obs, random_walk=True)
    walked = {k: v.clone() for k, v in cur.obs_rms.state_dict().items()}
    assert not torch.equal(fresh["mean"], walked["mean"]) and not torch.equal(fresh["var"], walked["var"])
    assert walked["mean"].shape == (4, 10, 10)        # per-pixel statistics
    torch.testing.assert_close(walked["mean"], obs.double().mean(0), rtol=1e-3, atol=1e-3)
    b = cur.bonus(obs, a, obs.flip(0))
    cur.observe(torch.full((64, 4, 10, 10), 255, dtype=torch.uint8), random_walk=False)   # fixed afterwards
    assert all(torch.equal(v, cur.obs_rms.state_dict()[k]) for k, v in walked.items())
    assert torch.equal(cur.bonus(obs, a, obs.flip(0)), b)


@pytest.mark.parametrize("features", ["idf", "rf"])
def test_state_dict_round_trip_resumes_identically(features):
    settings = CuriositySettings(features=features, net="minatar", feat_dim=16, hidden=16, proportion=0.5)
    torch.manual_seed(0)
    cur = settings.build((2, 10, 10), 3, CPU)
    obs = torch.randint(0, 255, (24, 2, 10, 10), dtype=torch.uint8)
    nxt, a = obs.roll(1, 0), torch.randint(0, 3, (24,))
    cur.observe(obs, random_walk=True)
    opt = torch.optim.Adam(cur.parameters(), lr=1e-3)
    for _ in range(3):
        opt.zero_grad()
        cur.loss(obs, a, nxt).backward()
        opt.step()
    buf = io.BytesIO()
    torch.save(cur.state_dict(), buf)
    torch.manual_seed(1)
    fresh = settings.build((2, 10, 10), 3, CPU)
    assert not torch.equal(fresh.bonus(obs, a, nxt), cur.bonus(obs, a, nxt))
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf))
    assert torch.equal(fresh.bonus(obs, a, nxt), cur.bonus(obs, a, nxt))
    assert all(torch.equal(v, fresh.obs_rms.state_dict()[k]) for k, v in cur.obs_rms.state_dict().items())
    torch.manual_seed(7)
    l1 = cur.loss(obs, a, nxt)
    torch.manual_seed(7)                               # the sampled proportion uses the global RNG
    assert torch.equal(fresh.loss(obs, a, nxt), l1)


def test_proportion_subsamples_with_the_global_rng():
    torch.manual_seed(0)
    s, a, s2 = _batch(64)
    full = CuriositySettings(feat_dim=8, hidden=8).build((6,), 3, CPU)
    state = torch.get_rng_state()
    full.loss(s, a, s2)
    assert torch.equal(torch.get_rng_state(), state)   # proportion 1: no draw, every sample
    half = CuriositySettings(feat_dim=8, hidden=8, proportion=0.5).build((6,), 3, CPU)
    half.load_state_dict(full.state_dict())
    torch.manual_seed(3)
    keep = (torch.rand(64) < 0.5).nonzero().squeeze(1)
    torch.manual_seed(3)
    torch.testing.assert_close(half.loss(s, a, s2), full.loss(s[keep], a[keep], s2[keep]))


@pytest.mark.parametrize("kwargs, match", [
    ({"features": "vae"}, "features"),
    ({"net": "resnet"}, "feature net"),
    ({"feat_dim": 0}, "feat_dim"),
    ({"hidden": -4}, "hidden"),
    ({"hidden": 2.5}, "hidden"),
    ({"n_residual": -1}, "n_residual"),
    ({"proportion": 0.0}, "proportion"),
    ({"proportion": 1.5}, "proportion"),
    ({"obs_clip": 0.0}, "obs_clip"),
])
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CuriositySettings(**kwargs)


def test_conv_net_needs_image_observations():
    with pytest.raises(ValueError, match=r"needs \[C, H, W\]"):
        CuriositySettings(net="minatar").build((12,), 3, CPU)


# ---------------------------------------------------------------------------
# The conv feature networks
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("net, shape, features", [
    ("minatar", (4, 10, 10), "idf"),
    ("minatar", (4, 10, 10), "rf"),
    ("atari", (4, 84, 84), "idf"),
    ("atari", (4, 84, 84), "rf"),
])
def test_conv_feature_nets(net, shape, features):
    torch.manual_seed(0)
    b = 6
    cur = CuriositySettings(features=features, net=net, feat_dim=32, hidden=32).build(shape, 5, CPU)
    obs = torch.randint(0, 255, (b, *shape), dtype=torch.uint8)
    nxt, a = torch.randint(0, 255, (b, *shape), dtype=torch.uint8), torch.randint(0, 5, (b,))
    cur.observe(obs, random_walk=True)
    assert cur.embed(obs).shape == (b, 32)
    r = cur.bonus(obs, a, nxt)
    assert r.shape == (b,) and torch.isfinite(r).all() and (r > 0).all()
    loss = cur.loss(obs, a, nxt)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(p.grad is not None for p in cur.parameters())
    if features == "idf":
        assert cur.inverse_logits(obs, nxt).shape == (b, 5)
