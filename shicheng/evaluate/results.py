"""Everything an evaluation run found, as one JSON-serialisable dict: the input of `report.render_report`
and the `results.json` a researcher keeps beside the report.

    results = build_results(predictions, cases, train_cases=train, verdicts=verdicts, rubric=rubric)
    write_results(results, "runs/eval")

Rows are prediction lines (`{case_id, visit, master, task, system, output, …}`, visit 1-based; a
counterfactual row asks a case as another master than its own). Each gets the deterministic metrics
of `metrics.answer_metrics` against the gold answer of its visit, its style attribution, and its judge
scores. What is aggregated over which rows:
- the leaderboard, the system × master × task table, the paired tests and the worst answers use the
  normal rows only: a counterfactual row's gold answer is another master's, so herb F1 against it
  measures nothing about quality;
- style fidelity and the switch matrix use both (that is what counterfactual mode is for);
- safety findings are counted for both, separately.

A value that does not apply is None (NaN never appears, `write_results` refuses it), so that every
mean leaves it out rather than counting it as 0.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel
from rich.progress import Progress

from shicheng.domain import Answer, Case, Master, Prescription, Task, Visit
from shicheng.evaluate import results_judge
from shicheng.evaluate.judge import Verdict
from shicheng.evaluate.judge_plan import read_row
from shicheng.evaluate.rubric import Rubric, load_rubric
from shicheng.evaluate.stats import aggregate, compare_systems
from shicheng.evaluate.style import (
    STYLE_TASKS,
    attribute,
    case_prescriptions,
    signature_herbs,
    signature_recall,
    style_fidelity,
)
from shicheng.metrics import (
    SAFETY_LEVELS,
    SAFETY_RULES,
    UNATTRIBUTED,
    MasterStyleModel,
    answer_metrics,
    herb_match,
)
from shicheng.prescription import (
    format_herbs,
    resolve_prescription,
)
from shicheng.prompts import user_prompt
from shicheng.template import parse_answer, render_answer

SCHEMA_VERSION = 1
# The leaderboard's columns, in the order the report shows them.
LEADERBOARD_METRICS: tuple[str, ...] = (
    "herb_f1", "herb_precision", "herb_recall", "herb_points", "completeness", "composition_point",
    "syndrome_char_f1", "syndrome_exact", "principle_char_f1", "principle_exact", "dose_mae_g", "dose_rel_error",
    "followup_added_f1", "followup_removed_f1", "style_match", "signature_recall", "safety_error",
    "safety_warning")
GROUP_METRICS: tuple[str, ...] = ("herb_f1", "completeness", "syndrome_char_f1", "principle_char_f1",
                                  "style_match")
PAIRED_METRICS: tuple[str, ...] = ("herb_f1", "herb_points", "completeness", "syndrome_char_f1",
                                   "principle_char_f1", "style_match")
ROW_KEYS = ("case_id", "visit", "master", "task", "system")
N_WORST = 3  # per system and criterion: enough to read, few enough to read all


def visit_prescriptions(case: Case) -> list[Prescription | None]:
    """Each visit's full gold prescription: the structured one, else its 处方 text, with 上方去…加…
    applied to the previous visit's (chained, so a third visit written as changes is complete too)."""
    out: list[Prescription | None] = []
    for visit in case.visits:
        prev = out[-1] if out else None
        if visit.prescription is not None and visit.prescription.herbs:
            out.append(visit.prescription)
        elif visit.answer is not None and visit.answer.prescription:
            out.append(resolve_prescription(visit.answer.prescription, prev))
        else:
            out.append(None)
    return out


def gold_answer(visit: Visit) -> Answer | None:
    """The master's answer of a visit; a structured prescription stands in for a missing 处方 text."""
    answer, rx = visit.answer, visit.prescription
    if answer is not None and answer.prescription:
        return answer
    if rx is not None and rx.herbs:
        return (answer or Answer()).model_copy(update={"prescription": rx.raw or format_herbs(rx.herbs)})
    return answer


