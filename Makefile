# fm-bio: `make help` lists the targets. Every target sets up the environment it needs by itself.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build by default (a local wheel on the project machines, so set-up is fast there).
# GPU users: `make env TORCH_SPEC="torch==2.13.0" TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128`
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=
STAMP := $(VENV)/.fm-bio-installed
RUN := $(PY) -m fm_bio.run
N_JOBS ?= 2

.PHONY: help env test test-fast reproduce applewatch applewatch-ablations data preprocess bench lint clean clean-data wandb-sync

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | sort | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

env: $(STAMP) ## Create or refresh the virtual environment (.venv)

test: $(STAMP) ## Run the test suite (creates the environment first)
	$(PY) -m pytest -n 2 --timeout 900

test-fast: $(STAMP) ## Run the tests not marked slow
	$(PY) -m pytest -n 2 -m "not slow"

data: $(STAMP) ## Generate the embedded MESA-format and sleep-accel-format demo data under data/
	$(RUN) task=generate_demo dataset=mesa n_jobs=$(N_JOBS)
	$(RUN) task=generate_demo dataset=applewatch n_jobs=$(N_JOBS)

REPRO_DIR ?= outputs/reproduce

reproduce: $(STAMP) ## The main job on the embedded demo data: preprocess -> pretrain -> per-client study -> report
	$(RUN) experiment=preprocess_mesa n_jobs=$(N_JOBS) hydra.run.dir=$(REPRO_DIR)/preprocess_mesa
	$(RUN) experiment=preprocess_applewatch n_jobs=$(N_JOBS) hydra.run.dir=$(REPRO_DIR)/preprocess_applewatch
	$(RUN) experiment=pretrain_mesa hydra.run.dir=$(REPRO_DIR)/pretrain
	$(RUN) experiment=population_mesa hydra.run.dir=$(REPRO_DIR)/population
	rm -rf $(REPRO_DIR)/study
	$(RUN) -m experiment=study_mesa hydra.sweep.dir=$(REPRO_DIR)/study
	$(RUN) task=report study=mesa_demo report.sweep_dir=$(REPRO_DIR)/study
	@echo "results: experiments/mesa_demo/results.md"

AW_ROOT ?= ../shared/data/sleep-accel
AW_RUN_DIR ?= outputs/loso/applewatch/main

applewatch: $(STAMP) ## Leave-subjects-out Apple Watch study on AW_ROOT (a sleep-accel tree) -> experiments/applewatch/ (resumes)
	$(RUN) experiment=applewatch_loso dataset.root=$(AW_ROOT) hydra.run.dir=$(AW_RUN_DIR)
	@echo "results: experiments/applewatch/results.md"

applewatch-ablations: $(STAMP) ## The quality-work runs of the Apple Watch study (Base only, one setting changed each)
	PY=$(PY) bash experiments/applewatch/ablations.sh $(AW_ROOT)

bench: $(STAMP) ## Benchmarks; results go to experiments/bench/
	$(PY) -m fm_bio.bench.preprocess_bench
	$(PY) -m fm_bio.bench.loader_bench
	$(PY) -m fm_bio.bench.pretrain_bench
	$(PY) -m fm_bio.bench.finetune_bench
	$(PY) -m fm_bio.bench.inference_bench
	$(PY) -m fm_bio.bench.memory_bench

lint: $(STAMP) ## ruff
	$(PY) -m ruff check fm_bio tests

wandb-sync: $(STAMP) ## Push offline wandb runs (under outputs/) to the wandb server
	@dirs=$$(find outputs -type d -name 'offline-run-*' 2>/dev/null); \
	  if [ -z "$$dirs" ]; then echo "no offline wandb runs under outputs/"; else $(VENV)/bin/wandb sync --yes $$dirs; fi

clean: ## Remove run outputs and caches (keeps the environment and generated data)
	rm -rf outputs multirun .pytest_cache

clean-data: ## Remove generated demo data and preprocessing caches
	rm -rf data/demo data/cache
