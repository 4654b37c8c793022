# Quick start: `make demo` (as root: tunring connect against ocserv; else the no-root ring demo) and `make test` (the whole suite; root for tests/net).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint test-long fuzz bench setup clean

demo: $(STAMP)
	@if [ "$$(id -u)" = 0 ]; then sh scripts/bootstrap test; fi  # as root the demo runs ocserv
	$(BIN)/tunring demo

# The whole suite on the native core, then again on the pure-Python reference (TUNRING_PURE=1),
# leaving out the tests that hold both paths side by side themselves (marked path_independent).
test: $(STAMP)
	sh scripts/bootstrap test
	$(BIN)/python -m pytest
	TUNRING_PURE=1 $(BIN)/python -m pytest -m "not path_independent"

# Static checks on src/ (configured in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check src
	$(BIN)/mypy

# Opt-in long runs (100k-input fuzzing and friends).
test-long: $(STAMP)
	TUNRING_LONG=1 $(BIN)/python -m pytest -m slow

# Coverage-guided fuzzing of the native core (libFuzzer, ASan, UBSan): every target for
# FUZZ_SECONDS each, or FUZZ_RUNS executions each (scripts/fuzz.py).
FUZZ_SECONDS ?= 60
fuzz: $(STAMP)
	sh scripts/bootstrap test
	$(BIN)/python scripts/fuzz.py $(if $(FUZZ_RUNS),--runs $(FUZZ_RUNS),--seconds $(FUZZ_SECONDS))

bench: $(STAMP)
	$(BIN)/tunring bench ring

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py scripts/bootstrap src/tunring/_atomic.c $(wildcard src/tunring/native/*.[ch])
	sh scripts/bootstrap base
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) build src/*.egg-info src/tunring/*.so .pytest_cache .hypothesis
