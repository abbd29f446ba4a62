"""A consultation: ask the model as it was trained, read its answer, check the prescription's safety.

The prompt comes from shicheng.prompts (the master in the system turn, the task in the user turn), so
the model is asked exactly as in training. The answer is read with the tolerant template parser, the
处方 section with the prescription parser (shicheng.agent.checks), and the result is checked against
the patient's facts: every safety finding is returned, never filtered, with the herbs that could not be
dose-checked and the names not recognised, and the patient facts the check used with their source.
Follow-up visits carry the previous prescription in the prompt; the herbs added and removed are
reported by comparing it with the new one. Reading cases from text and files is shicheng.agent.cases.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, Field

from shicheng.agent.backends import Backend, GenerationResult, check_prompt_fits
from shicheng.agent.cases import (
    VISIT_TEXT_FIELDS,
    ConsultError,
    case_from_text,
    case_texts,
    load_case,
    read_case_file,
    read_text_case,
    resolve_patient,
    with_previous_prescription,
)
from shicheng.agent.checks import answer_prescription, check_prescription, parse_guarded
from shicheng.domain import DISCLAIMER, SECTION_BY_KEY, Case, Master, Patient, Prescription, Task
from shicheng.metrics.reading import required_sections
from shicheng.prompts import previous_prescription, prompt_messages
from shicheng.records import PatientFact
from shicheng.safety import Finding, SafetyReport
from shicheng.template import parse_answer


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
    safety: SafetyReport | None = Field(default=None, description="findings, herbs not dose-checked, names "
                                        "not recognised")
    safety_summary: str = Field(default="", description="one line: findings, herbs not dose-checked, names not "
                                "recognised — never 'no findings' alone")
    patient: Patient = Field(default_factory=Patient, description="the patient the safety check used")
    patient_facts: list[PatientFact] = Field(default_factory=list, description="each fact used and its source")
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
        raise ConsultError(f"case {case.id}: no visit {visit_index} (0-based visit_index; it has {n} visit(s))")
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


def case_facts(case: Case) -> list[PatientFact]:
    """The facts of a Case given without them (a structured case): its patient, and what its texts say."""
    return resolve_patient(case, case_texts(case), [], "case")[1]


def guides(backend: Backend, guide: bool | None) -> bool:
    """Whether to guide the sections (shicheng.guide): as `guide` says, or, left at None, as the model was trained
    (`backend.guides_sections`)."""
    return backend.guides_sections if guide is None else guide


def guided(backend: Backend, task: Task, guide: bool | None, gen: dict[str, Any]) -> dict[str, Any]:
    """`gen` with the task's sections to guide when `guides(backend, guide)`."""
    return {**gen, "sections": required_sections(task)} if guides(backend, guide) else gen


def consult(backend: Backend, case: Case, master: Master | None, task: Task = Task.full_chain,
            visit_index: int = -1, facts: list[PatientFact] | None = None, guide: bool | None = None,
            **gen: Any) -> Consultation:
    """Ask `backend` for `task` on one visit of `case` in `master`'s voice; parse and safety-check the answer.

    `facts` are the patient facts the case was built with (read_text_case, read_case_file); without them
    the case's patient is used as it is, facts read from its texts filling what it leaves unknown."""
    idx = visit_position(case, visit_index, task)
    case, facts = _with_facts(case, facts)
    messages = consult_messages(case, master, task, idx)
    check_prompt_fits(backend, messages, gen.get("max_new_tokens"))
    result = backend.generate(messages, **guided(backend, task, guide, gen))
    return read_consultation(result, case, master, task, idx, facts)


def consult_stream(backend: Backend, case: Case, master: Master | None, task: Task = Task.full_chain,
                   visit_index: int = -1, facts: list[PatientFact] | None = None, guide: bool | None = None,
                   **gen: Any) -> Iterator[dict]:
    """Like consult, streaming: {"type": "delta", "text"} events, then {"type": "result", "consultation"}.

    The case, master, visit and prompt length are checked before the first event, so a bad request fails
    at the call."""
    idx = visit_position(case, visit_index, task)
    case, facts = _with_facts(case, facts)
    messages = consult_messages(case, master, task, idx)
    check_prompt_fits(backend, messages, gen.get("max_new_tokens"))

    def events() -> Iterator[dict]:
        stream = backend.stream(messages, **guided(backend, task, guide, gen))
        try:
            for piece in stream:
                yield {"type": "delta", "text": piece}
        finally:
            stream.close()
        if stream.result is None:
            raise RuntimeError(f"backend {backend.name} ended a stream without its result")
        result = stream.result
        consultation = read_consultation(result, case, master, task, idx, facts)
        yield {"type": "result", "consultation": consultation.model_dump(mode="json")}

    return events()


def _with_facts(case: Case, facts: list[PatientFact] | None) -> tuple[Case, list[PatientFact]]:
    if facts is not None:
        return case, facts
    return resolve_patient(case, case_texts(case), [], "case")


def read_consultation(result: GenerationResult, case: Case, master: Master | None, task: Task,
                      visit_index: int, facts: list[PatientFact] | None = None) -> Consultation:
    """Parse a generated answer into a Consultation: sections, prescription, changes, safety report."""
    started = time.perf_counter()
    case, facts = _with_facts(case, facts)
    parsed = parse_answer(result.text)
    sections = {k: getattr(parsed.answer, k) for k in parsed.found}
    missing = [k for k in task.sections if k not in sections and not SECTION_BY_KEY[k].optional]
    previous = _previous_prescription(case, visit_index)
    rx, unparsed, changes = answer_prescription(sections, task, previous)
    report = check_prescription(rx, case.patient, unparsed)
    return Consultation(
        master_id=master.id if master else None, task=task, visit_index=visit_index, sections=sections,
        found=parsed.found, missing=missing, prescription=rx, prescription_unparsed=unparsed,
        findings=report.findings, safety=report, safety_summary=report.summary(), patient=case.patient,
        patient_facts=facts, changes=changes, raw_text=result.text, prompt_tokens=result.prompt_tokens,
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
    return parse_guarded(text).prescription if text else None


__all__ = ["VISIT_TEXT_FIELDS", "ConsultError", "Consultation", "case_facts", "case_from_text", "consult",
           "consult_messages", "consult_stream", "guided", "guides", "load_case", "read_case_file", "read_consultation",
           "read_text_case", "resolve_master", "visit_position", "with_previous_prescription"]
