"""Deterministic metrics, the one place answers are scored: by evaluation, by the judge's rubric and by
the GRPO rewards (train/rewards.py adapts them to TRL).

Ground floor: imports only domain, template, prescription, safety, knowledge, prompts and text.
- reading.py: tolerant readers of model text, the sections a task asks for, completeness, format score;
- herbs.py: base herbs, herb precision/recall/F1 and the rubric's herb points, composition, dose error;
- statements.py: syndrome and principle agreement (clause sets, character F1, bigram F1);
- findings.py: safety findings counted, the safety score;
- answer.py: every metric of one answer as a flat row, follow-up changes;
- style.py: the master style model and master attribution.
Herbs are compared as base herbs (the rubric's rule: 炙甘草 = 甘草, 云苓 = 茯苓). A metric that does
not apply is None, never 0, so that averages leave it out instead of counting it as a failure.
"""

from shicheng.metrics.answer import METRIC_KEYS, UNPARSEABLE, answer_metrics, followup_change
from shicheng.metrics.findings import (
    SAFETY_ERROR_PENALTY,
    SAFETY_LEVELS,
    SAFETY_RULES,
    SAFETY_WARNING_PENALTY,
    safety_counts,
    safety_score,
)
from shicheng.metrics.herbs import (
    COMPOSITION_RULES,
    HERB_POINTS,
    HerbMatch,
    HerbsLike,
    base_herbs,
    completion_herbs,
    composition_point,
    dose_error,
    herb_f1,
    herb_key,
    herb_match,
    prescription_bases,
    section_herbs,
    with_bases,
)
from shicheng.metrics.reading import (
    as_answer,
    as_patient,
    as_task,
    asks_for,
    completeness,
    format_score,
    overlap_f1,
    read_answer,
    read_prescription,
    required_sections,
)
from shicheng.metrics.statements import (
    CJK_RUN,
    statement_agreement,
    statement_clauses,
    syndrome_f1,
    syndrome_units,
)
from shicheng.metrics.style import (
    SHARPNESS_GRID,
    STYLE_SECTIONS,
    UNATTRIBUTED,
    MasterStyleModel,
    attribution,
    confusion_matrix,
    style_features,
)

__all__ = [
    "CJK_RUN",
    "COMPOSITION_RULES",
    "HERB_POINTS",
    "METRIC_KEYS",
    "SAFETY_ERROR_PENALTY",
    "SAFETY_LEVELS",
    "SAFETY_RULES",
    "SAFETY_WARNING_PENALTY",
    "SHARPNESS_GRID",
    "STYLE_SECTIONS",
    "UNATTRIBUTED",
    "UNPARSEABLE",
    "HerbMatch",
    "HerbsLike",
    "MasterStyleModel",
    "answer_metrics",
    "as_answer",
    "as_patient",
    "as_task",
    "asks_for",
    "attribution",
    "base_herbs",
    "completeness",
    "completion_herbs",
    "composition_point",
    "confusion_matrix",
    "dose_error",
    "followup_change",
    "format_score",
    "herb_f1",
    "herb_key",
    "herb_match",
    "overlap_f1",
    "prescription_bases",
    "read_answer",
    "read_prescription",
    "required_sections",
    "safety_counts",
    "safety_score",
    "section_herbs",
    "statement_agreement",
    "statement_clauses",
    "style_features",
    "syndrome_f1",
    "syndrome_units",
    "with_bases",
]
