"""One package per chapter: ``repro.chapters.<name>``.

``config.py`` holds the chapter's typed config, the paper's reference values
and the chapter's claims (imports no torch, so ``python -m repro params`` is
instant); ``experiments.py`` holds the chapter's experiment runs, built from
the algorithm modules.  Algorithm modules never import from here.
"""
