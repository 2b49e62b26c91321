"""The RND chapter (Burda et al. 2018): config and claims (``config``), experiment runs (``experiments``)."""
