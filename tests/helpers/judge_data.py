"""Hand-made cases, masters and predictions for the judge tests, with the numbers worked out by hand.

Case `judge-a` (李守阳, two visits). Visit 1's gold prescription has five base herbs: 附子 干姜 党参 白术
甘草 (制附子, 炒白术 and 炙甘草 are processed forms). Visit 2's is "上方去党参，加肉桂6g": applied to visit 1,
附子 干姜 白术 甘草 肉桂. Case `judge-b` has no 名医特色理论应用 in its gold answer (the maximum shrinks to
45). Case `judge-c` has no answer at all (reference-free).

Predictions:
- GOOD: all five herbs under aliases and other processed forms (附片, 淡干姜 is not used: 干姜, 人参 is
  NOT 党参 so the good answer writes 党参, 白术, 生甘草): code herb match 5/5 × 9 = 9, composition 1.
- PARTIAL: 附子 干姜 白术 + 甘草 with 海藻 (十八反): matched 4 of 5 → 4/5 × 9 = 7.2, composition 0; and no
  治则治法 and no 名医特色理论应用 section: those two items score 0 and are listed missing.
- EMPTY: no section at all: every item unanswered.
"""

from __future__ import annotations

from shicheng.demo import load_demo_masters
from shicheng.domain import Answer, Case, Patient, Visit
from shicheng.template import render_answer

MASTER = "li-shouyang"

GOLD_1 = Answer(
    reasoning="畏寒肢冷，胃脘冷痛，舌淡胖苔白滑，脉沉细，为脾阳不足、寒从中生。",
    etiology_pathogenesis="素体阳虚，复因饮食生冷，损伤脾阳，中焦虚寒，寒凝气滞而痛。",
    syndrome="脾胃虚寒证",
    treatment_principle="温中健脾，散寒止痛",
    prescription="附子理中汤加减：制附子15g（先煎） 干姜10g 党参15g 炒白术12g 炙甘草6g。水煎服，日一剂。",
    prescription_explanation="附子温肾暖脾为君，干姜温中散寒为臣，党参、白术益气健脾为佐，甘草调和诸药为使。",
    master_theory="李守阳重视阳气，认为中焦虚寒之本在肾阳不足，故以附子扶阳为先。",
    modifications="若呕吐清水，加吴茱萸、生姜。",
    advice="忌生冷，注意保暖，一周后复诊。",
)
GOLD_2 = Answer(
    syndrome="脾胃虚寒证，阳虚渐复",
    treatment_principle="温中扶阳",
    prescription="上方去党参，加肉桂6g。七剂。",
)
GOLD_B = GOLD_1.model_copy(update={"master_theory": None})


def cases() -> dict[str, Case]:
    a = Case(id="judge-a", master_id=MASTER, patient=Patient(sex="male", age=45), disease="胃脘痛", visits=[
        Visit(index=1, chief_complaint="胃脘冷痛反复发作三年，加重一周", tongue="舌淡胖，苔白滑", pulse="脉沉细",
              answer=GOLD_1),
        Visit(index=2, chief_complaint="胃痛减轻，仍畏寒", tongue="舌淡，苔薄白", pulse="脉细", answer=GOLD_2),
    ])
    b = Case(id="judge-b", master_id=MASTER, patient=Patient(sex="female", age=38), visits=[
        Visit(index=1, chief_complaint="胃脘隐痛，喜温喜按", tongue="舌淡", pulse="脉弱", answer=GOLD_B)])
    c = Case(id="judge-c", master_id=MASTER, patient=Patient(sex="male", age=60), visits=[
        Visit(index=1, chief_complaint="腰膝冷痛，夜尿频多", tongue="舌淡胖", pulse="脉沉迟")])
    return {x.id: x for x in (a, b, c)}


def masters():
    return load_demo_masters()


GOOD = render_answer(GOLD_1.model_copy(update={
    "prescription": "附子理中汤：附片15g 干姜10g 党参15g 白术12g 生甘草6g",
    "syndrome": "脾阳虚衰，寒凝中焦"}))
PARTIAL = render_answer(GOLD_1.model_copy(update={
    "prescription": "制附子15g 干姜10g 白术12g 甘草6g 海藻10g", "treatment_principle": None, "master_theory": None}))
EMPTY = "我不确定。"


def row(output: str, case_id: str = "judge-a", visit: int = 1, task: str = "full_chain", system: str = "stage-5",
        master: str | None = MASTER) -> dict:
    return {"case_id": case_id, "visit": visit, "master": master, "task": task, "system": system, "output": output,
            "tokens": 0, "seconds": 0.0}


def good_variant(i: int) -> str:
    """GOOD with a differently worded 医嘱: another prompt (another cache key), the same scores by our code."""
    return render_answer(GOLD_1.model_copy(update={
        "prescription": "附子理中汤：附片15g 干姜10g 党参15g 白术12g 生甘草6g",
        "advice": f"忌生冷，注意保暖，{i + 1}周后复诊。"}))
