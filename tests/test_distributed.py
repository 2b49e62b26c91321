"""Data parallelism inside one run: the sharded PPO/RND update, torchrun launches, checkpoints across world sizes.

Everything runs on the CPU with gloo: ranks are spawned processes meeting at a
file store (the update's equivalence), or real ``torchrun`` launches (the
chapter's parallel entry, checkpoint and resume).
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from repro.config import ConfigError
from repro.launch import torchrun_command
from repro.rl.curiosity import CuriositySettings
from repro.rl.ppo import PPOSettings
from repro.rl.rnd import RNDSettings
from repro.rl.trainer import RLRun, Trainer

ROOMS = (("room_size", 3), ("rooms_per_side", 2), ("max_steps", 30))


def _spec(bonus) -> RLRun:
    ppo = PPOSettings(lr=1e-3, gammas=(0.999, 0.99), episodic=(True, False), adv_coefs=(2.0, 1.0), epochs=2,
                      minibatches=4, clip_coef=0.2, ent_coef=0.01, vf_coef=0.5, clip_value_loss=True)
    return RLRun(env="rooms", env_kwargs=ROOMS, num_envs=4, num_steps=16, net="grid", hidden=32, ppo=ppo,
                 bonus=bonus, random_walk_steps=8)


CASES = {
    "rnd": _spec(RNDSettings(channels=(0,), net="mlp", hidden=32, proportion=0.25)),
    "idf": _spec(CuriositySettings(channels=(0,), features="idf", net="mlp", feat_dim=16, hidden=32, n_residual=1,
                                   proportion=0.5)),
}
STORAGE = ("obs", "actions", "logprobs", "values", "rewards", "dones", "next_obs")



def _learned(tr: Trainer) -> dict:
    """What the update changes: every network parameter and the normalisers' statistics."""
    out = {f"net.{k}": v.detach().clone() for k, v in tr.net.state_dict().items()}
    out.update({f"bonus.{k}": v.detach().clone() for k, v in tr.bonus.nets.state_dict().items()})
    for name in ("mean", "var", "count"):
        out[f"obs_rms.{name}"] = getattr(tr.bonus.obs_rms, name).clone()
        out[f"int_rms.{name}"] = getattr(tr.int_rms, name).clone()
    return out


def _one_process(spec: RLRun) -> tuple[dict, dict]:
    """One full update, then a rollout; returns (the state just before the second update, after it)."""
    tr = Trainer(spec, torch.device("cpu"), 3)
    tr.random_walk()
    tr.step()
    tr.collect()
    before = copy.deepcopy({"state": tr.state_dict(), "rng": torch.get_rng_state(),
                            "storage": {k: getattr(tr.storage, k) for k in STORAGE}})
    tr.learn()
    return before, _learned(tr)


def _rank_update(rank: int, world: int, store: str, cases: dict, out: str) -> None:
    """Rank ``rank``: load the one-process state (its half of the envs), run the sharded update, save the result."""
    from repro.distributed import start, stop
    from repro.rl.distributed import DistributedTrainer

    torch.set_num_threads(1)
    ctx = start(rank, world, torch.device("cpu"), init_method=store)
    try:
        results = {}
        for name, path in cases.items():
            before = torch.load(path, weights_only=False)
            tr = DistributedTrainer(CASES[name], ctx, 3)
            tr.load_state_dict(before["state"])
            mine = slice(tr.shard.first, tr.shard.first + tr.shard.count)
            for k in STORAGE:
                getattr(tr.storage, k).copy_(before["storage"][k][:, mine])
            tr.next_obs = before["state"]["next_obs"][mine].clone()
            tr.update_generator.set_state(before["rng"])
            tr.learn()
            results[name] = _learned(tr)
        if rank == 0:
            torch.save(results, out)
    finally:
        stop()


