# adaptrl: `make demo` and `make test` each create .venv if missing, install, and run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.jax_cache

.PHONY: install demo test test-slow lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/adaptrl bench sampler --env HalfCheetahRandDirec --tasks 40 --rollouts 20 --horizon 100
	$(BIN)/adaptrl sample --env HalfCheetahRandDirec --tasks 8 --rollouts 20 --out demo-output
	@echo "demo: plot of random-policy returns per task in demo-output/returns.png"

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -n 2 -m "not slow" -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/sampler.py

clean:
	rm -rf $(VENV) .jax_cache demo-output .pytest_cache