def _where(raw: Mapping, i: int) -> str:
    """`file:line` of a row read by predict.read_predictions, else its position in the list."""
    return f"{raw['file']}:{raw['line']}" if raw.get("file") and raw.get("line") else f"prediction row {i}"


def _own_master(row: Mapping, case: Case, where: str) -> str | None:
    given = row.get("case_master")
    if given and case.master_id and given != case.master_id:
        raise ValueError(f"{where}: case_master '{given}' but case '{case.id}' belongs to '{case.master_id}'")
    return case.master_id or given or None


def _read_rows(predictions: Sequence[Mapping], cases: Mapping[str, Case]) -> list[dict]:
    rows, seen = [], {}
    for i, raw in enumerate(predictions):
        if isinstance(raw, BaseModel):
            raw = raw.model_dump()
        where = _where(raw, i)
        if not raw.get("system"):
            raise ValueError(f"{where}: no 'system'; every row must name the system that answered")
        try:
            row = read_row(raw, i)
        except ValueError as e:
            raise ValueError(str(e).replace(f"prediction row {i}", where, 1)) from None
        case = cases.get(row["case_id"])
        if case is None:
            raise ValueError(f"{where}: case '{row['case_id']}' is not among the {len(cases)} cases given")
        if row["visit"] > len(case.visits):
            raise ValueError(f"{where}: case '{case.id}' has {len(case.visits)} visit(s), "
                             f"row asks for visit {row['visit']}")
        row["task"] = row["task"].value
        row["case_master"] = _own_master(raw, case, where)
        row["counterfactual"] = bool(row["master"] and row["case_master"] and row["master"] != row["case_master"])
        key = tuple(row[k] for k in ROW_KEYS)
        if key in seen:
            raise ValueError(f"{seen[key]} and {where} answer the same {dict(zip(ROW_KEYS, key, strict=True))}; "
                             "each answer must appear once")
        seen[key] = where
        rows.append(row)
    return rows


def _style(train_cases: Sequence[Case] | None, warnings: list[str]):
    if not train_cases:
        warnings.append("No training cases were given: style attribution, the switch matrix and signature "
                        "herbs need a style model fitted on the training split, so they are not computed.")
        return None, None
    masters = {c.master_id for c in train_cases if c.master_id}
    if len(masters) < 2:
        warnings.append(f"The training cases name {len(masters)} master(s); style attribution needs at least two.")
        return None, None
    model = MasterStyleModel.fit_cases(train_cases)
    examples = case_prescriptions(train_cases)
    sig = signature_herbs(examples) if len({m for m, _ in examples}) >= 2 else None
    return model, sig


def _score_row(row: dict, case: Case, golds: list[Prescription | None], model, signatures) -> dict:
    vi = row["visit"] - 1
    previous = golds[vi - 1] if vi > 0 else None
    m = answer_metrics(gold_answer(case.visits[vi]), row["output"], row["task"], case.patient, previous)
    rec = {k: row[k] for k in (*ROW_KEYS, "case_master", "counterfactual")} | m
    rec["style_attributed"] = rec["style_match"] = rec["signature_recall"] = None
    if model is not None and row["task"] in STYLE_TASKS:
        try:
            who = attribute(row["output"], model)
        except Exception:  # one odd answer must not stop the run; style_fidelity counts it unparseable
            who = None
        else:
            rec["style_attributed"] = who or UNATTRIBUTED
            if row["master"] in model.masters:
                rec["style_match"] = float(who == row["master"])
    sig = (signatures or {}).get(row["master"])
    if sig and m.get("has_prescription"):
        with contextlib.suppress(Exception):  # as above: counted by style_fidelity, not scored here
            rec["signature_recall"] = signature_recall(row["output"], sig)
    return rec


