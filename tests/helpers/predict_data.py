"""Hand-made held-out and training cases for the predict, baseline and evaluate tests.

Masters are the demo's (fictional) 李守阳 (li-shouyang) and 黄培中 (huang-peizhong).

Held-out cases:
- `test-cold` (li-shouyang, two visits): 胃脘冷痛, 舌淡胖 苔白滑, 脉沉细; visit 2 is a follow-up.
- `test-sleep` (huang-peizhong, one visit): 失眠多梦, 心悸健忘, 舌淡 苔薄白, 脉细弱.

Training cases, built so that "nearest of the same master" and "nearest overall" differ:
- `train-li-cold` (li-shouyang): 胃脘冷痛 with 舌淡胖 苔白滑 脉沉细: the nearest li-shouyang visit to
  `test-cold` visit 1; its second visit's 处方 is written as changes (上方去党参，加肉桂6g).
- `train-li-back` (li-shouyang): 腰膝冷痛, 夜尿频多: li-shouyang, but far from both test cases.
- `train-huang-cold` (huang-peizhong): the findings of `test-cold` visit 1 word for word, so it is the
  nearest visit overall, but of the other master.
- `train-huang-sleep` (huang-peizhong): 失眠多梦, the nearest huang-peizhong visit to `test-sleep`.
"""

from __future__ import annotations

from pathlib import Path

from shicheng.demo import load_demo_masters
from shicheng.domain import Answer, Case, HerbItem, Patient, Prescription, Visit, write_jsonl

LI, HUANG = "li-shouyang", "huang-peizhong"


def _answer(syndrome: str, principle: str, rx: str, reasoning: str = "四诊合参，辨证如下。") -> Answer:
    return Answer(reasoning=reasoning, etiology_pathogenesis="病机：" + syndrome, syndrome=syndrome,
                  treatment_principle=principle, prescription=rx, prescription_explanation="方解：君臣佐使。",
                  modifications="随症加减。", advice="忌生冷，一周后复诊。")


def _rx(*herbs: tuple[str, float]) -> Prescription:
    return Prescription(herbs=[HerbItem(raw=f"{h}{g:g}g", name=h, base=h, dose=g, unit="g", grams=g)
                               for h, g in herbs])


COLD_RX = "附子理中汤：制附子15g 干姜10g 党参15g 炒白术12g 炙甘草6g"
COLD_FINDINGS = dict(chief_complaint="胃脘冷痛反复发作三年，加重一周", present_illness="喜温喜按，遇寒加重，大便溏薄",
                     tongue="舌淡胖，苔白滑", pulse="脉沉细")


def held_out_cases() -> list[Case]:
    cold = Case(id="test-cold", master_id=LI, patient=Patient(sex="male", age=45), visits=[
        Visit(index=1, **COLD_FINDINGS, answer=_answer("脾胃虚寒证", "温中健脾，散寒止痛", COLD_RX)),
        Visit(index=2, chief_complaint="胃痛减轻，仍畏寒", tongue="舌淡，苔薄白", pulse="脉细",
              answer=_answer("脾胃虚寒证，阳虚渐复", "温中扶阳", "上方去党参，加肉桂6g。七剂。"))])
    sleep = Case(id="test-sleep", master_id=HUANG, patient=Patient(sex="female", age=38), visits=[
        Visit(index=1, chief_complaint="失眠多梦半年，心悸健忘", tongue="舌淡，苔薄白", pulse="脉细弱",
              answer=_answer("心脾两虚证", "益气补血，养心安神",
                             "归脾汤：黄芪20g 党参15g 当归10g 茯神15g 炒酸枣仁30g 远志6g 木香6g 炙甘草6g"))])
    return [cold, sleep]


def train_cases() -> list[Case]:
    li_cold = Case(id="train-li-cold", master_id=LI, patient=Patient(id="p1", sex="male", age=50), visits=[
        Visit(index=1, chief_complaint="胃脘冷痛两年", present_illness="喜温，遇寒加重", tongue="舌淡胖，苔白滑",
              pulse="脉沉细", answer=_answer("中焦虚寒证", "温阳散寒", "理中汤：附子10g 干姜10g 党参15g 白术12g 甘草6g"),
              prescription=_rx(("附子", 10), ("干姜", 10), ("党参", 15), ("白术", 12), ("甘草", 6))),
        Visit(index=2, chief_complaint="冷痛已减，仍畏寒", tongue="舌淡", pulse="脉细",
              answer=_answer("中焦虚寒证", "温阳", "上方去党参，加肉桂6g。"),
              prescription=_rx(("附子", 10), ("干姜", 10), ("白术", 12), ("甘草", 6), ("肉桂", 6)))])
    li_back = Case(id="train-li-back", master_id=LI, patient=Patient(id="p2", sex="male", age=66), visits=[
        Visit(index=1, chief_complaint="腰膝冷痛，夜尿频多", tongue="舌淡嫩", pulse="脉沉迟",
              answer=_answer("肾阳虚证", "温补肾阳", "右归丸加减：熟地黄20g 附子10g 肉桂6g 山药15g"))])
    huang_cold = Case(id="train-huang-cold", master_id=HUANG, patient=Patient(id="p3", sex="male", age=45), visits=[
        Visit(index=1, **COLD_FINDINGS,
              answer=_answer("脾虚寒湿证", "健脾祛湿", "香砂六君子汤：党参15g 白术12g 茯苓15g 木香6g 砂仁6g"))])
    huang_sleep = Case(id="train-huang-sleep", master_id=HUANG, patient=Patient(id="p4", sex="female", age=40),
                       visits=[Visit(index=1, chief_complaint="失眠多梦一年，心悸", tongue="舌淡", pulse="脉细弱",
                                     answer=_answer("心脾两虚证", "补益心脾", "归脾汤：黄芪15g 当归10g 龙眼肉10g"))])
    return [li_cold, li_back, huang_cold, huang_sleep]


def write_cases(folder: Path, masters: bool = False) -> tuple[Path, Path]:
    """test.jsonl and train.jsonl in `folder`, and with `masters` the demo masters in ../masters/ (the layout
    `shicheng curate` writes: OUT/cases/*.jsonl, OUT/masters/<id>.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "test.jsonl", held_out_cases())
    write_jsonl(folder / "train.jsonl", train_cases())
    if masters:
        (folder.parent / "masters").mkdir(exist_ok=True)
        for m in load_demo_masters().values():
            (folder.parent / "masters" / f"{m.id}.json").write_text(m.model_dump_json(indent=1), encoding="utf-8")
    return folder / "test.jsonl", folder / "train.jsonl"
