"""A consultation: ask the model as it was trained, read its answer, check the prescription's safety.

The prompt comes from shicheng.prompts (the master in the system turn, the task in the user turn), so
the model is asked exactly as in training. The answer is read with the tolerant template parser, the
处方 section with the prescription parser, and the result is checked against the patient's facts:
every safety finding is returned, never filtered. Follow-up visits carry the previous prescription
in the prompt; the herbs added and removed are reported by comparing it with the new one.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from shicheng.agent.backends import Backend, GenerationResult
from shicheng.domain import (
    DISCLAIMER,
    SECTION_BY_KEY,
    Case,
    Master,
    Patient,
    Prescription,
    Task,
    Visit,
    read_jsonl,
)
from shicheng.prescription import apply_to_previous, parse_prescription, refers_to_previous
from shicheng.prompts import previous_prescription, prompt_messages
from shicheng.safety import Finding, check_safety
from shicheng.template import parse_answer

VISIT_TEXT_FIELDS = ("chief_complaint", "present_illness", "history", "tongue", "pulse", "other_findings")
# The modification target (prompts.modification_text) writes these lines; a list marker may precede them.
_ADD_LINE = re.compile(r"^[ \t]*(?:[-*•][ \t]*)?加[ \t]*[:：][ \t]*(.*)$", re.MULTILINE)
_REMOVE_LINE = re.compile(r"^[ \t]*(?:[-*•][ \t]*)?去[ \t]*[:：][ \t]*(.*)$", re.MULTILINE)
_NEW_RX_LINE = re.compile(r"^[ \t]*(?:[-*•][ \t]*)?调整后处方[ \t]*[:：][ \t]*(.*)$", re.MULTILINE)
_NONE = {"", "无", "无。", "不加", "不去", "none"}


class ConsultError(ValueError):
    """A consultation that cannot be asked: unknown master, unreadable case, no such visit."""


class Consultation(BaseModel):
    master_id: str | None
    task: Task
    visit_index: int = Field(description="0-based visit answered")
    sections: dict[str, str] = Field(description="section key -> text, as the model wrote it")
    found: list[str]
    missing: list[str] = Field(description="sections the task asked for that the answer lacks")
    prescription: Prescription | None = None
    prescription_unparsed: list[str] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    changes: dict[str, list[str]] | None = Field(default=None, description="follow-ups: herbs added and removed")
    raw_text: str
    prompt_tokens: int
    completion_tokens: int
    timings: dict[str, float | None]
    disclaimer: str = DISCLAIMER


def resolve_master(masters: dict[str, Master], master_id: str | None) -> Master | None:
    """The master for an id; None (the generic prompt) for no id; a clear error for an unknown one."""
    if not master_id:
        return None
    if master_id in masters:
        return masters[master_id]
    known = ", ".join(f"{m.id} ({m.name})" for m in masters.values()) or "none: the model has no masters.json"
    raise ConsultError(f"unknown master {master_id!r}; known masters: {known}")


def visit_position(case: Case, visit_index: int, task: Task) -> int:
    """A 0-based visit position (negative counts from the end), checked against the case and task."""
    n = len(case.visits)
    idx = visit_index + n if visit_index < 0 else visit_index
    if not 0 <= idx < n:
        raise ConsultError(f"case {case.id}: no visit {visit_index} (it has {n} visit(s))")
    if task is Task.modification and idx == 0:
        raise ConsultError(f"case {case.id}: the modification task needs a follow-up visit; visit {idx + 1} is "
                           "the first (give a case with a previous visit and its prescription)")
    if not case.visits[idx].has_presentation():
        raise ConsultError(f"case {case.id}: visit {idx + 1} is empty (no 主诉, 现病史, 舌, 脉 or other findings)")
    return idx


def consult_messages(case: Case, master: Master | None, task: Task = Task.full_chain,
                     visit_index: int = -1) -> list[dict]:
    """[system, user] exactly as training built them (prompts.messages without the assistant turn)."""
    idx = visit_position(case, visit_index, task)
    return prompt_messages(case, idx, task, master)


def consult(backend: Backend, case: Case, master: Master | None, task: Task = Task.full_chain,
            visit_index: int = -1, **gen: Any) -> Consultation:
    """Ask `backend` for `task` on one visit of `case` in `master`'s voice; parse and safety-check the answer."""
    idx = visit_position(case, visit_index, task)
    result = backend.generate(consult_messages(case, master, task, idx), **gen)
    return read_consultation(result, case, master, task, idx)


