"""The prescription inside a model's answer, read and safety-checked: for consultations and for chat replies.

Whatever the model wrote, a prescription that reaches a user is checked. The 处方 section is read
first; a follow-up's answer may give only its changes (加：… 去：…, or in running text: 咳嗽加重，加杏仁10g；
去黄芩) and then the previous prescription is changed accordingly; an answer with no sections at all
(a chat reply) is read as free text. The parser is guarded: if it fails on some text, that text is
reported as not read, never a crashed consultation.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from shicheng.domain import DISCLAIMER, Patient, Prescription, Task
from shicheng.prescription import (
    ParsedPrescription,
    apply_to_previous,
    parse_prescription,
    refers_to_previous,
)
from shicheng.prompts import read_modification
from shicheng.records import PatientFact, find_patient_facts, pick_facts
from shicheng.safety import SafetyReport, safety_report
from shicheng.template import parse_answer

# 去黄芩、白芍 / 减去半夏 written in running text.
_REMOVE_CLAUSE = re.compile(r"(?:^|(?<=[，,。；;\s]))(?:去掉|去除|减去|删去|去)\s*([^，,。；;\n]+)")
_LEVEL_ZH = {"error": "禁忌 error", "warning": "警示 warning", "notice": "提示 notice"}


class Parsed(BaseModel):
    prescription: Prescription | None = None
    unparsed: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)


def parse_guarded(text: str) -> Parsed:
    """parse_prescription that cannot end a consultation: a failure is reported as text not read."""
    try:
        parsed: ParsedPrescription = parse_prescription(text)
    except Exception as e:
        return Parsed(prescription=None, unparsed=[f"{text.strip()} (not read: the prescription parser failed: "
                                                   f"{type(e).__name__})"])
    return Parsed(prescription=parsed.prescription, unparsed=list(parsed.unparsed), removed=list(parsed.removed))


def _names(rx: Prescription, bases: set[str]) -> list[str]:
    out: list[str] = []
    for h in rx.herbs:
        name = h.name or h.raw
        if h.base in bases and name not in out:
            out.append(name)
    return out


def _changes_in_text(text: str, previous: Prescription | None) -> tuple[Prescription | None, list[str]]:
    """Changes written as running text: the herbs added (with the previous ones kept) and the text not read."""
    unparsed: list[str] = []
    removed: set[str] = set()
    rest = text
    for m in _REMOVE_CLAUSE.finditer(text):
        parsed = parse_guarded(m.group(1))
        bases = {h.base for h in (parsed.prescription.herbs if parsed.prescription else []) if h.base}
        if bases:
            removed |= bases
            rest = rest.replace(m.group(0), "，")
    added = parse_guarded(rest)
    unparsed.extend(added.unparsed)
    new = [h for h in (added.prescription.herbs if added.prescription else []) if h.base]
    if not new and not removed:
        return None, unparsed
    if previous is None:
        return Prescription(herbs=new, raw=text), unparsed
    gone = removed | {h.base for h in new}
    return Prescription(formula_name=previous.formula_name, raw=text,
                        herbs=[*(h for h in previous.herbs if h.base not in gone), *new]), unparsed


def answer_prescription(sections: dict[str, str], task: Task, previous: Prescription | None
                        ) -> tuple[Prescription | None, list[str], dict[str, list[str]] | None]:
    """The answer's prescription (a follow-up's full new one), the text not read, and herbs added/removed."""
    unparsed: list[str] = []
    rx: Prescription | None = None
    stated: dict[str, list[str]] | None = None
    mod_text = sections.get("modifications", "")
    if sections.get("prescription"):
        parsed = parse_guarded(sections["prescription"])
        unparsed, rx = parsed.unparsed, parsed.prescription
        if previous is not None and rx is not None and refers_to_previous(sections["prescription"]):
            rx = apply_to_previous(previous, _as_parsed(parsed))
    elif task is Task.modification and mod_text:
        stated_lines = read_modification(mod_text)
        new_text, add_text, remove_text = stated_lines.new_prescription, stated_lines.added, stated_lines.removed
        added = (parse_guarded(add_text).prescription if add_text else None) or Prescription()
        removed = (parse_guarded(remove_text).prescription if remove_text else None) or Prescription()
        if add_text is not None or remove_text is not None:
            stated = {"added": [h.name or h.raw for h in added.herbs],
                      "removed": [h.name or h.raw for h in removed.herbs]}
        if new_text:
            parsed = parse_guarded(new_text)
            rx, unparsed = parsed.prescription, parsed.unparsed
        elif stated is not None and previous is not None:
            gone = set(removed.base_herbs()) | set(added.base_herbs())
            rx = Prescription(formula_name=previous.formula_name,
                              herbs=[*(h for h in previous.herbs if h.base not in gone), *added.herbs],
                              raw=mod_text)
        elif stated is None:
            # No 加：/去： lines: the changes are in running text (咳嗽加重，加杏仁10g；去黄芩).
            rx, unparsed = _changes_in_text(mod_text, previous)
    if previous is not None and previous.herbs and rx is not None and rx.herbs:
        before, after = set(previous.base_herbs()), set(rx.base_herbs())
        return rx, unparsed, {"added": _names(rx, after - before), "removed": _names(previous, before - after)}
    return rx, unparsed, stated


def _as_parsed(parsed: Parsed) -> ParsedPrescription:
    return ParsedPrescription(prescription=parsed.prescription, unparsed=parsed.unparsed, context=[],
                              removed=parsed.removed)


def check_prescription(rx: Prescription | None, patient: Patient, unparsed: list[str]) -> SafetyReport:
    """The safety report for what was read; an answer with no prescription gets an empty report."""
    return safety_report(rx or Prescription(), patient, unparsed=tuple(unparsed))


class AnswerCheck(BaseModel):
    """What a chat reply held that the safety check read, and what it found."""

    prescription: Prescription | None = None
    prescription_unparsed: list[str] = Field(default_factory=list)
    safety: SafetyReport
    safety_summary: str = ""
    patient: Patient
    patient_facts: list[PatientFact] = Field(default_factory=list)
    disclaimer: str = DISCLAIMER

    @property
    def checked(self) -> bool:
        """True when the reply held a prescription (at least one herb read)."""
        return self.prescription is not None and bool(self.prescription.herbs)


def patient_from_text(texts: list[str]) -> tuple[Patient, list[PatientFact]]:
    """The patient a conversation describes (患者女，30岁，妊娠12周 in a user turn), and the facts used."""
    chosen = pick_facts([f for text in texts for f in find_patient_facts(text)])
    used = [f for f in chosen.values() if not (f.field == "pregnant" and f.value is False)]
    return Patient.model_validate({f.field: f.value for f in used}), used


def check_reply(text: str, patient: Patient, facts: list[PatientFact]) -> AnswerCheck:
    """Read and check the prescription in a free reply (sections if it has them, else the whole text)."""
    answer = parse_answer(text)
    sections = {k: getattr(answer.answer, k) for k in answer.found}
    if sections.get("prescription") or sections.get("modifications"):
        rx, unparsed, _changes = answer_prescription(sections, Task.full_chain, None)
    else:
        parsed = parse_guarded(text)
        rx, unparsed = parsed.prescription, parsed.unparsed
    # A reply without one recognised herb holds no prescription: its words are not "unknown herbs".
    if rx is None or not any(h.base for h in rx.herbs):
        rx, unparsed = None, []
    report = check_prescription(rx, patient, unparsed)
    return AnswerCheck(prescription=rx, prescription_unparsed=unparsed, safety=report,
                       safety_summary=report.summary(), patient=patient, patient_facts=facts)


def safety_notice(check: AnswerCheck) -> str:
    """The short notice appended to a chat reply that holds a prescription."""
    report = check.safety
    lines = ["", "", "——", "【师承安全核查 shicheng safety check】"]
    lines += [f"- {_LEVEL_ZH[f.level]} {f.message}" for f in report.findings if f.level != "notice"]
    lines.append(report.summary())
    if check.patient_facts:
        lines.append("患者 patient: " + "；".join(f.describe() for f in check.patient_facts))
    lines.append(DISCLAIMER)
    return "\n".join(lines)


__all__ = ["AnswerCheck", "Parsed", "answer_prescription", "check_prescription", "check_reply", "parse_guarded",
           "patient_from_text", "safety_notice"]
