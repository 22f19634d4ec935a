# `make serve` starts the hub with embedded defaults (history kept in .tidings/history.db); `make test` installs and runs every test.
# Both work in .venv: `make serve` installs tidings with its runtime dependencies only,
# `make test` adds the test extras (linters, test clients, the browser driver).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed

.PHONY: serve test lint typecheck unit fuzz system-deps js-deps js-test clean

$(RUNTIME_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $(RUNTIME_STAMP)

$(STAMP): $(RUNTIME_STAMP)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# The documented development key `dev` is used only by `make serve`, which binds 127.0.0.1.
serve: $(RUNTIME_STAMP)
	mkdir -p .tidings
	$(BIN)/tidings serve --host 127.0.0.1 --port 8000 --demo --api-key dev \
		--history-path .tidings/history.db

system-deps:
	bash .ci/system-deps

# The npm SDK for tests/integration/test_client_js.py; npm ci rewrites the stamp file.
JS_STAMP := tests/js/node_modules/.package-lock.json
$(JS_STAMP): tests/js/package-lock.json
	npm ci --prefix tests/js --no-audit --no-fund
	touch $(JS_STAMP)

js-deps: $(JS_STAMP)

# tidings.js (src/tidings/server/static/tidings.js): its unit tests, on Node's own runner.
js-test: system-deps
	cd js && node --test test/

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

# The long fuzz run (docs/security.md): the HTTP request parser, the WebSocket reader and
# both client-protocol decoders, FUZZ_SECONDS in all (a quarter each). Coverage-guided with
# atheris where it installs; the HTTP and WebSocket targets fall back to random cases
# without it. Crashing inputs and the growing corpora stay in FUZZ_DIR. (The same targets
# run briefly in `make test`; TIDINGS_FUZZ_EXAMPLES=N runs N Hypothesis examples per test.)
FUZZ_SECONDS ?= 600
FUZZ_DIR ?= .fuzz
FUZZ_STAMP := $(VENV)/.fuzz-installed
FUZZ_PART = $$(($(FUZZ_SECONDS) / 4))

$(FUZZ_STAMP): $(STAMP)
	-$(BIN)/python -m pip install -q -e '.[fuzz]'
	touch $(FUZZ_STAMP)

fuzz: $(FUZZ_STAMP)
	mkdir -p $(FUZZ_DIR)/http $(FUZZ_DIR)/websocket $(FUZZ_DIR)/protobuf $(FUZZ_DIR)/json
	$(BIN)/python tests/fuzz/test_fuzz_http.py --seconds $(FUZZ_PART) \
		-artifact_prefix=$(FUZZ_DIR)/ $(FUZZ_DIR)/http
	$(BIN)/python tests/fuzz/test_fuzz_websocket.py --seconds $(FUZZ_PART) \
		-artifact_prefix=$(FUZZ_DIR)/ $(FUZZ_DIR)/websocket
	PYTHONPATH=tests/fuzz $(BIN)/python tests/fuzz/atheris_decoders.py protobuf_commands \
		-max_total_time=$(FUZZ_PART) -timeout=5 -rss_limit_mb=1024 -max_len=8192 \
		-artifact_prefix=$(FUZZ_DIR)/ $(FUZZ_DIR)/protobuf
	PYTHONPATH=tests/fuzz $(BIN)/python tests/fuzz/atheris_decoders.py json_commands \
		-max_total_time=$(FUZZ_PART) -timeout=5 -rss_limit_mb=1024 -max_len=8192 \
		-artifact_prefix=$(FUZZ_DIR)/ $(FUZZ_DIR)/json

# Branch coverage is reported (in-process code; the CLI and bench run in subprocesses).
test: system-deps js-deps js-test lint typecheck
	$(BIN)/pytest -q --cov --cov-report=term:skip-covered

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache $(FUZZ_DIR)
