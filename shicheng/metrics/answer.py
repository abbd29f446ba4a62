"""One answer's deterministic metrics as a flat row (`answer_metrics`), and the follow-up changes.

A metric that does not apply is None, never 0, so that averages leave it out instead of counting it as
a failure; a part a parser fails on is marked unparseable, not scored as empty.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from shicheng.domain import Answer, Patient, Prescription, Task
from shicheng.metrics.findings import SAFETY_LEVELS, SAFETY_RULES, safety_counts
from shicheng.metrics.herbs import base_herbs, composition_point, dose_error, herb_key, herb_match, with_bases
from shicheng.metrics.reading import (
    as_answer,
    as_patient,
    as_task,
    asks_for,
    completeness,
    overlap_f1,
    required_sections,
)
from shicheng.metrics.statements import statement_agreement
from shicheng.prescription import apply_to_previous, parse_prescription, refers_to_previous
from shicheng.prompts import read_modification
from shicheng.template import parse_answer

UNPARSEABLE = "unparseable"


def _change_f1(pred: set[str], gold: set[str]) -> float:
    # Both empty is agreement (the master changed nothing and neither did the model).
    if not pred and not gold:
        return 1.0
    return overlap_f1(len(pred & gold), len(pred), len(gold))


def followup_change(previous: Prescription, gold_new: Prescription, pred_new: Prescription | None
                    ) -> dict[str, float | int]:
    """F1 of the herbs added and of the herbs removed versus the previous visit, predicted against gold.
    No predicted prescription scores 0 on both."""
    before, gold = set(base_herbs(previous)), set(base_herbs(gold_new))
    added = removed = 0.0
    if pred_new is not None and pred_new.herbs:
        pred = set(base_herbs(pred_new))
        added, removed = _change_f1(pred - before, gold - before), _change_f1(before - pred, before - gold)
    return {"followup_added_f1": added, "followup_removed_f1": removed, "followup_gold_added": len(gold - before),
            "followup_gold_removed": len(before - gold)}


def _full(text: str | None, previous: Prescription | None) -> Prescription | None:
    """A prescription section as a full prescription: 上方去黄芩加丹参 applied to the previous visit's."""
    if not text:
        return None
    parsed = parse_prescription(text)
    if previous is not None and refers_to_previous(text):
        return apply_to_previous(previous, parsed)
    return parsed.prescription


def _modified(text: str | None, previous: Prescription) -> Prescription | None:
    """The new prescription stated by a modification answer: its 调整后处方 line, else its 加：/去： lines
    (the layout of prompts.modification_text) applied to the previous prescription."""
    if not text:
        return None
    stated = read_modification(text)
    if stated.new_prescription:
        return _full(stated.new_prescription, previous)
    if stated.added is None and stated.removed is None:
        return None
    added = parse_prescription(stated.added or "").prescription.herbs
    gone = set(base_herbs([n for n in re.split(r"[，,、\s]+", stated.removed or "") if n]))
    changed = {herb_key(h) for h in added}
    kept = [h for h in previous.herbs if herb_key(h) not in gone and herb_key(h) not in changed]
    return Prescription(formula_name=previous.formula_name, herbs=[*kept, *added])


