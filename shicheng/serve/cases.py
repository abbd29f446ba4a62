"""A consultation request -> the Case and visit the agent answers.

The form's fields and free text go through the agent's `case_from_text` (the same reader as
`shicheng consult --text`); a follow-up's previous prescription becomes a first visit, so the prompt
carries it exactly as training's follow-up examples did (prompts.user_prompt).
"""

from __future__ import annotations

from shicheng.agent import case_from_text
from shicheng.agent.consult import VISIT_TEXT_FIELDS
from shicheng.domain import Answer, Case, Patient, Visit
from shicheng.serve.schemas import ConsultRequest

FORM_FIELDS = tuple(f for f in VISIT_TEXT_FIELDS if f != "other_findings")


def build_case(req: ConsultRequest) -> tuple[Case, int]:
    """The case and the 0-based (or negative) visit index to answer; raises ConsultError on a bad case."""
    if req.case is not None:
        case, visit_index = req.case, req.visit_index
        overrides = {k: v for k, v in (("sex", req.sex), ("age", req.age), ("pregnant", req.pregnant))
                     if v is not None}
        if overrides:
            patient = Patient.model_validate({**case.patient.model_dump(), **overrides})
            case = case.model_copy(update={"patient": patient})
    else:
        fields = {f: getattr(req, f) for f in FORM_FIELDS if getattr(req, f)}
        case = case_from_text(req.text or "", sex=req.sex, age=req.age, pregnant=bool(req.pregnant),
                              case_id="web-form", **fields)
        visit_index = -1
    if req.previous_prescription:
        case, visit_index = _with_previous(case, visit_index, req.previous_prescription)
    return case, visit_index


def _with_previous(case: Case, visit_index: int, prescription: str) -> tuple[Case, int]:
    """Put the previous prescription on the visit before the answered one (a new first visit if none)."""
    from shicheng.agent import ConsultError
    from shicheng.prescription import parse_prescription

    n = len(case.visits)
    idx = visit_index + n if visit_index < 0 else visit_index
    if not 0 <= idx < n:
        raise ConsultError(f"case {case.id}: no visit {visit_index} (it has {n} visit(s))")
    previous = Visit(index=1, label="上次就诊", answer=Answer(prescription=prescription),
                     prescription=parse_prescription(prescription).prescription)
    if idx == 0:
        current = case.visits[0].model_copy(update={"index": 2})
        visits = [previous, current, *(v.model_copy(update={"index": v.index + 1}) for v in case.visits[1:])]
        return case.model_copy(update={"visits": visits}), 1
    before = case.visits[idx - 1]
    replaced = before.model_copy(update={"answer": (before.answer or Answer()).model_copy(
        update={"prescription": prescription}), "prescription": previous.prescription})
    visits = [*case.visits[:idx - 1], replaced, *case.visits[idx:]]
    return case.model_copy(update={"visits": visits}), idx
