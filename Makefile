# Two commands a newcomer needs:  make run   and   make test   (both install into .venv first)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
MODEL  ?=          # empty: the preset's model (the cpu preset without a GPU)
ARGS   ?=

.PHONY: install run test test-fast lint bench gpu-check clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

run: install            ## fetch, train, predict --tta, submit
	$(BIN)/kagglecifar run $(MODEL) $(ARGS)

test: install           ## the whole test suite (CPU, a few minutes)
	$(BIN)/python -m pytest -q $(ARGS)

test-fast: install      ## the suite without the tests marked slow
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

lint: install           ## ruff (lint and format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install          ## benchmarks/ -> benchmarks/results/*.json
	$(BIN)/python benchmarks/run_all.py $(ARGS)

gpu-check:             ## on a CUDA machine, installing nothing: CUDA paths, GPU presets, predict timings -> benchmarks/results/gpu_check.json
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) benchmarks/gpu_check.py --data-dir $(or $(DATA),data) $(ARGS)

clean:
	rm -rf build *.egg-info .pytest_cache .mypy_cache .ruff_cache
