# Two commands on a fresh machine: `make run` (set up + run the pipeline on synthetic data)
# and `make test` (set up with dev extras + run the test suite).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
BIN := $(VENV)/bin

.PHONY: run test test-fast install install-dev bench lint clean

$(PY):
	python3 -m venv $(VENV)

$(VENV)/.installed: pyproject.toml constraints.txt | $(PY)
	$(PIP) -c constraints.txt -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(PY)
	$(PIP) -c constraints.txt -e '.[dev]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro
	@echo
	@echo "metrics:      $(BIN)/dvc metrics show   (metrics.json = stage 2; metrics/{stage1,multiview,ensemble}.json; plots in plots/)"
	@echo "predictions:  predictions/test/   (evaluation predictions in predictions/eval/, predictions/compare/)"
	@echo "models:       models/stage1.pt, models/stage2.pt (3D), models/unet2d.pt (2D), models/ensemble.json; registry: $(BIN)/vesselseg models"
	@echo "MLflow UI:    $(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db  then  http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning"

test: install-dev
	$(PY) -m pytest

# Quick feedback while developing: everything but the end-to-end tests marked slow (DDP,
# parallel tuning, SIGKILL crash recovery, the DVC pipeline, a real tracking server).
test-fast: install-dev
	$(PY) -m pytest -m "not slow"

bench: install-dev
	$(PY) benchmarks/run_all.py

lint: install-dev
	$(BIN)/ruff check vesselseg tests benchmarks cli.py
	$(BIN)/ruff format --check vesselseg tests benchmarks cli.py

clean:
	rm -rf data models predictions plots metrics metrics.json plans.json dvc.lock .cache
