# Quick start: `make demo` (as root: tunring connect against ocserv; else the no-root ring demo) and `make test` (the whole suite; root for tests/net).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint test-long bench setup clean

demo: $(STAMP)
	@if [ "$$(id -u)" = 0 ]; then sh scripts/bootstrap test; fi  # as root the demo runs ocserv
	$(BIN)/tunring demo

test: $(STAMP)
	sh scripts/bootstrap test
	$(BIN)/python -m pytest

# Static checks on src/ (configured in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check src
	$(BIN)/mypy

# Opt-in long runs (100k-input fuzzing and friends).
test-long: $(STAMP)
	TUNRING_LONG=1 $(BIN)/python -m pytest -m slow

bench: $(STAMP)
	$(BIN)/tunring bench ring

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py scripts/bootstrap src/tunring/_atomic.c
	sh scripts/bootstrap base
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) build src/*.egg-info src/tunring/*.so .pytest_cache .hypothesis
