"""Named fields -> the domain's Visit and Patient: what the text reader and the table importer both build.

A visit's fields are keyed by target (shicheng.records.headings): the presentation goes on the Visit,
the answer-level fields into its Answer, and the prescription is parsed (a follow-up's 上方去X加Y against
the visit before). The patient comes from the case's header fields, where only sex, age, pregnancy and
the record number are kept: the name and the personal fields are read past and stored nowhere.
"""

from __future__ import annotations

import re

from shicheng.domain import Answer, Patient, Prescription, Visit
from shicheng.records.headings import ANSWER_TARGETS
from shicheng.records.prescriptions import PrescriptionReader
from shicheng.records.values import parse_age, parse_pregnant, parse_sex

_PATIENT_ID = re.compile(r"(?:病历号|患者编号|门诊号|住院号|病案号)\s*[:：]?\s*([A-Za-z0-9][A-Za-z0-9_\-]*)")
_SEX = re.compile(r"(?:^|[，,、\s:：]|患者|病人)(男|女)(?:性)?(?=$|[，,、。；;\s\d])")
_AGE = re.compile(r"(\d+(?:\.\d+)?\s*(?:岁半?|个月|月龄))")
_PREGNANT = re.compile(r"(?:孕|妊娠)\s*\d+\s*(?:周|月)|早孕|妊娠期")


def build_visits(numbered: list[tuple[int, str | None, dict[str, str]]], rx: PrescriptionReader,
                 where: str = "") -> list[Visit]:
    """(index, label, fields) of a case's visits in order -> Visits, each follow-up read against the last."""
    visits: list[Visit] = []
    for index, label, fields in numbered:
        visits.append(build_visit(fields, index, label, rx, visits[-1].prescription if visits else None,
                                  f"{where} visit {index}".strip()))
    return visits


def build_visit(fields: dict[str, str], index: int, label: str | None, rx: PrescriptionReader,
                previous: Prescription | None = None, where: str = "") -> Visit:
    """Named fields of one visit (visit- and answer-level targets) -> Visit with Answer and parsed prescription."""
    def get(key: str) -> str | None:
        value = (fields.get(key) or "").strip()
        return value or None

    answer_values = {k: get(k) for k in ANSWER_TARGETS}
    answer = Answer(**answer_values) if any(answer_values.values()) else None
    return Visit(
        index=index, label=label, date=get("date"), chief_complaint=get("chief_complaint"),
        present_illness=get("present_illness"), history=get("history"), tongue=get("tongue"), pulse=get("pulse"),
        other_findings=get("other_findings"), answer=answer, prescription=rx.parse(get("prescription"), previous, where),
        commentary=get("commentary"),
    )


def build_patient(patient_id: str | None, case_id: str, sex: str = "unknown", age: float | None = None,
                  pregnant: bool = False) -> Patient:
    """Patient.id from the record number when there is one (clean.py hashes it), else from the case id."""
    return Patient(id=patient_id or f"patient-{case_id}", sex=sex, age=age, pregnant=pregnant)


def header_patient(header: dict[str, str], case_id: str, source: str, warnings: list[str]) -> Patient:
    """The patient of a case's header fields (性别, 年龄, 妊娠, 病历号, or 患者：王某，女，45岁); the name is
    never kept. A value that does not parse is left unknown with a warning naming the field and `source`."""
    patient_text = header.get("patient", "")
    facts: dict = {"sex": "unknown", "age": None, "pregnant": False}
    sex_text = header.get("sex") or (m.group(1) if (m := _SEX.search(patient_text)) else None)
    age_text = header.get("age") or (m.group(1) if (m := _AGE.search(patient_text)) else None)
    for key, text, parse in (("sex", sex_text, parse_sex), ("age", age_text, parse_age),
                             ("pregnant", header.get("pregnant"), parse_pregnant)):
        if text:
            try:
                facts[key] = parse(text.strip("。，,；; "))
            except ValueError as e:
                warnings.append(f"{source}: {key}: {e}; left unknown")
    if _PREGNANT.search(patient_text):
        facts["pregnant"] = True
    pid = header.get("patient_id") or (m.group(1) if (m := _PATIENT_ID.search(patient_text)) else None)
    return build_patient(pid.strip("。，,；; ") if pid else None, case_id, **facts)


__all__ = ["build_patient", "build_visit", "build_visits", "header_patient"]
