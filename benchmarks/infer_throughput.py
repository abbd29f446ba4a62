"""Inference throughput: tokens/s at batch 1 and batched, time to first token, bandwidth utilisation; prints JSON.

    .venv/bin/python benchmarks/infer_throughput.py                                   # CPU: tiny config, seconds
    python benchmarks/infer_throughput.py --config qwen2.5-1.5b --new-tokens 256      # GPU: 1.5B shape, random
    python benchmarks/infer_throughput.py --config qwen2.5-1.5b --static-cache        # + static KV cache (GPU:
                                                                                      #   generate compiles it)
    python benchmarks/infer_throughput.py --model runs/demo/model/stage-5-master-grpo  # a trained model

Two paths on the same token ids, in one run: "backend" is shicheng.agent.TransformersBackend (chat template,
first-token timer, lock, left-padded batches) and "plain" is `model.generate` called directly, so the cost
of the agent's wrapper is visible.

Decoding a small model is memory-bound: each step reads every weight once, whatever the batch. So
    steps/s = decode tokens/s ÷ batch,  MBU = weight bytes × steps/s ÷ peak bandwidth.
At batch 1 that is the usual "weights bytes × tokens/s ÷ peak bandwidth". KV-cache reads are left out, so
the MBU is a lower bound. Worked example: Qwen2.5-1.5B has 1.54 B parameters (embedding tied), 3.09 GB in
bf16; an H100 SXM reads 3.35 TB/s, so the bound at batch 1 is 3350/3.09 ≈ 1085 tokens/s and 50 % MBU is
≈ 540 tokens/s, i.e. 1.85 ms per token for 28 layers: reachable only without per-kernel launch overhead
(CUDA graphs: --static-cache) — eager PyTorch launches ~15 kernels per layer.
Every generation is forced to its full length (min_new_tokens) so that tokens counted = tokens decoded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

# Peak memory bandwidth, GB/s, by device name; more specific names first ("A100" contains "A10").
PEAK_BANDWIDTH_GBS: list[tuple[str, float]] = [
    ("H200", 4800.0), ("H100 PCIe", 2000.0), ("H100 NVL", 3900.0), ("H100", 3350.0), ("GH200", 4000.0),
    ("A100 80GB", 2000.0), ("A100-SXM4-80GB", 2000.0), ("A100", 1555.0), ("L40S", 864.0), ("RTX 4090", 1008.0),
    ("A10", 600.0), ("L4", 300.0), ("T4", 320.0),
]
CONFIGS = {
    "tiny": dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=2048, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                         max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6),
}
CASE = ("患者男，52岁。主诉：胃脘隐痛反复发作三年，加重一周。现病史：喜温喜按，空腹痛甚，得食痛减，泛吐清水，"
        "神疲乏力，手足不温，大便溏薄。舌淡胖，边有齿痕，苔白滑，脉沉细无力。")


def peak_bandwidth(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((gbs for key, gbs in PEAK_BANDWIDTH_GBS if key in name), None)


def random_backend(config: str, device: torch.device, dtype: torch.dtype):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from shicheng.agent import TransformersBackend
    from shicheng.train.tokenizer import configure_chat_tokens, train_demo_tokenizer

    shape = dict(CONFIGS[config])
    if config == "qwen2.5-1.5b":
        from shicheng.train.tokenizer import load_qwen25_vocab_tokenizer

        tokenizer = load_qwen25_vocab_tokenizer()  # the real vocabulary, so prompts have realistic lengths
    else:
        tokenizer = train_demo_tokenizer([CASE * 4] * 50, vocab_size=600)
        shape["vocab_size"] = max(shape["vocab_size"], len(tokenizer))
    torch.manual_seed(0)
    with torch.device(device):  # build in place: a 1.5B float32 copy on the host would take 6 GB and a minute
        model = Qwen2ForCausalLM(Qwen2Config(**shape)).to(dtype)
    configure_chat_tokens(tokenizer, model)
    return TransformersBackend.from_model(model, tokenizer, name=f"random-{config}")


def conversations(batch: int, prompt_tokens: int, tokenizer) -> list[list[dict]]:
    """`batch` distinct conversations, each about `prompt_tokens` tokens long with the chat template."""
    def convo(i: int, repeat: int) -> list[dict]:
        return [{"role": "system", "content": "你是一名中医临床辅助决策助手。"},
                {"role": "user", "content": f"（病例{i + 1}）" + CASE * repeat}]

    def length(repeat: int) -> int:
        text = tokenizer.apply_chat_template(convo(0, repeat), add_generation_prompt=True, tokenize=False)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    one, two = length(1), length(2)
    repeat = max(1, round(1 + (prompt_tokens - one) / max(1, two - one)))
    return [convo(i, repeat) for i in range(batch)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> tuple[float, object]:
    """Median wall time of `repeats` calls (after one warm-up call), and the last result."""
    fn()
    times, result = [], None
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def measure(backend, path: str, batch: int, args, weight_bytes: int, peak_gbs: float | None) -> dict:
    device, n = backend.device, args.new_tokens
    messages = conversations(batch, args.prompt_tokens, backend.tokenizer)
    inputs = backend.encode(messages)
    gen = backend.model.generation_config

    def plain(tokens: int):
        with torch.inference_mode():
            return backend.model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                          pad_token_id=backend.tokenizer.pad_token_id,
                                          eos_token_id=gen.eos_token_id)

    def ours(tokens: int):
        return backend.generate_batch(messages, max_new_tokens=tokens, min_new_tokens=tokens)

    run = plain if path == "plain" else ours
    ttft, _ = timed(lambda: run(1), device, args.repeats)
    seconds, result = timed(lambda: run(n), device, args.repeats)
    produced = (result.shape[1] - inputs["input_ids"].shape[1]) * batch if path == "plain" \
        else sum(r.completion_tokens for r in result)
    # Decoding time = full run minus the 1-token run (prefill); on a noisy host it can come out <= 0.
    decode_s = seconds - ttft
    steps_per_s = (n - 1) / decode_s if decode_s > 0 and n > 1 else None
    row = {"path": path, "batch_size": batch, "prompt_tokens": int(inputs["input_ids"].shape[1]),
           "new_tokens": n, "tokens_generated": int(produced), "seconds": round(seconds, 4),
           "tokens_per_s": round(batch * n / seconds, 2),
           "decode_tokens_per_s": round(batch * steps_per_s, 2) if steps_per_s else None, "ttft_s": round(ttft, 4),
           "mbu": round(weight_bytes * steps_per_s / (peak_gbs * 1e9), 4) if peak_gbs and steps_per_s else None}
    if path == "backend" and batch == 1:
        row["streamer_first_token_s"] = round(result[0].first_token_s, 4)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description="Inference throughput of the agent's transformers backend (JSON).")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--model", help="a model directory (shicheng train output)")
    src.add_argument("--config", choices=sorted(CONFIGS), help="random weights of this shape (default: tiny on "
                                                               "CPU, qwen2.5-1.5b on GPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, float32 on CPU), bfloat16, float16, float32")
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--prompt-tokens", type=int, default=None, help="about this many prompt tokens (default 256 "
                                                                    "on GPU, 64 on CPU)")
    ap.add_argument("--new-tokens", type=int, default=None, help="tokens to generate (default 256 GPU, 32 CPU)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--static-cache", action="store_true", help="static KV cache (on GPU generate then compiles "
                                                                "the forward with CUDA graphs)")
    ap.add_argument("--peak-bandwidth-gbs", type=float, default=None, help="override the device's peak GB/s "
                                                                           "(needed for MBU on CPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from shicheng.agent.backends import TransformersBackend
    from shicheng.agent.backends.transformers import pick_device, pick_dtype

    device = pick_device(args.device)
    gpu = device.type == "cuda"
    args.prompt_tokens = args.prompt_tokens or (256 if gpu else 64)
    args.new_tokens = args.new_tokens or (256 if gpu else 32)
    if args.model:
        backend, source = TransformersBackend(args.model, device=args.device, dtype=args.dtype), args.model
    else:
        config = args.config or ("qwen2.5-1.5b" if gpu else "tiny")
        backend, source = random_backend(config, device, pick_dtype(args.dtype, device)), f"random:{config}"
    if args.static_cache:
        backend.model.generation_config.cache_implementation = "static"
    weight_bytes = sum(p.numel() * p.element_size() for p in backend.model.parameters())  # tied rows once
    peak = peak_bandwidth(device, args.peak_bandwidth_gbs)
    runs = [measure(backend, path, int(b), args, weight_bytes, peak)
            for b in args.batch_sizes.split(",") for path in ("backend", "plain")]
    by = {(r["path"], r["batch_size"]): r for r in runs}
    print(json.dumps({
        "benchmark": "infer_throughput", "model": source, "device": torch.cuda.get_device_name(device) if gpu
        else f"cpu ({torch.get_num_threads()} threads)", "dtype": str(next(backend.model.parameters()).dtype),
        "static_cache": args.static_cache, "parameters": sum(p.numel() for p in backend.model.parameters()),
        "weight_bytes": weight_bytes, "peak_bandwidth_gbs": peak,
        "bandwidth_bound_tokens_per_s_batch1": round(peak * 1e9 / weight_bytes, 1) if peak else None,
        "runs": runs,
        "backend_over_plain_tokens_per_s": {str(b): round(by[("backend", b)]["tokens_per_s"]
                                                          / by[("plain", b)]["tokens_per_s"], 3)
                                            for _, b in by if _ == "backend"},
    }, ensure_ascii=False))


if __name__ == "__main__":
    main()
