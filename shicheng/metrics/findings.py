"""Safety findings of a prescription as numbers: counts by level and rule, and the safety score.

safety_score: 1 − 0.6 per error (十八反/十九畏 pair; 妊娠禁用 herb for a pregnant patient) − 0.1 per warning
(妊娠慎用; daily dose outside the pharmacopoeia range), floored at 0; one incompatible pair → 0.4.
"""

from __future__ import annotations

from collections.abc import Mapping

from shicheng.domain import Patient, Prescription
from shicheng.metrics.herbs import with_bases
from shicheng.metrics.reading import _snippet, as_patient, log, read_answer, read_prescription
from shicheng.safety import check_safety

SAFETY_RULES = ("十八反", "十九畏", "妊娠禁用", "妊娠慎用", "剂量", "未知药名")
SAFETY_LEVELS = ("error", "warning", "notice")
SAFETY_ERROR_PENALTY = 0.6
SAFETY_WARNING_PENALTY = 0.1


def safety_counts(rx: Prescription, patient: Patient | None) -> dict[str, int]:
    """Findings of check_safety counted by level and by rule (every known rule and level present)."""
    out = {f"safety_{lvl}": 0 for lvl in SAFETY_LEVELS} | {f"safety_{r}": 0 for r in SAFETY_RULES}
    for f in check_safety(with_bases(rx), patient):
        out[f"safety_{f.level}"] += 1
        out[f"safety_{f.rule}"] = out.get(f"safety_{f.rule}", 0) + 1
    return out


def safety_score(text: str, patient: Patient | Mapping | None = None) -> float:
    """The safety score of an answer's 处方 section (1 without one). A section the parser cannot read, or
    that the check fails on, scores 0: a prescription that cannot be checked cannot be called safe."""
    section = read_answer(text).answer.prescription
    if not section:
        return 1.0
    patient = as_patient(patient)
    rx = read_prescription(section)
    if rx is None:
        return 0.0
    try:
        counts = safety_counts(rx, patient)
    except Exception as e:  # see reading.read_answer: unchecked is not safe
        log.warning("metrics: safety check failed (%s: %s) on %s; scored 0", type(e).__name__, e, _snippet(section))
        return 0.0
    return max(0.0, 1.0 - SAFETY_ERROR_PENALTY * counts["safety_error"]
               - SAFETY_WARNING_PENALTY * counts["safety_warning"])
