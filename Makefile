# adaptrl: `make demo` and `make test` each create .venv if missing, install, and run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# JAX's compilation cache of make's commands and tests; a plain `adaptrl` command outside make uses
# $XDG_CACHE_HOME/adaptrl/jax, and this variable whenever it is set (README, "Requirements").
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.jax_cache

.PHONY: install demo test test-slow lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

DEMO_RUN := demo-output/promp-PointCorners

demo: $(STAMP)
	rm -rf $(DEMO_RUN)
	$(BIN)/adaptrl demo --out $(DEMO_RUN)

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -n 2 -m "not slow" -q --durations=15

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/sampler.py
	$(BIN)/python benchmarks/meta_iteration.py

clean:
	rm -rf $(VENV) .jax_cache demo-output .pytest_cache
