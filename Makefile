# Two commands matter: `make run` and `make test`. Both work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Reinstall whenever pyproject.toml changes.
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml 2>/dev/null | cut -c1-12)
PYTEST_ARGS ?=
# Workers for the pytest and fuzz stages: most tests wait on subprocesses, sockets and databases,
# so three workers on two cores finish well before one (every test has its own database/stream).
PYTEST_WORKERS ?= 3

.PHONY: run test unit lint typecheck services pytest pytest-pure chaos fuzz bench-smoke clean native native-required

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,bench]"
	@rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP) native
	$(BIN)/cashmarkets serve

test: $(STAMP) native-required lint typecheck services pytest pytest-pure chaos fuzz bench-smoke

# The pure core and the other unit tests, without the slow ones: the fast loop while coding.
unit: $(STAMP) native
	@$(BIN)/pytest -q tests/unit -m "not slow" $(PYTEST_ARGS)

# The C hot paths (src/cashmarkets/core/_native.c); see docs/decisions/016-native-hot-paths.md.
native: $(STAMP)
	@scripts/build-native.sh

native-required: $(STAMP)
	@scripts/build-native.sh --required

lint: $(STAMP)
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools

typecheck: $(STAMP)
	$(BIN)/mypy

services:
	@scripts/ensure-services.sh

# pytest exits 5 when it collected no test: for us that is a broken suite, never a pass.
pytest: $(STAMP) native-required
	@$(BIN)/pytest -m "not fuzz and not chaos" -n $(PYTEST_WORKERS) --dist worksteal --durations=15 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

# The spot and engine suites again with the C hot paths off (CASHMARKETS_NATIVE=0): the Python
# paths `make run` uses without a compiler, tested as a whole and not only against the C
# (tests/unit/test_native.py). test_native_setting proves the engines really ran without them.
PURE_TESTS := tests/unit/test_native_setting.py tests/unit/test_engine.py tests/unit/test_ledger.py \
	tests/unit/test_ledger_partial_holds.py tests/unit/test_ledger_properties.py tests/unit/test_spot.py \
	tests/unit/test_spot_marketdata.py tests/unit/test_spot_reference.py tests/unit/test_leverage.py \
	tests/unit/test_chartgame.py tests/integration/test_api_spot.py tests/integration/test_spot_projection.py \
	tests/integration/test_gateway_spot.py
pytest-pure: $(STAMP) services
	@CASHMARKETS_NATIVE=0 $(BIN)/pytest -q -m "not fuzz" -n $(PYTEST_WORKERS) --dist worksteal $(PURE_TESTS) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest-pure collected no tests: failing" >&2; exit 1; fi; exit $$rc

# The chaos test (tests/e2e/test_chaos.py): distributed mode on a private Redis and PostgreSQL,
# each dependency and each process killed once under load; alone, so its recovery times are the
# deployment's. Prints the table of recovery times and writes test-output/chaos.json.
chaos: $(STAMP) native-required services
	@$(BIN)/pytest -m chaos $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "the chaos stage collected no tests: failing" >&2; exit 1; fi; exit $$rc

# The fuzz stage, bounded in time: Schemathesis over every HTTP operation, the socket fuzzer,
# and 40,000-deep payloads to every decoder of a real server (docs/security.md).
fuzz: $(STAMP) native-required services
	@$(BIN)/pytest -m fuzz -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "the fuzz stage collected no tests: failing" >&2; exit 1; fi; exit $$rc

# Every benchmark at a tiny size: proves they run and print their JSON, measures nothing.
bench-smoke: $(STAMP) native
	@scripts/bench-smoke.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis src/cashmarkets/core/_native*.so
