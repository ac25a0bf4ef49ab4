# enl monorepo. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
# Frameworks never share a pytest process: importing torchvision after
# tensorflow segfaults, and Keras picks its backend once per process.
MARK ?= not slow
# pytest exits 5 when it collects nothing: that fails the default suite (CI must
# never pass on nothing); only `make test-slow` allows a suite without slow tests.
pytest = $(PY) -m pytest -m "$(MARK)" -p no:cacheprovider $(1) || { rc=$$?; [ $$rc -eq 5 ] && [ -n "$(ALLOW_EMPTY)" ] || exit $$rc; }
export HYPOTHESIS_PROFILE ?= ci
export TF_CPP_MIN_LOG_LEVEL ?= 2

SUITES := test-core test-keras test-keras-torch test-keras-jax test-torch test-torch-detection \
	test-garden test-parity test-experiments test-bench test-packaging

.PHONY: help setup test test-long test-slow lint experiment bench bench-gpu $(SUITES)

help: ## List the targets with a one-line description.
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 24

setup: $(STAMP) ## Create .venv with the four packages (editable) and pinned deps; quick when done.

$(STAMP): requirements/constraints.txt requirements/dev.txt packages/enl-core/pyproject.toml packages/enl-keras/pyproject.toml packages/enl-torch/pyproject.toml experiments/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements/constraints.txt -r requirements/dev.txt \
		-e packages/enl-core -e 'packages/enl-keras[garden,jax]' -e 'packages/enl-torch[detection,export]' -e experiments
	touch $@

test: setup ## Run the whole default suite (each framework in its own process); non-zero on any failure or an empty suite.
	@$(MAKE) --no-print-directory -k $(SUITES)

test-long: ## The default suite with the long Hypothesis profile.
	@$(MAKE) --no-print-directory test HYPOTHESIS_PROFILE=dev

test-slow: setup ## Only the tests marked slow (every detector variant trained a step, inductor, ...); about an hour.
	@$(MAKE) --no-print-directory -k $(SUITES) MARK=slow ALLOW_EMPTY=1

test-core: setup ## enl-core reference and its property tests (NumPy only).
	$(call pytest,tests/core)

test-keras: setup ## enl-keras Keras 3 layers and tf_keras twins, TensorFlow backend.
	KERAS_BACKEND=tensorflow $(call pytest,packages/enl-keras/tests --ignore=packages/enl-keras/tests/garden)

test-keras-torch: setup ## enl-keras Keras 3 layers on the torch backend (own process).
	KERAS_BACKEND=torch $(call pytest,packages/enl-keras/tests --ignore=packages/enl-keras/tests/garden)

test-keras-jax: setup ## enl-keras Keras 3 layers on the JAX backend (own process; float64 cases need x64).
	KERAS_BACKEND=jax JAX_ENABLE_X64=1 $(call pytest,packages/enl-keras/tests --ignore=packages/enl-keras/tests/garden)

TORCH_DETECTION_TESTS := $(addprefix packages/enl-torch/tests/,test_detection_fpn.py test_detection_builders.py test_train.py)

test-torch: setup ## enl-torch blocks: parity, gradcheck, compile/TorchScript/ONNX, autocast, convert.
	$(call pytest,packages/enl-torch/tests $(addprefix --ignore=,$(TORCH_DETECTION_TESTS)))

test-torch-detection: setup ## enl-torch ENL-FPN Faster/Mask R-CNN builders and the train CLI (DDP, resume).
	$(call pytest,$(TORCH_DETECTION_TESTS))

test-garden: setup ## Model Garden ENL-FPN: decoder, NL backbone, experiments, train entry, mirrored step.
	KERAS_BACKEND=tensorflow $(call pytest,packages/enl-keras/tests/garden)

test-parity: setup ## Cross-framework parity: every implementation in its own worker process.
	$(call pytest,tests/parity)

test-experiments: setup ## The embedded dataset, the main job's logic and a tiny end-to-end run.
	$(call pytest,tests/experiments)

test-bench: setup ## The benchmark's own logic (report, fitting, targets); not timings.
	$(call pytest,tests/bench)

test-packaging: setup ## Build the four wheels: contents, licence, metadata, twine check; the installed main job finds its configs.
	$(call pytest,tests/packaging)

PROFILE ?=
SEEDS ?= 1
FRAMEWORK ?= garden
COCO_DIR ?=
SPLIT ?= context
STEPS ?=
NUM_TRAIN ?=
FIRST_SEED ?=
VARIANTS ?=
DATASET ?= strip
experiment: setup ## The main job: baseline, +1NL BU, +3ENL TD on the embedded data (PROFILE, SEEDS, VARIANTS, DATASET, FRAMEWORK, SPLIT, STEPS, NUM_TRAIN, COCO_DIR).
	$(PY) -m enl_experiments.main --profile "$(PROFILE)" --seeds $(SEEDS) --framework $(FRAMEWORK) --dataset $(DATASET) --split $(SPLIT) --variants "$(VARIANTS)" $(if $(STEPS),--train-steps $(STEPS)) $(if $(NUM_TRAIN),--num-train $(NUM_TRAIN)) $(if $(FIRST_SEED),--first-seed $(FIRST_SEED)) $(if $(COCO_DIR),--coco-dir "$(COCO_DIR)")

bench: setup ## Benchmarks: Table 3 cost, block scaling, ENL vs sgemm; writes results/bench/ (BENCH_QUICK=1: smaller).
	$(PY) -m enl_experiments.bench

DRY_RUN ?=
bench-gpu: setup ## On a CUDA machine: ENL block bench in float32/float16/bfloat16 and Model Garden +3ENL TD mixed_float16 steps, under 8 min (DRY_RUN=1: tiny, on CPU).
	$(PY) -m enl_experiments.bench.gpu $(if $(DRY_RUN),--dry-run)

lint: setup ## ruff over the whole repository.
	$(PY) -m ruff check .
