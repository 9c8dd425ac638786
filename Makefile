# Routine tasks. `make run` and `make test` are all a newcomer needs; no venv activation.
# Settings come from REFERRAL_* variables (or .env); the default database is ./referrals.db.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Written after a successful install; pyproject.toml newer than it means reinstall.
STAMP := $(VENV)/.installed

HOST ?= 0.0.0.0
PORT ?= 8000
PYTEST_ARGS ?=
# `make test` fuzzes 25 cases per operation and phase (tests/test_fuzz.py); `make fuzz` many more.
FUZZ_EXAMPLES ?= 500

.DEFAULT_GOAL := help
.PHONY: help venv run test fuzz lint fmt migrate revision openapi bench bench-quick clean

help:
	@echo "make run                  migrate, print a first admin key, seed a demo into an empty database, serve on :$(PORT)"
	@echo "make test                 run the test suite (PYTEST_ARGS='-k redeem -x' passes options)"
	@echo "make fuzz                 schemathesis over every operation, FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) per operation"
	@echo "make lint                 ruff check, ruff format --check, mypy, import contracts"
	@echo "make fmt                  sort imports and format with ruff"
	@echo "make migrate              apply migrations (alembic upgrade head)"
	@echo "make revision m='...'     autogenerate a migration from the models"
	@echo "make openapi              regenerate openapi/openapi.json"
	@echo "make bench                run the benchmarks (< 20 min; results in bench/results/latest.md)"
	@echo "make bench-quick          the same, smaller data set and shorter runs (< 3 min)"
	@echo "make clean                remove caches and build output (keeps .venv and referrals.db)"

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
		echo "$(PYTHON) -m venv failed (on Debian: apt-get install python3-venv)" >&2; exit 1; }
	$(BIN)/python -m pip install -e ".[dev]"
	touch $@

# The demo (and its dashboard key) only on a database with no program yet: /dashboard has data.
run: venv
	$(BIN)/referral-service migrate
	$(BIN)/referral-service keys bootstrap
	$(BIN)/referral-service demo --if-empty
	$(BIN)/referral-service serve --host $(HOST) --port $(PORT)

test: venv
	$(BIN)/pytest $(PYTEST_ARGS)

fuzz: venv
	REFERRAL_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/test_fuzz.py $(PYTEST_ARGS)

# Runs all three checks and fails at the end, so one run shows every finding.
lint: venv
	@status=0; \
	echo "ruff check"; $(BIN)/ruff check . || status=1; \
	echo "ruff format --check"; $(BIN)/ruff format --check . || status=1; \
	echo "mypy"; $(BIN)/mypy || status=1; \
	echo "lint-imports"; $(BIN)/lint-imports --no-cache || status=1; \
	exit $$status

fmt: venv
	$(BIN)/ruff check --fix --select I .
	$(BIN)/ruff format .

migrate: venv
	$(BIN)/referral-service migrate

# Autogenerate compares the models with a database at head, so migrate first.
revision: venv
	@test -n "$(m)" || { echo 'usage: make revision m="add reward rules"' >&2; exit 2; }
	$(BIN)/referral-service migrate
	$(BIN)/alembic revision --autogenerate -m "$(m)"

openapi: venv
	$(BIN)/python -m app.http.openapi

# Not part of the test run: loads the machine for minutes; uses only the referral_bench database.
# BENCH_ARGS passes options, e.g. BENCH_ARGS='--wait-quiet 600'.
bench: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/run.py $(BENCH_ARGS)

bench-quick: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/run.py --quick $(BENCH_ARGS)

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis test-output build dist *.egg-info
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
