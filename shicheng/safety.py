"""Safety report for a parsed prescription and a patient (DESIGN.md §2).

Levels: `error` (十八反/十九畏 pairs; 禁用 herbs for a pregnant patient), `warning` (慎用 in pregnancy;
daily dose outside the pharmacopoeia range, which a physician may exceed on purpose), `notice`
(herbs the lexicon does not know, so they could not be checked). Processed forms count as their base.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from shicheng.domain import Patient, Prescription
from shicheng.knowledge import Knowledge, load_knowledge

Level = Literal["error", "warning", "notice"]
LEVEL_ORDER = {"error": 0, "warning": 1, "notice": 2}


class Finding(BaseModel):
    level: Level
    rule: str  # 十八反, 十九畏, 妊娠禁用, 妊娠慎用, 剂量, 未知药名
    herbs: list[str]
    message: str
    rule_id: str | None = None
    source: str | None = None


def check_safety(rx: Prescription, patient: Patient | None = None, kb: Knowledge | None = None) -> list[Finding]:
    kb = kb or load_knowledge()
    patient = patient or Patient()
    findings: list[Finding] = []
    written: dict[str, list[str]] = {}  # base herb -> names as prescribed
    for h in rx.herbs:
        if h.base:
            names = written.setdefault(h.base, [])
            if (h.name or h.raw) not in names:
                names.append(h.name or h.raw)
    present = set(written)

    def shown(base: str) -> str:
        names = written[base]
        return base if names == [base] else f"{'/'.join(names)}({base})"

    for rule in kb.rules:
        for a in (x for x in rule.a if x in present):
            for b in (x for x in rule.b if x in present and x != a):
                findings.append(Finding(
                    level="error", rule=rule.kind, herbs=[a, b], rule_id=rule.id, source=rule.source,
                    message=f"{rule.kind}: {shown(a)} 与 {shown(b)} 不宜同用 ({a} and {b} must not be combined)"))
    if patient.pregnant:
        for base in written:
            entry = kb.pregnancy.get(base)
            if entry is None:
                continue
            level, source = entry
            findings.append(Finding(
                level="error" if level == "禁用" else "warning", rule=f"妊娠{level}", herbs=[base], source=source,
                message=f"孕妇{level}: {shown(base)} "
                        f"({'contraindicated' if level == '禁用' else 'use with caution'} in pregnancy)"))
    totals: dict[str, float] = {}
    for h in rx.herbs:
        if h.base and h.grams is not None:
            totals[h.base] = totals.get(h.base, 0.0) + h.grams
    for base, grams in totals.items():
        rng = kb.dose_ranges.get(base)
        if rng is None or rng.min_g <= grams <= rng.max_g:
            continue
        side = "above" if grams > rng.max_g else "below"
        findings.append(Finding(
            level="warning", rule="剂量", herbs=[base], source=rng.source, rule_id=f"dose-{base}",
            message=f"剂量: {shown(base)} {grams:g} g {'超过' if side == 'above' else '低于'}药典用量 "
                    f"{rng.min_g:g}–{rng.max_g:g} g ({side} the pharmacopoeia daily range)"
                    + (f"; {rng.note}" if rng.note else "")))
    for h in rx.herbs:
        if h.base is None:
            findings.append(Finding(level="notice", rule="未知药名", herbs=[h.raw],
                                    message=f"未知药名 '{h.raw}': not in the lexicon, not safety-checked"))
    findings.sort(key=lambda f: LEVEL_ORDER[f.level])
    return findings
