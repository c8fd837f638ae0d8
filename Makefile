# Two commands set up a fresh machine: `make run` and `make test` (each runs `make setup` first).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export MARKET_DATA_HOME := $(abspath $(or $(MARKET_DATA_HOME),$(CURDIR)/storage))
export DAGSTER_HOME ?= $(MARKET_DATA_HOME)/dagster
# Runs the daemon and the UI create plan a range with one event per asset (docs/pipeline.md).
export DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS ?= true
MARKET_API_PORT ?= 8000
# Where the API listens and how (docs/serving.md): the same variables reach granian's flags here
# and the API's own settings, which refuse what does not fit (auth off beyond loopback, unasked).
export MARKET_API_HOST := $(or $(MARKET_API_HOST),127.0.0.1)
export MARKET_API_WORKERS := $(or $(MARKET_API_WORKERS),1)
API_TLS = $(if $(MARKET_API_TLS_CERT),--ssl-certificate "$(MARKET_API_TLS_CERT)") \
	$(if $(MARKET_API_TLS_KEY),--ssl-keyfile "$(MARKET_API_TLS_KEY)")
DAGSTER_PORT ?= 3000
DAGSTER_DEV = $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(DAGSTER_PORT)

.PHONY: setup instance run ingest retry-failed api api-key api-keys api-key-revoke dagster worker \
	cluster test test-reliability test-cluster lint format bench lock

setup: $(STAMP)

$(STAMP): requirements/bootstrap.txt requirements/base.txt requirements/dev.txt requirements/migrate.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes -r requirements/bootstrap.txt
	# --compile-bytecode: every process (each Dagster run, the daemon's ticks) starts ~3 s faster
	# where PYTHONDONTWRITEBYTECODE keeps Python from caching what it compiles.
	$(BIN)/uv pip install -q --python $(BIN)/python --require-hashes --compile-bytecode \
		-r requirements/base.txt -r requirements/dev.txt
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	# DuckDB 2.0.0 alone, to convert a data home's file written before the 1.5.5 pin (market_core/duckdb_migration.py).
	test -x .venv-duckdb2/bin/python || $(BIN)/python -m market_core.duckdb_migration --install
	touch $(STAMP)

instance: setup
	@$(BIN)/python -m market_core.duckdb_migration
	@$(BIN)/python -m market_pipeline.cli.instance

## The main job: load the watchlist, then serve the Dagster UI (with its daemon) and the API.
# market_pipeline/cli/serve.py runs both and stops both, with all they started, within 10 s of SIGTERM
# or Ctrl-C. MAKE_COMMAND, not MAKE, names make there: `make -n run` must not start the servers.
run: instance
	$(BIN)/python -m market_pipeline.cli.ingest
	@echo "Dagster UI:  http://127.0.0.1:$(DAGSTER_PORT)"
	@echo "API:         http://127.0.0.1:$(MARKET_API_PORT)/instruments  (docs: /schema)"
	@exec $(BIN)/python -m market_pipeline.cli.serve --dagster "$(DAGSTER_DEV)" \
		--api "$(MAKE_COMMAND) --no-print-directory api"

## Headless: register the watchlist and materialize all three assets; non-zero if any symbol failed.
ingest: instance
	$(BIN)/python -m market_pipeline.cli.ingest

## Load again only the symbols whose latest attempt failed, in as few runs as their order allows.
retry-failed: instance
	$(BIN)/python -m market_pipeline.cli.retry

api: setup
	@$(BIN)/python -m market_core.duckdb_migration
	$(BIN)/granian --interface asgi --factory --host $(MARKET_API_HOST) --port $(MARKET_API_PORT) \
		--workers $(MARKET_API_WORKERS) --no-ws $(strip $(API_TLS) market_api.app:create_app)

## API keys of this environment's API (its data home, or PostgreSQL in the several-machines mode):
# api-key prints the new key once, alone on its last line; api-keys never shows a key.
api-key: setup
	@$(BIN)/python -m market_api.access.cli create "$(NAME)"

api-keys: setup
	@$(BIN)/python -m market_api.access.cli list

api-key-revoke: setup
	@$(BIN)/python -m market_api.access.cli revoke "$(NAME)"

dagster: instance
	$(DAGSTER_DEV)

## One Celery worker on this machine: it runs the steps of runs launched anywhere with the same
# MARKET_CELERY_BROKER_URL. make's child becomes Celery's worker (its config module goes under this
# machine's data home): SIGTERM to make, Ctrl-C, or make's death (even by SIGKILL) warm-stops it.
worker: setup
	@exec $(BIN)/python -m market_pipeline.cli.worker

## The one-box demo: Postgres, Redis, two workers, the Dagster webserver and daemon and two API
# replicas, each with a data home of its own under CLUSTER_HOME; Ctrl-C stops them all.
CLUSTER_HOME ?= $(CURDIR)/storage/cluster
cluster: setup
	@exec $(BIN)/python -m tools.cluster --home "$(CLUSTER_HOME)" \
		--dagster-port $(DAGSTER_PORT) --api-port $(MARKET_API_PORT)

## The fast suite: everything not marked `reliability` or `cluster`, spread over TEST_WORKERS processes
# (pytest-xdist; --dist loadfile keeps a module's costly servers in one process).
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not reliability and not cluster"; \
		rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

## The whole reliability and security suite (tests/reliability), the long kill -9 and load tests included,
# then the tests marked `reliability` beside the code they try (make run under Ctrl-C and SIGTERM).
test-reliability: setup
	$(BIN)/python -m pytest -q -m "" tests/reliability; rc=$$?; [ $$rc -eq 5 ] && rc=0; [ $$rc -eq 0 ] || exit $$rc; \
	$(BIN)/python -m pytest -q -m "reliability and not cluster" --ignore=tests/reliability tests; \
		rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

## The multi-machine tests (tests/cluster): they start a real PostgreSQL and Redis on loopback.
test-cluster: setup
	$(BIN)/python -m pytest -q -m cluster tests/cluster; rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup
	$(BIN)/python -m bench

## Re-pin every dependency (hashes, no download addresses) after editing requirements/*.in.
lock: setup
	cd requirements && ../$(BIN)/uv pip compile -q --python-version 3.11 --generate-hashes --no-header bootstrap.in -o bootstrap.txt
	cd requirements && ../$(BIN)/uv pip compile -q --python-version 3.11 --generate-hashes --no-header base.in -o base.txt
	cd requirements && ../$(BIN)/uv pip compile -q --python-version 3.11 --generate-hashes --no-header dev.in -o dev.txt
