# The README's two commands: `make run` (the main job) and `make test` (everything CI checks).
SHELL := /bin/bash
VENV := .venv
ZLH := $(VENV)/bin/zlh
DATA_DIR ?= /var/lib/zlh
LISTEN ?= 0.0.0.0:8780
BACKEND ?= lxc
DEMO_FLAGS ?=

.PHONY: run test bootstrap lint artifacts

bootstrap:
	@scripts/bootstrap.sh

artifacts: bootstrap
	$(ZLH) artifacts build node --data-dir $(DATA_DIR)
	$(ZLH) artifacts build code-server --data-dir $(DATA_DIR)

# The main job (zlh demo): artifacts and LXC template (cached), zlh up, the admin account, a demo
# container; prints the portal and IDE URLs and runs until Ctrl-C. BACKEND=process without root.
run: bootstrap
	$(ZLH) demo --backend $(BACKEND) --data-dir $(DATA_DIR) --listen $(LISTEN) $(DEMO_FLAGS)

lint: bootstrap
	$(VENV)/bin/ruff check src tests bench setup.py build_backend
	$(VENV)/bin/ruff format --check src tests bench setup.py build_backend
	$(VENV)/bin/mypy

# The tests check that the front runs compiled when bootstrap compiled it (ZLH_COMPILE_FRONT).
test: lint
	ZLH_COMPILE_FRONT=$${ZLH_COMPILE_FRONT:-1} $(VENV)/bin/pytest
