#!/usr/bin/env bash
# The GPU benchmarks in one go, for a GPU lent for minutes (one H100/H200-class GPU: about 6-8 minutes,
# most of it the installs). Writes every result as JSON under $OUT (default ./gpu-results) and one
# combined gpu-suite.json.
#
#   bash benchmarks/gpu_suite.sh            # from the repository root, on the GPU machine
#   OUT=/some/dir bash benchmarks/gpu_suite.sh
#
# 1. fails fast, with its message, when no GPU is visible (nvidia-smi missing or listing none);
# 2. installs the pinned stack into .venv-gpu (package registries only; torch from PyPI is the CUDA build);
# 3. runs benchmarks/train_throughput.py --shape qwen2.5-1.5b --steps 30 (ours vs plain TRL, MFU, LoRA memory)
#    and benchmarks/infer_throughput.py --config qwen2.5-1.5b (decode tokens/s, bandwidth, batch 1 and 8),
#    both on the real 1.5B shape with random weights, then, in a venv of its own and when time allows,
#    benchmarks/vllm_throughput.py on the same shape and prompts (vLLM's engine, batch 1 and 8).
set -euo pipefail

OUT="${OUT:-./gpu-results}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1 || [ -z "$(nvidia-smi -L 2>/dev/null)" ]; then
  echo "gpu_suite: no GPU visible (nvidia-smi missing or lists no device); these benchmarks need a CUDA GPU." >&2
  exit 2
fi
nvidia-smi | tee "$OUT/nvidia-smi.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.csv"

# Pinned: the versions the CPU test suite runs (pyproject's extras give the lower bounds).
PINS=(torch==2.13.0 transformers==5.24.0 tokenizers==0.23.3 trl==1.16.0 peft==0.21.2 datasets==5.2.0
      accelerate==1.15.0 safetensors==0.8.0)
PY="${PYTHON:-python3}"
if [ ! -x .venv-gpu/bin/python ]; then
  "$PY" -m venv .venv-gpu
fi
.venv-gpu/bin/pip install -q --upgrade pip
.venv-gpu/bin/pip install -q "${PINS[@]}"
.venv-gpu/bin/pip install -q -e '.[train]'
.venv-gpu/bin/python -c "import torch, sys; ok = torch.cuda.is_available(); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', ok); sys.exit(0 if ok else 3)" \
  || { echo "gpu_suite: torch sees no CUDA device (driver too old for torch ${PINS[0]#torch==}?)" >&2; exit 3; }

run() {  # name, command…: stdout's last line is the JSON; stderr goes to a log beside it
  local name="$1"; shift
  echo "== $name: $*" >&2
  if timeout 300 "$@" > "$OUT/$name.stdout" 2> "$OUT/$name.log"; then
    tail -n 1 "$OUT/$name.stdout" > "$OUT/$name.json"
  else
    echo "gpu_suite: $name failed (rc $?); see $OUT/$name.log" >&2
    printf '{"benchmark": "%s", "error": "failed, see %s.log"}\n' "$name" "$name" > "$OUT/$name.json"
  fi
}

run train_throughput .venv-gpu/bin/python benchmarks/train_throughput.py --shape qwen2.5-1.5b --steps 30
run infer_throughput .venv-gpu/bin/python benchmarks/infer_throughput.py --config qwen2.5-1.5b

# vLLM last and in a venv of its own: it pins its own torch and transformers (so only our qwen-vocab extra goes
# in), and its install (~2 GB) is the first thing to drop when the lease runs short. Skipped when more than
# VLLM_AFTER_S (default 240 s) have gone, or the install fails; the JSON then says why, and the transformers
# figures above stand alone.
if [ "$SECONDS" -lt "${VLLM_AFTER_S:-240}" ]; then
  [ -x .venv-vllm/bin/python ] || "$PY" -m venv .venv-vllm
  if timeout 200 .venv-vllm/bin/pip install -q vllm && .venv-vllm/bin/pip install -q -e '.[qwen-vocab]'; then
    run vllm_throughput .venv-vllm/bin/python benchmarks/vllm_throughput.py --config qwen2.5-1.5b
  else
    printf '{"benchmark": "vllm_throughput", "skipped": "pip install vllm failed or took over 200 s"}\n' \
      > "$OUT/vllm_throughput.json"
  fi
else
  printf '{"benchmark": "vllm_throughput", "skipped": "%s s had gone; VLLM_AFTER_S=%s"}\n' "$SECONDS" \
    "${VLLM_AFTER_S:-240}" > "$OUT/vllm_throughput.json"
fi

.venv-gpu/bin/python - "$OUT" <<'PY'
import datetime, json, pathlib, sys
out = pathlib.Path(sys.argv[1])
gpu = (out / "gpu.csv").read_text().strip()
results = {}
for name in ("train_throughput", "infer_throughput", "vllm_throughput"):
    try:
        results[name] = json.loads((out / f"{name}.json").read_text())
    except (OSError, ValueError) as e:
        results[name] = {"error": f"{type(e).__name__}: {e}"}
suite = {"date": datetime.date.today().isoformat(), "gpu": gpu, "results": results}
(out / "gpu-suite.json").write_text(json.dumps(suite, indent=2))
print(json.dumps(suite))
PY
