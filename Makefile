# make test  — fresh machine: create .venv, install everything (CPU torch), run ruff + the test suite
# make demo  — the main job: demo corpus -> curation -> five training stages on CPU -> where the outputs are
# make bench — throughput benchmarks (JSON)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := runs/demo
MODEL := $(DEMO)/model/stage-5-master-grpo
# torch first and pinned: 2.13.0 is the local CPU wheel here; an unpinned torch would pull GBs of CUDA packages.
TORCH ?= torch==2.13.0

.PHONY: test lint venv clean bench demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e '.[dev,train,serve,local]'
	# xgrammar without triton: the local judge's constrained decoding runs on CPU without GPU kernels.
	$(BIN)/pip install -q --no-deps "xgrammar>=0.2.8" "apache-tvm-ffi>=0.1.11"
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
	$(BIN)/shicheng consult --model $(MODEL) --master li-shouyang --sex male --age 58 --max-new-tokens 768 \
	    --text "主诉：畏寒肢冷，腰膝酸软2年。现病史：夜尿频多，大便溏薄。舌象：舌淡胖，苔白滑。脉象：脉沉迟无力。"
	@mkdir -p $(DEMO)/consultations
	@for m in huang-peizhong su-qingyuan fang-shouzheng qin-tongmai; do \
	  $(BIN)/shicheng consult --model $(MODEL) --master $$m --json --max-new-tokens 768 --sex female --age 41 \
	    --text "主诉：胃脘胀痛3月，食后加重。现病史：嗳气，纳差，乏力。舌象：舌淡红，苔薄白。脉象：脉弦细。" \
	    > $(DEMO)/consultations/$$m.json && echo "consultation ($$m): $(DEMO)/consultations/$$m.json"; done
	@echo "model: $(MODEL)"
	@echo "datasets + card: $(DEMO)/data/README.md   stage manifests: $(DEMO)/model/stage-*/manifest.json"
	@echo "serve it: $(BIN)/shicheng serve --model $(MODEL)   (web page at http://127.0.0.1:8000/)"

bench: $(STAMP)
	$(BIN)/python benchmarks/parse_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info
