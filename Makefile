# `make serve` starts the hub with embedded defaults; `make test` installs and runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint typecheck unit system-deps js-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# The documented development key `dev` is used only by `make serve`, which binds 127.0.0.1.
serve: $(STAMP)
	$(BIN)/tidings serve --host 127.0.0.1 --port 8000 --demo --api-key dev

system-deps:
	bash .ci/system-deps

# The npm SDK for tests/integration/test_client_js.py; npm ci rewrites the stamp file.
JS_STAMP := tests/js/node_modules/.package-lock.json
$(JS_STAMP): tests/js/package-lock.json
	npm ci --prefix tests/js --no-audit --no-fund
	touch $(JS_STAMP)

js-deps: $(JS_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

# Branch coverage is reported (in-process code; the CLI and bench run in subprocesses).
test: system-deps js-deps lint typecheck
	$(BIN)/pytest -q --cov --cov-report=term:skip-covered

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