def consult_stream(backend: Backend, case: Case, master: Master | None, task: Task = Task.full_chain,
                   visit_index: int = -1, **gen: Any) -> Iterator[dict]:
    """Like consult, streaming: {"type": "delta", "text"} events, then {"type": "result", "consultation"}.

    The case, master and visit are checked before the first event, so a bad request fails at the call."""
    idx = visit_position(case, visit_index, task)
    messages = consult_messages(case, master, task, idx)

    def events() -> Iterator[dict]:
        started = time.perf_counter()
        first: float | None = None
        parts: list[str] = []
        stream = backend.stream(messages, **gen)
        try:
            for piece in stream:
                first = first if first is not None else time.perf_counter() - started
                parts.append(piece)
                yield {"type": "delta", "text": piece}
        finally:
            if hasattr(stream, "close"):
                stream.close()
        result = getattr(stream, "result", None) or GenerationResult(
            text="".join(parts), prompt_tokens=0, completion_tokens=0, seconds=time.perf_counter() - started,
            first_token_s=first)
        consultation = read_consultation(result, case, master, task, idx)
        yield {"type": "result", "consultation": consultation.model_dump(mode="json")}

    return events()


def read_consultation(result: GenerationResult, case: Case, master: Master | None, task: Task,
                      visit_index: int) -> Consultation:
    """Parse a generated answer into a Consultation: sections, prescription, changes, safety findings."""
    started = time.perf_counter()
    parsed = parse_answer(result.text)
    sections = {k: getattr(parsed.answer, k) for k in parsed.found}
    missing = [k for k in task.sections if k not in sections and not SECTION_BY_KEY[k].optional]
    previous = _previous_prescription(case, visit_index)
    rx, unparsed, changes = _prescription(sections, task, previous)
    findings = check_safety(rx, case.patient) if rx is not None and rx.herbs else []
    return Consultation(
        master_id=master.id if master else None, task=task, visit_index=visit_index, sections=sections,
        found=parsed.found, missing=missing, prescription=rx, prescription_unparsed=unparsed, findings=findings,
        changes=changes, raw_text=result.text, prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        timings={"seconds": round(result.seconds, 4),
                 "first_token_s": round(result.first_token_s, 4) if result.first_token_s is not None else None,
                 "parse_s": round(time.perf_counter() - started, 4)},
    )


def _previous_prescription(case: Case, visit_index: int) -> Prescription | None:
    if visit_index == 0:
        return None
    prev = case.visits[visit_index - 1]
    if prev.prescription and prev.prescription.herbs:
        return prev.prescription
    text = previous_prescription(prev)
    return parse_prescription(text).prescription if text else None


def _line(pattern: re.Pattern, text: str) -> str | None:
    m = pattern.search(text)
    if m is None:
        return None
    value = m.group(1).strip()
    return "" if value in _NONE else value


def _names(rx: Prescription, bases: set[str]) -> list[str]:
    out: list[str] = []
    for h in rx.herbs:
        name = h.name or h.raw
        if h.base in bases and name not in out:
            out.append(name)
    return out


def _prescription(sections: dict[str, str], task: Task, previous: Prescription | None
                  ) -> tuple[Prescription | None, list[str], dict[str, list[str]] | None]:
    """The answer's prescription (a follow-up's full new one), the text not read, and herbs added/removed."""
    unparsed: list[str] = []
    rx: Prescription | None = None
    stated: dict[str, list[str]] | None = None
    mod_text = sections.get("modifications", "")
    if sections.get("prescription"):
        parsed = parse_prescription(sections["prescription"])
        unparsed = parsed.unparsed
        rx = parsed.prescription
        if previous is not None and refers_to_previous(sections["prescription"]):
            rx = apply_to_previous(previous, parsed)
    elif task is Task.modification and mod_text:
        new_text, add_text, remove_text = (_line(p, mod_text) for p in (_NEW_RX_LINE, _ADD_LINE, _REMOVE_LINE))
        added = parse_prescription(add_text).prescription if add_text else Prescription()
        removed = parse_prescription(remove_text).prescription if remove_text else Prescription()
        if add_text is not None or remove_text is not None:
            stated = {"added": [h.name or h.raw for h in added.herbs],
                      "removed": [h.name or h.raw for h in removed.herbs]}
        if new_text:
            parsed = parse_prescription(new_text)
            rx, unparsed = parsed.prescription, parsed.unparsed
        elif stated is not None and previous is not None:
            gone = set(removed.base_herbs()) | set(added.base_herbs())
            rx = Prescription(formula_name=previous.formula_name,
                              herbs=[*(h for h in previous.herbs if h.base not in gone), *added.herbs],
                              raw=mod_text)
    if previous is not None and previous.herbs and rx is not None and rx.herbs:
        before, after = set(previous.base_herbs()), set(rx.base_herbs())
        return rx, unparsed, {"added": _names(rx, after - before), "removed": _names(previous, before - after)}
    return rx, unparsed, stated


