# Storefront Gateway — every command a developer or CI needs. `make help` lists them.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
export PATH := $(CURDIR)/$(BIN):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help install build run migrate test test-py test-rust test-cov fuzz chaos lint format proto bench-native bench loadtest worker scheduler docker-up docker-down check-delivery

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(PYTHON):
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(PYTHON) ## create .venv, install the package (Rust extension in release mode) and dev tools
	$(BIN)/pip install --quiet -e '.[dev]'
	$(MAKE) build

build: $(PYTHON) ## rebuild the Rust extension in release mode into the venv
	$(BIN)/maturin develop --release --quiet

run: ## serve REST (8000) and gRPC (50051) on the embedded defaults
	$(BIN)/storefront serve

migrate: ## apply pending SQL migrations
	$(BIN)/storefront migrate

worker: ## run a taskiq worker (needs REDIS_URL)
	$(BIN)/storefront worker

scheduler: ## run the taskiq scheduler (needs REDIS_URL)
	$(BIN)/storefront scheduler

test: test-rust test-py ## the whole suite: Rust unit tests and Python tests (starts PostgreSQL and Redis itself)

test-rust: ## cargo tests of the native crate
	cargo test --workspace --quiet

FUZZ_CASES ?= 50000
fuzz: ## proptest fuzzing of the native JWT and pricing entry points at volume (FUZZ_CASES per property, release)
	PROPTEST_CASES=$(FUZZ_CASES) cargo test --release --quiet -p storefront-native --test fuzz_jwt --test fuzz_pricing

chaos: ## fault tests: Redis and PostgreSQL killed under load, SIGTERM mid-checkout, 10k idle sockets and slowloris
	$(PYTHON) -m pytest -q -m chaos tests/integration

test-py: ## Python tests against real PostgreSQL and Redis
	$(PYTHON) -m pytest -q

test-cov: test-rust ## Python tests with coverage (floor 85% of server/ and workers/)
	$(PYTHON) -m pytest -q --cov --cov-report=term-missing:skip-covered --cov-fail-under=85

lint: ## ruff, mypy, import layers (lint-imports), stubtest, cargo fmt --check, clippy -D warnings
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(PYTHON) -m mypy.stubtest server._native
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

format: ## ruff format + fix, cargo fmt
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	cargo fmt --all

proto: ## regenerate server/rpc/pb from protos/ (imports rewritten to the package)
	$(PYTHON) scripts/gen_proto.py

bench-native: ## Rust vs Python figures for JWT, pricing and the limiter
	$(PYTHON) scripts/bench_native.py

bench: ## wrk: gateway vs FastAPI reference and vs Tornado's connection (pinned; ARGS=--profile), then --workers 2 vs 1
	$(PYTHON) loadtests/bench.py $(ARGS)
	$(PYTHON) loadtests/bench_workers.py

loadtest: ## Locust suites vs a seeded gateway + Redis; budgets in loadtests/targets.toml (LOADTEST_DURATION=60)
	$(PYTHON) loadtests/run_loadtest.py

docker-up: ## the production-shaped stack: PostgreSQL, Redis, migrate, 2 gateways, worker, scheduler, nginx (needs .env, certs)
	docker compose up -d --build

docker-down: ## stop the compose stack (volumes kept)
	docker compose down

check-delivery: ## static checks: docker compose config, nginx -t, actionlint, hadolint, k8s manifests (kustomize + schemas), shellcheck
	scripts/check_delivery.sh
