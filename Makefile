# Two commands matter: `make demo` (the main job: a local 3-node cluster with a demo provider)
# and `make test` (the whole suite). `make demo-down` stops the demo cluster.
# Both build the virtualenv in .venv from pyproject.toml first; nothing is installed by hand.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo demo-down test test-slow bench install

$(VENV)/.installed: pyproject.toml setup.py broker/_hotpath_c.pyx broker/client/_codec_c.pyx
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test,bench,otlp]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/rsbroker cluster up --nodes 3

demo-down: $(VENV)/.installed
	$(BIN)/rsbroker cluster down

# The second pass runs the relay and client tests on the pure-Python modules (the first ran
# the compiled ones, which tests/relay/test_hotpath.py and tests/client/test_codec.py
# require under CI=true).
test: $(VENV)/.installed
	bash scripts/browser-deps.sh
	$(BIN)/pytest -q
	RSBROKER_NO_EXTENSIONS=1 $(BIN)/pytest -q tests/relay tests/client

test-slow: $(VENV)/.installed
	$(BIN)/pytest -q -m slow

bench: $(VENV)/.installed
	$(BIN)/python -m benchmarks run
