# Every target bootstraps its own virtual environment (.venv) and installs the project into it,
# so a fresh machine with Python 3.11 needs nothing else.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DATA   ?= data

.PHONY: run test test-slow bench lint clean kcat

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

run: $(STAMP)  ## the main job: logstore bench --quick on ./data (bench-results/<time>/ gets JSON + plot)
	$(PY) -m logstore bench --quick --data $(DATA)

kcat:  ## Debian's kcat (librdkafka 2.0.2) for the real-client tests
	@command -v kcat >/dev/null || { command -v apt-get >/dev/null && apt-get update -qq && apt-get install -y -qq kcat >/dev/null; } || echo "kcat could not be installed: its tests will be skipped"

test: $(STAMP) kcat  ## the default suite (well under 15 minutes)
	$(PY) -m pytest -q -m "not slow" tests

test-slow: $(STAMP) kcat  ## long soaks: hundreds of kill -9 trials
	$(PY) -m pytest -q -m "slow" tests

bench: $(STAMP)  ## pytest-benchmark; compare two runs with --benchmark-compare
	$(PY) -m pytest -q bench --benchmark-only --benchmark-autosave --benchmark-min-rounds=3

lint: $(STAMP)
	$(PY) -m ruff check logstore tests bench

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks bench-results data
