# Everything installs into .venv with the pinned torch pair from constraints.txt.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install run test lint fuzz bench bench-quick gpu-check clean

$(BIN)/deploykit: pyproject.toml setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,openvino,data,remote]'
	touch $@

install: $(BIN)/deploykit

run: install
	$(BIN)/deploykit run

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2

bench: install
	$(BIN)/pip install --quiet -c constraints.txt -e '.[bench]'
	$(BIN)/python bench/run_all.py

bench-quick: install
	$(BIN)/pip install --quiet -c constraints.txt -e '.[bench]'
	$(BIN)/python bench/run_all.py --quick

# One short device check for a GPU machine (docs/gpu.md): what is importable, timing, numerics, DDP.
gpu-check: install
	$(BIN)/python bench/gpu_check.py --out bench/results/gpu_check.csv

lint: install
	$(BIN)/ruff check .

# The property-based fuzz run of every reader, long (the test suite runs a bounded one).
fuzz: install
	DEPLOYKIT_FUZZ=long $(BIN)/python -m pytest -q -p no:xdist tests/test_fuzz.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
