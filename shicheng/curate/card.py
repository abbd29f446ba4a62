"""Dataset card (Markdown + JSON): counts per stage, master, task and split; tokens; hashes; rejects."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from shicheng.curate.datasets import count_by
from shicheng.domain import DISCLAIMER
from shicheng.vocab import VocabUnavailable, qwen_encoding


def _encoding() -> tuple[object | None, str | None]:
    """(the Qwen2.5 encoding, None), or (None, why token counts are missing): the card is written either way."""
    try:
        return qwen_encoding(), None
    except VocabUnavailable as e:
        return None, f"token counts not computed: {e}"


def _row_text(row: dict) -> str:
    if "text" in row:
        return row["text"]
    msgs = row.get("messages") or row.get("prompt") or []
    return "\n".join(m["content"] for m in msgs)


def token_stats(rows: list[dict]) -> dict:
    if not rows:
        return {"rows": 0}
    enc, note = _encoding()
    texts = [_row_text(r) for r in rows]
    lengths = [len(t) for t in texts]
    stats = {"rows": len(rows), "chars_total": sum(lengths), "chars_mean": round(statistics.mean(lengths), 1)}
    if enc is not None:
        toks = [len(t) for t in enc.encode_ordinary_batch(texts)]
        stats.update({"tokenizer": "Qwen2.5 (base vocabulary)", "tokens_total": sum(toks),
                      "tokens_mean": round(statistics.mean(toks), 1), "tokens_max": max(toks),
                      "tokens_p95": sorted(toks)[int(0.95 * (len(toks) - 1))]})
    else:
        stats["tokens_note"] = note
    return stats


def build_card(stage_rows: dict, files: dict, ledger_summary: dict, pii: dict, split_info: dict,
               extra: dict) -> dict:
    stages = {}
    for stage, splits in stage_rows.items():
        entry = {}
        for split, rows in splits.items():
            e = {"rows": len(rows), "sha256": files[stage][split]["sha256"], "path": files[stage][split]["path"]}
            if rows and "task" in rows[0]:
                e["by_task"] = count_by(rows, "task")
            if rows and "master_id" in rows[0]:
                e["by_master"] = count_by(rows, "master_id")
            if split == "train":
                e["tokens"] = token_stats(rows)
            entry[split] = e
        stages[stage] = entry
    return {"disclaimer": DISCLAIMER, "stages": stages, "split": split_info, "personal_data_removed": pii,
            "curation": ledger_summary, **extra}


def render_markdown(card: dict) -> str:
    lines = ["---", "language: [zh]", "tags: [traditional-chinese-medicine, shicheng, medical]", "---", "",
             "# shicheng stage datasets", "", f"> {card['disclaimer']}", ""]
    if card.get("synthetic"):
        lines += ["> Built from **synthetic demonstration data** (fictional masters and patients).", ""]
    lines += ["## Files", "", "| stage | split | rows | sha256 |", "|---|---|---:|---|"]
    for stage, splits in card["stages"].items():
        for split, e in splits.items():
            lines.append(f"| {stage} | {split} | {e['rows']} | `{e['sha256'][:16]}` |")
    lines += ["", "## Rows per master (train)", "", "| stage | " + " | ".join(["master", "rows"]) + " |", "|---|---|---:|"]
    for stage, splits in card["stages"].items():
        for master, n in splits.get("train", {}).get("by_master", {}).items():
            lines.append(f"| {stage} | {master} | {n} |")
    lines += ["", "## Rows per task (train)", "", "| stage | task | rows |", "|---|---|---:|"]
    for stage, splits in card["stages"].items():
        for task, n in splits.get("train", {}).get("by_task", {}).items():
            lines.append(f"| {stage} | {task} | {n} |")
    lines += ["", "## Tokens (train)", "", "| stage | rows | tokens total | mean | p95 | max |", "|---|---:|---:|---:|---:|---:|"]
    for stage, splits in card["stages"].items():
        t = splits.get("train", {}).get("tokens", {})
        if t.get("rows"):
            lines.append(f"| {stage} | {t['rows']} | {t.get('tokens_total', '-')} | {t.get('tokens_mean', '-')} | "
                         f"{t.get('tokens_p95', '-')} | {t.get('tokens_max', '-')} |")
    notes = {t["tokens_note"] for splits in card["stages"].values()
             if (t := splits.get("train", {}).get("tokens", {})).get("tokens_note")}
    lines += ["", *(f"> {n}" for n in sorted(notes))] if notes else []
    split = card["split"]
    lines += ["", "## Split", "", f"By patient (no patient in two splits), stratified by master, seed {split['seed']}: "
              + ", ".join(f"{k} {v} cases" for k, v in split["cases"].items()) + ".", ""]
    lines += ["## Curation", "", "| step | in | kept | rejected |", "|---|---:|---:|---:|"]
    for step, c in card["curation"]["steps"].items():
        lines.append(f"| {step} | {c['inputs']} | {c['kept']} | {c['rejected']} |")
    lines += ["", "Rejects by reason (details in `rejects.jsonl`):", ""]
    for r in card["curation"]["rejects_by_reason"]:
        lines.append(f"- {r['step']}: {r['reason']} — {r['count']}")
    lines += ["", "Personal data removed: " + (", ".join(f"{k} {v}" for k, v in card["personal_data_removed"].items()
                                                       if v) or "none found"), ""]
    return "\n".join(lines)


def write_card(out_dir: Path, card: dict) -> None:
    (out_dir / "card.json").write_text(json.dumps(card, ensure_ascii=False, indent=2, sort_keys=True) + "\n",
                                       encoding="utf-8")
    (out_dir / "README.md").write_text(render_markdown(card), encoding="utf-8")