# ---- cases from text and files ------------------------------------------------------------------------------

def _record_cases(text: str, source: Path) -> list[Case]:
    """Cases read by the plain-text record importer (主诉：… 舌象：… 初诊/二诊 …); [] when it finds none."""
    from shicheng.curate.importers.text_records import read_case_records
    from shicheng.curate.importers.values import MasterResolver, PrescriptionReader
    from shicheng.curate.ledger import Ledger

    return read_case_records(text, source, Ledger(), MasterResolver(), PrescriptionReader()).cases


def case_from_text(text: str, *, sex: str | None = None, age: float | None = None, pregnant: bool = False,
                   case_id: str = "free-text", **fields: str | None) -> Case:
    """A Case from what a clinician typed: a record with headings (主诉：… 舌象：… 脉象：…, even 初诊/二诊)
    is read by the record importer; any other text becomes the present illness. `fields` (chief_complaint,
    tongue, pulse …) fill or override the last visit; sex, age and pregnancy override what the text says."""
    unknown = sorted(set(fields) - set(VISIT_TEXT_FIELDS))
    if unknown:
        raise ConsultError(f"unknown case field(s) {unknown}; known: {', '.join(VISIT_TEXT_FIELDS)}")
    text = (text or "").strip()
    given = {k: v.strip() for k, v in fields.items() if v and v.strip()}
    if not text and not given:
        raise ConsultError("empty case: give the case text or at least one of " + ", ".join(VISIT_TEXT_FIELDS))
    cases = _record_cases(text, Path(case_id)) if text else []
    case = cases[0] if cases else Case(id=case_id, visits=[Visit(present_illness=text or None)])
    return _with_overrides(case, sex=sex, age=age, pregnant=pregnant, fields=given)


def _with_overrides(case: Case, sex: str | None, age: float | None, pregnant: bool, fields: dict) -> Case:
    patient = case.patient.model_dump()
    if sex:
        patient["sex"] = sex
    if age is not None:
        patient["age"] = age
    patient["pregnant"] = patient["pregnant"] or pregnant
    try:
        new_patient = Patient.model_validate(patient)
    except ValidationError as e:
        raise ConsultError("patient: " + "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}"
                                                   for x in e.errors())) from e
    visits = list(case.visits)
    if fields:
        visits[-1] = visits[-1].model_copy(update=fields)
    return case.model_copy(update={"patient": new_patient, "visits": visits})


def load_case(path: str | Path, case_id: str | None = None, *, sex: str | None = None, age: float | None = None,
              pregnant: bool = False) -> Case:
    """One case from a file: JSON (a Case or a list of them), JSONL of Cases, or a text case record.

    A file with several cases needs `case_id`. Errors name the file (and line or item and field)."""
    path = Path(path)
    if not path.is_file():
        raise ConsultError(f"{path}: case file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            cases = read_jsonl(path, Case)
        elif suffix == ".json":
            cases = _json_cases(path)
        else:
            from shicheng.curate.importers.encoding import read_text

            text = read_text(path).text.lstrip("\ufeff")
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
    return _with_overrides(case, sex=sex, age=age, pregnant=pregnant, fields={})


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
            fields = "; ".join(f"field '{'.'.join(map(str, x['loc'])) or '(record)'}': {x['msg']}"
                               for x in e.errors())
            raise ConsultError(f"{path}: {where}{fields}") from e
    return cases


__all__ = ["VISIT_TEXT_FIELDS", "ConsultError", "Consultation", "case_from_text", "consult", "consult_messages",
           "consult_stream", "load_case", "read_consultation", "resolve_master", "visit_position"]