def test_two_gloo_ranks_update_like_one_process_on_all_envs(tmp_path, one_thread):
    """Each of 2 ranks holds half the envs; the update equals the one-process update on all of them."""
    expected, paths = {}, {}
    for name, spec in CASES.items():
        before, expected[name] = _one_process(spec)
        paths[name] = str(tmp_path / f"{name}-before.pt")
        torch.save(before, paths[name])
        changed = max(float((expected[name][k] - before["state"]["net"][k.removeprefix("net.")]).abs().max())
                      for k in expected[name] if k.startswith("net."))
        assert changed > 1e-4, "the update must move the parameters for the comparison to mean anything"
    out = tmp_path / "distributed.pt"
    mp.start_processes(_rank_update, args=(2, f"file://{tmp_path / 'store'}", paths, str(out)), nprocs=2,
                       start_method="spawn")
    got = torch.load(out, weights_only=False)
    report = {}
    for name in CASES:
        diffs = {k: float((got[name][k].double() - v.double()).abs().max()) for k, v in expected[name].items()}
        worst = max(diffs, key=diffs.get)
        report[name] = (worst, diffs[worst])
        assert diffs[worst] < 1e-5, f"{name}: {worst} differs by {diffs[worst]:.3g}"
        # the normalisers saw all 4 envs' observations: the merged count is the one-process count
        assert torch.equal(got[name]["obs_rms.count"], expected[name]["obs_rms.count"])
    print("largest parameter/statistic difference:", json.dumps(report))


# ---------------------------------------------------------------------------
# Launch parameters
# ---------------------------------------------------------------------------


def test_launch_parameters_are_checked_before_anything_runs():
    from repro.chapters.curiosity.config import CuriosityConfig
    from repro.chapters.grokking.config import GrokkingConfig
    from repro.chapters.rnd.config import RNDConfig

    with pytest.raises(ConfigError, match="divisible by the world size"):
        RNDConfig.for_profile("paper", nproc=3)  # 128 envs over 3 processes
    with pytest.raises(ConfigError, match="divisible by the world size"):
        CuriosityConfig.for_profile("paper", nproc=2, nnodes=3, rdzv_endpoint="h:1", checkpoint_dir="/x")
    with pytest.raises(ConfigError, match="rdzv_endpoint=HOST:PORT"):
        RNDConfig.for_profile("paper", nproc=8, nnodes=2, checkpoint_dir="/shared")
    with pytest.raises(ConfigError, match="needs checkpoint_dir"):
        GrokkingConfig.for_profile("paper", nproc=8, nnodes=2, rdzv_endpoint="node0:29500")
    with pytest.raises(ConfigError, match="node_rank"):
        RNDConfig.for_profile("paper", nproc=8, nnodes=2, node_rank=2, rdzv_endpoint="node0:29500",
                              checkpoint_dir="/shared")
    with pytest.raises(ConfigError, match="unknown parameter 'nproc'"):
        from repro.chapters.iwae.config import IWAEConfig
        IWAEConfig.for_profile("paper", nproc=2)
    cfg = RNDConfig.for_profile("paper", nproc=8, nnodes=2, node_rank=1, rdzv_endpoint="node0:29500",
                                checkpoint_dir="/shared")
    cmd = torchrun_command(cfg, "repro.distributed", ["--x"], python="py")
    assert cmd == ["py", "-m", "torch.distributed.run", "--nproc-per-node", "8", "--nnodes", "2", "--node-rank", "1",
                   "--rdzv-backend", "static", "--rdzv-endpoint", "node0:29500", "-m", "repro.distributed", "--x"]
    from repro.cli import main as cli

    assert cli(["train", "iwae", "-p", "nproc=2"]) == 2  # no data-parallel training
    assert cli(["train", "rnd", "-p", "nproc=2"]) == 2  # needs checkpoint_dir
    assert cli(["run", "rnd", "--profile", "paper", "-p", "nproc=3"]) == 2  # 128 environments over 3
    one = torchrun_command(RNDConfig.for_profile("paper", nproc=8), "m", [], python="py")
    assert one[:8] == ["py", "-m", "torch.distributed.run", "--nproc-per-node", "8", "--standalone", "--nnodes", "1"]


