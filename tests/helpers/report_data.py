"""A small evaluation set for the results and report tests, with the scores worked out by hand.

Two masters with disjoint styles: 李守阳 (扶阳: 附子 干姜 肉桂 …, 阳虚/温阳) and 苏清源 (温病: 金银花 连翘
薄荷 …, 风热/辛凉). Four training cases each fit the style model. Four test cases: `t-li-1` (two visits,
the second written as 上方去党参，加肉桂6g), `t-li-2`, `t-su-1`, `t-su-2`.

Systems:
- `gold`: the gold answers themselves: herb F1 1 on every answer.
- `stage-5`: t-li-1 v1 prescribes 附子 干姜 党参 白术 (4 of the gold's 5, nothing extra): precision 1, recall
  0.8, F1 8/9, herb points 7.2; t-li-1 v2 writes the gold's own 上方… line (F1 1); t-li-2 exact (F1 1);
  t-su-1 adds 甘草 to the gold's 4 herbs (P 4/5, R 1, F1 8/9) and leaves out 医嘱 (completeness 6/7);
  t-su-2 prescribes 桑叶 薄荷 only (1 of 4 gold herbs matched, 2 predicted: F1 2·1/(2+4) = 1/3).
- `baseline`: a retrieval floor: every case answered with the first training case of its master.
- counterfactual rows of `stage-5` (asked as the other master): t-li-1 v1 asked as 苏清源 answers in
  苏清源's style (switched); t-su-1 asked as 李守阳 answers in 苏清源's style again (stayed).
"""

from __future__ import annotations

import hashlib

from shicheng.demo import load_demo_masters
from shicheng.domain import Answer, Case, Patient, Visit
from shicheng.template import render_answer
from tests.helpers.judge_server import JudgeServer, schema_of, verdict_reply
from tests.helpers.openai_server import HTTPError

LI, SU = "li-shouyang", "su-qingyuan"


def li_answer(herbs: str, syndrome: str = "脾肾阳虚证", extra: str = "") -> Answer:
    return Answer(
        reasoning="畏寒肢冷，舌淡胖，脉沉细，阳气虚衰。",
        etiology_pathogenesis=f"素体阳虚，寒从中生，温煦失职。{extra}",
        syndrome=syndrome,
        treatment_principle="温阳散寒，扶阳固本",
        prescription=f"{herbs}。水煎服，日一剂。",
        prescription_explanation="附子大辛大热以扶阳，干姜温中，合而回阳。",
        master_theory="重视阳气，以扶阳为先，阳气为人身立命之本。",
        modifications="若腹泻甚，加补骨脂。",
        advice="忌生冷，注意保暖。")


def su_answer(herbs: str, syndrome: str = "风热犯卫证", advice: str | None = "多饮水，清淡饮食。") -> Answer:
    return Answer(
        reasoning="发热微恶风寒，咽痛，舌边尖红，脉浮数，风热在卫。",
        etiology_pathogenesis="外感风热，邪袭肺卫，卫气被郁，肺失清肃。",
        syndrome=syndrome,
        treatment_principle="辛凉透表，清热解毒",
        prescription=f"{herbs}。水煎服，日一剂。",
        prescription_explanation="金银花、连翘清热解毒，薄荷、桑叶辛凉透表。",
        master_theory="温病卫气营血辨证，在卫汗之可也，以辛凉轻剂透邪。",
        modifications="若咳甚，加杏仁、桔梗。",
        advice=advice)


LI_GOLD_1 = li_answer("制附子15g（先煎） 干姜10g 党参15g 炒白术12g 炙甘草6g")
LI_GOLD_2 = Answer(syndrome="脾肾阳虚证，阳气渐复", treatment_principle="温阳扶正",
                   prescription="上方去党参，加肉桂6g。七剂。")
LI_GOLD_B = li_answer("附子12g 干姜9g 肉桂6g 砂仁6g", syndrome="肾阳虚衰证")
SU_GOLD_1 = su_answer("金银花15g 连翘12g 薄荷6g（后下） 芦根15g")
SU_GOLD_2 = su_answer("桑叶10g 菊花10g 杏仁9g 连翘10g", syndrome="风温袭肺证")

TRAIN_LI = ["附子15g 干姜10g 肉桂6g 炙甘草6g", "附子12g 干姜9g 砂仁6g 淫羊藿10g", "附子10g 肉桂3g 白术12g 茯苓15g",
            "干姜10g 附子15g 党参15g 砂仁6g"]
TRAIN_SU = ["金银花15g 连翘12g 薄荷6g 淡竹叶10g", "桑叶10g 菊花10g 连翘10g 芦根15g", "金银花12g 芦根20g 薄荷6g 牛蒡子10g",
            "连翘10g 桑叶10g 淡竹叶9g 金银花10g"]


def _visit(answer: Answer | None, cc: str, index: int = 1) -> Visit:
    return Visit(index=index, chief_complaint=cc, tongue="舌淡红", pulse="脉细", answer=answer)


def train_cases() -> list[Case]:
    li = [Case(id=f"train-li-{i}", master_id=LI, patient=Patient(sex="male", age=50),
               visits=[_visit(li_answer(rx, extra=f"第{i}例"), "畏寒肢冷，腰膝酸软")]) for i, rx in enumerate(TRAIN_LI)]
    su = [Case(id=f"train-su-{i}", master_id=SU, patient=Patient(sex="female", age=30),
               visits=[_visit(su_answer(rx), "发热咽痛，微恶风寒")]) for i, rx in enumerate(TRAIN_SU)]
    return [*li, *su]


