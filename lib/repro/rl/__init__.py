"""The book's reinforcement-learning core.

* :mod:`repro.rl.envs` - environment factories (the rooms gridworld, Atari with
  the RND paper's preprocessing, CartPole) and seeded ``gymnasium.vector`` envs;
* :mod:`repro.rl.normalise` - running mean/std (mergeable, float64) and the
  discounted-return reward filter;
* :mod:`repro.rl.storage` - rollout storage preallocated on the device;
* :mod:`repro.rl.ppo` - GAE for several reward streams, PPO's loss and update,
  actor-critic networks;
* :mod:`repro.rl.rnd` - Random Network Distillation (bonus, predictor loss, networks);
* :mod:`repro.rl.trainer` - the training loop with checkpoint/resume and progress output.

The RND chapter's config, claims and experiments live in
:mod:`repro.chapters.rnd`; nothing here imports from a chapter.

Submodules are imported explicitly (``from repro.rl.ppo import gae``); importing
this package imports nothing heavy.
"""
