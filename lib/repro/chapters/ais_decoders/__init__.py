"""The chapter on evaluating decoder-based generative models with AIS (Wu et al. 2017)."""
