# enl monorepo. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
# Frameworks never share a pytest process: importing torchvision after
# tensorflow segfaults, and Keras picks its backend once per process.
PYTEST := $(PY) -m pytest -m "not slow" -p no:cacheprovider
export HYPOTHESIS_PROFILE ?= ci
export TF_CPP_MIN_LOG_LEVEL ?= 2

SUITES := test-core test-keras test-keras-torch

.PHONY: help setup test test-long test-slow lint $(SUITES)

help: ## List the targets with a one-line description.
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 20

setup: $(STAMP) ## Create .venv with all three packages (editable) and pinned deps; quick when done.

$(STAMP): requirements/constraints.txt requirements/dev.txt packages/enl-core/pyproject.toml packages/enl-keras/pyproject.toml packages/enl-torch/pyproject.toml experiments/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements/constraints.txt -r requirements/dev.txt \
		-e packages/enl-core -e 'packages/enl-keras[garden]' -e 'packages/enl-torch[detection,export]' -e experiments
	touch $@

test: setup ## Run the whole default suite (each framework in its own process); non-zero on any failure or an empty suite.
	@$(MAKE) --no-print-directory -k $(SUITES)

test-long: ## The default suite with the long Hypothesis profile.
	@$(MAKE) --no-print-directory test HYPOTHESIS_PROFILE=dev

test-slow: setup ## Only the tests marked slow (large N, detector training); minutes to an hour.
	$(PY) -m pytest -m slow -p no:cacheprovider tests/core

test-core: setup ## enl-core reference and its property tests (NumPy only).
	$(PYTEST) tests/core

test-keras: setup ## enl-keras Keras 3 layers and tf_keras twins, TensorFlow backend.
	KERAS_BACKEND=tensorflow $(PYTEST) packages/enl-keras/tests --ignore=packages/enl-keras/tests/garden

test-keras-torch: setup ## enl-keras Keras 3 layers on the torch backend (own process).
	KERAS_BACKEND=torch $(PYTEST) packages/enl-keras/tests --ignore=packages/enl-keras/tests/garden

lint: setup ## ruff over the whole repository.
	$(PY) -m ruff check .
