# aipm-tracking: the README's commands. `make demo` then `make test` on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
PLUGINS := plugins/aipm-mlflow plugins/aipm-wandb

.PHONY: install install-test demo test lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# core + both plugins (editable)
$(STAMP): $(BIN)/python pyproject.toml $(wildcard plugins/*/pyproject.toml)
	$(PIP) install -q -e . $(addprefix -e ,$(PLUGINS))
	touch $@

install: $(STAMP)

# test extras, the CPU build of torch and the framework adapters, and a real browser
$(TEST_STAMP): $(STAMP)
	$(PIP) install -q -e '.[test]' torch==2.13.0 torchmetrics netcal transformers lightning keras psycopg2-binary websocket-client accelerate google-crc32c
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	    || echo "warning: could not install chromium; browser tests will be skipped"; \
	  else echo "note: run as root (or install Debian's chromium) for the browser tests"; fi; }
	touch $@

install-test: $(TEST_STAMP)

demo: install
	rm -rf demo-out && $(BIN)/aipm --store demo-out/.aipm demo --dir demo-out

lint: install-test
	$(BIN)/ruff check src tests plugins benchmarks examples

typecheck: install-test
	$(BIN)/mypy src
	$(BIN)/mypy plugins/aipm-mlflow/src plugins/aipm-wandb/src

pytest: install-test
	$(BIN)/pytest -q -p no:cacheprovider tests
	cd plugins/aipm-mlflow && ../../$(BIN)/pytest -q -p no:cacheprovider tests
	cd plugins/aipm-wandb && ../../$(BIN)/pytest -q -p no:cacheprovider tests

test: lint typecheck pytest

bench: install-test
	for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) demo-out .aipm .mypy_cache .ruff_cache .pytest_cache
