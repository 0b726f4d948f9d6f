# leantrain: two commands for a fresh machine, `make demo` and `make test`.
# Each creates .venv itself. torch is installed first only where the venv has none
# (TORCH_SPEC pins the CPU wheel on the project's machines; any recent CUDA build works too).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.leantrain-installed

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/leantrain demo

test: lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks recipes examples
	$(BIN)/ruff format --check src tests benchmarks recipes examples
	$(BIN)/mypy src/leantrain

bench: $(STAMP)
	$(BIN)/python benchmarks/layerdrop.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .mypy_cache
