"""Stage comparison: stage models (or OpenAI-compatible endpoints) side by side on the held-out stage-5
prompts, against the gold answers of the same prompts.

Per system: base-herb F1 (the known base herbs of the 处方 section against the row's gold herbs), syndrome
agreement (bigram F1 of the 辨证 sections), format (full chain), safety score, and master attribution
(asking for master X gives answers that the style model, fitted on the training split, attributes to X).
The scores are shicheng.metrics, the ones the GRPO stage is rewarded with.

Every system is asked through a Backend with one decoding: greedy, with the given repetition penalty and
n-gram block (by default those the demo's GRPO stage samples with), so that differences come from the
models. An endpoint cannot block n-grams: with one in the comparison pass no_repeat_ngram_size=0, and
every system then decodes without it; the options are checked for every system before any generates.

    shicheng compare-stages --data runs/demo/data --model runs/demo/model/stage-2-general-sft \
        --model runs/demo/model/stage-5-master-grpo --out runs/demo/compare.json
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from rich.progress import Progress

from shicheng.agent.backends import Backend, GenerationOptions, backend_class, make_backend
from shicheng.domain import Answer
from shicheng.metrics import (
    MasterStyleModel,
    attribution,
    completion_herbs,
    format_score,
    herb_f1,
    read_answer,
    safety_score,
    syndrome_f1,
)
from shicheng.template import render_answer

SCORES = ("herb_f1", "syndrome_f1", "format", "safety", "master_attribution")


def read_stage_rows(data_dir: str | Path, split: str, limit: int | None = None) -> list[dict]:
    """The stage-5 rows of one split (`prompt`, `gold`, `gold_herbs`, `patient`, `master_id`, …)."""
    path = Path(data_dir) / "stage5_rl" / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no stage-5 {split} split here; give the output folder of `shicheng curate`")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from e
            if limit and len(rows) == limit:
                break
    return rows


def gold_text(row: Mapping) -> str:
    """The row's gold answer as the model is asked to write it."""
    return render_answer(Answer(**row["gold"]))


def generate_answers(backend: Backend, prompts: Sequence[list[dict]], options: GenerationOptions,
                     batch_size: int = 8, show_progress: bool = True) -> list[str]:
    """The backend's answers to chat prompts, `batch_size` at a time through `generate_batch`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    out: list[str] = []
    with Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task(f"generate {backend.name}", total=len(prompts))
        for i in range(0, len(prompts), batch_size):
            chunk = list(prompts[i:i + batch_size])
            out += [r.text for r in backend.generate_batch(chunk, **options.to_dict())]
            progress.advance(task, len(chunk))
    return out


def _mean(values: list[float]) -> float:
    return round(statistics.mean(values), 4)


def score_answers(rows: Sequence[Mapping], completions: Sequence[str], style: MasterStyleModel) -> dict:
    """The comparison's scores of one system's answers to `rows` (one answer per row, in order)."""
    if len(rows) != len(completions):
        raise ValueError(f"{len(completions)} answers for {len(rows)} prompts")
    if not rows:
        raise ValueError("no prompts to score")
    pairs = list(zip(rows, completions, strict=True))
    by_master: dict[str, list[str]] = {}
    for r, c in pairs:
        if r.get("master_id"):
            by_master.setdefault(r["master_id"], []).append(c)
    attr = attribution(by_master, style)
    return {"n": len(rows),
            "herb_f1": _mean([herb_f1(completion_herbs(c), r["gold_herbs"]) for r, c in pairs]),
            "syndrome_f1": _mean([syndrome_f1(read_answer(c).answer.syndrome or "", r["gold"].get("syndrome") or "")
                                  for r, c in pairs]),
            "format": _mean([format_score(c, "full_chain") for c in completions]),
            "safety": _mean([safety_score(c, r.get("patient")) for r, c in pairs]),
            "master_attribution": None if attr["accuracy"] is None else round(attr["accuracy"], 4),
            "attribution_per_master": attr["per_master"]}


def compare_stages(data_dir: str | Path, systems: Sequence[str | Path], *, split: str = "test",
                   limit: int | None = None, max_new_tokens: int = 768, batch_size: int = 8,
                   repetition_penalty: float = 1.15, no_repeat_ngram_size: int = 8, show_progress: bool = True,
                   backend: str = "auto", model_name: str | None = None, device: str = "auto",
                   concurrency: int = 8) -> dict:
    """Answer the `split` prompts with every system (a model directory or an endpoint URL; `model_name` is
    the model id endpoints serve) and score them beside the gold answers. See the module docstring."""
    options = GenerationOptions(max_new_tokens=max_new_tokens, temperature=0.0,
                                repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
    for system in systems:
        backend_class(system, backend).check_options(options)
    rows = read_stage_rows(data_dir, split, limit)
    style = MasterStyleModel.fit_rows(read_stage_rows(data_dir, "train"))
    result: dict = {"split": split, "gold_answers": score_answers(rows, [gold_text(r) for r in rows], style),
                    "models": {}, "decoding": {"greedy": True, **options.to_dict()}}
    prompts = [r["prompt"] for r in rows]
    for system in systems:
        with make_backend(system, backend=backend, model_name=model_name, device=device,
                          concurrency=concurrency) as engine:
            completions = generate_answers(engine, prompts, options, batch_size, show_progress)
            scores = score_answers(rows, completions, style)
        scores["backend"] = type(engine).__name__
        scores["sample"] = completions[0][:600]
        result["models"][str(system)] = scores
    return result


__all__ = ["SCORES", "compare_stages", "generate_answers", "gold_text", "read_stage_rows", "score_answers"]
