# The two commands a newcomer needs are `make demo` and `make test`; each sets itself up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit soak diagrams compiled test-compiled bench clean FORCE

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the project's metadata changes.
# (Pure Python, even where HATCH_BUILD_HOOKS_ENABLE is set: compiled in place, stale extensions
# would shadow the sources.)
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	env -u HATCH_BUILD_HOOKS_ENABLE $(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Fifty streams against the simulator with a realistic share of faults, shown live, then checked.
demo: $(STAMP)
	$(BIN)/streamlife simulate --streams 50 --faults default

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

# The compiled build: pyproject.toml's mypyc hook, as `HATCH_BUILD_HOOKS_ENABLE=1 python -m build` makes it,
# installed apart in build/compiled, so the source tree stays pure Python and no stale extension
# shadows an edited source. Built from a copy, because the hook compiles in place.
COMPILED := $(CURDIR)/build/compiled
COMPILED_STAMP := $(COMPILED)/.built
COMPILE_FROM := build/compile-src
SOURCES := pyproject.toml README.md $(shell find streamlife -name '*.py' -o -name py.typed)
SOURCE_LIST := build/sources.txt

# Rewritten only when the list of sources changes: a module deleted or renamed rebuilds too.
FORCE:
$(SOURCE_LIST): FORCE
	@mkdir -p build
	@echo '$(sort $(SOURCES))' | cmp -s - $@ || echo '$(sort $(SOURCES))' > $@

$(COMPILED_STAMP): $(SOURCES) $(SOURCE_LIST) | $(STAMP)
	rm -rf $(COMPILE_FROM) $(COMPILED)
	mkdir -p $(COMPILE_FROM)
	tar --exclude=__pycache__ -cf - $(sort $(SOURCES)) | tar -xf - -C $(COMPILE_FROM)
	HATCH_BUILD_HOOKS_ENABLE=1 $(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir $(COMPILE_FROM)/dist ./$(COMPILE_FROM)
	$(BIN)/python -m pip install --quiet --no-deps --target $(COMPILED) $(COMPILE_FROM)/dist/*.whl
	touch $@

compiled: $(COMPILED_STAMP)

# Runs with the compiled build ahead of the source tree: PYTHONSAFEPATH keeps the working directory
# (the pure sources) from the head of sys.path, and tests/test_compiled.py checks what was loaded.
# Absolute paths, for child processes that run elsewhere.
WITH_COMPILED := PYTHONSAFEPATH=1 PYTHONPATH=$(COMPILED):$(CURDIR) STREAMLIFE_COMPILED=1

# The whole suite again, on the compiled build (CI runs it after `make test`).
test-compiled: $(COMPILED_STAMP)
	$(WITH_COMPILED) $(BIN)/python -m pytest -p no:cacheprovider

# Lifecycle, in-process and HTTP ingest at up to 100k live tasks, against references measured in the
# same run, on the compiled build (instructions also on pure Python): writes bench/results.json and
# bench/RESULTS.md. `make bench BENCH_ARGS=--quick` for a smoke run (bench/RESULTS.quick.md);
# BENCH_ARGS="--only ingest" for one benchmark.
bench: $(COMPILED_STAMP)
	$(WITH_COMPILED) $(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build .mypy_cache .pytest_cache .ruff_cache .hypothesis
