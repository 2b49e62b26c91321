"""Continuous adaptation via meta-learning (Al-Shedivat et al., ICLR 2018).

* :mod:`repro.meta.adapt` - the environment-agnostic meta-learner: batched collection, the
  importance-weighted policy-gradient inner loop, PPO through the inner steps, test-time
  adaptation and the tracking / no-adaptation baselines;
* :mod:`repro.meta.locomotion` - the nonstationary locomotion task family (legs that fade), many
  arenas in one MuJoCo model;
* :mod:`repro.meta.bodies` - our MJCF bodies: the sumo disc and the Ant/Bug/Spider-like legged bodies;
* :mod:`repro.meta.sumo` - RoboSumo rings (rules, rewards, rendering), many in one model;
* :mod:`repro.meta.game` - RoboSumo against recorded opponents for the meta-learner, self-play
  snapshots (an opponent that keeps learning) and the iterated adaptation game.

Submodules are imported explicitly (``from repro.meta.adapt import meta_train``); importing this
package imports nothing heavy.
"""
