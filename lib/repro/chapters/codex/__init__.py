"""The Codex / HumanEval chapter (Chen et al., 2021): config, claims and experiments."""
