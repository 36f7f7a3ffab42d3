# Candor — the two commands a fresh machine needs are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
CUSTOMERS ?= 500
# processes the test suite runs on (pytest-xdist); TEST_WORKERS=0 runs it in one process
TEST_WORKERS ?= 2
export CANDOR_DATA_DIR ?= ./candor-data

.PHONY: run test install install-dev lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev tests/web/node_modules/.installed

# axe-core (accessibility checks in the browser tests) from npm; skipped where npm is missing
tests/web/node_modules/.installed: tests/web/package.json tests/web/package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --prefix tests/web --no-audit --no-fund --silent && touch $@; \
	else echo "npm not found: browser accessibility checks will be skipped"; fi

## make run: install, seed a demo brand into the embedded store, serve on http://$(HOST):$(PORT)
run: install
	$(BIN)/candor demo --customers $(CUSTOMERS) --host $(HOST) --port $(PORT)

## make test: install with dev extras, lint, type-check and run every test
test: install-dev
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/mypy
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal

lint: install-dev
	$(BIN)/ruff check src tests $(wildcard bench)

typecheck: install-dev
	$(BIN)/mypy

## make bench: the full-size benchmarks (not part of make test)
bench: install-dev
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) candor-data .pytest_cache .mypy_cache .ruff_cache
