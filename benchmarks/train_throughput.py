"""Training throughput: our SFT stage settings vs plain TRL `SFTTrainer` defaults, in one run; prints JSON.

    .venv/bin/python benchmarks/train_throughput.py                       # CPU: tiny Qwen2, seconds
    .venv/bin/python benchmarks/train_throughput.py --no-lora --compile --steps 40   # + torch.compile (minutes)
    python benchmarks/train_throughput.py --shape qwen2.5-1.5b --steps 30  # GPU: the real 1.5B shape, random weights

Measured: useful (non-padding, loss-bearing or not) tokens per second, MFU = 6·N·tokens/s ÷ peak FLOP/s
(N = parameters; the attention term 12·L·d·s per token is added), and peak memory (CUDA max allocated, or
process peak RSS on CPU). "ours" = the trainer and settings our SFT stages use (shicheng.train.stages):
answer-only loss as in every stage; on GPU packing (best-fit decreasing), padding-free batches with
FlashAttention when installed, bf16 and gradient checkpointing; on CPU no packing (it would cost attention
over the packed length), length-grouped batches and the loss projected only where there are labels.
"plain" = `SFTTrainer` with `SFTConfig()` defaults at the same batch size. A LoRA run (r 64) reports its peak
memory.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time

import torch
from datasets import Dataset
from transformers import Qwen2Config, Qwen2ForCausalLM, TrainerCallback

# Dense bf16 tensor-core peak (no sparsity), FLOP/s.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "RTX 4090": 165e12, "A10": 125e12,
              "L4": 121e12, "V100": 125e12}
SHAPES = {
    "tiny": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,  # the demo model
                 num_key_value_heads=2, vocab_size=4000, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
}


def _tokenizer(vocab_size: int):
    from shicheng.train.tokenizer import train_demo_tokenizer

    rng = random.Random(0)
    chars = "患者胃脘冷痛舌淡胖苔白滑脉沉细辨证脾肾阳虚治法温补处方附子干姜党参白术炙甘草茯苓桂枝白芍"
    texts = ["".join(rng.choice(chars) for _ in range(200)) for _ in range(200)]
    return train_demo_tokenizer(texts, vocab_size=min(vocab_size, 2000))


def _rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    chars = "患者胃脘冷痛舌淡胖苔白滑脉沉细辨证脾肾阳虚治法温补处方附子干姜党参白术炙甘草茯苓桂枝白芍"
    rows = []
    for _ in range(n):  # lengths vary like real tasks: short single-section answers to long full chains
        q = "".join(rng.choice(chars) for _ in range(rng.randint(80, 300)))
        a = "".join(rng.choice(chars) for _ in range(rng.choice([20, 60, 200, 600])))
        rows.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
    return rows


class _Clock(TrainerCallback):
    def __init__(self):
        self.t0 = None
        self.started = None

    def on_train_begin(self, args, state, control, **kw):
        self.started = time.perf_counter()

    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == 2 and self.t0 is None:  # skip warm-up steps
            self.t0, self.tokens0 = time.perf_counter(), state.num_input_tokens_seen


def run(name: str, shape: dict, tokenizer, rows, steps: int, batch: int, max_length: int, ours: bool, lora: bool,
        compile_: bool = False):
    from trl import SFTConfig, SFTTrainer

    from shicheng.train.stages import sampler_args, sft_trainer_class

    cuda = torch.cuda.is_available()
    torch.manual_seed(0)
    kwargs = {}
    if ours and cuda:
        try:
            import flash_attn  # noqa: F401

            kwargs["attn_implementation"] = "flash_attention_2"
        except ImportError:
            kwargs["attn_implementation"] = "sdpa"
    cfg = Qwen2Config(**{**shape, "vocab_size": max(shape["vocab_size"], len(tokenizer))}, **kwargs)
    model = Qwen2ForCausalLM(cfg).to(torch.bfloat16 if (cuda and ours) else torch.float32)
    if cuda:
        model = model.cuda()
        torch.cuda.reset_peak_memory_stats()
    args = dict(output_dir=f"/tmp/bench-{name}", max_steps=steps, per_device_train_batch_size=batch, report_to=[],
                logging_steps=10**6, save_strategy="no", include_num_input_tokens_seen="non_padding",
                max_length=max_length, disable_tqdm=True, dataloader_num_workers=0)
    if not cuda:
        args["bf16"] = False  # TRL defaults to bf16, which the CPU trainer refuses
    if ours and cuda:
        args.update(packing=True, bf16=True, gradient_checkpointing=True, padding_free=True, assistant_only_loss=True)
    elif ours:
        args.update(packing=False, assistant_only_loss=True, **sampler_args(True))
    if compile_:
        args["torch_compile"] = True  # inductor; the first steps compile (warmup_s says how long)
    trainer_class = sft_trainer_class() if ours else SFTTrainer
    peft = None
    if lora:
        from peft import LoraConfig

        peft = LoraConfig(r=64, lora_alpha=128, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                                "up_proj", "down_proj"], task_type="CAUSAL_LM")
    clock = _Clock()
    trainer = trainer_class(model=model, args=SFTConfig(**args), train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, peft_config=peft, callbacks=[clock])
    trainer.train()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - clock.t0
    tokens = trainer.state.num_input_tokens_seen - clock.tokens0
    n_params = sum(p.numel() for p in model.parameters())
    tok_s = tokens / seconds
    flops_per_token = 6 * n_params + 12 * shape["num_hidden_layers"] * shape["hidden_size"] * max_length
    device = torch.cuda.get_device_name() if cuda else "cpu"
    peak = next((v for k, v in PEAK_FLOPS.items() if k in device), None)
    mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"settings": name, "tokens_per_s": round(tok_s, 1), "mfu": round(tok_s * flops_per_token / peak, 4)
            if peak else None, "peak_memory_gib": round(mem, 2), "memory_kind": "cuda_max_allocated" if cuda else
            "process_peak_rss", "parameters": n_params, "device": device, "steps_timed": steps - 2,
            "warmup_s": round(clock.t0 - clock.started, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description="SFT throughput: our stage settings vs TRL defaults (JSON).")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--no-lora", action="store_true", help="skip the LoRA peak-memory run")
    ap.add_argument("--compile", action="store_true", help="also our settings with torch.compile (its warm-up "
                    "is reported apart: on CPU it decides whether compiling pays for a stage of N steps)")
    a = ap.parse_args()
    shape = SHAPES[a.shape]
    tokenizer = _tokenizer(shape["vocab_size"])
    rows = _rows(a.batch_size * (a.steps + 4) * 4, seed=0)
    plain = run("plain_trl_defaults", shape, tokenizer, rows, a.steps, a.batch_size, a.max_length, False, False)
    ours = run("shicheng_stage", shape, tokenizer, rows, a.steps, a.batch_size, a.max_length, True, False)
    out = {"benchmark": "train_throughput", "shape": a.shape, "batch_size": a.batch_size, "max_length": a.max_length,
           "runs": [plain, ours], "speedup_tokens_per_s": round(ours["tokens_per_s"] / plain["tokens_per_s"], 3)}
    if a.compile:
        out["runs"].append(run("shicheng_stage_torch_compile", shape, tokenizer, rows, a.steps, a.batch_size,
                               a.max_length, True, False, compile_=True))
    if not a.no_lora:
        out["runs"].append(run("shicheng_stage_lora_r64", shape, tokenizer, rows, a.steps, a.batch_size,
                               a.max_length, True, True))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
