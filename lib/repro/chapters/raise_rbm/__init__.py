"""The ``raise`` chapter (RAISE, Burda et al. 2015); named ``raise_rbm`` because ``raise`` is a Python keyword."""
