"""Personal data in record headers, importer messages and rejects: read field by field, never quoted."""

from __future__ import annotations

from collections import Counter

from shicheng.curate.importers import import_path
from shicheng.curate.importers.tabular import import_table
from shicheng.curate.ledger import Ledger
from shicheng.curate.scrub import redact
from shicheng.records.values import describe_value, parse_age

PHONE, ID_CARD, NAME = "13812345678", "110105197003071234", "王秀兰"
MULTI_FIELD = (f"【医案】A-1\n姓名：{NAME}  性别：女  年龄：52岁  电话：{PHONE}  身份证号：{ID_CARD}\n"
               "初诊\n主诉：头痛3天\n舌象：舌红苔黄\n脉象：脉弦\n辨证：肝阳上亢\n处方：天麻10g 钩藤15g\n")


def _import(tmp_path, text: str, name: str = "r.txt"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    ledger = Ledger()
    return import_path(path, ledger), ledger


def test_a_header_line_with_several_fields_is_read_field_by_field(tmp_path):
    result, _ = _import(tmp_path, MULTI_FIELD)
    (case,) = result.cases
    assert (case.patient.sex, case.patient.age) == ("female", 52)
    assert result.warnings == []  # before: "age: not an age: '52岁  电话：138…  身份证号：…'"
    dumped = case.model_dump_json()
    for value in (NAME, PHONE, ID_CARD):
        assert value not in dumped


def test_header_fields_after_commas_and_personal_fields_are_kept_apart(tmp_path):
    text = (f"【医案】B-1\n患者：{NAME}，女，41岁，病历号：ZY2023001234，电话：{PHONE}，身份证：{ID_CARD}，"
            "住址：上海市浦东新区张江路88号，职业：教师\n妊娠：否\n初诊\n主诉：咳嗽1周。\n处方：桑叶10g 菊花10g\n")
    result, _ = _import(tmp_path, text)
    (case,) = result.cases
    assert (case.patient.sex, case.patient.age, case.patient.id, case.patient.pregnant) == \
        ("female", 41, "ZY2023001234", False)
    assert case.visits[0].chief_complaint == "咳嗽1周。"
    dumped = case.model_dump_json()
    for value in (NAME, PHONE, ID_CARD, "张江路", "教师"):
        assert value not in dumped


def test_a_bad_header_value_is_named_by_field_and_line_never_quoted(tmp_path):
    result, _ = _import(tmp_path, f"【医案】C-1\n患者：{NAME}，女，年龄：52岁（{PHONE}）\n初诊\n主诉：头痛。\n")
    (warning,) = result.warnings
    assert warning.startswith(f"{tmp_path / 'r.txt'}:1: age: not an age") and "withheld" in warning
    assert PHONE not in warning and "52" not in warning and NAME not in warning


def test_value_errors_describe_the_value_without_its_text():
    for value in (f"52岁 电话：{PHONE}", NAME, 13812345678):
        message = describe_value(value)
        assert str(value) not in message and "withheld" in message
    assert describe_value("abc") == "a 3-character value (letters, withheld)"
    try:
        parse_age(f"52岁 电话：{PHONE} 身份证号：{ID_CARD}")
    except ValueError as e:
        assert PHONE not in str(e) and ID_CARD not in str(e) and "not an age" in str(e)
    else:
        raise AssertionError("parse_age accepted a phone number")


def test_a_table_value_in_the_wrong_column_is_rejected_without_quoting_it(tmp_path):
    path = tmp_path / "ward.csv"
    path.write_text(f"病例号,性别,年龄,主诉,处方\nW1,{NAME},40,咳嗽,桑叶10g\nW2,女,{PHONE},头痛,川芎10g\n",
                    encoding="utf-8")
    ledger = Ledger()
    import_table(path, ledger, {"columns": {"case_id": "病例号", "sex": "性别", "age": "年龄",
                                            "chief_complaint": "主诉", "prescription": "处方"}})
    reasons = {r.source.rsplit(":", 1)[1]: r.reason for r in ledger.rejects}
    assert reasons["row 2"].startswith("bad value: column '性别' (sex): not a sex: a 3-character value")
    assert reasons["row 3"].startswith("bad value: column '年龄' (age): age out of range: a 11-character value")
    assert NAME not in "".join(reasons.values()) and PHONE not in "".join(reasons.values())


def test_the_ledger_scrubs_what_it_records():
    ledger = Ledger()
    ledger.reject("import", "notes-2023年3月5日.txt:para 1", f"too short: 电话：{PHONE}",
                  {"text": f"患者：{NAME}，身份证号：{ID_CARD}", "nested": [f"手机 {PHONE[:3]} {PHONE[3:7]} {PHONE[7:]}"]})
    (r,) = ledger.rejects
    text = str(r.to_dict())
    for value in (PHONE, ID_CARD, NAME, "2023年3月5日", f"{PHONE[3:7]} {PHONE[7:]}"):
        assert value not in text, value
    assert r.source == "notes-[日期].txt:para 1"
    assert r.reason == "too short: 电话：[电话]" and r.record["text"].startswith("患者王某")


def test_redact_leaves_keys_and_non_strings():
    counts = Counter()
    assert redact({"电话": PHONE, "n": 3, "ok": None}, counts) == {"电话": "[电话]", "n": 3, "ok": None}
    assert counts["phone"] == 1
