"""The grokking chapter (Power et al., 2022): config, claims and experiment runs."""
