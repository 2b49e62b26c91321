"""RND, environments, checkpoint/resume, the Montezuma pipeline, and the rnd chapter at smoke."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from repro.config import ConfigError
from repro.rl.envs import env_factory, info_array, make_vector_env, rooms_all_states, rooms_env
from repro.rl.ppo import GridActorCritic
from repro.rl.rnd import RND, RNDNetworks, intrinsic_reward, keep_fraction, predictor_loss
from repro.rl.rnd_chapter import RNDConfig, montezuma_probe
from repro.rl.trainer import Trainer, load_checkpoint, save_checkpoint, train


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny ops: see conftest


def test_intrinsic_reward_is_squared_error_norm():
    pred, target = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    torch.testing.assert_close(intrinsic_reward(pred, target), torch.tensor([4.0, 25.0]))
    assert predictor_loss(pred, target).item() == pytest.approx((4 + 25) / 4)


def test_keep_fraction():
    torch.manual_seed(0)
    idx = keep_fraction(100_000, 0.25, torch.device("cpu"))
    assert abs(len(idx) / 100_000 - 0.25) < 0.01
    assert len(keep_fraction(10, 0.0, torch.device("cpu"))) == 0


def test_target_is_frozen_and_predictor_trains():
    nets = RNDNetworks((3, 5, 5), "mlp", hidden=32)
    assert all(not p.requires_grad for p in nets.target.parameters())
    assert all(p.requires_grad for p in nets.predictor.parameters())


def test_rnd_error_drops_on_seen_states_and_stays_high_on_new_ones():
    torch.manual_seed(0)
    env = rooms_env()
    env.reset(seed=0)
    states, cells = rooms_all_states(env)          # [F*4, 3, H, W], every cell x heading
    obs = torch.as_tensor(states)
    left = torch.as_tensor(np.repeat(cells[:, 0] < 9, 4))  # the left half of the grid is "seen"
    rnd = RND(tuple(obs.shape[1:]), torch.device("cpu"), "mlp", hidden=64, proportion=1.0)
    rnd.obs_rms.update(obs.float())
    opt = torch.optim.Adam(rnd.nets.predictor.parameters(), lr=1e-3)
    before = rnd.bonus(obs)
    for _ in range(300):
        opt.zero_grad()
        rnd.loss(obs[left]).backward()
        opt.step()
    after = rnd.bonus(obs)
    seen_drop = after[left].mean() / before[left].mean()
    assert seen_drop < 0.2                                  # seen states: error collapses
    new_drop = after[~left].mean() / before[~left].mean()
    print(f"seen {seen_drop:.3f} new {new_drop:.3f} ratio {after[~left].mean() / after[left].mean():.2f}")
    assert new_drop > 2 * seen_drop                         # new states: error falls far less
    assert after[~left].mean() > 2 * after[left].mean()     # ... and stays well above the seen states' error


def test_rooms_env_layout_info_and_states():
    env = rooms_env(room_size=5, rooms_per_side=3, max_steps=50)
    obs, info = env.reset(seed=0)
    assert obs.shape == (3, 19, 19) and obs.dtype == np.uint8
    assert info == {"cell": 1 * 19 + 1, "room": 0}
    assert obs[0, 17, 17] == 8  # the goal
    obs2, _ = env.reset(seed=123)
    np.testing.assert_array_equal(obs, obs2)  # fixed layout
    states, cells = rooms_all_states(env)
    assert states.shape[0] == 4 * len(cells)
    # the policy's coordinate features locate the agent in every rendered state
    feats = GridActorCritic.features(torch.as_tensor(states))
    x = feats[:, :19].argmax(1).numpy()
    y = feats[:, 19:38].argmax(1).numpy()
    np.testing.assert_array_equal(x, np.repeat(cells[:, 0], 4))
    np.testing.assert_array_equal(y, np.repeat(cells[:, 1], 4))
    np.testing.assert_array_equal(feats[:, 38:].argmax(1).numpy(), np.tile(np.arange(4), len(cells)))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_env_seeding_is_reproducible(mode):
    def rollout():
        venv = make_vector_env(env_factory("rooms", max_steps=20), 2, mode, seed=7)
        venv.reset(seed=7)
        cells = []
        for _ in range(30):
            _, _, _, _, info = venv.step(venv.action_space.sample())
            cells.append(info_array(info, "cell", 2))
        venv.close()
        return np.stack(cells)

    a, b = rollout(), rollout()
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(a)) > 3


def test_config_validation():
    with pytest.raises(ConfigError):
        RNDConfig.for_profile("book", methods=("ppo", "bogus"))
    with pytest.raises(ConfigError):
        RNDConfig.for_profile("book", num_envs=3, num_steps=3, minibatches=4)
    cfg = RNDConfig.for_profile("paper")
    assert cfg.num_envs == 128 and cfg.num_steps == 128 and cfg.num_updates == 30_000
    s = cfg.spec("rnd", 0)
    assert s.ppo.gammas == (0.999, 0.99) and s.ppo.episodic == (True, False) and s.ppo.adv_coefs == (2.0, 1.0)
    assert s.rnd_proportion == 0.25 and s.rnd_channels == (-1,)
    assert RNDConfig.for_profile("book").spec("rnd_episodic", 0).ppo.episodic == (True, True)


def _small_spec(num_envs=4, **kw):
    cfg = RNDConfig.for_profile("smoke", num_envs=num_envs, num_steps=16, total_steps=4 * 16 * 3,
                                obs_norm_init_steps=8, **kw)
    return cfg, cfg.spec("rnd", 3)


def test_checkpoint_resume_gives_the_same_next_update(tmp_path):
    cfg, spec = _small_spec()
    # uninterrupted: 3 updates
    full = Trainer(spec, torch.device("cpu"), cfg.num_updates)
    train(full, log_every=0)
    # interrupted after 2 updates, resumed in a fresh trainer for the 3rd
    ckpt = tmp_path / "rnd.pt"
    first = Trainer(spec, torch.device("cpu"), 2)
    train(first, checkpoint=ckpt, checkpoint_every=2, log_every=0)
    first.close()
    torch.manual_seed(999)  # resuming must restore the RNG, whatever happened in between
    resumed = Trainer(spec, torch.device("cpu"), cfg.num_updates)
    train(resumed, checkpoint=ckpt, log_every=0)
    for (k, a), b in zip(full.net.state_dict().items(), resumed.net.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    for a, b in zip(full.rnd.nets.state_dict().values(), resumed.rnd.nets.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(full.rnd.obs_rms.mean, resumed.rnd.obs_rms.mean)
    assert full.history[-1]["distinct_cells"] == resumed.history[-1]["distinct_cells"]
    assert full.global_step == resumed.global_step and len(resumed.history) == 3
    full.close()
    resumed.close()


def test_save_load_roundtrip_without_env_pickle(tmp_path):
    cfg, spec = _small_spec(num_envs=2, vector_mode="async")
    tr = Trainer(spec, torch.device("cpu"), 1)
    train(tr, log_every=0)
    path = save_checkpoint(tr, tmp_path / "a.pt")
    other = Trainer(spec, torch.device("cpu"), 1)
    load_checkpoint(other, path)  # async envs are not pickled: fresh episodes, same learner state
    assert other.update == 1
    for a, b in zip(tr.net.parameters(), other.net.parameters()):
        assert torch.equal(a, b)
    tr.close()
    other.close()


def test_montezuma_pipeline_two_envs_one_update():
    """The paper profile's pipeline (preprocessing, paper nets, RND on the last frame) on CPU."""
    probe = montezuma_probe(steps=8, num_envs=2, vector_mode="async")  # the paper profile's vector mode
    assert probe["loss_finite"]
    assert probe["rooms"] >= 1  # the room is read from the emulator's RAM
    env = env_factory("ALE/MontezumaRevenge-v5")()
    obs, info = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8 and obs.max() > 0
    assert info["room"] == 1  # Montezuma starts in room 1 of level 0
    env.close()


@pytest.mark.chapter
def test_smoke_chapter(smoke_run):
    m = smoke_run("rnd").metrics
    nums = m["numbers"]
    assert m["profile"] == "smoke"
    for k in ("cells_ppo", "cells_rnd", "cells_rnd_episodic"):
        assert nums[k] > 1  # every agent moved
    assert nums["book_sps"] > 0
    assert 0 < nums["bonus_ratio_max"] < 10 and nums["rare_frequent_min"] > 0
    ids = {c["id"] for c in m["scorecard"]}
    assert {"rnd-explores", "rnd-finds-reward", "bonus-consumed", "bonus-tracks-novelty", "montezuma-table1"} <= ids
