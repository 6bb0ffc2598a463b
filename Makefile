# Two commands do all set-up on a fresh machine:
#   make demo   -> creates .venv, installs geneinfer, runs `geneinfer demo` on the embedded data
#   make test   -> creates .venv, installs geneinfer + dev tools, runs ruff and the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# cmapPy (CMap's reader) needs numpy < 2: it lives in its own environment, used only by the
# GCTX round-trip test (which skips with the reason when this environment cannot be built)
CMAPPY_VENV ?= .venv-cmappy
CMAPPY_STAMP := $(CMAPPY_VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

$(CMAPPY_STAMP): requirements-cmappy.txt
	$(PYTHON) -m venv $(CMAPPY_VENV)
	$(CMAPPY_VENV)/bin/python -m pip install --quiet -r requirements-cmappy.txt
	touch $(CMAPPY_STAMP)

demo: $(STAMP)
	$(BIN)/geneinfer demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts

test: $(STAMP) lint
	-$(MAKE) --no-print-directory $(CMAPPY_STAMP)
	$(BIN)/python -m pytest -q

# quick versions of the benchmarks (full sizes: run each script without --small)
bench: $(STAMP)
	for b in io linear neural predict; do $(BIN)/python benchmarks/bench_$$b.py --small || exit 1; done

clean:
	rm -rf $(VENV) $(CMAPPY_VENV) build dist .pytest_cache .ruff_cache