def _by_system(rows: Sequence[dict], metrics: Sequence[str], systems: Sequence[str], n_boot: int, seed: int
               ) -> dict[str, dict]:
    out: dict[str, dict] = {s: {"n_answers": 0, "n_cases": 0, "metrics": {}} for s in systems}
    for s in systems:
        part = [r for r in rows if r["system"] == s]
        out[s]["n_answers"], out[s]["n_cases"] = len(part), len({r["case_id"] for r in part})
    for entry in aggregate(rows, metrics, by=("system",), n_boot=n_boot, seed=seed) if rows else []:
        out[entry["system"]]["metrics"][entry["metric"]] = {k: entry[k] for k in
                                                           ("mean", "ci_low", "ci_high", "n", "n_cases")}
    return out


def _safety(rows: Sequence[dict], systems: Sequence[str]) -> list[dict]:
    out = []
    for s in systems:
        for mode in ("normal", "counterfactual"):
            part = [r for r in rows if r["system"] == s and r["counterfactual"] == (mode == "counterfactual")]
            if not part:
                continue
            checked = [r for r in part if r.get("safety_error") is not None]
            out.append({"system": s, "mode": mode, "answers": len(part), "answers_checked": len(checked),
                        "answers_with_error": sum(r["safety_error"] > 0 for r in checked),
                        "answers_with_warning": sum(r["safety_warning"] > 0 for r in checked),
                        "by_level": {lv: sum(r[f"safety_{lv}"] for r in checked) for lv in SAFETY_LEVELS},
                        "by_rule": {ru: sum(r.get(f"safety_{ru}") or 0 for r in checked) for ru in SAFETY_RULES}})
    return out


def _style_results(raw_rows, cases, model, signatures) -> dict | None:
    if model is None:
        return None
    usable = [r for r in raw_rows if r["case_master"]]
    # The gold side is read as the generated side is (style_fidelity reads answer text): its 处方 text, so that
    # a follow-up written as 上方去…加… counts the same for both, and the gold answers score 0 against it.
    gold_by_master: dict[str, list[str]] = defaultdict(list)
    for case_id, visit in dict.fromkeys((r["case_id"], r["visit"]) for r in usable
                                        if not r["counterfactual"] and r["task"] in STYLE_TASKS):
        gold = gold_answer(cases[case_id].visits[visit - 1])
        if gold is not None and gold.prescription:
            gold_by_master[cases[case_id].master_id].append(gold.prescription)
    fidelity = style_fidelity(usable, model, {r["case_id"]: r["case_master"] for r in usable},
                              gold_by_master=dict(gold_by_master) or None, signatures=signatures)
    return {"masters": model.masters, "signature_herbs": signatures, "n_without_master": len(raw_rows) - len(usable),
            "systems": fidelity,
            "counterfactual": {s: f["counterfactual"] for s, f in fidelity.items() if f["counterfactual"]}}


def _pairs(pairs, systems: list[str]) -> list[tuple[str, str]]:
    if pairs is None:
        return [(s, systems[0]) for s in systems[1:]]
    out = []
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"a pair names two systems, got {pair!r}")
        for s in pair:
            if s not in systems:
                raise ValueError(f"pair {tuple(pair)}: no predictions for system '{s}'; systems: {systems}")
        out.append((pair[0], pair[1]))
    return out


def _paired(rows, pairs, metrics, n_boot, seed) -> list[dict]:
    out = []
    for a, b in pairs:
        part = [r for r in rows if r["system"] in (a, b)]
        if not any(r["system"] == a for r in part) or not any(r["system"] == b for r in part):
            out.append({"system_a": a, "system_b": b, "note": "one of the two has no normal (non-counterfactual) rows"})
            continue
        for res in compare_systems(part, a, b, metrics, n_boot=n_boot, seed=seed):
            out.append(res)
    return out


