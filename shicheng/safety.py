"""Safety report for a parsed prescription and a patient.

Levels: `error` (十八反/十九畏 pairs; 禁用 herbs for a pregnant patient), `warning` (慎用 in pregnancy;
daily dose outside the pharmacopoeia range, which a physician may exceed on purpose), `notice`
(herbs the lexicon does not know, so they could not be checked). Processed forms count as their base,
and a form that carries another drug (朱茯神: 茯神 coated with 朱砂, `components.csv`) counts as both.

`check_safety` gives the findings only. `safety_report` also says what could NOT be checked (herbs
with no dose range or no grams, names the lexicon does not know), so that no surface can print "no
safety problems" for a prescription that was only partly checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, PrivateAttr

from shicheng.domain import HerbItem, Patient, Prescription
from shicheng.knowledge import Knowledge, load_knowledge

Level = Literal["error", "warning", "notice"]
LEVEL_ORDER = {"error": 0, "warning": 1, "notice": 2}
_SHOWN_IN_SUMMARY = 8  # names listed in the one-line summary; the full lists are in the report's fields


class Finding(BaseModel):
    level: Level
    rule: str  # 十八反, 十九畏, 妊娠禁用, 妊娠慎用, 剂量, 未知药名
    herbs: list[str]
    message: str
    rule_id: str | None = None
    source: str | None = None


def _components(h: HerbItem, kb: Knowledge) -> tuple[str, ...]:
    """Drugs a written form carries besides its base herb (朱茯神 -> 朱砂)."""
    if not h.base or not kb.components:
        return ()
    hit = kb.components.get(h.name or "")
    if hit is not None:
        return hit
    # A further prefix (炒朱茯神) changes the name but not the coating.
    written = f"{h.name or ''} {h.raw}"
    return next((comps for name, comps in kb.components.items()
                 if name in written and kb.base_of(name) == h.base), ())


def check_safety(rx: Prescription, patient: Patient | None = None, kb: Knowledge | None = None) -> list[Finding]:
    kb = kb or load_knowledge()
    patient = patient or Patient()
    findings: list[Finding] = []
    written: dict[str, list[str]] = {}  # base herb -> names as prescribed
    carried: dict[str, list[str]] = {}  # component herb -> the written forms that carry it (朱砂 <- 朱茯神)
    for h in rx.herbs:
        if h.base:
            names = written.setdefault(h.base, [])
            if (h.name or h.raw) not in names:
                names.append(h.name or h.raw)
            for comp in _components(h, kb):
                carriers = carried.setdefault(comp, [])
                if (h.name or h.raw) not in carriers:
                    carriers.append(h.name or h.raw)
    present = [*written, *(c for c in carried if c not in written)]

    def shown(base: str) -> str:
        names = written.get(base, [])
        label = base if names == [base] else (f"{'/'.join(names)}({base})" if names else "")
        return "、".join([*([label] if label else []), *(f"{c}(含{base})" for c in carried.get(base, []))])

    for rule in kb.rules:
        for a in (x for x in rule.a if x in present):
            for b in (x for x in rule.b if x in present and x != a):
                findings.append(Finding(
                    level="error", rule=rule.kind, herbs=[a, b], rule_id=rule.id, source=rule.source,
                    message=f"{rule.kind}: {shown(a)} 与 {shown(b)} 不宜同用 ({a} and {b} must not be combined)"))
    if patient.pregnant:
        for base in present:
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


class SafetyReport(BaseModel):
    """Findings plus what was not checked; `summary()` is the line every surface shows."""

    findings: list[Finding]
    not_dose_checked: list[str]  # herbs present (as written/base) with no dose range, or with no grams
    unrecognised: list[str]  # names the lexicon does not know (rx herbs with base None + `unparsed` words)
    # Set by safety_report; a report built by hand falls back to what its three lists say.
    _herbs_checked: int | None = PrivateAttr(default=None)
    _pregnant: bool = PrivateAttr(default=False)
    _pregnancy_not_applied: list[str] = PrivateAttr(default_factory=list)  # 妊娠 herbs, patient not pregnant

    def summary(self) -> str:
        """One line, Chinese then English. Says "no problems" only when every herb was fully checked."""
        errors = sum(f.level == "error" for f in self.findings)
        warnings = sum(f.level == "warning" for f in self.findings)
        if self._herbs_checked == 0 and not self.unrecognised:
            return "未识别到药物，未作安全核查 | no herbs found: nothing was safety-checked"
        unchecked = bool(self.not_dose_checked or self.unrecognised or self._herbs_checked == 0)
        if errors or warnings:
            zh = [f"发现 {errors + warnings} 项安全问题（{errors} 项错误，{warnings} 项警告）"]
            en = [f"{errors + warnings} safety finding(s) ({errors} error, {warnings} warning)"]
        elif unchecked:
            zh = ["已核查部分未发现配伍禁忌、妊娠或剂量问题，但核查不完整"]
            en = ["no finding among what could be checked, but the check is incomplete"]
        else:
            what_zh, what_en = ("配伍、妊娠与剂量", "pairs, pregnancy and dose") if self._pregnant else ("配伍与剂量",
                                                                                           "pairs and dose")
            zh = [f"未发现安全问题（全部药物已核查{what_zh}）"]
            en = [f"no safety findings (every herb checked for {what_en})"]
        if self.not_dose_checked:
            zh.append(f"未核剂量 {len(self.not_dose_checked)} 味（无药典剂量或无克数）：{_names(self.not_dose_checked, '、')}")
            en.append(f"not dose-checked ({len(self.not_dose_checked)}; no range or no grams): "
                      f"{_names(self.not_dose_checked, ', ')}")
        if self.unrecognised:
            zh.append(f"未识别 {len(self.unrecognised)} 个：{_names(self.unrecognised, '、')}")
            en.append(f"not recognised ({len(self.unrecognised)}): {_names(self.unrecognised, ', ')}")
        if self._pregnancy_not_applied:
            zh.append(f"含妊娠禁忌/慎用药，患者未标记妊娠，未按妊娠核查：{_names(self._pregnancy_not_applied, '、')}")
            en.append(f"pregnancy rules not applied (patient not marked pregnant): "
                      f"{_names(self._pregnancy_not_applied, ', ')}")
        return "；".join(zh) + " | " + "; ".join(en)


def _names(items: list[str], sep: str) -> str:
    shown = sep.join(items[:_SHOWN_IN_SUMMARY])
    return shown + (f"{sep}… (+{len(items) - _SHOWN_IN_SUMMARY})" if len(items) > _SHOWN_IN_SUMMARY else "")


def safety_report(rx: Prescription, patient: Patient | None = None, kb: Knowledge | None = None,
                  unparsed: Sequence[str] = ()) -> SafetyReport:
    """check_safety, plus which herbs were not dose-checked and which names were not recognised.

    `unparsed` is what the parser could not read (`ParsedPrescription.unparsed`). A word there that the
    lexicon does know (a herb the parser left without a dose) is checked for pairs and pregnancy like any
    herb and listed as not dose-checked; any other word is listed as unrecognised.
    """
    kb = kb or load_knowledge()
    extra: list[HerbItem] = []
    unrecognised: list[str] = []
    for h in rx.herbs:
        if h.base is None and h.raw not in unrecognised:
            unrecognised.append(h.raw)
    for word in unparsed:
        word = word.strip()
        if not word:
            continue
        hit = kb.resolve(kb.to_simplified(word))
        if hit is not None:
            extra.append(HerbItem(raw=word, name=hit.name, base=hit.base, processing=hit.processing))
        elif word not in unrecognised:
            unrecognised.append(word)
    checked = rx if not extra else rx.model_copy(update={"herbs": [*rx.herbs, *extra]})
    by_base: dict[str, list[HerbItem]] = {}
    for h in checked.herbs:
        if h.base:
            by_base.setdefault(h.base, []).append(h)
    not_dose_checked = []
    for base, items in by_base.items():
        if base not in kb.dose_ranges or any(h.grams is None for h in items):
            names = list(dict.fromkeys(h.name or h.raw for h in items))
            not_dose_checked.append(base if names == [base] else f"{'/'.join(names)}({base})")
    patient = patient or Patient()
    report = SafetyReport(findings=check_safety(checked, patient, kb), not_dose_checked=not_dose_checked,
                          unrecognised=unrecognised)
    report._herbs_checked = len(by_base)
    report._pregnant = patient.pregnant
    if not patient.pregnant and patient.sex != "male":
        carried = [c for h in checked.herbs for c in _components(h, kb)]
        report._pregnancy_not_applied = [b for b in dict.fromkeys([*by_base, *carried]) if b in kb.pregnancy]
    return report
