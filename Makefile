# callroom — two commands on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
# Any CPython >= 3.11: `make test PYTHON=python3.13`. VENV names the environment, so
# several Pythons can live side by side: `make test PYTHON=python3.12 VENV=.venv-3.12`.
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV ?= .venv
BIN := $(VENV)/bin
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))

.PHONY: run test lint fmt typecheck jscheck cov sync clean

# uv itself is bootstrapped with pip when the machine has none.
.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet 'uv>=0.5,<1'

# `make run` installs the runtime dependencies only; `make test` (and lint, typecheck)
# add the dev group, which brings the benchmark (`callroom-bench`, the workspace member
# bench/). --inexact: a run after a test keeps the dev tools instead of uninstalling them.
$(VENV)/.runtime: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --no-dev --inexact --python $(PYTHON)
	@touch $@

$(VENV)/.dev: pyproject.toml bench/pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@ $(VENV)/.runtime

sync: $(VENV)/.dev

run: $(VENV)/.runtime
	$(BIN)/callroom serve --dev --log-format console

lint: sync
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: sync
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# mypy --strict over the server, the benchmark and the tests (pyproject.toml [tool.mypy]);
# the second run is tests/browser/conftest.py ("conftest" is tests/conftest.py in the first).
typecheck: sync
	$(BIN)/mypy
	$(BIN)/mypy tests/browser/conftest.py

# The web client's and the load generator's (bench/node) JavaScript: tsc --checkJs
# --strict (TypeScript and Node's types pinned in package-lock.json, installed by `npm ci`
# when missing) and node's test runner.
node_modules/.bin/tsc: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

jscheck: node_modules/.bin/tsc
	node_modules/.bin/tsc -p jsconfig.json
	node_modules/.bin/tsc -p bench/node/jsconfig.json
	node --test tests/js/

# Every test, with line and branch coverage (subprocesses included) and a 90% floor.
test: lint typecheck jscheck
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest $(PYTEST_ARGS)
	$(BIN)/coverage combine --quiet
	$(BIN)/coverage report

clean:
	rm -rf .venv $(VENV) .tools node_modules .coverage .coverage.* .mypy_cache .ruff_cache .pytest_cache
