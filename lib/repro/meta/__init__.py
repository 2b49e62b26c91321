"""Continual adaptation via meta-learning (Al-Shedivat et al., ICLR 2018).

* :mod:`repro.meta.adapt` - the environment-agnostic meta-learner: batched collection, the
  importance-weighted policy-gradient inner loop, PPO through the inner steps, test-time
  adaptation and the tracking / no-adaptation baselines;
* :mod:`repro.meta.locomotion` - the nonstationary locomotion task family.

Submodules are imported explicitly (``from repro.meta.adapt import meta_train``); importing this
package imports nothing heavy.
"""