class _Guard:
    """Runs one part of the scoring; a parser exception marks the part unparseable instead of crashing."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def __call__(self, part: str, fn, *args):
        try:
            return fn(*args)
        except Exception:  # any parser bug on odd text must not stop an evaluation run
            self.failed.append(part)
            return None


def answer_metrics(gold: Answer | Mapping | None, output_text: str, task: Task | str | None = None,
                   patient: Patient | Mapping | None = None, previous: Prescription | str | None = None
                   ) -> dict:
    """Every deterministic metric of one answer as a flat JSON-able dict. None marks a metric that does
    not apply (no gold, the task does not ask for it, nothing to compare) or a part that could not be
    parsed; `status` is "unparseable" and `unparseable_parts` names the parts when a parser failed.

    Keys: completeness, missing_sections, sections_required, well_formed (full chain only),
    has_prescription, herb_precision/recall/f1, herb_points (rubric, of 9), herbs_gold/pred/matched,
    dose_n, dose_mae_g, dose_rel_error, composition_point (rubric, of 1), syndrome_exact, syndrome_char_f1,
    principle_exact, principle_char_f1, safety_<level> and safety_<rule> counts, followup_added_f1,
    followup_removed_f1, followup_gold_added/removed, task, status, unparseable_parts.
    A prescription written as changes (上方去木香加砂仁) is applied to `previous` before scoring."""
    t = as_task(task)
    patient = as_patient(patient)
    gold = as_answer(gold)
    guard = _Guard()
    if isinstance(previous, str):
        previous = guard("previous_prescription", _full, previous, None)
    if previous is not None:
        previous = with_bases(previous)
    text = output_text if isinstance(output_text, str) else ("" if output_text is None else str(output_text))
    out: dict = {"task": t.value if t else None}
    parsed = guard("answer", parse_answer, text)
    answer = parsed.answer if parsed is not None else None

    share, missing = (None, None) if answer is None else completeness(answer, t)
    out |= {"completeness": share, "missing_sections": ",".join(missing) if missing else None,
            "sections_required": len(required_sections(t)),
            "well_formed": parsed.well_formed if parsed is not None and t in (None, Task.full_chain) else None}

    gold_rx = guard("gold_prescription", _full, gold.prescription, previous) if gold else None
    pred_rx = guard("prescription", _full, answer.prescription, previous) if answer else None
    if t is Task.modification and previous is not None and answer is not None and pred_rx is None:
        pred_rx = guard("prescription", _modified, answer.modifications, previous)
    # An answer whose prescription could not be parsed is not scored on it (None), never scored as empty.
    readable = answer is not None and "prescription" not in guard.failed
    asks_rx = asks_for(t, "prescription")
    has_rx = bool(pred_rx and pred_rx.herbs)
    out["has_prescription"] = has_rx if asks_rx and readable else None

    match = dose = None
    if asks_rx and gold_rx is not None and gold_rx.herbs and readable:
        match = guard("herb_match", herb_match, gold_rx, pred_rx or Prescription())
        if has_rx:
            dose = guard("dose", dose_error, gold_rx, pred_rx)
    out |= {"herb_precision": match.precision if match else None,
            "herb_recall": match.recall if match else None, "herb_f1": match.f1 if match else None,
            "herb_points": match.points if match else None,
            "herbs_gold": len(match.matched) + len(match.missing) if match else None,
            "herbs_pred": len(match.matched) + len(match.extra) if match else None,
            "herbs_matched": len(match.matched) if match else None}
    out |= dose or {"dose_n": None, "dose_mae_g": None, "dose_rel_error": None}
    out["composition_point"] = (guard("composition", composition_point, pred_rx or Prescription())
                                if asks_rx and readable else None)

    for key, section, kind in (("syndrome", "syndrome", "syndrome"),
                               ("principle", "treatment_principle", "principle")):
        agree = (None, None)
        if gold is not None and answer is not None and asks_for(t, section) and getattr(gold, section):
            agree = guard(key, statement_agreement, getattr(answer, section), getattr(gold, section), kind) \
                or (None, None)
        out[f"{key}_exact"], out[f"{key}_char_f1"] = agree

    counts = guard("safety", safety_counts, pred_rx, patient) if has_rx else None
    out |= counts or {f"safety_{k}": None for k in (*SAFETY_LEVELS, *SAFETY_RULES)}

    change = None
    if (previous is not None and previous.herbs and gold_rx is not None and gold_rx.herbs and readable
            and (asks_rx or t is Task.modification)):
        change = guard("followup", followup_change, previous, gold_rx, pred_rx)
    out |= change or {"followup_added_f1": None, "followup_removed_f1": None, "followup_gold_added": None,
                      "followup_gold_removed": None}

    failed = list(dict.fromkeys(guard.failed))
    out["status"] = UNPARSEABLE if failed else "ok"
    out["unparseable_parts"] = ",".join(failed) if failed else None
    return out


METRIC_KEYS: tuple[str, ...] = (
    "completeness", "well_formed", "has_prescription", "herb_precision", "herb_recall", "herb_f1", "herb_points",
    "composition_point", "dose_mae_g", "dose_rel_error", "syndrome_exact", "syndrome_char_f1", "principle_exact",
    "principle_char_f1", *(f"safety_{k}" for k in (*SAFETY_LEVELS, *SAFETY_RULES)), "followup_added_f1",
    "followup_removed_f1",
)
