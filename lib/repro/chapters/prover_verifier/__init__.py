"""The prover–verifier chapter (Kirchner et al. 2024): config and claims (``config``), the game's runs (``experiments``)."""
