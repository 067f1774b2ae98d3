# Every install step lives here: CI runs `make test` on a clean clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# A demo's journal stays in the checkout (.demo-state/), never in the user's ~/.local/state.
demo: $(STAMP)
	$(BIN)/liquidator run --simulate --targets config/targets.example.toml --yes \
		--report demo-report.json --state-dir .demo-state --log-format console

lint: $(STAMP)
	$(BIN)/ruff check worker tests bench
	$(BIN)/ruff format --check worker tests bench
	$(BIN)/lint-imports --no-cache --no-logo

typecheck: $(STAMP)
	$(BIN)/mypy

# The suite waits on loopback servers far more than it computes, so three processes share two
# cores well; the tests marked `solo` race real processes against the wall clock and run alone.
pytest: $(STAMP)
	$(BIN)/pytest -q -n 3 -m "not solo"
	$(BIN)/pytest -q -m solo

# Not part of `make test`: it takes minutes (bench/rate_limited.py's close_position alone about
# five, at 20 requests a second; bench/protected_scale.py about seven more) and measures this
# machine, not correctness.
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/pace.py
	$(BIN)/python bench/rate_limited.py
	$(BIN)/python bench/protected_scale.py

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache demo-report.json .demo-state