def _rank_resume(rank: int, world: int, store: str, folder: str, out: str) -> None:
    """Rank ``rank``: 3 updates straight, then 2 + checkpoint + a fresh trainer resuming for the third."""
    from repro.distributed import start, stop
    from repro.rl.distributed import DistributedTrainer
    from repro.rl.trainer import train

    torch.set_num_threads(1)
    ctx = start(rank, world, torch.device("cpu"), init_method=store)
    try:
        spec = CASES["rnd"]
        straight = train(DistributedTrainer(spec, ctx, 3), progress=False)
        ckpt = Path(folder) / "run.pt"
        train(DistributedTrainer(spec, ctx, 3), checkpoint=ckpt, checkpoint_every=1, progress=False, stop_after=2)
        resumed = train(DistributedTrainer(spec, ctx, 3), checkpoint=ckpt, checkpoint_every=1, progress=False)
        if rank == 0:
            torch.save({"straight": straight, "resumed": resumed}, out)
    finally:
        stop()


def test_a_checkpoint_resumes_exactly_on_the_same_world_size(tmp_path):
    out = tmp_path / "histories.pt"
    mp.start_processes(_rank_resume, args=(2, f"file://{tmp_path / 'store'}", str(tmp_path), str(out)), nprocs=2,
                       start_method="spawn")
    h = torch.load(out, weights_only=False)
    assert list(h["resumed"]["update"]) == [1, 2, 3]
    for key in ("global_step", "episodes", "pg_loss", "v_loss", "aux_loss", "int_reward_raw", "distinct_cells"):
        np.testing.assert_array_equal(h["resumed"][key], h["straight"][key], err_msg=key)
    state = torch.load(tmp_path / "run.pt", weights_only=False)["state"]
    assert state["dist"]["world"] == 2 and state["next_obs"].shape[0] == 4 and state["int_filter"]["rewems"].shape == (4,)


# ---------------------------------------------------------------------------
# torchrun: the chapter's parallel entry, then a one-process resume
# ---------------------------------------------------------------------------


def _tiny_paper_rnd(folder: Path, nproc: int):
    from repro.chapters.rnd.config import RNDConfig

    return RNDConfig.for_profile("paper", num_envs=4, num_steps=8, total_steps=4 * 8 * 3, random_walk_steps=2,
                                 vector_mode="sync", methods=("rnd",), n_seeds=1, checkpoint_every=1,
                                 checkpoint_dir=str(folder), nproc=nproc, device="cpu", progress_every_s=0.0)


def test_torchrun_two_processes_then_resume_with_one(tmp_path, one_thread):
    """RND's paper profile in miniature (Montezuma, the paper's networks): 2 updates on 2 torchrun processes with a
    checkpoint per update, then one process resumes the checkpoint and trains the third update."""
    from repro.chapters.rnd import experiments as ex
    from repro.distributed import run_parallel

    t0 = time.perf_counter()
    two = run_parallel("repro.chapters.rnd.experiments:train_parallel", _tiny_paper_rnd(tmp_path, 2), tmp_path,
                       stop_after=2)
    took = time.perf_counter() - t0
    h2 = two[0]["history"]
    walk = 2 * 4
    assert list(h2["update"]) == [1, 2] and list(h2["global_step"]) == [walk + 32, walk + 64]
    state = torch.load(tmp_path / "rnd-seed0.pt", weights_only=False)["state"]
    assert state["update"] == 2 and state["dist"]["world"] == 2, "rank 0 wrote the 2-process checkpoint"
    t0 = time.perf_counter()
    one = ex.run_all(_tiny_paper_rnd(tmp_path, 1), torch.device("cpu"), tmp_path)
    took_one = time.perf_counter() - t0
    h1 = one[0]["history"]
    assert list(h1["update"]) == [1, 2, 3] and h1["global_step"][-1] == walk + 96
    for key in ("pg_loss", "v_loss", "int_reward_raw", "distinct_rooms"):
        np.testing.assert_array_equal(h1[key][:2], h2[key], err_msg=key)  # the first two came from the checkpoint
    assert np.isfinite(h1["pg_loss"][2]) and np.isfinite(h1["aux_loss"][2])
    print(f"torchrun 2 processes, 2 updates: {took:.1f}s; 1 process resuming, 1 update: {took_one:.1f}s")


