"""Herbs compared as base herbs: precision/recall/F1 and the rubric's herb points, composition, dose error.

The rubric's rule: aliases and processed forms count as the same herb (炙甘草 = 甘草, 云苓 = 茯苓);
dose, processing and origin are ignored for matching.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shicheng.domain import HerbItem, Prescription
from shicheng.knowledge import load_knowledge
from shicheng.metrics.reading import overlap_f1, read_answer, read_prescription
from shicheng.prescription import parse_prescription
from shicheng.safety import check_safety
from shicheng.template import parse_answer
from shicheng.text import normalise_text

HERB_POINTS = 9.0  # rubric: herb match = matched / gold herbs × 9, plus 1 for sound composition
COMPOSITION_RULES = frozenset({"十八反", "十九畏"})

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


def herb_key(item: HerbItem) -> str | None:
    """Base herb of an item; an item the lexicon does not know keeps its written name so it still counts."""
    if item.base:
        return item.base
    written = normalise_text(item.name or item.raw, fold="nfkc", simplified=False).strip()
    return _resolved_base(item) or written or None


def _resolved_base(item: HerbItem) -> str | None:
    kb = load_knowledge()
    written = normalise_text(item.name or item.raw, fold="nfkc").strip()
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


def prescription_bases(rx: Prescription, known_only: bool = False) -> list[str]:
    """Base herbs of a prescription, first occurrence order, no duplicates. A herb unknown to the lexicon
    keeps its written name, or with `known_only` is left out (how the GRPO rewards have always counted)."""
    keys = (h.base for h in rx.herbs) if known_only else (herb_key(h) for h in rx.herbs)
    return list(dict.fromkeys(k for k in keys if k))


def base_herbs(rx_or_text: HerbsLike) -> list[str]:
    """Base herbs, first occurrence order, no duplicates: 炙甘草 and 生甘草 are both 甘草, 云苓 is 茯苓.

    Accepts a Prescription, prescription text, answer text (read through its 处方 section) or a list of
    herb names. A herb unknown to the lexicon keeps its written name, so that it still counts."""
    if isinstance(rx_or_text, (Prescription, str)):
        return prescription_bases(_as_prescription(rx_or_text))
    if not isinstance(rx_or_text, Sequence):
        raise TypeError(f"expected a Prescription, text or a list of herb names, got {type(rx_or_text).__name__}")
    out: list[str] = []
    for name in rx_or_text:
        if not isinstance(name, str):
            raise TypeError(f"herb names must be strings, got {name!r}")
        key = herb_key(HerbItem(raw=name)) if name.strip() else None
        if key:
            out.append(key)
    return list(dict.fromkeys(out))


def section_herbs(section: str | None) -> list[str]:
    """The known base herbs of a 处方 section ([] without one, or when the parser cannot read it)."""
    rx = read_prescription(section) if section else None
    return [] if rx is None else prescription_bases(rx, known_only=True)


def completion_herbs(text: str) -> list[str]:
    """The known base herbs of an answer's 处方 section; [] when it has none. Unlike `base_herbs`, text
    without a 处方 heading has no prescription: a reward asks for the format."""
    return section_herbs(read_answer(text).answer.prescription)


def herb_f1(predicted: Iterable[str], gold: Iterable[str]) -> float:
    """F1 of two sets of base herbs; 0 when either is empty."""
    pred, ref = set(predicted), set(gold)
    return overlap_f1(len(pred & ref), len(pred), len(ref))


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def herb_match(gold: HerbsLike, pred: HerbsLike) -> HerbMatch:
    """Compare base herbs. Inputs: a Prescription, prescription or answer text, or a list of herb names."""
    g, p = base_herbs(gold), base_herbs(pred)
    pset, gset = set(p), set(g)
    matched = tuple(h for h in g if h in pset)
    return HerbMatch(matched=matched, missing=tuple(h for h in g if h not in pset),
                     extra=tuple(h for h in p if h not in gset), precision=_ratio(len(matched), len(p)),
                     recall=_ratio(len(matched), len(g)), f1=herb_f1(p, g) if g else None,
                     points=len(matched) / len(g) * HERB_POINTS if g else None)


def with_bases(rx: Prescription) -> Prescription:
    """The prescription with every herb's base resolved: check_safety reads HerbItem.base, and hand-built
    prescriptions may only carry names."""
    if all(h.base or not (h.name or h.raw) for h in rx.herbs):
        return rx
    herbs = [h if h.base else h.model_copy(update={"base": _resolved_base(h)}) for h in rx.herbs]
    return rx.model_copy(update={"herbs": herbs})


def composition_point(pred: Prescription | str) -> float:
    """The rubric's "sound composition" point: 1 when no 十八反/十九畏 pair is prescribed, else 0.

    A prescription without herbs scores 0: the rubric gives an unanswered item 0, and a point for sound
    composition needs a composition to judge."""
    rx = with_bases(_as_prescription(pred))
    if not rx.herbs:
        return 0.0
    bad = any(f.level == "error" and f.rule in COMPOSITION_RULES for f in check_safety(rx))
    return 0.0 if bad else 1.0


def _grams_by_base(rx: Prescription) -> dict[str, float | None]:
    # Two lines of one base herb (生甘草 + 炙甘草) add up; a base with any line lacking grams has no total.
    totals: dict[str, float | None] = {}
    for h in rx.herbs:
        key = herb_key(h)
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