def cases() -> dict[str, Case]:
    out = [
        Case(id="t-li-1", master_id=LI, patient=Patient(sex="male", age=45), disease="泄泻",
             visits=[_visit(LI_GOLD_1, "大便溏泄三月，畏寒"), _visit(LI_GOLD_2, "便溏减轻，仍畏寒", 2)]),
        Case(id="t-li-2", master_id=LI, patient=Patient(sex="male", age=62),
             visits=[_visit(LI_GOLD_B, "四肢厥冷，夜尿频多")]),
        Case(id="t-su-1", master_id=SU, patient=Patient(sex="female", age=28),
             visits=[_visit(SU_GOLD_1, "发热二日，咽痛")]),
        Case(id="t-su-2", master_id=SU, patient=Patient(sex="male", age=35),
             visits=[_visit(SU_GOLD_2, "咳嗽，咽痒，微热")]),
    ]
    return {c.id: c for c in out}


def masters():
    return load_demo_masters()


def row(system: str, case_id: str, output: str, visit: int = 1, master: str | None = None,
        task: str = "full_chain") -> dict:
    own = LI if case_id.startswith("t-li") else SU
    out = {"case_id": case_id, "visit": visit, "master": master or own, "task": task, "system": system,
           "output": output, "tokens": len(output), "seconds": 0.5}
    if master and master != own:
        out["case_master"] = own
    return out


GOLDS = {("t-li-1", 1): LI_GOLD_1, ("t-li-1", 2): LI_GOLD_2, ("t-li-2", 1): LI_GOLD_B, ("t-su-1", 1): SU_GOLD_1,
         ("t-su-2", 1): SU_GOLD_2}
STAGE5 = {
    ("t-li-1", 1): render_answer(li_answer("制附子15g 干姜10g 党参15g 白术12g")),
    ("t-li-1", 2): render_answer(LI_GOLD_2),
    ("t-li-2", 1): render_answer(LI_GOLD_B),
    ("t-su-1", 1): render_answer(su_answer("金银花15g 连翘12g 薄荷6g 芦根15g 甘草6g", advice=None)),
    ("t-su-2", 1): render_answer(su_answer("桑叶10g 薄荷6g", syndrome="风热犯肺证")),
}
# Hand-computed herb F1 of stage-5 per (case, visit), and its mean over cases (t-li-1 averages its visits).
STAGE5_HERB_F1 = {("t-li-1", 1): 8 / 9, ("t-li-1", 2): 1.0, ("t-li-2", 1): 1.0, ("t-su-1", 1): 8 / 9,
                  ("t-su-2", 1): 1 / 3}
STAGE5_HERB_F1_MEAN = ((8 / 9 + 1.0) / 2 + 1.0 + 8 / 9 + 1 / 3) / 4
COUNTERFACTUAL = [
    # asked as 苏清源 on 李守阳's case, answered in 苏清源's style: switched
    row("stage-5", "t-li-1", render_answer(su_answer("金银花15g 连翘12g 薄荷6g 淡竹叶10g")), master=SU),
    # asked as 李守阳 on 苏清源's case, answered in 苏清源's style again: stayed
    row("stage-5", "t-su-1", render_answer(su_answer("金银花15g 连翘12g 芦根15g 桑叶10g")), master=LI),
]


def predictions() -> list[dict]:
    rows = [row("gold", c, render_answer(a), visit=v) for (c, v), a in GOLDS.items()]
    rows += [row("stage-5", c, text, visit=v) for (c, v), text in STAGE5.items()]
    first = {LI: render_answer(li_answer(TRAIN_LI[0])), SU: render_answer(su_answer(TRAIN_SU[0]))}
    rows += [row("baseline", c, first[LI if c.startswith("t-li") else SU], visit=v) for (c, v) in GOLDS]
    return rows + COUNTERFACTUAL


# --- two judges on a loopback OpenAI-protocol server ----------------------------------------------------

def _share(messages) -> float:
    # Deterministic per prompt, spread over 0.35–0.95, so that systems and masters differ on the radar.
    digest = hashlib.sha256(messages[-1]["content"].encode("utf-8")).hexdigest()
    return round(0.35 + (int(digest[:4], 16) % 61) / 100, 2)


def deepseek_like(messages, body):
    return verdict_reply(schema_of(body), _share(messages))


def gpt_like(messages, body):
    """Scores a little lower, miscounts herbs by one, and fails (HTTP 500) on stage-5's t-su-2 answer."""
    if "咳嗽，咽痒" in messages[-1]["content"] and "桑叶10g 薄荷6g" in messages[-1]["content"]:
        raise HTTPError(500, "upstream overloaded")
    schema = schema_of(body)
    overrides = {}
    if "herb_counts" in schema["properties"]:
        overrides["herb_counts"] = {"matched": 3, "gold": 4}
    return verdict_reply(schema, max(0.0, _share(messages) - 0.1), **overrides)


def judged(predictions: list[dict], cache_dir) -> list:
    """Verdicts of both judges on every row (the real judge path, hybrid scoring)."""
    from shicheng.evaluate.judge import judge_predictions
    from shicheng.evaluate.judge_backends import OpenAIJudge

    with JudgeServer(deepseek_like, model="deepseek-chat") as a, JudgeServer(gpt_like, model="gpt-4o") as b:
        judges = [OpenAIJudge(s.url, s.model, timeout_s=5, transport_retries=1, backoff_s=0.01, backoff_max_s=0.02)
                  for s in (a, b)]
        return judge_predictions(predictions, cases(), judges, masters=masters(), cache_dir=cache_dir,
                                 progress=False)
