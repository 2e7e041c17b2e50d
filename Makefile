# spotbox: `make demo` runs the whole flow on the local cloud, `make test` runs
# every test. Both set themselves up from a fresh clone (Linux, as root).
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
RUN := $(BIN)/python tests/run.py
export PATH := $(abspath $(BIN)):$(PATH)
export ANSIBLE_FORCE_COLOR ?= 0
export PY_COLORS ?= 0

.PHONY: help setup system-deps test lint unit molecule integration demo demo-down status clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/.installed: requirements.txt requirements-test.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-test.txt -c constraints.txt
	touch $@

setup: system-deps $(BIN)/.installed  ## install system packages (apt) and the Python venv

system-deps:  ## apt packages the local cloud needs (root)
	@scripts/install-system-deps

test: setup  ## everything: lint, unit tests, Molecule scenarios, integration tests
	$(BIN)/python -m localcloud session -- $(RUN) all

lint: $(BIN)/.installed  ## yamllint, ansible-lint (production profile), ruff
	$(RUN) lint

unit: $(BIN)/.installed  ## pytest unit tests (no local cloud needed)
	$(RUN) unit

molecule: setup  ## every Molecule scenario on the local cloud
	$(BIN)/python -m localcloud session -- $(RUN) molecule

integration: setup  ## the integration tests (tests/integration) on the local cloud
	$(BIN)/python -m localcloud session -- $(RUN) integration

demo: setup  ## the main job on the local cloud (AWS emulator + a booted box)
	scripts/demo

demo-down:  ## terminate the demo box and end the local cloud
	scripts/demo down

status: $(BIN)/.installed  ## your boxes, what they cost and what still bills (AWS credentials; read-only)
	$(BIN)/ansible-playbook playbooks/status.yml

clean:  ## end what an interrupted demo left, remove the venv
	-$(BIN)/python -m localcloud cleanup
	rm -rf $(VENV) .localcloud
