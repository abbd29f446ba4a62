"""Patient facts and inline previous prescriptions read from the text clinicians paste (shicheng.records)."""

from __future__ import annotations

import pytest

from shicheng.records import find_patient_facts, find_previous_prescription, pick_facts, read_records
from shicheng.text import normalise_text


def facts(text: str) -> dict[str, object]:
    return {name: f.value for name, f in pick_facts(find_patient_facts(text)).items()}


def test_the_issue_example_without_headings():
    text = "患者女，30岁，妊娠12周。咳嗽三日，咽痛。"
    found = find_patient_facts(text)
    assert [(f.field, f.value, f.evidence, f.source) for f in found] == [
        ("sex", "female", "患者女", "text"), ("age", 30.0, "30岁", "text"), ("pregnant", True, "妊娠12周", "text")]
    for f in found:  # the position points at the evidence in the text as given
        assert text[f.position:f.position + len(f.evidence)] == f.evidence


@pytest.mark.parametrize(("text", "expected"), [
    ("孕3月，恶心呕吐一周", {"pregnant": True}),
    ("30岁女性，孕8+3周，恶心呕吐", {"age": 30.0, "sex": "female", "pregnant": True}),
    ("患者怀孕，腰酸", {"pregnant": True}),
    ("孕12周，先兆流产", {"pregnant": True}),
    ("女性，三十五岁，早孕", {"sex": "female", "age": 35.0, "pregnant": True}),
    ("患者男性，45岁", {"sex": "male", "age": 45.0}),
    ("男，六十岁", {"sex": "male", "age": 60.0}),
    ("患者王某，女，52岁。", {"sex": "female", "age": 52.0}),
    ("性别：女  年龄：52岁  电话：138…  身份证号：…", {"sex": "female", "age": 52.0}),
    ("年龄 7", {"age": 7.0}),
    ("患儿，男，8个月，发热两天", {"sex": "male", "age": 0.67}),
    ("主訴：咳嗽。患者女，懷孕3個月", {"sex": "female", "pregnant": True}),
    ("既往体健，剖宫产术后3年，现妊娠12周", {"pregnant": True}),
    ("不排除早孕，待查", {"pregnant": True}),
])
def test_facts_found_anywhere(text, expected):
    assert facts(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("否认怀孕，咳嗽三日", {"pregnant": False}),  # a denial is a fact, never pregnant
    ("孕2产1，末次月经两周前", {}),  # obstetric history
    ("未孕，月经规律", {}),
    ("备孕半年，失眠", {}),
    ("孕3次，流产2次", {}),
    ("母亲60岁患高血压，咳嗽", {}),
    ("其女儿5岁，患者咳嗽", {}),
    ("10岁时患哮喘，自20岁起反复发作", {}),
    ("14岁初潮，50岁绝经", {}),
    ("既往妊娠期糖尿病史", {}),
    ("妊娠12周时流产，现月经不调", {}),
    ("说明书云孕妇禁用", {}),
    ("咳嗽6个月，痰多", {}),  # a duration, not an infant's age
    ("孕酮偏低", {}),
    ("20-30岁间多次发作", {}),
])
def test_no_false_facts(text, expected):
    assert facts(text) == expected


def test_pregnancy_wins_over_a_denial_elsewhere_and_headers_win_for_age():
    text = "年龄：52岁。否认怀孕。复查：孕8周"
    chosen = pick_facts(find_patient_facts(text))
    assert chosen["pregnant"].value is True and chosen["pregnant"].evidence == "孕8周"
    assert chosen["age"].source == "header" and chosen["age"].value == 52.0


def test_traditional_text_is_normalised_and_evidence_kept_as_written():
    assert normalise_text("主訴：咳嗽。現病史：發熱。脈象：脈浮數。１２ｇ") == "主诉：咳嗽。现病史：发热。脉象：脉浮数。12g"
    (fact,) = [f for f in find_patient_facts("患者懷孕３個月") if f.field == "pregnant"]
    assert fact.evidence == "懷孕３個月" and fact.position == 2


def test_previous_prescription_inside_the_text():
    text = "二诊：咳嗽减轻，仍咽痛。前方：柴胡10g 黄芩10g 甘草6g。舌红，脉数。"
    span = find_previous_prescription(text)
    assert span is not None and span.text == "柴胡10g 黄芩10g 甘草6g"
    assert text[span.start:span.end] == "前方：柴胡10g 黄芩10g 甘草6g。"
    assert find_previous_prescription("上次处方：党参15g 白术12g\n舌淡").text == "党参15g 白术12g"
    assert find_previous_prescription("前方：柴胡10g 舌象：舌红").text == "柴胡10g"
    # 前方 without a colon means "in front"; 上方加减 written as changes is no prescription of its own.
    assert find_previous_prescription("前方有车，上方去黄芩加丹参") is None
    assert find_previous_prescription("前方：") is None


RECORDS = """【医案】A-01
医家：王某教授
患者：张某，女，45岁  电话：13800000000
初诊：2023年3月1日
主诉：胃脘冷痛3年。舌淡胖苔白滑，脉沉细。
处方：党参15g 白术10g 干姜6g 炙甘草6g
二诊：服药后痛减。
处方：上方去干姜，加砂仁6g（后下）
【医案】
医家：李某
一般情况：无
"""


def test_records_become_cases_and_rejects_without_any_ledger():
    read = read_records(RECORDS, "notes/cases.txt", master_of=lambda written, source: {"王某": "wang"}.get(
        written.removesuffix("教授")))
    (case,) = read.cases
    assert case.id == "A-01" and case.source == "notes/cases.txt:1" and case.master_id == "wang"
    assert (case.patient.sex, case.patient.age, case.patient.id) == ("female", 45.0, "patient-A-01")
    first, second = case.visits
    assert (first.label, first.date, first.tongue, first.pulse) == ("初诊", "2023年3月1日", "舌淡胖苔白滑", "脉沉细。")
    assert first.chief_complaint == "胃脘冷痛3年。"
    # the follow-up's 上方去X加Y is the previous prescription changed
    assert second.prescription.base_herbs() == ["党参", "白术", "甘草", "砂仁"]
    assert "13800000000" not in case.model_dump_json()
    assert read.rejected == [("notes/cases.txt:9", "no visit content: no 主诉, 现病史, 舌, 脉 or other presentation "
                                                    "found")]
    # without master_of no master is guessed; ids default to the name's stem
    assert read_records("主诉：咳嗽。", "x/free.txt").cases[0].model_dump(include={"id", "master_id"}) == {
        "id": "free-001", "master_id": None}
    assert read_records("一段没有任何病历标记的文字", "x.txt").rejected == [
        ("x.txt", "no case records found: no case, visit or field markers")]


def test_reading_clinician_text_loads_no_curation_module():
    import subprocess
    import sys

    code = ("import sys, shicheng.agent, shicheng.serve.app\n"
            "from shicheng.agent.cases import read_text_case\n"
            "read_text_case('主诉：咳嗽。舌红，脉数。')\n"
            "print(sorted(m for m in sys.modules if m.startswith('shicheng.curate')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
