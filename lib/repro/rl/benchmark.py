"""``python -m repro.rl.benchmark``: the PPO core on CartPole-v1 beside CleanRL's ``ppo.py``.

Runs our :class:`~repro.rl.trainer.Trainer` with CleanRL's default
hyperparameters (4 envs x 128 steps, 4 epochs, 4 minibatches, lr 2.5e-4
annealed, clip 0.2, entropy 0.01, value coefficient 0.5 with value clipping,
GAE lambda 0.95, gamma 0.99, gradient norm 0.5) for 100k steps on one thread,
seeds 1-3, and prints the environment steps per second and the final return
(episode-weighted mean return of the episodes that ended in the last 20
updates) beside CleanRL's figures measured on the same 2-core machine with the
same settings.  A benchmark to read, not a timed test; the regression test is
``tests/test_rl_core.py::test_ppo_with_cleanrl_defaults_learns_cartpole``.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from .ppo import PPOSettings
from .trainer import RLRun, Trainer, recent_return, train

# CleanRL ppo.py on this machine (issue #12): steps/s and final returns for seeds 1, 2, 3
CLEANRL = {"steps_per_s": 5900, "final_return": {1: 283.0, 2: 248.0, 3: 204.0}}
CLEANRL_PPO = PPOSettings(lr=2.5e-4, anneal_lr=True, gammas=(0.99,), episodic=(True,), adv_coefs=(1.0,),
                          gae_lambda=0.95, epochs=4, minibatches=4, clip_coef=0.2, ent_coef=0.01, vf_coef=0.5,
                          max_grad_norm=0.5, clip_value_loss=True, norm_adv=True)


def final_return(history: dict, last: int = 20) -> float:
    """Episode-weighted mean return of the episodes that ended in the last ``last`` updates (NaN if none)."""
    return recent_return(history, last)


def run(seed: int, total_steps: int = 100_000, num_envs: int = 4, num_steps: int = 128) -> tuple[float, float]:
    """One CartPole run with CleanRL's settings: (env steps per second, final return)."""
    spec = RLRun(env="CartPole-v1", num_envs=num_envs, num_steps=num_steps, seed=seed, hidden=64, ppo=CLEANRL_PPO)
    trainer = Trainer(spec, torch.device("cpu"), num_updates=total_steps // (num_envs * num_steps))
    t0 = time.perf_counter()
    hist = train(trainer, progress=False)
    seconds = time.perf_counter() - t0
    trainer.close()
    return float(hist["global_step"][-1]) / seconds, final_return(hist)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m repro.rl.benchmark", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--steps", type=int, default=100_000)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f"{'seed':>4} {'ours steps/s':>13} {'ours return':>12} {'CleanRL return':>15}")
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        sps, ret = run(seed, args.steps)
        rows.append((sps, ret))
        ref = CLEANRL["final_return"].get(seed, float("nan"))
        print(f"{seed:>4} {sps:>13.0f} {ret:>12.1f} {ref:>15.1f}", flush=True)
    sps, ret = np.mean(rows, 0)
    print(f"mean {sps:>13.0f} {ret:>12.1f} {np.mean(list(CLEANRL['final_return'].values())):>15.1f}"
          f"   (CleanRL ~{CLEANRL['steps_per_s']} steps/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
