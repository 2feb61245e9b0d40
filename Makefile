# Every target bootstraps its own virtual environment (.venv) and installs the project into it,
# so a fresh machine with Python 3.11 needs nothing else.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DATA   ?= data

.PHONY: run test test-slow bench lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

run: $(STAMP)  ## the main job: the core benchmark on ./data (bench-results/ gets the JSON)
	$(PY) bench/run_core.py --data $(DATA)

test: $(STAMP)  ## the default suite (well under 15 minutes)
	$(PY) -m pytest -q -m "not slow" tests

test-slow: $(STAMP)  ## long soaks: hundreds of kill -9 trials
	$(PY) -m pytest -q -m "slow" tests

bench: $(STAMP)  ## pytest-benchmark; compare two runs with --benchmark-compare
	$(PY) -m pytest -q bench --benchmark-only --benchmark-autosave --benchmark-min-rounds=3

lint: $(STAMP)
	$(PY) -m ruff check logstore tests bench

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks bench-results data
