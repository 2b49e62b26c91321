# The two commands: `make book` and `make test`.  Each sets itself up first.
#
# PYTHON: the interpreter that creates $(VENV).  Supported: CPython >=3.11,!=3.14.1,<3.15
# (pyproject.toml requires-python), checked by .ci/check_python.sh before anything is
# created; another one:  make setup PYTHON=/usr/bin/python3.12
# The venv records its interpreter in $(VENV)/.python.  A venv whose python no longer
# runs, is unsupported, changed minor version, or (with PYTHON= given) was made by
# another interpreter is recreated, not silently reused; recreating is friendlier than
# failing, since make then just installs the lock again.  Without PYTHON= a working,
# supported venv is kept whichever interpreter made it.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
PYSTAMP = $(VENV)/.python
PROFILE ?= book
CHAPTER ?= grokking
# make test PYTEST_ARGS="-m 'not chapter and not site'": extra pytest arguments
PYTEST_ARGS ?=
# make robustness SEEDS=0,1,2 CHAPTERS="grokking vae": no CHAPTERS = every chapter
SEEDS    ?= 0,1,2
CHAPTERS ?=

.PHONY: book test lab run list setup clean robustness pdf handouts FORCE

# Runs on every make that needs the venv (two `python -c`, cheap); rewrites
# $(PYSTAMP) only when the venv is (re)created or its interpreter changed.
$(PYSTAMP): FORCE
	@sh .ci/check_python.sh --venv $(VENV) $(if $(filter command line environment,$(origin PYTHON)),--explicit) $(PYTHON)

$(STAMP): requirements.lock pyproject.toml $(PYSTAMP)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

## make book: execute every chapter at the book profile (cached) and build _build/html
book: $(STAMP)
	$(PY) -m repro book --profile $(PROFILE)

## make test: unit tests, every chapter at smoke, the site build with warnings as errors
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

## make lab: JupyterLab on book/, chapters open as notebooks (jupytext)
LAB_SETTINGS = $(VENV)/share/jupyter/lab/settings
lab: $(STAMP)
	mkdir -p $(LAB_SETTINGS)
	printf '{"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"markdown": "Jupytext Notebook", "myst": "Jupytext Notebook"}}}\n' > $(LAB_SETTINGS)/overrides.json
	$(VENV)/bin/jupyter lab --notebook-dir=book

## make run CHAPTER=grokking PROFILE=smoke: one chapter headless
run: $(STAMP)
	$(PY) -m repro run $(CHAPTER) --profile $(PROFILE)

## make robustness: every chapter (or CHAPTERS=...) re-run with seeds $(SEEDS)
robustness: $(STAMP)
	$(PY) -m repro robustness --seeds $(SEEDS) $(CHAPTERS)

## make pdf: the whole book as one PDF, offline (needs chromium), into _build/pdf/
pdf: $(STAMP)
	$(PY) -m repro pdf --profile $(PROFILE)

## make handouts: student notebooks (solutions removed) and instructor notebooks, with zips, in _build/handouts/
handouts: $(STAMP)
	$(PY) -m repro handouts

list: $(STAMP)
	$(PY) -m repro list

clean:
	rm -rf _build runs

FORCE:
