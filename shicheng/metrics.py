"""Deterministic per-answer metrics: herb match and the rubric's herb points, section completeness, dose
error, syndrome and principle agreement, safety findings, follow-up changes.

Ground floor of evaluation: imports only domain, template, prescription, safety and knowledge, so that
the judge, the report and (later) the rewards can all score the same way. Herbs are compared as base
herbs (DESIGN.md §1 rubric: aliases and processed forms count as the same herb, 炙甘草 = 甘草,
云苓 = 茯苓; dose, processing and origin are ignored for matching). A metric that does not apply is None,
never 0, so that averages leave it out instead of counting it as a failure.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shicheng.domain import (
    REQUIRED_OUTPUT_KEYS,
    SECTION_BY_KEY,
    Answer,
    HerbItem,
    Patient,
    Prescription,
    Task,
)
from shicheng.knowledge import load_knowledge
from shicheng.prescription import apply_to_previous, parse_prescription, refers_to_previous
from shicheng.safety import check_safety
from shicheng.template import parse_answer

HERB_POINTS = 9.0  # rubric: herb match = matched / gold herbs × 9, plus 1 for sound composition
COMPOSITION_RULES = frozenset({"十八反", "十九畏"})
SAFETY_RULES = ("十八反", "十九畏", "妊娠禁用", "妊娠慎用", "剂量", "未知药名")
SAFETY_LEVELS = ("error", "warning", "notice")
UNPARSEABLE = "unparseable"

HerbsLike = Prescription | str | Sequence[str]


@dataclass(frozen=True)
class HerbMatch:
    """Base-herb overlap of a predicted prescription with the gold one; herbs in gold (or pred) order."""

    matched: tuple[str, ...]
    missing: tuple[str, ...]  # in gold, not predicted
    extra: tuple[str, ...]  # predicted, not in gold
    precision: float | None  # None when nothing was predicted (0/0)
    recall: float | None  # None when the gold has no herbs
    f1: float | None  # None when the gold has no herbs; 0 when the gold has herbs and nothing matched
    points: float | None  # rubric herb-match points, matched / gold × 9; None without gold herbs

    def to_dict(self) -> dict:
        return {"matched": list(self.matched), "missing": list(self.missing), "extra": list(self.extra),
                "precision": self.precision, "recall": self.recall, "f1": self.f1, "points": self.points}


def _herb_key(item: HerbItem) -> str | None:
    """Base herb of an item; an item the lexicon does not know keeps its written name so it still counts."""
    if item.base:
        return item.base
    return _resolved_base(item) or unicodedata.normalize("NFKC", item.name or item.raw or "").strip() or None


def _resolved_base(item: HerbItem) -> str | None:
    kb = load_knowledge()
    written = kb.to_simplified(unicodedata.normalize("NFKC", item.name or item.raw or "").strip())
    hit = kb.resolve(written) if written else None
    return hit.base if hit is not None else None


_THINK_END = re.compile(r"<\s*/\s*think\s*>", re.IGNORECASE)


def _section_or_text(text: str) -> str:
    """An answer text is read through its 处方 section; a bare prescription (no section heading) is read
    whole, after any reasoning. An answer whose sections hold no 处方 has no prescription: herbs named in
    its 方解 or 病机 are not prescribed."""
    parsed = parse_answer(text)
    if parsed.answer.prescription:
        return parsed.answer.prescription
    if any(k != "reasoning" for k in parsed.found):
        return ""
    ends = list(_THINK_END.finditer(text))
    return text[ends[-1].end():] if ends else text


def _as_prescription(rx_or_text: Prescription | str) -> Prescription:
    if isinstance(rx_or_text, Prescription):
        return rx_or_text
    if isinstance(rx_or_text, str):
        return parse_prescription(_section_or_text(rx_or_text)).prescription
    raise TypeError(f"expected a Prescription or prescription text, got {type(rx_or_text).__name__}")


def base_herbs(rx_or_text: HerbsLike) -> list[str]:
    """Base herbs, first occurrence order, no duplicates: 炙甘草 and 生甘草 are both 甘草, 云苓 is 茯苓.

    Accepts a Prescription, prescription text, answer text (read through its 处方 section) or a list of
    herb names. A herb unknown to the lexicon keeps its written name, so that it still counts."""
    if isinstance(rx_or_text, (Prescription, str)):
        rx = _as_prescription(rx_or_text)
        return list(dict.fromkeys(k for k in (_herb_key(h) for h in rx.herbs) if k))
    if not isinstance(rx_or_text, Sequence):
        raise TypeError(f"expected a Prescription, text or a list of herb names, got {type(rx_or_text).__name__}")
    out: list[str] = []
    for name in rx_or_text:
        if not isinstance(name, str):
            raise TypeError(f"herb names must be strings, got {name!r}")
        key = _herb_key(HerbItem(raw=name)) if name.strip() else None
        if key:
            out.append(key)
    return list(dict.fromkeys(out))


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def herb_match(gold: HerbsLike, pred: HerbsLike) -> HerbMatch:
    """Compare base herbs. Inputs: a Prescription, prescription or answer text, or a list of herb names."""
    g, p = base_herbs(gold), base_herbs(pred)
    pset, gset = set(p), set(g)
    matched = tuple(h for h in g if h in pset)
    precision = _ratio(len(matched), len(p))
    recall = _ratio(len(matched), len(g))
    f1 = None if not g else (2 * len(matched) / (len(p) + len(g)) if matched else 0.0)
    points = None if not g else len(matched) / len(g) * HERB_POINTS
    return HerbMatch(matched=matched, missing=tuple(h for h in g if h not in pset),
                     extra=tuple(h for h in p if h not in gset), precision=precision, recall=recall, f1=f1,
                     points=points)


def _with_bases(rx: Prescription) -> Prescription:
    # check_safety reads HerbItem.base; hand-built prescriptions may only carry names.
    if all(h.base or not (h.name or h.raw) for h in rx.herbs):
        return rx
    herbs = [h if h.base else h.model_copy(update={"base": _resolved_base(h)}) for h in rx.herbs]
    return rx.model_copy(update={"herbs": herbs})


def composition_point(pred: Prescription | str) -> float:
    """The rubric's "sound composition" point: 1 when no 十八反/十九畏 pair is prescribed, else 0.

    A prescription without herbs scores 0: the rubric gives an unanswered item 0, and a point for sound
    composition needs a composition to judge."""
    rx = _with_bases(_as_prescription(pred))
    if not rx.herbs:
        return 0.0
    bad = any(f.level == "error" and f.rule in COMPOSITION_RULES for f in check_safety(rx))
    return 0.0 if bad else 1.0


# --- per-answer metrics -------------------------------------------------------------------------------

def _task(task: Task | str | None) -> Task | None:
    if task is None or isinstance(task, Task):
        return task
    try:
        return Task(task)
    except ValueError:
        raise ValueError(f"unknown task '{task}'; known: {[t.value for t in Task]}") from None


def required_sections(task: Task | str | None) -> tuple[str, ...]:
    """Output sections a task must answer; the full chain (or no task) asks for every required one."""
    t = _task(task)
    if t is None:
        return REQUIRED_OUTPUT_KEYS
    keys = tuple(k for k in t.sections if k != "reasoning" and not SECTION_BY_KEY[k].optional)
    return keys or REQUIRED_OUTPUT_KEYS


def _asks(task: Task | None, key: str) -> bool:
    return task is None or key in task.sections


def completeness(answer: Answer, task: Task | str | None) -> tuple[float, list[str]]:
    """(share of the task's required sections present, the missing ones)."""
    required = required_sections(task)
    missing = [k for k in required if not getattr(answer, k)]
    return (len(required) - len(missing)) / len(required), missing


# Words that frame a statement rather than carry it: 主证：脾胃虚寒证；兼证：气滞 ≈ 脾胃虚寒 气滞.
_SYNDROME_FRAME = re.compile(r"证候诊断|中医诊断|辨证|主证|兼证|兼夹|兼有|证型|证候|诊断")
_PRINCIPLE_FRAME = re.compile(r"治则治法|治法治则|治疗原则|治则|治法|治以|治宜|治当|法当|法宜|拟以|拟用")
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]+")


