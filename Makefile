# The two commands a newcomer needs are `make demo` and `make test`; each sets itself up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit soak diagrams bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the project's metadata changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Fifty streams against the simulator with a realistic share of faults, shown live, then checked.
demo: $(STAMP)
	$(BIN)/streamlife simulate --streams 50 --faults default --kinds audio,video,understand

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest

# The long hypothesis profile: thousands of examples per property.
soak: $(STAMP)
	HYPOTHESIS_PROFILE=soak $(BIN)/python -m pytest tests -p no:cacheprovider

diagrams: $(STAMP)
	$(BIN)/python -m streamlife diagram

# Lifecycle, in-process and HTTP ingest at up to 100k live tasks, against references measured in the
# same run: writes bench/results.json and bench/RESULTS.md. `make bench BENCH_ARGS=--quick` for a
# smoke run (bench/RESULTS.quick.md); BENCH_ARGS="--only ingest" for one benchmark.
bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