def _worst(rows, raw_by_key, cases, golds, verdicts_by_key, n_worst: int) -> list[dict]:
    picked: dict[tuple, list[str]] = {}
    for system in dict.fromkeys(r["system"] for r in rows):
        part = [r for r in rows if r["system"] == system]
        for metric in ("herb_f1", "judge_share"):
            # A perfect answer is nobody's worst, however few answers a system has.
            scored = sorted((r for r in part if r.get(metric) is not None and r[metric] < 1 - 1e-9),
                            key=lambda r: (r[metric], r["case_id"], r["visit"], r["task"]))
            for r in scored[:n_worst]:
                picked.setdefault(tuple(r[k] for k in ROW_KEYS), []).append(metric)
    out = []
    for key, why in picked.items():
        rec, raw = next(r for r in rows if tuple(r[k] for k in ROW_KEYS) == key), raw_by_key[key]
        case, vi = cases[rec["case_id"]], rec["visit"] - 1
        gold = gold_answer(case.visits[vi])
        herbs = None
        gold_rx = golds[case.id][vi]
        if gold_rx is not None and gold_rx.herbs:
            pred_text = parse_answer(raw["output"]).answer.prescription or ""
            pred_rx = resolve_prescription(pred_text, golds[case.id][vi - 1] if vi > 0 else None)
            herbs = herb_match(gold_rx, pred_rx).to_dict()
        judged = [{"judge": v.judge, "status": v.status, "total": v.total, "max_total": v.max_total,
                   "rationale": v.rationale, "reason": v.reason} for v in verdicts_by_key.get(key, [])]
        out.append({**{k: rec[k] for k in ROW_KEYS}, "why": why, "herb_f1": rec.get("herb_f1"),
                    "judge_share": rec.get("judge_share"), "completeness": rec.get("completeness"),
                    "missing_sections": rec.get("missing_sections"), "herbs": herbs, "verdicts": judged,
                    "case_text": user_prompt(case, vi, Task(rec["task"])), "output": raw["output"],
                    "gold": _plain(render_answer(gold, think=False)) if gold else None})
    return out


def _plain(text: str) -> str:
    return text.replace("<output>", "").replace("</output>", "").strip()


