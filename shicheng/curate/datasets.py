"""Write the five stage datasets (docs/architecture.md, "The data flow") as Hugging Face-loadable JSONL.

    stage1_cpt         {"text", "source"}                       corpus + training-split case records
    stage2_sft         {"messages", "task", "case_id", "master_id": None}   seven tasks, general cases
    stage3_reasoning   {"messages", ...}                        full chain with <think>, generic prompt
    stage4_master_sft  {"messages", "task", "case_id", "master_id"}  seven tasks + full chain, master named, balanced
    stage5_rl          {"prompt", "master_id", "task", "gold", "gold_herbs", "patient", "case_id"}

Every split is written from the patient-level split, so a test patient never reaches training.
Load one with `datasets.load_dataset("json", data_files={"train": "OUT/stage2_sft/train.jsonl"})`.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter, defaultdict
from pathlib import Path

from shicheng.curate.split import SPLITS
from shicheng.domain import SEVEN_TASKS, Case, Master, Task
from shicheng.prompts import describe_visit, messages
from shicheng.template import render_answer

STAGES = ("stage1_cpt", "stage2_sft", "stage3_reasoning", "stage4_master_sft", "stage5_rl")


def _rows_sft(cases: list[Case], masters: dict[str, Master], with_master: bool) -> list[dict]:
    """The seven tasks per visit; with a master, also the full chain with <think>, so that the master's own
    reasoning is learnt before stage 5 asks for it."""
    rows = []
    tasks = [*SEVEN_TASKS, Task.full_chain] if with_master else list(SEVEN_TASKS)
    for case in cases:
        master = masters.get(case.master_id) if with_master else None
        for vi in range(len(case.visits)):
            for task in tasks:
                msgs = messages(case, vi, task, master, think=task is Task.full_chain)
                if msgs:
                    rows.append({"messages": msgs, "task": task.value, "case_id": case.id, "visit": vi + 1,
                                 "master_id": case.master_id if with_master else None})
    return rows


def _rows_reasoning(cases: list[Case]) -> list[dict]:
    rows = []
    for case in cases:
        for vi in range(len(case.visits)):
            msgs = messages(case, vi, Task.full_chain, None, think=True)
            if msgs:
                rows.append({"messages": msgs, "task": Task.full_chain.value, "case_id": case.id, "visit": vi + 1,
                             "master_id": None})
    return rows


def _rows_rl(cases: list[Case], masters: dict[str, Master]) -> list[dict]:
    rows = []
    for case in cases:
        master = masters.get(case.master_id)
        for vi, visit in enumerate(case.visits):
            msgs = messages(case, vi, Task.full_chain, master, think=True)
            if not msgs or not visit.prescription:
                continue
            rows.append({
                "prompt": msgs[:2], "master_id": case.master_id, "task": Task.full_chain.value,
                "gold": visit.answer.model_dump(exclude_none=True),
                "gold_herbs": sorted({h.base for h in visit.prescription.herbs if h.base}),
                "patient": case.patient.model_dump(exclude_none=True), "case_id": case.id, "visit": vi + 1,
            })
    return rows


def balance_masters(rows: list[dict], seed: int) -> list[dict]:
    """Oversample each master's rows (whole copies, then a seeded remainder) up to the largest master."""
    by_master: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_master[r["master_id"]].append(r)
    if not by_master:
        return []
    target = max(len(v) for v in by_master.values())
    rng = random.Random(seed)
    out = []
    for master in sorted(by_master):
        group = by_master[master]
        reps, rest = divmod(target, len(group))
        out.extend(group * reps)
        out.extend(rng.sample(group, rest))
    rng.shuffle(out)
    return out


def case_as_text(case: Case) -> str:
    """A case record as running text for continued pre-training."""
    parts = []
    for vi, visit in enumerate(case.visits):
        parts.append(f"{visit.label or f'第{vi + 1}诊'}\n{describe_visit(case, visit)}")
        if visit.answer:
            parts.append(render_answer(visit.answer, think=False).replace("<output>\n", "").replace("\n</output>", ""))
        if visit.commentary:
            parts.append(f"按语：{visit.commentary}")
    return "\n".join(parts)


def build_stage_rows(cases: list[Case], corpus: list[dict], masters: dict[str, Master],
                     assignment: dict[str, str], seed: int = 0) -> dict[str, dict[str, list[dict]]]:
    """stage -> split -> rows."""
    by_split = {s: [c for c in cases if assignment.get(c.id) == s] for s in SPLITS}
    general = {s: [c for c in v if not c.master_id] for s, v in by_split.items()}
    # Without general cases (a single master's archive), stage 2 teaches the tasks on all cases, unnamed.
    if not any(general.values()):
        general = by_split
    mastered = {s: [c for c in v if c.master_id in masters] for s, v in by_split.items()}
    out: dict[str, dict[str, list[dict]]] = {}
    corpus_rows = sorted(corpus, key=lambda r: hashlib.sha256(r["text"].encode()).hexdigest())
    n_val = max(1, len(corpus_rows) // 20) if len(corpus_rows) >= 20 else 0
    cpt_train = [{"text": r["text"], "source": r.get("source", "")} for r in corpus_rows[n_val:]]
    cpt_train += [{"text": case_as_text(c), "source": f"case:{c.id}"} for c in by_split["train"]]
    out["stage1_cpt"] = {"train": cpt_train,
                         "validation": [{"text": r["text"], "source": r.get("source", "")} for r in corpus_rows[:n_val]]}
    out["stage2_sft"] = {s: _rows_sft(general[s], masters, with_master=False) for s in SPLITS}
    out["stage3_reasoning"] = {s: _rows_reasoning(by_split[s]) for s in SPLITS}
    stage4 = {s: _rows_sft(mastered[s], masters, with_master=True) for s in SPLITS}
    stage4["train"] = balance_masters(stage4["train"], seed)
    out["stage4_master_sft"] = stage4
    out["stage5_rl"] = {s: _rows_rl(mastered[s], masters) for s in SPLITS}
    return out


def write_jsonl_rows(path: Path, rows: list[dict]) -> str:
    """Write rows and return the sha256 of the file's bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode("utf-8")
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def write_stages(out_dir: Path, stage_rows: dict[str, dict[str, list[dict]]]) -> dict[str, dict[str, dict]]:
    """Write every stage/split file; returns stage -> split -> {rows, sha256, path}."""
    info: dict[str, dict[str, dict]] = {}
    for stage, splits in stage_rows.items():
        for split, rows in splits.items():
            path = out_dir / stage / f"{split}.jsonl"
            digest = write_jsonl_rows(path, rows)
            info.setdefault(stage, {})[split] = {"rows": len(rows), "sha256": digest,
                                                 "path": str(path.relative_to(out_dir))}
    return info


def count_by(rows: list[dict], key: str) -> dict[str, int]:
    return dict(sorted(Counter(str(r.get(key)) for r in rows).items()))
