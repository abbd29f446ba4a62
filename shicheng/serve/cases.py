"""A consultation request -> the Case and visit the agent answers, and the patient facts the check uses.

The form's fields and free text go through the agent's `read_text_case` (the same reader as
`shicheng consult --text`): traditional characters normalised, patient facts read from the text
unless the request's sex/age/pregnant fields say otherwise, a previous prescription (the request's or
one written in the text, 前方：…) made into a first visit, so the prompt carries it exactly as training's
follow-up examples did (prompts.user_prompt).
"""

from __future__ import annotations

from shicheng.agent.cases import (
    VISIT_TEXT_FIELDS,
    case_texts,
    flag_facts,
    read_text_case,
    resolve_patient,
    with_previous_prescription,
)
from shicheng.domain import Case
from shicheng.records import PatientFact
from shicheng.serve.schemas import ConsultRequest

FORM_FIELDS = tuple(f for f in VISIT_TEXT_FIELDS if f != "other_findings")


def build_case(req: ConsultRequest) -> tuple[Case, int, list[PatientFact]]:
    """The case, the 0-based (or negative) visit index to answer and the facts used; ConsultError on a bad case."""
    sex = req.sex if req.sex not in (None, "unknown") else None
    if req.case is not None:
        case, facts = resolve_patient(req.case, case_texts(req.case), flag_facts(sex, req.age, req.pregnant),
                                      "case")
        visit_index = req.visit_index
        if req.previous_prescription:
            case, visit_index = with_previous_prescription(case, visit_index, req.previous_prescription)
        return case, visit_index, facts
    fields = {f: getattr(req, f) for f in FORM_FIELDS if getattr(req, f)}
    return read_text_case(req.text or "", sex=sex, age=req.age, pregnant=req.pregnant,
                          previous_prescription=req.previous_prescription, case_id="web-form", **fields)