# ---------------------------------------------------------------------------
# Grokking: an ensemble sharded over processes
# ---------------------------------------------------------------------------


def _grok_setup():
    """Four tiny models that generalise; alone, shard 0 (seeds 0, 2) would stop at step 225, the ensemble at 264."""
    from repro.grokking import EnsembleSettings, GrokRun, OptimSettings

    runs = [GrokRun("x+y", 0.95, s, 1.0) for s in range(4)]
    settings = EnsembleSettings(p=7, d_model=16, n_heads=2, steps=500, n_evals=40, early_stop=True, device="cpu",
                                optim=OptimSettings(lr=3e-3))
    return runs, settings


def _rank_grok(rank: int, world: int, store: str, out: str) -> None:
    from repro.distributed import start, stop
    from repro.grokking import merge_histories, train_shard

    torch.set_num_threads(1)
    ctx = start(rank, world, torch.device("cpu"), init_method=store)
    try:
        runs, settings = _grok_setup()
        quiet = open("/dev/null", "w")
        parts = ctx.all_gather(train_shard(runs, settings, ctx, stream=quiet))
        # one member for two processes: rank 1 trains a copy of it, to vote on stopping, and returns nothing
        single = ctx.all_gather(train_shard(runs[:1], settings, ctx, stream=quiet))
        if rank == 0:
            assert single[1] is None
            torch.save({"merged": merge_histories(parts, runs), "single": merge_histories(single, runs[:1])}, out)
    finally:
        stop()


def test_grokking_ensemble_sharded_over_two_processes_matches_one_ensemble(tmp_path, one_thread):
    import io

    from repro.grokking import train

    runs, settings = _grok_setup()
    whole = train(runs, settings, stream=io.StringIO())
    assert whole.steps_done < settings.steps, "the ensemble stops early, so the shards' votes matter"
    assert train(runs[0::2], settings, stream=io.StringIO()).steps_done < whole.steps_done, \
        "shard 0 alone would stop sooner than the ensemble"
    out = tmp_path / "sharded.pt"
    mp.start_processes(_rank_grok, args=(2, f"file://{tmp_path / 'store'}", str(out)), nprocs=2, start_method="spawn")
    got = torch.load(out, weights_only=False)
    merged = got["merged"]
    assert merged.runs == runs and merged.steps_done == whole.steps_done and torch.equal(merged.steps, whole.steps)
    for name in ("train_acc", "val_acc", "train_loss", "val_loss"):
        torch.testing.assert_close(getattr(merged, name), getattr(whole, name), atol=1e-4, rtol=1e-4)
    for k in whole.params:
        torch.testing.assert_close(merged.params[k], whole.params[k], atol=1e-4, rtol=1e-4)
    alone = train(runs[:1], settings, stream=io.StringIO())
    assert got["single"].steps_done == alone.steps_done
    torch.testing.assert_close(got["single"].val_acc, alone.val_acc, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("profile", ["smoke", "book", "paper"])
def test_the_grokking_plan_is_what_the_notebook_asks_for(profile, monkeypatch):
    """A data-parallel run trains planned_ensembles(cfg) in one launch; the notebook's calls must ask for exactly those."""
    from repro.chapters.grokking import experiments as ex
    from repro.chapters.grokking.config import GrokkingConfig
    from repro.grokking import History

    cfg = GrokkingConfig.for_profile(profile)
    asked = []

    def fake_train(runs, cfg_, name, folder, steps=None):
        asked.append((name, runs, steps))
        nan = torch.full((len(runs), 1), float("nan"))
        return History(runs, torch.tensor([1]), nan, nan, nan, nan, params={}, init={})

    monkeypatch.setattr(ex, "_train", fake_train)
    sweep = ex.fraction_sweep(cfg)  # the notebook's four experiment cells, in order
    ex.intervention_sweep(cfg, sweep)
    sym = ex.symmetry_sweep(cfg) if cfg.symmetry_operations else []
    ex.embedding_run(cfg, sym)
    assert asked == ex.planned_ensembles(cfg)
