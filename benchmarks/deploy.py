"""Deployment without a GPU: peak memory, load time, tokens/s at batch 1 and time to first token, for the
transformers backend and for each GGUF quantisation through llama.cpp, in one run; prints JSON.

    .venv/bin/python benchmarks/deploy.py --model runs/demo/model/stage-5-master-grpo
    .venv/bin/python benchmarks/deploy.py --config qwen2.5-1.5b --threads 1         # random weights, real vocab

On a machine where other work holds a core, give --threads 1: llama.cpp's and torch's threads spin while
they wait for each other, and a thread without a core of its own slows every step (the README's table).

Each system is measured in a fresh subprocess, so that peak RSS is that backend's alone (a process that has
held a 6 GB float32 model never gives the pages back to a later measurement). The llama.cpp backend reads
the GGUF into memory rather than mapping it (see LlamaCppBackend), so its RSS is the weights it holds, as
the transformers rows' is. Every system gets the same prompt, the same thread count and the same decoding:
greedy, repetition penalty 1.0, no n-gram blocking, forced to the full length (min_new_tokens) so that
tokens counted = tokens decoded. The transformers backend runs in bfloat16 (the memory reference: the size the
model is trained and shipped in) and in its CPU default, float32 (the speed reference: what
`shicheng consult --model DIR` does on a CPU).

Worked numbers for the 1.5B shape (1.54 B parameters, the 233 M-parameter embedding tied): bf16 weights are
3.09 GB, q4_k_m about 1.0 GB; decoding is memory-bound, each token reads every weight once, so on a
laptop's ~20 GB/s a 4-bit model can decode at most ~20 tokens/s and a float32 one (6.2 GB) ~3.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the 1.5B shape, the real vocabulary and the prompt come from infer_throughput

SYSTEMS = ("transformers-bf16", "transformers-fp32")
OFF = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0}


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM). Not getrusage's ru_maxrss: Linux carries that across
    fork and exec, so a worker would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: ru_maxrss is this process's


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(kind: str, path: str, threads: int, messages: list[dict], new_tokens: int, repeats: int) -> dict:
    """One system in this (fresh) process: load, warm up, then `repeats` timed generations. The llama.cpp
    worker imports neither torch nor transformers, as on a laptop that has only the GGUF."""
    from shicheng.agent.backends import make_backend

    before = current_rss_mb()
    started = time.perf_counter()
    if kind.startswith("transformers"):
        import torch

        torch.set_num_threads(threads)
        before = current_rss_mb()  # after importing torch: its own ~0.3 GB is not the model's
        started = time.perf_counter()
        backend = make_backend(path, backend="transformers", device="cpu",
                               dtype="bfloat16" if kind.endswith("bf16") else "float32")
    else:
        backend = make_backend(path, backend="llamacpp", n_threads=threads)
    load_s = time.perf_counter() - started
    backend.generate(messages, max_new_tokens=2, min_new_tokens=2, **OFF)  # warm-up
    runs = [backend.generate(messages, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **OFF)
            for _ in range(repeats)]
    seconds = statistics.median(r.seconds for r in runs)
    ttft = statistics.median(r.first_token_s for r in runs)
    produced = runs[-1].completion_tokens
    return {"system": kind, "load_s": round(load_s, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
            "rss_before_load_mb": round(before, 1), "prompt_tokens": runs[-1].prompt_tokens,
            "new_tokens": produced, "seconds": round(seconds, 3), "tokens_per_s": round(produced / seconds, 2),
            "decode_tokens_per_s": round((produced - 1) / (seconds - ttft), 2) if seconds > ttft else None,
            "ttft_s": round(ttft, 3), "threads": threads}


def measure(kind: str, path: Path, args, messages_file: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--path", str(path), "--threads", str(args.threads),
           "--messages", str(messages_file), "--new-tokens", str(args.new_tokens), "--repeats", str(args.repeats)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    print(f"measuring {kind} …", file=sys.stderr, flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        return {"system": kind, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else
                f"exit status {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def prompt(model: Path, prompt_tokens: int) -> list[dict]:
    """The benchmark's conversation, about `prompt_tokens` tokens with the model's own tokenizer."""
    from infer_throughput import conversations
    from transformers import AutoTokenizer

    return conversations(1, prompt_tokens, AutoTokenizer.from_pretrained(model))[0]


def random_model_dir(config: str, out: Path) -> Path:
    """The random-weight model of `config` (infer_throughput's shapes; the 1.5B with the real Qwen2.5
    vocabulary) saved as a bfloat16 model directory, as `shicheng train` saves one."""
    import torch
    from infer_throughput import random_backend

    print(f"building random weights of {config} …", file=sys.stderr, flush=True)
    backend = random_backend(config, torch.device("cpu"), torch.bfloat16)
    backend.model.save_pretrained(out)
    backend.tokenizer.save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="Memory and speed of a model on the CPU: transformers vs GGUF (JSON).")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--model", help="a model directory (shicheng train output)")
    src.add_argument("--config", choices=("tiny", "qwen2.5-1.5b"), help="random weights of this shape")
    ap.add_argument("--quants", default="f16,q8_0,q4_k_m", help="GGUF quantisations to measure")
    ap.add_argument("--prompt-tokens", type=int, default=64, help="about this many prompt tokens")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for every system (default: all)")
    ap.add_argument("--workdir", default=None, help="where the GGUF files go (default: a temporary folder)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--messages", help=argparse.SUPPRESS)
    args = ap.parse_args()
    from shicheng.agent.backends.llamacpp import default_threads

    args.threads = args.threads or default_threads()
    if args.worker:
        messages = json.loads(Path(args.messages).read_text(encoding="utf-8"))
        print(json.dumps(worker(args.worker, args.path, args.threads, messages, args.new_tokens, args.repeats)))
        return

    # Only the result goes to stdout: libraries that log to stdout when imported (DeepSpeed's accelerator
    # notice) are imported while stdout points at stderr.
    with contextlib.redirect_stdout(sys.stderr):
        result = run(args)
    print(json.dumps(result, ensure_ascii=False, indent=1))


def run(args) -> dict:
    from shicheng.deploy.export import export_model

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        model = Path(args.model) if args.model else random_model_dir(args.config or "tiny", work / "model")
        quants = [q.strip() for q in args.quants.split(",") if q.strip()]
        started = time.perf_counter()
        print(f"exporting {model} to {', '.join(quants)} …", file=sys.stderr, flush=True)
        files = export_model(model, work / "model.gguf", quants=quants, threads=args.threads).files
        export_s = time.perf_counter() - started
        messages_file = work / "messages.json"
        messages_file.write_text(json.dumps(prompt(model, args.prompt_tokens), ensure_ascii=False), encoding="utf-8")
        config = json.loads((model / "config.json").read_text())
        runs = [measure(kind, model, args, messages_file) for kind in SYSTEMS]
        runs += [{**measure(f"llamacpp-{q}", path, args, messages_file),
                  "file_mb": round(path.stat().st_size / 1e6, 1)} for q, path in files.items()]
    by = {r["system"]: r for r in runs if "error" not in r}

    def ratio(a: str, b: str, key: str) -> float | None:
        return round(by[a][key] / by[b][key], 3) if a in by and b in by else None

    return {
        "benchmark": "deploy", "model": args.model or f"random:{args.config or 'tiny'}",
        "date": time.strftime("%Y-%m-%d"), "cpu": cpu_name(), "threads": args.threads,
        "shape": {k: config[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size")}, "export_s": round(export_s, 1), "runs": runs,
        "q4_k_m_peak_rss_over_bf16": ratio("llamacpp-q4_k_m", "transformers-bf16", "peak_rss_mb"),
        "q4_k_m_tokens_per_s_over_transformers_fp32": ratio("llamacpp-q4_k_m", "transformers-fp32", "tokens_per_s"),
        "q4_k_m_tokens_per_s_over_transformers_bf16": ratio("llamacpp-q4_k_m", "transformers-bf16", "tokens_per_s"),
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
