"""The curiosity chapter (Burda et al. 2019): config and claims (``config``), experiment runs (``experiments``)."""