def digest(obj: Any) -> str:
    """sha256 of an input's canonical JSON (sorted keys), so that two runs on the same data agree."""
    h = hashlib.sha256()
    for item in obj:
        data = item.model_dump(mode="json") if isinstance(item, BaseModel) else item
        h.update(json.dumps(data, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def clean(value: Any) -> Any:
    """JSON-ready: NaN and infinities become None, numpy scalars plain numbers, tuples lists."""
    if isinstance(value, BaseModel):
        return clean(value.model_dump(mode="json"))
    if isinstance(value, Mapping):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [clean(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    return value


def _masters_info(rows, masters: Mapping[str, Master] | None) -> dict[str, str]:
    ids = dict.fromkeys(x for r in rows for x in (r["master"], r["case_master"]) if x)
    return {m: (masters[m].name if masters and m in masters else m) for m in ids}


def build_results(predictions: Sequence[Mapping], cases: Mapping[str, Case], *,
                  train_cases: Sequence[Case] | None = None, verdicts: Sequence[Verdict | Mapping] | None = None,
                  rubric: Rubric | None = None, pairs: Sequence[tuple[str, str]] | None = None, n_boot: int = 2000,
                  seed: int = 0, masters: Mapping[str, Master] | None = None,
                  input_files: Mapping[str, str | Path] | None = None, n_worst: int = N_WORST,
                  progress: bool = False) -> dict:
    """Score, aggregate and compare; see the module docstring for which rows feed what.

    `pairs`: (A, B) systems to test A − B; default every system against the first one listed.
    `masters` gives display names; `input_files` ({"predictions": path, …}) adds each file's sha256;
    `progress` shows a bar while the answers are scored (the long part on a large run)."""
    if not predictions:
        raise ValueError("build_results needs at least one prediction row")
    rubric = rubric or load_rubric()
    warnings: list[str] = []
    raw_rows = _read_rows(predictions, cases)
    systems = list(dict.fromkeys(r["system"] for r in raw_rows))
    golds = {cid: visit_prescriptions(cases[cid]) for cid in dict.fromkeys(r["case_id"] for r in raw_rows)}
    model, signatures = _style(train_cases, warnings)
    rows = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("scoring answers", total=len(raw_rows))
        for r in raw_rows:
            rows.append(_score_row(r, cases[r["case_id"]], golds[r["case_id"]], model, signatures))
            bar.advance(task)
    vlist = [v if isinstance(v, Verdict) else Verdict.model_validate(v) for v in verdicts or []]
    judge = results_judge.judge_results(vlist, rows, rubric, n_boot=n_boot, seed=seed)
    if not vlist:
        warnings.append("No LLM judge was run: rubric scores, radar charts, total scores and judge-vs-code herb "
                        "counts are empty.")
    normal = [r for r in rows if not r["counterfactual"]]
    judge_metrics = results_judge.row_metric_names(vlist)
    board_metrics = [*LEADERBOARD_METRICS, *judge_metrics]
    groups = (aggregate(normal, [*GROUP_METRICS, *judge_metrics[:1]], n_boot=n_boot, seed=seed) if normal else [])
    raw_by_key = {tuple(r[k] for k in ROW_KEYS): r for r in raw_rows}
    verdicts_by_key: dict[tuple, list[Verdict]] = defaultdict(list)
    for v in vlist:
        verdicts_by_key[tuple(getattr(v, k) for k in ROW_KEYS)].append(v)
    inputs = {"predictions": digest(raw_rows), "cases": digest(cases[c] for c in sorted(golds)),
              "train_cases": digest(train_cases) if train_cases else None,
              "verdicts": digest(vlist) if vlist else None}
    inputs |= {f"{name}_file": file_digest(p) for name, p in (input_files or {}).items()}
    results = {
        "schema_version": SCHEMA_VERSION, "rubric_version": rubric.version,
        "rubric": {"version": rubric.version, "title": rubric.title, "total": rubric.total,
                   "items": [{"key": it.key, "zh": it.zh, "max_points": it.points} for it in rubric.items]},
        "seed": seed, "n_boot": n_boot, "ci_level": 0.95, "inputs_sha256": inputs,
        "systems": systems, "masters": _masters_info(raw_rows, masters), "warnings": warnings,
        "counts": {"predictions": len(rows), "normal": len(normal), "counterfactual": len(rows) - len(normal),
                   "cases": len(golds), "unparseable": sum(r["status"] != "ok" for r in rows),
                   "per_system": {s: sum(r["system"] == s for r in rows) for s in systems}},
        "leaderboard": {"metrics": board_metrics, "systems": _by_system(normal, board_metrics, systems, n_boot, seed)},
        "by_group": groups,
        "style": _style_results(raw_rows, cases, model, signatures),
        "safety": _safety(rows, systems),
        "judge": judge,
        "paired": _paired(normal, _pairs(pairs, systems), [*PAIRED_METRICS, *judge_metrics[:1]], n_boot, seed),
        "worst": _worst(normal, raw_by_key, cases, golds, verdicts_by_key, n_worst),
        "answers": rows,
    }
    return clean(results)


def write_results(results: Mapping, out_dir: str | Path) -> Path:
    """results.json in `out_dir`; NaN is refused rather than written as invalid JSON."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    path.write_text(json.dumps(clean(results), ensure_ascii=False, indent=1, allow_nan=False) + "\n",
                    encoding="utf-8")
    return path


__all__ = ["GROUP_METRICS", "LEADERBOARD_METRICS", "PAIRED_METRICS", "SCHEMA_VERSION", "build_results", "clean",
           "digest", "file_digest", "gold_answer", "visit_prescriptions", "write_results"]
