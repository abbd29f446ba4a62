"""One prediction row, planned: which rubric items are scored, which the model answered, what our code
computes (herb match, composition), and the judge's prompt and schema. Nothing here depends on the judge,
so a panel plans each row once.

The rules applied are listed in judge.py's docstring. The judge is shown the case as the model was asked
(prompts.user_prompt, the previous visit included for a follow-up), the master, the gold sections of the
scored items, and the model's formal answer: every output section our parser found, without the <think>
reasoning, which is long and is not scored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from shicheng.domain import SECTION_BY_KEY, Answer, Case, Master, Prescription, Task, Visit
from shicheng.evaluate.judge_backends import JudgeRequest
from shicheng.evaluate.rubric import Item, Mode, Rubric
from shicheng.metrics import composition_point, herb_match
from shicheng.prescription import (
    format_herbs,
    refers_to_previous,
    resolve_prescription,
)
from shicheng.prompts import user_prompt
from shicheng.template import parse_answer

ModeChoice = Literal["auto", "reference", "reference_free"]


@dataclass
class Plan:
    """Everything about one row that does not depend on the judge."""

    row: dict[str, Any]
    state: Literal["call", "rule", "not_applicable"]
    reason: str | None = None
    mode: Mode | None = None
    items: list[Item] = field(default_factory=list)
    answered: dict[str, bool] = field(default_factory=dict)
    code: dict[tuple[str, str], float | None] = field(default_factory=dict)
    herbs_code: dict[str, Any] | None = None
    request: JudgeRequest | None = None
    counterfactual: bool = False


def counterfactual(row: dict, case: Case) -> bool:
    return bool(row["master"] and case.master_id and row["master"] != case.master_id)


def read_row(row: Mapping | BaseModel, i: int) -> dict[str, Any]:
    data = row.model_dump() if isinstance(row, BaseModel) else dict(row)
    missing = [k for k in ("case_id", "visit", "task", "output") if k not in data]
    if missing:
        raise ValueError(f"prediction row {i}: missing field(s) {missing}")
    try:
        task = Task(data["task"])
    except ValueError:
        raise ValueError(f"prediction row {i}: unknown task {data['task']!r}") from None
    visit = data["visit"]
    if isinstance(visit, bool) or not isinstance(visit, int) or visit < 1:
        raise ValueError(f"prediction row {i}: visit must be a 1-based integer, got {visit!r}")
    return {"case_id": str(data["case_id"]), "visit": visit, "master": data.get("master") or None,
            "task": task, "system": str(data.get("system") or "unknown"), "output": data.get("output") or "",
            "index": i}


def _visit_rx(visit: Visit, previous: Prescription | None) -> Prescription | None:
    if visit.prescription is not None and visit.prescription.herbs:
        return visit.prescription
    text = visit.answer.prescription if visit.answer else None
    return _full_rx(text, previous) if text else None


def _full_rx(text: str | None, previous: Prescription | None) -> Prescription:
    return resolve_prescription(text, previous) if text else Prescription()


def _gold(visit: Visit) -> Answer | None:
    """The master's answer; a structured prescription stands in for a missing 处方 text."""
    answer, rx = visit.answer, visit.prescription
    rx_text = (answer.prescription if answer else None) or (rx.raw if rx and rx.raw else None) \
        or (format_herbs(rx.herbs) if rx and rx.herbs else None)
    if answer is None and rx_text is None:
        return None
    return (answer or Answer()).model_copy(update={"prescription": rx_text})


_THINK_END = re.compile(r"<\s*/\s*think\s*>", re.IGNORECASE)
_TAGS = re.compile(r"<\s*/?\s*(?:think|output)\s*>", re.IGNORECASE)


def _predicted(output: str, asked: tuple[str, ...]) -> Answer:
    answer = parse_answer(output).answer
    if len(asked) == 1 and not any(k != "reasoning" for k in answer.present()):
        ends = list(_THINK_END.finditer(output))
        body = _TAGS.sub("", output[ends[-1].end():] if ends else output).strip()
        if body:
            return answer.model_copy(update={asked[0]: body})
    return answer


