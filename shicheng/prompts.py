"""The prompts, written once: curation builds training data with them, the agent asks with them.

A model answers best when it is asked exactly as it was trained, so the stage datasets, the
consultation agent and the evaluation all call these functions (docs/architecture.md, "Layers").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shicheng.domain import DISCLAIMER, SECTION_BY_KEY, Answer, Case, Master, Task, Visit
from shicheng.prescription import format_herbs
from shicheng.template import render_answer

GENERIC_SYSTEM = (
    "你是一名中医临床辅助决策助手，依据中医理论进行辨证论治。"
    "回答须先在<think></think>中写出推理，再在<output></output>中按要求的小节作答。"
)

TASK_INSTRUCTIONS: dict[Task, str] = {
    Task.etiology_pathogenesis: "请分析该患者的病因病机。",
    Task.syndrome: "请给出该患者的辨证（证候诊断），先主证后兼证。",
    Task.treatment_principle: "请给出该患者的治则治法。",
    Task.prescription: "请为该患者拟定处方，写明方名、药物及剂量、煎服法。",
    Task.prescription_explanation: "请解释该处方的配伍（君臣佐使）。",
    Task.modification: "根据上次处方与本次症状变化，请说明方药应如何加减（加何药、去何药）及理由。",
    Task.advice: "请给出医嘱与调护建议。",
    Task.full_chain: "请完成完整的辨证论治：病因病机、辨证、治则治法、处方、方解、随症加减、医嘱。",
}


def system_prompt(master: Master | None = None) -> str:
    if master is None:
        return GENERIC_SYSTEM
    parts = [f"你是{master.name}（{master.school}）学术经验的传承助手，请以{master.name}的辨证思路与用药风格回答。"]
    if master.academic_thoughts:
        parts.append(f"{master.name}的学术思想：{master.academic_thoughts.strip()}")
    parts.append("回答须先在<think></think>中写出推理，再在<output></output>中按要求的小节作答。")
    return "\n".join(parts)


def describe_visit(case: Case, visit: Visit) -> str:
    """The patient and the findings of one visit, as a clinician would write them."""
    p = case.patient
    sex = {"male": "男", "female": "女"}.get(p.sex, "")
    head = "，".join(x for x in (sex, f"{p.age:g}岁" if p.age is not None else "", "妊娠期" if p.pregnant else "")
                    if x)
    lines = [f"患者：{head}。" if head else "患者："]
    for label, value in (("主诉", visit.chief_complaint), ("现病史", visit.present_illness),
                         ("既往史", visit.history), ("舌象", visit.tongue), ("脉象", visit.pulse),
                         ("其他", visit.other_findings)):
        if value:
            lines.append(f"{label}：{value}")
    return "\n".join(lines)


def previous_prescription(visit: Visit) -> str:
    if visit.prescription and visit.prescription.herbs:
        return format_herbs(visit.prescription.herbs)
    return visit.answer.prescription if visit.answer and visit.answer.prescription else ""


def user_prompt(case: Case, visit_index: int, task: Task, master: Master | None = None) -> str:
    """The user turn for `task` on visit `visit_index` (0-based) of `case`; follow-ups show the last visit."""
    visit = case.visits[visit_index]
    parts = []
    if visit_index > 0:
        prev = case.visits[visit_index - 1]
        parts.append(f"【上次就诊】\n{describe_visit(case, prev)}\n上次处方：{previous_prescription(prev)}")
        parts.append(f"【本次就诊】\n{describe_visit(case, visit)}")
    else:
        parts.append(describe_visit(case, visit))
    parts.append(task_line(task, master))
    return "\n\n".join(parts)


def task_line(task: Task, master: Master | None = None) -> str:
    """The last line of every user turn: which task, in the words training used. The master is named here
    as well as in the system prompt: right before the answer, a small model conditions on it far better."""
    line = f"【任务】{task.zh}：{TASK_INSTRUCTIONS[task]}"
    return f"{line}（{master.name}）" if master else line


def prompt_messages(case: Case, visit_index: int, task: Task, master: Master | None) -> list[dict]:
    """[system, user]: what training shows before the answer, and what the agent sends."""
    return [{"role": "system", "content": system_prompt(master)},
            {"role": "user", "content": user_prompt(case, visit_index, task, master)}]


def assistant_target(visit: Visit, task: Task, think: bool) -> str | None:
    """The gold assistant turn for `task`, or None when the visit lacks the needed sections."""
    answer = visit.answer
    if answer is None:
        return None
    keys = [k for k in task.sections if k != "reasoning"]
    if any(not getattr(answer, k) for k in keys if not SECTION_BY_KEY[k].optional):
        return None
    if think and not answer.reasoning:
        return None
    return render_answer(answer, sections=tuple(keys), think=think)


def modification_text(previous: Visit, visit: Visit) -> str | None:
    """What changed between two visits' prescriptions: herbs added and removed, then the new prescription."""
    if not (previous.prescription and visit.prescription and visit.prescription.herbs):
        return None
    before = {h.base for h in previous.prescription.herbs if h.base}
    after = {h.base for h in visit.prescription.herbs if h.base}
    added = [h for h in visit.prescription.herbs if h.base and h.base not in before]
    removed = [h for h in previous.prescription.herbs if h.base and h.base not in after]
    lines = [f"加：{format_herbs(added) if added else '无'}",
             f"去：{'、'.join(h.name or h.raw for h in removed) if removed else '无'}"]
    if visit.answer and visit.answer.modifications:
        lines.append(visit.answer.modifications)
    lines.append(f"调整后处方：{format_herbs(visit.prescription.herbs)}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Modification:
    """What a modification answer states in the layout of modification_text. added and removed: the text
    of its 加： and 去： lines (several lines joined with ，), "" when they say 无, None when the answer has
    no such line; new_prescription: what follows 调整后处方： (or 调整后方药：), None when absent."""

    added: str | None
    removed: str | None
    new_prescription: str | None


def _labelled_line(label: str) -> re.Pattern:
    # A list marker (- * •) may precede the label, as models often write one.
    return re.compile(rf"^[ \t]*(?:[-*•][ \t]*)?{label}[ \t]*[:：][ \t]*(.*)$", re.MULTILINE)


_ADD_LINE, _REMOVE_LINE = _labelled_line("加"), _labelled_line("去")
# The new prescription is written last and may run over several lines.
_NEW_PRESCRIPTION = re.compile(r"调整后(?:处方|方药)[ \t]*[:：]\s*(.*)", re.DOTALL)
_SAYS_NONE = {"", "无", "无。", "不加", "不去", "none"}


def read_modification(text: str | None) -> Modification:
    """The reader of modification_text's layout (加：… / 去：… / 调整后处方：…), for answers a model wrote."""
    text = text or ""

    def lines(pattern: re.Pattern) -> str | None:
        found = [v.strip() for v in pattern.findall(text)]
        return "，".join(v for v in found if v.lower() not in _SAYS_NONE) if found else None

    m = _NEW_PRESCRIPTION.search(text)
    new = m.group(1).strip() if m else None
    return Modification(added=lines(_ADD_LINE), removed=lines(_REMOVE_LINE),
                        new_prescription="" if new is not None and new.lower() in _SAYS_NONE else new)


def messages(case: Case, visit_index: int, task: Task, master: Master | None, think: bool) -> list[dict] | None:
    """[system, user, assistant] for one training example, or None when the gold answer lacks the parts."""
    if task is Task.modification:
        if visit_index == 0:
            return None
        text = modification_text(case.visits[visit_index - 1], case.visits[visit_index])
        target = render_answer(Answer(modifications=text), sections=("modifications",), think=False) if text else None
    else:
        target = assistant_target(case.visits[visit_index], task, think)
    if target is None:
        return None
    return [*prompt_messages(case, visit_index, task, master), {"role": "assistant", "content": target}]


__all__ = ["DISCLAIMER", "GENERIC_SYSTEM", "TASK_INSTRUCTIONS", "Modification", "assistant_target", "describe_visit",
           "messages", "modification_text", "previous_prescription", "prompt_messages", "read_modification",
           "system_prompt", "task_line", "user_prompt"]
