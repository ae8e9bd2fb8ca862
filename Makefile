# One command surface: the same targets locally and in CI (.ci/run calls `make test`).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   ?= .venv
PY     := $(VENV)/bin/python
UV     ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
CORRAL := $(VENV)/bin/corral
STAMP  := $(VENV)/.installed

.PHONY: help install browser demo test lint typecheck layers unit durability soak bench lock clean

help: ## Show the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-11s %s\n", $$1, $$2}'

$(UV):
	@command -v uv >/dev/null 2>&1 || python3 -m pip install --user --quiet uv

$(STAMP): pyproject.toml requirements/main.lock requirements/dev.lock | $(UV)
	$(UV) venv --quiet --allow-existing --python python3 $(VENV)
	$(UV) pip install --quiet --python $(PY) -r requirements/dev.lock
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install Corral with its pinned dependencies

CHROMIUM ?= /usr/bin/chromium
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "the UI tests drive Chromium: install it (no apt-get here)" >&2; exit 1; }
	$(SUDO) apt-get install -y -q chromium || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }

browser: $(CHROMIUM) ## Install Debian's Chromium, which the UI tests drive (Playwright)

demo: $(STAMP) ## Run the customer-support agent fleet on embedded SQLite (scripted model): a worker is killed mid-fleet and the runs resume
	$(PY) -m corral.demo

lint: $(STAMP) ## ruff (lint and format check)
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples

typecheck: $(STAMP) ## mypy (strict on engine, store, errors, testing)
	$(VENV)/bin/mypy

layers: $(STAMP) ## Check the import layers of DESIGN.md (import-linter)
	$(VENV)/bin/lint-imports

unit: $(STAMP) ## The test suite without the slow durability suites
	$(VENV)/bin/pytest -m "not slow" -q

test: lint typecheck layers browser ## Lint, types, layers and the whole test suite
	$(VENV)/bin/pytest -q

soak: $(STAMP) ## The long soak and chaos sizes (CORRAL_SOAK_RUNS, CORRAL_SOAK_KILLS)
	CORRAL_SOAK=1 $(VENV)/bin/pytest -q tests/durability -m slow

bench: $(STAMP) ## The benchmark suite: prints a table
	$(PY) -m bench

lock: | $(UV) ## Re-pin requirements/*.lock from pyproject.toml
	$(UV) pip compile --quiet --no-header --python-version 3.11 pyproject.toml -o requirements/main.lock
	$(UV) pip compile --quiet --no-header --python-version 3.11 --extra dev pyproject.toml -o requirements/dev.lock

clean: ## Remove the virtualenv, caches and the demo database
	rm -rf $(VENV) .corral .mypy_cache .ruff_cache .pytest_cache .hypothesis
