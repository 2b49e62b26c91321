"""Continuous adaptation via meta-learning (Al-Shedivat et al. 2018): config and experiments."""
