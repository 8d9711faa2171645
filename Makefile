# The whole set-up: `make demo` (the campaign with telemetry, then the
# dashboard), `make test` (the full suite), `make bench` (benchmarks).
# Each target creates .venv and installs what it needs: `make demo` only the
# dashboard extra, the others everything.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: venv lint test demo bench docs docs-serve clean

DEMO_STAMP := $(VENV)/.installed-demo

$(STAMP): pyproject.toml hatch_build.py asyncflow/dashboard/_scan.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,hpc,dashboard]'
	touch $(STAMP)

# The demo needs only the dashboard extra, not the test and HPC tools.
$(DEMO_STAMP): pyproject.toml hatch_build.py asyncflow/dashboard/_scan.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dashboard]'
	touch $(DEMO_STAMP)

venv: $(STAMP)

LINT_PATHS := asyncflow tests scripts hatch_build.py $(wildcard bench) $(wildcard examples)

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

demo: $(DEMO_STAMP)
	$(BIN)/asyncflow demo $(DEMO_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

docs-serve: $(STAMP)
	$(BIN)/mkdocs serve -a 127.0.0.1:8000

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist site *.egg-info
