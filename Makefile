# cubicfit: `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
GPU ?= 0
IMAGE ?= cubicfit:0.1.0

.PHONY: help install run test lint bench image airflow e2e clean

help: ## Show this help
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## Create .venv and install the pinned packages from requirements.lock

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

run: install ## Run one fit of the default problem; results go to ./results
	$(BIN)/cubicfit run

test: install ## Run the whole test suite (starts an S3 endpoint: MinIO if available, else moto_server)
	$(BIN)/python -m pytest

lint: install ## Check code style with ruff
	$(BIN)/ruff check jobs tests dags benchmarks

bench: install ## Time cubicfit against the per-point loops it replaces (a few minutes); writes docs/benchmarks.md
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

image: ## Build the job image with Docker (GPU=1: CUDA PyTorch); needs a Docker engine, which the dev and CI machines lack
	@docker info >/dev/null 2>&1 || { echo "make image: no Docker engine answered (docker info failed); build the image where Docker runs" >&2; exit 1; }
	docker build --file jobs/Dockerfile \
		--build-arg TORCH_BUILD=$(if $(filter 1,$(GPU)),cu130,cpu) \
		--tag $(IMAGE)$(if $(filter 1,$(GPU)),-cuda) .

airflow: install ## Start a local Airflow on 127.0.0.1 with the sweep DAG in local mode and a test S3 endpoint; prints URL and login
	$(BIN)/python tests/e2e/airflow_stack.py

e2e: install ## Browser test: headless Chromium triggers the sweep DAG in a local Airflow (installs chromium with apt-get if missing)
	@test -x /usr/bin/chromium || { echo "make e2e: installing chromium with apt-get" >&2; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	$(BIN)/python -m pytest -m e2e tests/e2e

clean: ## Remove the virtual environment, caches and local results
	rm -rf $(VENV) .pytest_cache .ruff_cache results
