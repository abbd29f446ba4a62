"""Section-guided decoding: what it costs beside free decoding, in one run; prints JSON.

    .venv/bin/python benchmarks/guide_overhead.py                                          # CPU, about a minute
    .venv/bin/python benchmarks/guide_overhead.py --model runs/demo/model/stage-5-master-grpo

Two measurements:
- "mask": the guide's own work per generated token (shicheng.guide.SectionGuide.step plus the mask), walking a
  templated full-chain answer token by token, for a small byte-level BPE (the demo's kind) and for Qwen2.5's
  151,643-token vocabulary (the 1.5B recipe's; skipped without the `qwen-vocab` extra). This is the number that
  matters beside a GPU decoding step of a few milliseconds;
- "generate": a model (a random tiny Qwen2, or --model) answering the same full-chain prompts guided and free,
  batch by batch: new tokens per second each way.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from shicheng.domain import REQUIRED_OUTPUT_KEYS, Answer
from shicheng.guide import GuideVocab, SectionGuide, token_bytes
from shicheng.template import render_answer

ANSWER = Answer(
    reasoning="患者以胃脘冷痛为主诉；舌淡胖，苔白滑主寒湿；脉沉细主里虚。四诊合参，病位在脾胃，病性属虚寒。",
    etiology_pathogenesis="脾阳不足，寒从中生，运化失司。", syndrome="脾胃虚寒证",
    treatment_principle="温中健脾，散寒止痛", prescription="附子理中汤加味：制附子15g 干姜10g 党参15g 炒白术12g 炙甘草6g",
    prescription_explanation="附子、干姜温中散寒为君；党参、白术健脾益气为臣；炙甘草调和诸药为使。",
    modifications="1. 若泛吐清水，加吴茱萸3g。\n2. 若大便溏薄，加茯苓15g。", advice="忌生冷，注意保暖，七剂后复诊。")


def mask_cost(tokenizer, name: str) -> dict:
    """Microseconds per token of the guide walking ANSWER: the vocabulary read once (build_s, once per model),
    then a first answer (its steps fill the guide's caches) and a second one, as a server's later requests are."""
    started = time.perf_counter()
    vocab = GuideVocab(token_bytes(tokenizer))
    table = vocab.table
    build_s = time.perf_counter() - started
    ids = tokenizer(render_answer(ANSWER), add_special_tokens=False)["input_ids"]
    scores = np.zeros(len(table), dtype=np.float32)
    out = {"vocab": name, "vocab_size": len(table), "answer_tokens": len(ids), "build_s": round(build_s, 3)}
    for answer in ("first", "second"):
        guide = SectionGuide(vocab, [tokenizer.eos_token_id], REQUIRED_OUTPUT_KEYS)  # one per request
        per_token = []
        text = b""
        for i, token in enumerate(ids):
            scores[:] = 0.0
            t0 = time.perf_counter()
            guide.mask_row(text, scores, left=4 * len(ids) - i)
            per_token.append((time.perf_counter() - t0) * 1e6)
            text += table[token]
        out[f"{answer}_step_us_mean"] = round(statistics.mean(per_token), 1)
        out[f"{answer}_step_us_p95"] = round(sorted(per_token)[int(0.95 * (len(per_token) - 1))], 1)
    return out


def random_model_backend():
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from shicheng.agent import TransformersBackend
    from shicheng.train.tokenizer import configure_chat_tokens, train_demo_tokenizer

    tokenizer = train_demo_tokenizer([render_answer(ANSWER)] * 50, vocab_size=600)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tokenizer),
                                         tie_word_embeddings=True, max_position_embeddings=2048))
    configure_chat_tokens(tokenizer, model)
    return TransformersBackend.from_model(model, tokenizer, name="random-tiny")


def generate_cost(backend, batch: int, new_tokens: int, repeats: int) -> dict:
    from shicheng.domain import Case, Task, Visit
    from shicheng.prompts import prompt_messages

    case = Case(id="bench", visits=[Visit(chief_complaint="胃脘冷痛三年", tongue="舌淡胖，苔白滑", pulse="脉沉细")])
    conversations = [prompt_messages(case, 0, Task.full_chain, None)] * batch
    out = {}
    for mode, extra in (("free", {}), ("guided", {"sections": REQUIRED_OUTPUT_KEYS})):
        backend.generate_batch(conversations, max_new_tokens=8, **extra)  # warm-up
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            results = backend.generate_batch(conversations, max_new_tokens=new_tokens, **extra)
            seconds = time.perf_counter() - t0
            runs.append((sum(r.completion_tokens for r in results), seconds))
        tokens, seconds = max(runs, key=lambda r: r[0] / r[1])
        out[mode] = {"new_tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="Cost of section-guided decoding beside free decoding (JSON).")
    ap.add_argument("--model", help="a model directory (default: a random tiny Qwen2)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    from shicheng.agent import TransformersBackend

    backend = TransformersBackend(args.model, device="cpu") if args.model else random_model_backend()
    masks = [mask_cost(backend.tokenizer, args.model or "demo-kind BPE (600)")]
    try:
        from shicheng.train.tokenizer import load_qwen25_vocab_tokenizer

        masks.append(mask_cost(load_qwen25_vocab_tokenizer(), "qwen2.5"))
    except Exception as e:  # the qwen-vocab extra is optional
        masks.append({"vocab": "qwen2.5", "skipped": f"{type(e).__name__}: {e}"})
    result = {"mask": masks, "generate": {"model": backend.name, "batch": args.batch,
                                          **generate_cost(backend, args.batch, args.new_tokens, args.repeats)}}
    print(json.dumps(result, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
