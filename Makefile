# Interlink's two commands:   make run   (the main job)   and   make test   (the whole suite).
# Each target does its own set-up: a virtualenv in .venv with the project installed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CONFIG ?= examples/demo.toml

.PHONY: setup prosody run test lint typecheck unit clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || (apt-get update -q && apt-get install -y -q python3-venv)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

setup: $(STAMP)

# Real XMPP server for the demo and the XMPP tests (Debian's package; we are root here).
prosody:
	@command -v prosody >/dev/null || (apt-get update -q && apt-get install -y -q prosody)

run: setup prosody
	$(BIN)/interlink run --config $(CONFIG)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy

unit: setup prosody
	$(BIN)/python -m pytest

test: lint typecheck unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
