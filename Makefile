# SecureChat: `make run` serves the app, `make test` runs every test. Both set themselves up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BIND ?= 127.0.0.1:8000
export SECURECHAT_DATA_DIR ?= var

.PHONY: run cluster check test lint format bench browser clean

$(VENV)/.installed: pyproject.toml
	@echo "Setting up $(VENV) from pyproject.toml (the first time takes about half a minute)..."
	$(PYTHON) -m venv $(VENV)
	@echo "Upgrading pip, then installing SecureChat and its test and dev tools..."
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	@echo "$(VENV) is ready."
	touch $@

# The server answers only for the origin it is reached at: its bind address, unless the
# environment names another (SECURECHAT_PUBLIC_ORIGIN, see README).
run: export SECURECHAT_PUBLIC_ORIGIN ?= http://$(BIND)
run: $(VENV)/.installed
	$(BIN)/python -m securechat init
	$(BIN)/python -m securechat serve --bind $(BIND)

# A throwaway two-node cluster (tools/cluster.py): its own PostgreSQL and Redis (installed by
# tools/ensure-engines when missing and root), nodes on 127.0.0.1:8001 and :8002. Ctrl-C stops all.
cluster: $(VENV)/.installed
	$(BIN)/python -m tools.cluster

browser:
	tools/ensure-browser

# Biome (package.json) lints and formats static/js; npm ci installs exactly the lock file.
node_modules/.installed: package.json package-lock.json
	tools/ensure-node
	npm ci --no-audit --no-fund
	touch $@

lint: $(VENV)/.installed node_modules/.installed
	$(BIN)/ruff check securechat tests tools
	$(BIN)/ruff format --check securechat tests tools
	$(BIN)/mypy
	npx --no-install biome ci static/js

format: $(VENV)/.installed node_modules/.installed
	$(BIN)/ruff format securechat tests tools
	$(BIN)/ruff check --fix securechat tests tools
	npx --no-install biome check --write static/js

# The developer loop: lint, then every test that is neither `browser` nor `slow` (under a minute),
# in two processes, each taking whole files (module-scoped servers are started once).
check: $(VENV)/.installed lint
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not browser and not slow"

# Every test, under branch coverage of securechat/ (pyproject.toml [tool.coverage]).
test: $(VENV)/.installed browser lint
	$(BIN)/python -m coverage erase
	$(BIN)/python -m coverage run -m pytest
	$(BIN)/python -m coverage combine --quiet
	$(BIN)/python -m coverage report

$(VENV)/.bench-installed: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install --quiet -e '.[bench]'
	touch $@

bench: $(VENV)/.bench-installed
	$(BIN)/python -m tools.bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis
