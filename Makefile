# study-time: `make run` starts the service, `make test` runs every test.
# Both create .venv with the pinned dependencies on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: run test soak mutation lint format ferretdb browser nginx lrs clean bench bench-full bench-mongo

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt requirements.txt $(VENV)/.runtime
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

## Start the service on 127.0.0.1:8080 with the SQLite store (pass settings in ARGS="--port=9000").
run: $(VENV)/.runtime
	$(PY) server.py $(ARGS)

## Install what the tests need (FerretDB, Chromium, nginx, the test LRS where possible) and run them all.
test: $(VENV)/.dev ferretdb browser nginx lrs
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

## Soak test (opt-in, not in `make test`): thousands of connections churning for SOAK_SECONDS (default 600).
soak: $(VENV)/.dev
	SOAK_SECONDS=$${SOAK_SECONDS:-600} $(PY) -m pytest -q -s tests/test_soak.py

## Mutation testing (opt-in, not in `make test`): mutmut mutates the counting core, the writer and the
## day split ([tool.mutmut] in pyproject.toml), then prints per-module scores and fails on a survivor
## not explained in docs/mutation-survivors.md. About 10 minutes on 2 cores; see docs/testing.md.
mutation: $(VENV)/.mutation
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children $${MUTATION_JOBS:-2} > mutants.log 2>&1 || { tail -n 40 mutants.log; exit 1; }
	@tail -n 3 mutants.log | tr '\r' '\n' | tail -n 4
	$(PY) scripts/mutation_scores.py

$(VENV)/.mutation: requirements-mutation.txt $(VENV)/.dev
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-mutation.txt
	touch $@

## Build FerretDB (the MongoDB-compatible server the store tests use) unless it is already there.
ferretdb:
	@scripts/ensure-ferretdb.sh

## Install Debian's Chromium for the browser tests where we can (root); the tests skip otherwise, except under CI.
browser:
	@scripts/ensure-chromium.sh

## Install the test LRS (Learning Locker's xapi-statements) and xAPI validator from npm (tests/lrs/package-lock.json).
lrs:
	@scripts/ensure-lrs.sh

## Install Debian's nginx and systemd-analyze for the deployment tests (deploy/) where we can (root); skipped otherwise, except under CI.
nginx:
	@scripts/ensure-nginx.sh

## Benchmarks against bare Tornado and Node ws (not part of `make test`): `make bench` is the
## quick one (3-4 minutes, printing the four goals against bare Tornado), `make bench-full` the full one; see docs/performance.md.
bench: $(VENV)/.bench bench/node_modules/.ci
	$(PY) bench/run.py --quick

bench-full: $(VENV)/.bench bench/node_modules/.ci ferretdb
	$(PY) bench/run.py
	$(PY) bench/plot.py

## What the MongoDB store costs (commands, statements, documents per learner-hour, counted by
## PyMongo command monitoring against FerretDB; about 2 minutes, not part of `make test`).
bench-mongo: $(VENV)/.dev ferretdb
	$(PY) bench/mongo_cost.py

$(VENV)/.bench: bench/requirements.txt requirements.txt $(VENV)/.runtime
	$(PY) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	touch $@

bench/node_modules/.ci: bench/package.json bench/package-lock.json
	cd bench && npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

format: $(VENV)/.dev
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache test-output mutants mutants.log
