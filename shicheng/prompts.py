"""The prompts, written once: curation builds training data with them, the agent asks with them.

A model answers best when it is asked exactly as it was trained, so the stage datasets, the
consultation agent and the evaluation all call these functions (DESIGN.md §3).
"""

from __future__ import annotations

from shicheng.domain import DISCLAIMER, SECTION_BY_KEY, Case, Master, Task, Visit
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


def user_prompt(case: Case, visit_index: int, task: Task) -> str:
    """The user turn for `task` on visit `visit_index` (0-based) of `case`."""
    visit = case.visits[visit_index]
    parts = []
    if task is Task.modification and visit_index > 0:
        prev = case.visits[visit_index - 1]
        prev_rx = prev.answer.prescription if prev.answer and prev.answer.prescription else (
            prev.prescription.raw if prev.prescription else "")
        parts.append(f"【上次就诊】\n{describe_visit(case, prev)}\n上次处方：{prev_rx}")
        parts.append(f"【本次就诊】\n{describe_visit(case, visit)}")
    else:
        parts.append(describe_visit(case, visit))
    parts.append(f"【任务】{task.zh}：{TASK_INSTRUCTIONS[task]}")
    return "\n\n".join(parts)


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


def messages(case: Case, visit_index: int, task: Task, master: Master | None, think: bool) -> list[dict] | None:
    target = assistant_target(case.visits[visit_index], task, think)
    if target is None:
        return None
    return [
        {"role": "system", "content": system_prompt(master)},
        {"role": "user", "content": user_prompt(case, visit_index, task)},
        {"role": "assistant", "content": target},
    ]


__all__ = ["DISCLAIMER", "GENERIC_SYSTEM", "TASK_INSTRUCTIONS", "assistant_target", "describe_visit", "messages",
           "system_prompt", "user_prompt"]
