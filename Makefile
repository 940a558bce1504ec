# Fresh machine: `make demo` or `make test` creates .venv, installs repeval into it and runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-all demo bench gpu-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install only when the package's metadata or the pins change.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

demo: $(STAMP)
	$(BIN)/repeval demo

bench: $(STAMP)
	$(BIN)/python benchmarks/dgr_overhead.py

# First thing on any new GPU machine: the CUDA tests, bf16 vs fp32, step times at the NYUv2 recipe.
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) runs .pytest_cache