def statement_clauses(text: str | None, kind: str = "syndrome") -> list[str]:
    """Clauses of a syndrome or principle statement after normalisation: NFKC, traditional -> simplified,
    framing words removed, punctuation and spaces split clauses, a clause-final 证/型 dropped."""
    frame = {"syndrome": _SYNDROME_FRAME, "principle": _PRINCIPLE_FRAME}[kind]
    text = load_knowledge().to_simplified(unicodedata.normalize("NFKC", text or ""))
    out = []
    for run in _CJK_RUN.findall(frame.sub(" ", text)):
        out.append(re.sub(r"[证型]$", "", run) if len(run) > 2 else run)
    return out


def statement_agreement(pred: str | None, gold: str | None, kind: str = "syndrome"
                        ) -> tuple[bool | None, float | None]:
    """(normalised exact match, character-level F1) of two statements; (None, None) without a gold one.
    Exact match compares the sets of normalised clauses, so 脾虚，湿盛 equals 湿盛证、脾虚."""
    g = statement_clauses(gold, kind)
    if not g:
        return None, None
    p = statement_clauses(pred, kind)
    gc, pc = Counter("".join(g)), Counter("".join(p))
    hit = sum((gc & pc).values())
    f1 = 2 * hit / (sum(gc.values()) + sum(pc.values())) if hit else 0.0
    return set(p) == set(g), f1