def _sections_text(answer: Answer, keys: Sequence[str]) -> str:
    return "\n\n".join(f"【{SECTION_BY_KEY[k].zh}】\n{getattr(answer, k).strip()}" for k in keys if getattr(answer, k))


def master_text(master: Master | None) -> str:
    if master is None:
        return "未指定名医（按通用中医临床标准评价）。"
    lines = [f"{master.name}（{master.school}）"]
    if master.specialties:
        lines.append("擅长：" + "、".join(master.specialties))
    if master.academic_thoughts:
        lines.append("学术思想：" + master.academic_thoughts.strip())
    if master.signature_formulas:
        lines.append("常用方：" + "、".join(master.signature_formulas))
    if master.signature_herbs:
        lines.append("常用药：" + "、".join(master.signature_herbs))
    return "\n".join(lines)


def plan_row(row: dict, case: Case, master: Master | None, rubric: Rubric, mode_choice: ModeChoice) -> Plan:
    vi = row["visit"] - 1
    visit = case.visits[vi]
    task: Task = row["task"]
    asked = tuple(k for k in task.sections if k != "reasoning")
    # Asked as another master than the case's (counterfactual mode): the gold is the other master's answer,
    # so "auto" judges it reference-free, against the asked master's own thought.
    use_gold = mode_choice == "reference" or (mode_choice == "auto" and not counterfactual(row, case))
    gold = _gold(visit) if use_gold else None
    gold_sections = set(gold.present()) if gold else set()
    rubric_sections = {it.section for it in rubric.items}
    if not set(asked) & rubric_sections:
        return Plan(row, "not_applicable", f"task {task.value} asks for no section the rubric scores")
    has_gold = bool(gold_sections & set(asked) & rubric_sections)
    if mode_choice == "reference" and not has_gold:
        return Plan(row, "not_applicable", f"no gold answer for what task {task.value} asks")
    mode: Mode = "reference" if has_gold else "reference_free"
    items = rubric.scored_items(asked, gold_sections if mode == "reference" else None, master is not None)
    if not items:
        why = f"no rubric item applies to task {task.value} in {mode} mode" + ("" if master else " without a master")
        return Plan(row, "not_applicable", why, mode=mode)
    pred = _predicted(row["output"], asked)
    answered = {it.key: bool(getattr(pred, it.section)) for it in items}
    plan = Plan(row, "call" if any(answered.values()) else "rule", mode=mode, items=items, answered=answered)
    previous = _visit_rx(case.visits[vi - 1], None) if vi > 0 else None
    for it in items:
        for c in it.criteria_in(mode):
            if c.code is None:
                continue
            pred_rx = _full_rx(getattr(pred, it.section), previous)
            if c.code == "composition":
                plan.code[it.key, c.key] = composition_point(pred_rx)
            elif c.code == "herb_match":
                gold_rx = _visit_rx(visit, previous) or Prescription()
                m = herb_match(gold_rx, pred_rx)
                plan.code[it.key, c.key] = m.points
                plan.herbs_code = {**m.to_dict(), "matched_count": len(m.matched),
                                   "gold_count": len(m.matched) + len(m.missing)}
    if plan.state == "call":
        shown = gold
        if mode == "reference" and gold.prescription and previous is not None and refers_to_previous(gold.prescription):
            # 上方去党参，加肉桂: the judge is shown what that comes to, as our herb count reads it.
            full = _visit_rx(visit, previous)
            if full is not None and full.herbs:
                shown = gold.model_copy(update={
                    "prescription": f"{gold.prescription}\n（合并上次处方后：{format_herbs(full.herbs)}）"})
        messages = rubric.messages(
            mode=mode, items=items, case=user_prompt(case, vi, task, master), master=master_text(master),
            gold=_sections_text(shown, [it.section for it in items]) if mode == "reference" else None,
            answer=_sections_text(pred, [k for k in SECTION_BY_KEY if k != "reasoning"]))
        plan.request = JudgeRequest(messages=messages, schema=rubric.verdict_schema(items, mode),
                                    validator=rubric.verdict_model(items, mode), rubric=rubric)
    return plan


__all__ = ["ModeChoice", "Plan", "counterfactual", "master_text", "plan_row", "read_row"]
