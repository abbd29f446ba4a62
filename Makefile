# make test  — fresh machine: create .venv, install everything (CPU torch), run ruff + the test suite
# make demo  — the main job: demo corpus -> curation -> five training stages on CPU -> where the outputs are
# make bench — throughput benchmarks (JSON)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := runs/demo
# torch first and pinned: 2.13.0 is the local CPU wheel here; an unpinned torch would pull GBs of CUDA packages.
TORCH ?= torch==2.13.0

.PHONY: test lint venv clean bench demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e '.[dev,train,serve]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

demo: $(STAMP)
	$(BIN)/shicheng demo-data --out $(DEMO)/materials
	$(BIN)/shicheng curate $(DEMO)/materials --out $(DEMO)/data
	$(BIN)/shicheng train --config configs/demo-cpu.yaml
	@echo "model: $(DEMO)/model/stage-5-master-grpo   datasets + card: $(DEMO)/data/README.md"

bench: $(STAMP)
	$(BIN)/python benchmarks/parse_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info
