# Two commands (README Quickstart):  make demo   |   make test
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup browser demo test lint clean

setup: $(VENV)/.installed

# torch==2.13.0 first: a local CPU wheel here; the package itself only asks torch>=2.4, so no
# extra can move it. Then the package with every extra (fastif, experiments) and the test tools.
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[all,test]"
	touch $@

# The main job: on bundled digits, explain test predictions (most helpful / harmful training
# images with scores), check against leave-one-out retraining, find flipped labels; writes
# demo-out/report.html and PNG figures.
demo: setup
	$(BIN)/influencekit report --out demo-out

# Headless Chromium for the report's browser test (Debian package; best-effort, as root).
# Where it cannot be installed the browser test is skipped with a message.
browser:
	@command -v chromium >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium not installed: the browser test will be skipped"

# ruff, and BENCHMARKS.md equal to what benchmarks/assemble.py generates from the results files
lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python benchmarks/assemble.py --check

test: setup lint browser
	$(BIN)/pytest -n 2 -q tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