def _grams_by_base(rx: Prescription) -> dict[str, float | None]:
    # Two lines of one base herb (生甘草 + 炙甘草) add up; a base with any line lacking grams has no total.
    totals: dict[str, float | None] = {}
    for h in rx.herbs:
        key = _herb_key(h)
        if not key:
            continue
        if key in totals and totals[key] is None:
            continue
        totals[key] = None if h.grams is None else (totals.get(key) or 0.0) + h.grams
    return totals


def dose_error(gold: Prescription, pred: Prescription) -> dict[str, float | int | None]:
    """Mean absolute and mean relative daily-dose difference on herbs both prescribe with known grams."""
    g, p = _grams_by_base(gold), _grams_by_base(pred)
    pairs = [(g[k], p[k]) for k in g if k in p and g[k] is not None and p[k] is not None]
    if not pairs:
        return {"dose_n": 0, "dose_mae_g": None, "dose_rel_error": None}
    rel = [abs(b - a) / a for a, b in pairs if a > 0]
    return {"dose_n": len(pairs), "dose_mae_g": sum(abs(b - a) for a, b in pairs) / len(pairs),
            "dose_rel_error": sum(rel) / len(rel) if rel else None}


def safety_counts(rx: Prescription, patient: Patient | None) -> dict[str, int]:
    """Findings of check_safety counted by level and by rule (every known rule and level present)."""
    out = {f"safety_{lvl}": 0 for lvl in SAFETY_LEVELS} | {f"safety_{r}": 0 for r in SAFETY_RULES}
    for f in check_safety(_with_bases(rx), patient):
        out[f"safety_{f.level}"] += 1
        out[f"safety_{f.rule}"] = out.get(f"safety_{f.rule}", 0) + 1
    return out


def _change_f1(pred: set[str], gold: set[str]) -> float:
    # Both empty is agreement (the master changed nothing and neither did the model).
    if not pred and not gold:
        return 1.0
    hit = len(pred & gold)
    return 2 * hit / (len(pred) + len(gold)) if hit else 0.0


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


_ADJUSTED = re.compile(r"调整后(?:处方|方药)\s*[:：]\s*(.+)", re.DOTALL)
_ADD_LINE = re.compile(r"^\s*加\s*[:：]\s*(.*)$", re.MULTILINE)
_REMOVE_LINE = re.compile(r"^\s*去\s*[:：]\s*(.*)$", re.MULTILINE)


def _modified(text: str | None, previous: Prescription) -> Prescription | None:
    """The new prescription stated by a modification answer: its 调整后处方 line, else its 加：/去： lines
    (the layout of prompts.modification_text) applied to the previous prescription."""
    if not text:
        return None
    if m := _ADJUSTED.search(text):
        return _full(m.group(1).strip(), previous)
    adds, removes = _ADD_LINE.findall(text), _REMOVE_LINE.findall(text)
    if not adds and not removes:
        return None
    added = parse_prescription("，".join(a for a in adds if a.strip() != "无")).prescription.herbs
    gone = set(base_herbs([n for r in removes if r.strip() != "无" for n in re.split(r"[，,、\s]+", r) if n]))
    changed = {_herb_key(h) for h in added}
    kept = [h for h in previous.herbs if _herb_key(h) not in gone and _herb_key(h) not in changed]
    return Prescription(formula_name=previous.formula_name, herbs=[*kept, *added])


def _patient(patient: Patient | Mapping | None) -> Patient | None:
    if patient is None or isinstance(patient, Patient):
        return patient
    return Patient(**{k: v for k, v in dict(patient).items() if v is not None})


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
    t = _task(task)
    patient = _patient(patient)
    if isinstance(gold, Mapping):
        gold = Answer(**{k: v for k, v in gold.items() if v is not None})
    guard = _Guard()
    if isinstance(previous, str):
        previous = guard("previous_prescription", _full, previous, None)
    if previous is not None:
        previous = _with_bases(previous)
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
    asks_rx = _asks(t, "prescription")
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
        if gold is not None and answer is not None and _asks(t, section) and getattr(gold, section):
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
