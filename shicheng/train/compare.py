"""Compare stage models on the held-out stage-5 prompts: base-herb F1, syndrome agreement, format, safety,
and master attribution (asking for master X gives answers typical of X, by the style model fitted on the
training split).

    shicheng compare-stages --data runs/demo/data --model runs/demo/model/stage-2-general-sft \
        --model runs/demo/model/stage-5-master-grpo --out runs/demo/compare.json
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from rich.progress import Progress


def _rows(data_dir: Path, split: str, limit: int | None) -> list[dict]:
    rows = [json.loads(line) for line in (data_dir / "stage5_rl" / f"{split}.jsonl").open(encoding="utf-8")]
    return rows[:limit] if limit else rows


def generate(model_dir: Path, prompts: list[list[dict]], max_new_tokens: int, batch_size: int,
             show_progress: bool = True, repetition_penalty: float = 1.15, no_repeat_ngram_size: int = 8) -> list[str]:
    """Greedy answers for chat prompts with the model's own chat template (left padding, batched).

    The default repetition penalty and n-gram block are the ones the demo's GRPO stage samples with; the
    same decoding for every stage keeps the comparison fair."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    out: list[str] = []
    with Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task(f"generate {model_dir.name}", total=len(prompts))
        for i in range(0, len(prompts), batch_size):
            texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                     for p in prompts[i:i + batch_size]]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                                     pad_token_id=tok.pad_token_id)
            out += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            progress.advance(task, len(texts))
    return out


def score(rows: list[dict], completions: list[str], style) -> dict:
    from shicheng.train import rewards

    f1 = [rewards.herb_f1(rewards.completion_herbs(c), r["gold_herbs"]) for r, c in zip(rows, completions, strict=True)]
    syn = [rewards.syndrome_f1(rewards._parsed(c).answer.syndrome or "", r["gold"].get("syndrome", ""))
           for r, c in zip(rows, completions, strict=True)]
    fmt = [rewards.format_score(c, "full_chain") for c in completions]
    safe = [rewards.safety_score(c, r.get("patient")) for r, c in zip(rows, completions, strict=True)]
    by_master: dict[str, list[str]] = {}
    for r, c in zip(rows, completions, strict=True):
        by_master.setdefault(r["master_id"], []).append(c)
    attr = rewards.attribution(by_master, style)
    return {"n": len(rows), "herb_f1": round(statistics.mean(f1), 4), "syndrome_f1": round(statistics.mean(syn), 4),
            "format": round(statistics.mean(fmt), 4), "safety": round(statistics.mean(safe), 4),
            "master_attribution": round(attr["accuracy"], 4), "attribution_per_master": attr.get("per_master")}


def compare_stages(data_dir: Path, model_dirs: list[Path], split: str = "test", limit: int | None = None,
                   max_new_tokens: int = 768, batch_size: int = 8, show_progress: bool = True,
                   repetition_penalty: float = 1.15, no_repeat_ngram_size: int = 8) -> dict:
    from shicheng.train.rewards import MasterStyleModel

    rows = _rows(data_dir, split, limit)
    train_rows = _rows(data_dir, "train", None)
    style = MasterStyleModel.fit_rows(train_rows)
    gold = score(rows, [_gold_text(r) for r in rows], style)
    result = {"split": split, "gold_answers": gold, "models": {},
              "decoding": {"greedy": True, "max_new_tokens": max_new_tokens, "repetition_penalty": repetition_penalty,
                           "no_repeat_ngram_size": no_repeat_ngram_size}}
    for d in model_dirs:
        completions = generate(d, [r["prompt"] for r in rows], max_new_tokens, batch_size, show_progress,
                               repetition_penalty, no_repeat_ngram_size)
        result["models"][str(d)] = score(rows, completions, style)
        result["models"][str(d)]["sample"] = completions[0][:600] if completions else ""
    return result


def _gold_text(row: dict) -> str:
    from shicheng.domain import Answer
    from shicheng.template import render_answer

    return render_answer(Answer(**row["gold"]))
