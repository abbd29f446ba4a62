"""The case a consultation answers, from what a clinician typed or a case file, with the patient facts used.

Text is normalised first (traditional characters to simplified, full-width digits to ASCII) because the
record reader and the model both know simplified text only. Patient facts come from three places, in
this order of precedence: flags (`--sex`, `--age`, `--pregnant`, or the request's fields), record
headers (性别：女, 年龄：52岁, read by the case record reader), then the running text (患者女，30岁，妊娠12周).
Each fact used is returned with its source and evidence, so the answer can say why the safety check
believed what it did. A previous prescription written inside the text (二诊：… 前方：柴胡10g …) makes the
case a follow-up, the same as the `--previous-prescription` option.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from shicheng.domain import Answer, Case, Patient, Visit, read_jsonl, validation_message
from shicheng.records import (
    PatientFact,
    find_patient_facts,
    find_previous_prescription,
    pick_facts,
    read_records,
)
from shicheng.text import normalise_text, read_text

VISIT_TEXT_FIELDS = ("chief_complaint", "present_illness", "history", "tongue", "pulse", "other_findings")


class ConsultError(ValueError):
    """A consultation that cannot be asked: unknown master, unreadable case, no such visit."""


def _record_cases(text: str, source: Path) -> list[Case]:
    """Cases read by the case record reader (主诉：… 舌象：… 初诊/二诊 …); [] when it finds none."""
    return read_records(text, str(source), source.stem).cases


def flag_facts(sex: str | None, age: float | None, pregnant: bool | None) -> list[PatientFact]:
    """What the user said outright (command-line options, request fields); 'unknown' says nothing."""
    facts = []
    if sex and sex not in ("unknown", "未知"):
        facts.append(PatientFact(field="sex", value=Patient(sex=sex).sex if sex in ("男", "女") else sex,
                                 source="flag"))
    if age is not None:
        facts.append(PatientFact(field="age", value=float(age), source="flag"))
    if pregnant is not None:
        facts.append(PatientFact(field="pregnant", value=bool(pregnant), source="flag"))
    return facts


def _known_facts(patient: Patient, source: str, found: list[PatientFact]) -> list[PatientFact]:
    """What a reader already put on the Case (a header, or a structured case file), with the text's evidence
    for it where the text says the same."""
    facts = []
    for name, value in (("sex", patient.sex if patient.sex != "unknown" else None), ("age", patient.age),
                        ("pregnant", True if patient.pregnant else None)):
        if value is None:
            continue
        same = next((f for f in found if f.field == name and f.value == value), None)
        facts.append(PatientFact(field=name, value=value, evidence=same.evidence if same else None,
                                 position=same.position if same else None, source=source))
    return facts


def resolve_patient(case: Case, texts: list[str], flags: list[PatientFact], known_source: str
                    ) -> tuple[Case, list[PatientFact]]:
    """The case with the patient the safety check will use, and the fact used for each field."""
    found = [f for text in texts for f in find_patient_facts(text)]
    known = _known_facts(case.patient, known_source, found)
    used: dict[str, PatientFact] = {}
    for layer in (flags, known, [f for f in found if f.source == "header"], found):
        for name, fact in pick_facts(layer).items():
            if name in used:
                continue
            if name == "pregnant" and fact.value is False and layer is not flags:
                continue  # a denial read from the text is shown nowhere as a fact the check relied on
            used[name] = fact
    values = {**case.patient.model_dump(), **{name: f.value for name, f in used.items()}}
    try:
        patient = Patient.model_validate(values)
    except ValidationError as e:
        raise ConsultError(f"patient: {validation_message(e, where='{}')}") from e
    order = {"sex": 0, "age": 1, "pregnant": 2}
    return case.model_copy(update={"patient": patient}), sorted(used.values(), key=lambda f: order[f.field])


def with_previous_prescription(case: Case, visit_index: int, prescription: str) -> tuple[Case, int]:
    """Put a previous prescription on the visit before the answered one (a new first visit if none)."""
    from shicheng.agent.checks import parse_guarded

    n = len(case.visits)
    idx = visit_index + n if visit_index < 0 else visit_index
    if not 0 <= idx < n:
        raise ConsultError(f"case {case.id}: no visit {visit_index} (0-based visit_index; it has {n} visit(s))")
    prescription = normalise_text(prescription).strip()
    # A text the parser cannot read still goes into the prompt as written; only the herb list is missing.
    parsed = parse_guarded(prescription).prescription
    previous = Visit(index=1, label="上次就诊", answer=Answer(prescription=prescription), prescription=parsed)
    if idx == 0:
        current = case.visits[0].model_copy(update={"index": max(2, case.visits[0].index)})
        visits = [previous, current, *(v.model_copy(update={"index": v.index + 1}) for v in case.visits[1:])]
        return case.model_copy(update={"visits": visits}), 1
    before = case.visits[idx - 1]
    replaced = before.model_copy(update={"answer": (before.answer or Answer()).model_copy(
        update={"prescription": prescription}), "prescription": previous.prescription})
    visits = [*case.visits[:idx - 1], replaced, *case.visits[idx:]]
    return case.model_copy(update={"visits": visits}), idx


def _previous_in_text(case: Case) -> tuple[Case, str] | None:
    """A previous prescription written inside the last visit's text (前方：柴胡10g …): cut out of that
    field, returned to become the visit before. Only when it reads as at least one known herb."""
    from shicheng.prescription import parse_prescription

    last = case.visits[-1]
    for name in VISIT_TEXT_FIELDS:
        value = getattr(last, name)
        span = find_previous_prescription(value or "")
        if span is None:
            continue
        try:
            herbs = [h for h in parse_prescription(span.text).herbs if h.base]
        except Exception:
            herbs = []
        if not herbs:
            continue
        rest = (value[:span.start] + value[span.end:]).strip(" ，,；;") or None
        visits = [*case.visits[:-1], last.model_copy(update={name: rest})]
        return case.model_copy(update={"visits": visits}), span.text
    return None


def read_text_case(text: str, *, sex: str | None = None, age: float | None = None, pregnant: bool | None = None,
                   previous_prescription: str | None = None, case_id: str = "free-text",
                   **fields: str | None) -> tuple[Case, int, list[PatientFact]]:
    """The case, the 0-based visit to answer, and the patient facts used, from what a clinician typed.

    A record with headings (主诉：… 舌象：… 脉象：…, even 初诊/二诊) is read by the case record reader; any
    other text becomes the present illness. `fields` (chief_complaint, tongue, pulse …) fill or override
    the last visit. A previous prescription, given or written in the text, makes the case a follow-up."""
    unknown = sorted(set(fields) - set(VISIT_TEXT_FIELDS))
    if unknown:
        raise ConsultError(f"unknown case field(s) {unknown}; known: {', '.join(VISIT_TEXT_FIELDS)}")
    raw_text = text
    text = normalise_text(text or "").strip()
    given = {k: normalise_text(v).strip() for k, v in fields.items() if v and v.strip()}
    if not text and not given:
        raise ConsultError("empty case: give the case text or at least one of " + ", ".join(VISIT_TEXT_FIELDS))
    cases = _record_cases(text, Path(case_id)) if text else []
    case = cases[0] if cases else Case(id=case_id, visits=[Visit(present_illness=text or None)])
    if given:
        case = case.model_copy(update={"visits": [*case.visits[:-1], case.visits[-1].model_copy(update=given)]})
    # Facts are read from the text as typed, so that their evidence quotes it (traditional characters too).
    typed = [raw_text or "", *(v for v in fields.values() if v and v.strip())]
    case, facts = resolve_patient(case, typed, flag_facts(sex, age, pregnant), "header")
    visit_index = -1
    if previous_prescription and previous_prescription.strip():
        case, visit_index = with_previous_prescription(case, visit_index, previous_prescription)
    elif len(case.visits) == 1 and (inline := _previous_in_text(case)) is not None:
        case, written = inline
        case, visit_index = with_previous_prescription(case, visit_index, written)
    return case, visit_index, facts


def case_from_text(text: str, *, sex: str | None = None, age: float | None = None, pregnant: bool | None = None,
                   case_id: str = "free-text", **fields: str | None) -> Case:
    """The Case of read_text_case (without the facts); see there."""
    return read_text_case(text, sex=sex, age=age, pregnant=pregnant, case_id=case_id, **fields)[0]


def read_case_file(path: str | Path, case_id: str | None = None, *, sex: str | None = None,
                   age: float | None = None, pregnant: bool | None = None) -> tuple[Case, list[PatientFact]]:
    """One case from a file: JSON (a Case or a list of them), JSONL of Cases, or a text case record.

    A file with several cases needs `case_id`. Errors name the file (and line or item and field)."""
    path = Path(path)
    if not path.is_file():
        raise ConsultError(f"{path}: case file not found")
    suffix = path.suffix.lower()
    structured = suffix in (".json", ".jsonl")
    try:
        if suffix == ".jsonl":
            cases = read_jsonl(path, Case)
        elif suffix == ".json":
            cases = _json_cases(path)
        else:
            text = normalise_text(read_text(path).text.lstrip("\ufeff"))
            cases = _record_cases(text, path) or ([Case(id=path.stem, visits=[Visit(present_illness=text.strip())],
                                                        source=str(path))] if text.strip() else [])
    except ConsultError:
        raise
    except ValueError as e:  # JsonlError, NotTextError: their messages already name the file
        raise ConsultError(str(e) if str(path) in str(e) else f"{path}: {e}") from e
    if not cases:
        raise ConsultError(f"{path}: no case found in the file")
    if case_id is not None:
        chosen = [c for c in cases if c.id == case_id]
        if not chosen:
            raise ConsultError(f"{path}: no case with id {case_id!r} (ids: {_ids(cases)})")
        case = chosen[0]
    elif len(cases) > 1:
        raise ConsultError(f"{path}: holds {len(cases)} cases ({_ids(cases)}); choose one with --case-id")
    else:
        case = cases[0]
    return resolve_patient(case, case_texts(case), flag_facts(sex, age, pregnant),
                           "case" if structured else "header")


def load_case(path: str | Path, case_id: str | None = None, *, sex: str | None = None, age: float | None = None,
              pregnant: bool | None = None) -> Case:
    """The Case of read_case_file (without the facts); see there."""
    return read_case_file(path, case_id, sex=sex, age=age, pregnant=pregnant)[0]


def case_texts(case: Case) -> list[str]:
    """The presentation texts of every visit, where patient facts may be written."""
    return [normalise_text(v) for visit in case.visits for name in VISIT_TEXT_FIELDS if (v := getattr(visit, name))]


def _ids(cases: list[Case]) -> str:
    ids = [c.id for c in cases[:8]]
    return ", ".join(ids) + (" …" if len(cases) > 8 else "")


def _json_cases(path: Path) -> list[Case]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise ConsultError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from e
    except UnicodeDecodeError as e:
        raise ConsultError(f"{path}: not UTF-8 text (byte {e.start})") from e
    items = data if isinstance(data, list) else [data]
    cases = []
    for i, item in enumerate(items):
        try:
            cases.append(Case.model_validate(item))
        except ValidationError as e:
            where = f"item [{i}]: " if isinstance(data, list) else ""
            raise ConsultError(f"{path}: {where}{validation_message(e)}") from e
    return cases


__all__ = ["VISIT_TEXT_FIELDS", "ConsultError", "case_from_text", "case_texts", "flag_facts", "load_case",
           "read_case_file",
           "read_text_case", "resolve_patient", "with_previous_prescription"]
