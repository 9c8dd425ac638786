# Routine tasks. `make run` and `make test` are all a newcomer needs; no venv activation.
# Settings come from REFERRAL_* variables (or .env); the default database is ./referrals.db.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# uv installs exactly the versions of the lock files (requirements/). It is installed itself once per machine, by pip,
# at this pinned version, into UV_HOME (no venv and no root needed); `make UV=uv ...` uses yours.
UV_VERSION := 0.13.9
UV_HOME ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/referral-service/uv-$(UV_VERSION)
ifeq ($(origin UV),undefined)
UV := $(UV_HOME)/bin/uv
UV_BOOTSTRAP := $(UV)
endif
# The interpreter uv builds .venv with: the one that installed uv, never a download.
UV_ENV := UV_PYTHON=$(PYTHON) UV_PYTHON_DOWNLOADS=never
# Written after a successful install; a newer pyproject.toml or lock file means install again.
# The lock: every package pinned with its hashes, for the runtime and for runtime + dev. Written by
# `uv pip compile` (make lock); a uv.lock would record the package index's addresses, which this
# repository keeps out.
LOCK_RUNTIME := requirements/runtime.txt
LOCK_DEV := requirements/dev.txt
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --quiet
RUNTIME_STAMP := $(VENV)/.synced-runtime
DEV_STAMP := $(VENV)/.synced-dev

HOST ?= 0.0.0.0
PORT ?= 8000
PYTEST_ARGS ?=
# `make test` fuzzes 25 cases per operation and phase (tests/test_fuzz.py); `make fuzz` many more.
FUZZ_EXAMPLES ?= 500

.DEFAULT_GOAL := help
.PHONY: help runtime dev lock run test fuzz lint fmt migrate revision openapi bench bench-quick clean

help:
	@echo "make run                  install the runtime, migrate, print a first admin key, seed a demo into an empty database,"
	@echo "                          serve on :$(PORT) (make run PORT=8001 HOST=127.0.0.1; links follow the port)"
	@echo "make dev                  install the runtime and the dev tools (make test and make lint do it themselves)"
	@echo "make lock                 update requirements/*.txt after a change to pyproject.toml's dependencies"
	@echo "make test                 run the test suite (PYTEST_ARGS='-k redeem -x' passes options)"
	@echo "make fuzz                 schemathesis over every operation, FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) per operation"
	@echo "make lint                 ruff check, ruff format --check, mypy, import contracts"
	@echo "make fmt                  sort imports and format with ruff"
	@echo "make migrate              apply migrations (alembic upgrade head)"
	@echo "make revision m='...'     autogenerate a migration from the models"
	@echo "make openapi              regenerate openapi/openapi.json"
	@echo "make bench                run the benchmarks: 1 and 2 workers, 1 and 2 replicas behind HAProxy, 3 runs each"
	@echo "                          (< 20 min; results in bench/results/latest.md)"
	@echo "make bench-quick          the same, smaller data set and shorter runs (< 3 min)"
	@echo "make clean                remove caches and build output (keeps .venv and referrals.db)"

# `runtime`: what serving needs (make run); `dev`: that plus the test and lint tools.
runtime: $(RUNTIME_STAMP)
dev: $(DEV_STAMP)

$(BIN)/python: | $(UV_BOOTSTRAP)
	$(UV_ENV) $(UV) venv --quiet $(VENV)

# Exactly the pinned versions, each checked against its hash, then the project itself (editable,
# without resolving anything). `install`, not `sync`: serving never removes the dev tools.
$(RUNTIME_STAMP): pyproject.toml $(LOCK_RUNTIME) | $(BIN)/python
	$(UV) pip install --quiet --python $(BIN)/python --require-hashes -r $(LOCK_RUNTIME)
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $@

$(DEV_STAMP): pyproject.toml $(LOCK_DEV) | $(BIN)/python
	$(UV) pip install --quiet --python $(BIN)/python --require-hashes -r $(LOCK_DEV)
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $@ $(RUNTIME_STAMP)

# After a dependency change in pyproject.toml: resolve again, keeping every pin that still fits
# (tests/test_lock.py fails while a dependency is missing from the lock files).
lock: | $(UV_BOOTSTRAP)
	$(UV) pip compile pyproject.toml $(LOCK_FLAGS) -o $(LOCK_RUNTIME)
	$(UV) pip compile pyproject.toml --group dev $(LOCK_FLAGS) -o $(LOCK_DEV)

# pip --target: works where `pip install --user` is refused (PEP 668) and needs no venv module.
# Installed beside (one folder per make process), then moved, so an interrupted or concurrent
# install leaves nothing that looks installed.
$(UV_HOME)/bin/uv:
	@echo "installing uv $(UV_VERSION) into $(UV_HOME) (once per machine)"
	@partial="$(UV_HOME).partial.$$$$"; \
	PIP_ROOT_USER_ACTION=ignore $(PYTHON) -m pip install --quiet --disable-pip-version-check \
		--target "$$partial" "uv==$(UV_VERSION)" \
	&& { mv -T "$$partial" "$(UV_HOME)" 2>/dev/null || rm -rf "$$partial"; } \
	&& test -x "$(UV_HOME)/bin/uv" \
	|| { rm -rf "$$partial"; \
		echo "error: could not install uv $(UV_VERSION) with '$(PYTHON) -m pip' (see above)." >&2; \
		echo "  Install uv yourself (pipx install uv==$(UV_VERSION), or your package manager)," >&2; \
		echo "  then run: make UV=uv $(or $(MAKECMDGOALS),help)" >&2; exit 1; }

# In one process (each start imports the app): migrate, `keys bootstrap`, `demo --if-empty` (a
# demo and its dashboard key only on a database with no program), then serve.
run: runtime
	$(BIN)/referral-service serve --setup --host $(HOST) --port $(PORT)

test: dev
	$(BIN)/pytest $(PYTEST_ARGS)

fuzz: dev
	REFERRAL_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/test_fuzz.py $(PYTEST_ARGS)

# Runs all three checks and fails at the end, so one run shows every finding.
lint: dev
	@status=0; \
	echo "ruff check"; $(BIN)/ruff check . || status=1; \
	echo "ruff format --check"; $(BIN)/ruff format --check . || status=1; \
	echo "mypy"; $(BIN)/mypy || status=1; \
	echo "lint-imports"; $(BIN)/lint-imports --no-cache || status=1; \
	exit $$status

fmt: dev
	$(BIN)/ruff check --fix --select I .
	$(BIN)/ruff format .

migrate: runtime
	$(BIN)/referral-service migrate

# Autogenerate compares the models with a database at head, so migrate first.
revision: runtime
	@test -n "$(m)" || { echo 'usage: make revision m="add reward rules"' >&2; exit 2; }
	$(BIN)/referral-service migrate
	$(BIN)/alembic revision --autogenerate -m "$(m)"

openapi: runtime
	$(BIN)/python -m app.http.openapi

# Not part of the test run: loads the machine for minutes; uses only the referral_bench database.
# BENCH_ARGS passes options, e.g. BENCH_ARGS='--wait-quiet 600' or BENCH_ARGS="--replicas ''".
# The scale-out phase (--replicas 1,2 by default; --quick: 2) runs HAProxy, installed when missing.
bench: dev
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/run.py $(BENCH_ARGS)

bench-quick: dev
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/run.py --quick $(BENCH_ARGS)

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis test-output build dist *.egg-info
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
