# Everything the project needs, from a machine with only Python 3.11 and make.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: demo test test-fast lint bench install clean browser postgres stack stack-down

demo: $(STAMP)
	$(BIN)/bce-eval demo

# the formatter and the linter first, then every test (servers, the stack, the browser included)
test: $(STAMP) lint browser postgres
	$(BIN)/python -m pytest

# the tests that need no server, other process or browser (under 3 minutes on 2 cores)
test-fast: $(STAMP) lint
	$(BIN)/python -m pytest -m "not system"

lint: $(STAMP)
	$(BIN)/ruff format --check --quiet flows tasks tests data
	$(BIN)/ruff check --quiet flows tasks tests data

# Debian's Chromium for the browser test (needs root; without it that one test is skipped)
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) >/dev/null 2>&1; } || echo "chromium not installed: the browser test will be skipped"

# Debian's PostgreSQL 15 for the team-stack tests (needs root; without it those tests are skipped)
postgres:
	@test -x /usr/lib/postgresql/15/bin/initdb || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15) >/dev/null 2>&1; } || echo "postgresql-15 not installed: the team-stack tests will be skipped"

# the team stack on this machine (PostgreSQL, S3, MLflow and Prefect servers, a worker, a Dask
# cluster, all on 127.0.0.1); data and runs stay in .stack (or BCE_EVAL_STACK_HOME) across restarts
stack: $(STAMP) postgres
	$(BIN)/bce-eval stack up

stack-down:
	$(BIN)/bce-eval stack down

# DuckDB only for the benchmark (a peer it measures against), not a dependency of bce-eval
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -r requirements-bench.txt -c constraints.txt
	$(BIN)/python -m flows.bench

install: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

clean:
	rm -rf $(VENV) .prefect mlflow/mlflow.db mlflow/artifacts
