# Two entry points: `make demo` starts the app on the default checkpoint, `make test` runs the tests.
# Each installs what it needs into .venv on first use (and Debian packages for the browser test).
# `make lint` (ruff check + ruff format --check) runs in CI before the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint system-deps

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

system-deps:
	@command -v chromium >/dev/null && command -v espeak-ng >/dev/null || \
	  ($(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium espeak-ng)

demo: $(VENV)/.installed
	$(PY) app.py

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: $(VENV)/.installed system-deps
	$(PY) -m pytest -q -ra
