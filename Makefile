# The two commands: `make book` and `make test`.  Each sets itself up first.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
PROFILE ?= book
CHAPTER ?= grokking

.PHONY: book test lab run list setup clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
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
	$(PY) -m pytest

## make lab: JupyterLab on book/, chapters open as notebooks (jupytext)
LAB_SETTINGS = $(VENV)/share/jupyter/lab/settings
lab: $(STAMP)
	mkdir -p $(LAB_SETTINGS)
	printf '{"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"markdown": "Jupytext Notebook", "myst": "Jupytext Notebook"}}}\n' > $(LAB_SETTINGS)/overrides.json
	$(VENV)/bin/jupyter lab --notebook-dir=book

## make run CHAPTER=grokking PROFILE=smoke: one chapter headless
run: $(STAMP)
	$(PY) -m repro run $(CHAPTER) --profile $(PROFILE)

list: $(STAMP)
	$(PY) -m repro list

clean:
	rm -rf _build runs
