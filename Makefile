# Gongjian — one command to run, one to test.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run demo migrate test lint typecheck openapi bench clean

$(STAMP): pyproject.toml
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Gongjian needs Python 3.11 or newer: make PY=python3.11 ...")'
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## Run the API (and the SPA when built) on http://$${HOST:-127.0.0.1}:$${PORT:-8000}, embedded DB + demo data by default
## (DATABASE_URL: use that server instead; DATA_DIR: where the embedded database lives)
run: install
	$(BIN)/gongjian serve

## Load the demo county into the configured database (refuses a production environment)
demo: install
	$(BIN)/gongjian demo

migrate: install
	$(BIN)/gongjian migrate

## The whole suite against real PostgreSQL (embedded unless TEST_DATABASE_URL is set)
test: install
	$(BIN)/ruff check backend tests migrations
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check backend tests migrations

typecheck: install
	$(BIN)/mypy

## Regenerate the committed OpenAPI contract
openapi: install
	$(BIN)/gongjian openapi --output openapi/openapi.json

## Benchmarks; results written to bench/results/ (latest.json: org tree and HTTP; matching.json: matching engine)
bench: install
	$(BIN)/python -m tests.bench.matching --output bench/results/matching.json
	$(BIN)/python -m tests.bench.run --output bench/results/latest.json

clean:
	rm -rf $(VENV) .data
