from collections import Counter

from shicheng.curate.clean import clean_cases
from shicheng.curate.ledger import Ledger
from shicheng.curate.scrub import scrub_text
from shicheng.curate.split import split_cases
from shicheng.domain import Answer, Case, Patient, Visit
from shicheng.text import normalise_text


def _case(i, patient="P1", master="m1", complaint="胃脘胀痛三月，嗳气反酸，食后加重", rx="柴胡10g 白芍12g"):
    return Case(id=f"c{i}", master_id=master, patient=Patient(id=patient, sex="male", age=40),
                visits=[Visit(chief_complaint=complaint, tongue="舌红苔薄黄", pulse="脉弦",
                              answer=Answer(syndrome="肝胃不和证", prescription=rx))])


def test_scrub_removes_personal_data_and_makes_dates_relative():
    from datetime import date

    counts = Counter()
    text = ("患者李建华，男，52岁，住院号：ZY20230017，电话 138-1234-5678，身份证号11010519660307123X，"
            "住址：江苏省南京市玄武区中山路12号。2023年3月5日初诊，2023年3月19日复诊。患者诉头痛。")
    out = scrub_text(text, counts, anchor=date(2023, 3, 5))
    for leaked in ("李建华", "ZY20230017", "138-1234-5678", "11010519660307123X", "中山路12号", "2023"):
        assert leaked not in out
    assert "第0天初诊" in out and "第14天复诊" in out and "患者诉头痛" in out
    assert counts["name"] == 1 and counts["phone"] == 1 and counts["id_card"] == 1 and counts["date"] == 2


def test_normalize_keeps_chinese_punctuation():
    assert normalise_text("當歸１２ｇ，黃芪３０ｇ。") == "当归12g，黄芪30g。"


def test_clean_rejects_with_reasons_and_counts_balance():
    cases = [
        _case(1),
        _case(2),  # exact duplicate content of c1
        _case(3, complaint="胃脘胀痛三月，嗳气反酸，食后尤重。"),  # near duplicate: one word changed
        Case(id="c4", visits=[Visit(answer=Answer(syndrome="气虚证", prescription="黄芪30g"))]),  # no presentation
        Case(id="c5", visits=[Visit(chief_complaint="头痛十年，遇风加重，时作时止", answer=Answer(syndrome="风寒"))]),
        _case(6, patient="P2", complaint="失眠多梦半年，心悸健忘，神疲乏力", rx="酸枣仁20g 茯神15g"),
    ]
    ledger = Ledger()
    kept, _ = clean_cases(cases, ledger)
    assert [c.id for c in kept] == ["c1", "c6"]
    reasons = {r.record["case_id"]: r.reason for r in ledger.rejects}
    assert reasons["c2"].startswith("duplicate") and reasons["c3"].startswith("near-duplicate")
    assert reasons["c4"].startswith("no presentation") and reasons["c5"].startswith("no prescription")
    ledger.check()
    assert kept[0].patient.id.startswith("p-") and "P1" not in kept[0].model_dump_json()


def test_split_by_patient_is_leak_free_stratified_and_seeded():
    cases = [_case(i, patient=f"P{i // 3}", master=f"m{i % 2}") for i in range(120)]
    a = split_cases(cases, seed=0)
    assert a == split_cases(list(reversed(cases)), seed=0)
    assert a != split_cases(cases, seed=1)
    by_patient = {}
    for c in cases:
        by_patient.setdefault(c.patient.id, set()).add(a[c.id])
    assert all(len(s) == 1 for s in by_patient.values())
    for m in ("m0", "m1"):
        splits = Counter(a[c.id] for c in cases if c.master_id == m)
        assert set(splits) == {"train", "validation", "test"} and splits["train"] > splits["test"]
