"""Decode throughput of vLLM on the same shape and prompts as benchmarks/infer_throughput.py; prints JSON.

    python benchmarks/vllm_throughput.py --config qwen2.5-1.5b          # GPU: the 1.5B shape, random weights
    python benchmarks/vllm_throughput.py --model runs/…/stage-5-master-grpo   # a trained stage model

vLLM is the scale-out path for bulk generation (`shicheng predict`, the teacher, the judge reach it as an
OpenAI-compatible endpoint). This measures its offline engine, which is what that server runs, so the
figures sit beside infer_throughput.py's transformers backend in benchmarks/gpu_suite.sh. A random model is
written once as a Hugging Face directory (weights, the real Qwen2.5 vocabulary, our chat template), the
form a trained stage model has. Generations are forced to full length (ignore_eos, min_tokens) so that the
tokens counted are the tokens decoded; time to first token is timed as a one-token request at batch 1.
When vLLM does not import (no GPU machine, CPU-only install) the JSON says so and the exit code is 0, so
the suite goes on.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


@functools.cache
def _infer_module():
    """benchmarks/infer_throughput.py, for its shapes, prompts and bandwidth table (benchmarks is no package)."""
    spec = importlib.util.spec_from_file_location("infer_throughput", HERE / "infer_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_random_model(config: str, out: Path) -> Path:
    """A random-weight model of `config`'s shape saved as a model directory (bf16 on a GPU, float32 on CPU)."""
    import torch

    infer = _infer_module()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    backend = infer.random_backend(config, device, dtype)
    backend.model.save_pretrained(out)
    backend.tokenizer.save_pretrained(out)
    return out


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up: the first call also captures CUDA graphs for the batch size
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(model_dir: Path, args) -> dict:
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    infer = _infer_module()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    prompts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True)
               for c in infer.conversations(max(batches), args.prompt_tokens, tokenizer)]
    prompts = [list(p["input_ids"]) if hasattr(p, "keys") else list(p) for p in prompts]  # 5.x: a BatchEncoding
    llm = LLM(model=str(model_dir), dtype=args.dtype, seed=0, gpu_memory_utilization=args.gpu_memory_utilization,
              max_model_len=max(len(p) for p in prompts) + args.new_tokens + 16)
    full = SamplingParams(temperature=0.0, max_tokens=args.new_tokens, min_tokens=args.new_tokens, ignore_eos=True)
    first = SamplingParams(temperature=0.0, max_tokens=1)

    def run(batch: int, params):
        return llm.generate([{"prompt_token_ids": p} for p in prompts[:batch]], params, use_tqdm=False)

    import torch

    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    peak = args.peak_bandwidth_gbs or next((g for k, g in infer.PEAK_BANDWIDTH_GBS if k in name), None)
    # the safetensors files are the weights plus a header of a few KB
    weight_bytes = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
    rows = []
    for batch in batches:
        seconds = _timed(lambda b=batch: run(b, full), args.repeats)
        steps = args.new_tokens / seconds
        row = {"path": "vllm", "batch": batch, "new_tokens": args.new_tokens, "seconds": round(seconds, 3),
               "tokens_per_s": round(batch * steps, 1), "steps_per_s": round(steps, 2)}
        if peak:
            row["bandwidth_utilisation"] = round(weight_bytes * steps / (peak * 1e9), 3)
        rows.append(row)
    ttft = _timed(lambda: run(1, first), args.repeats)
    return {"benchmark": "vllm_throughput", "device": name, "dtype": args.dtype,
            "prompt_tokens": len(prompts[0]), "weight_bytes": weight_bytes, "peak_bandwidth_gbs": peak,
            "ttft_s": round(ttft, 4), "results": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description="Decode throughput of vLLM's engine on a stage model or a random "
                                             "model of a known shape (JSON).")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--model", help="a model directory (shicheng train output)")
    src.add_argument("--config", default="qwen2.5-1.5b", help="random weights of this shape (infer_throughput.py's "
                                                              "shapes; default qwen2.5-1.5b)")
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    ap.add_argument("--peak-bandwidth-gbs", type=float, default=None)
    ap.add_argument("--workdir", default=None, help="where the random model is written (default: a temp dir)")
    args = ap.parse_args()
    try:
        import vllm  # noqa: F401
    except Exception as e:  # ImportError, or a CUDA library that fails to load on a machine without a GPU
        print(json.dumps({"benchmark": "vllm_throughput", "skipped": f"vllm does not import: {type(e).__name__}: {e}"}))
        return
    if args.model:
        print(json.dumps(measure(Path(args.model), args)))
        return
    if args.config not in _infer_module().CONFIGS:
        sys.exit(f"unknown --config {args.config!r}: use one of {sorted(_infer_module().CONFIGS)}")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        model_dir = write_random_model(args.config, Path(tmp) / f"random-{args.config}")
        result = measure(model_dir, args)
    result["model"] = f"random-{args.config}"
    print(json.dumps(result))


if __name__ == "__main__":
    main()
