# Two commands (README Quickstart):  make demo   |   make test
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

# torch==2.13.0 first: a local CPU wheel here; the package itself only asks torch>=2.4.
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $@

demo: setup
	$(BIN)/influencekit validate --workload digits-logreg --solver exact --k 30

lint: setup
	$(BIN)/ruff check src tests benchmarks

test: setup lint
	$(BIN)/pytest -n 2 -q tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
