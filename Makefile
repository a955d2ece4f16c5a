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
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

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

clean: ## Remove the virtual environment, caches and local results
	rm -rf $(VENV) .pytest_cache .ruff_cache results
