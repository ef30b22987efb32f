# The README's two commands: `make run` (the main job) and `make test` (everything CI checks).
SHELL := /bin/bash
VENV := .venv
ZLH := $(VENV)/bin/zlh
DATA_DIR ?= /var/lib/zlh
LISTEN ?= 0.0.0.0:8780

.PHONY: run test bootstrap lint artifacts

bootstrap:
	@scripts/bootstrap.sh

artifacts: bootstrap
	$(ZLH) artifacts build node --data-dir $(DATA_DIR)
	$(ZLH) artifacts build code-server --data-dir $(DATA_DIR)

run: artifacts
	$(ZLH) artifacts list --data-dir $(DATA_DIR)
	$(ZLH) artifacts serve --data-dir $(DATA_DIR) --listen $(LISTEN)

lint: bootstrap
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest
