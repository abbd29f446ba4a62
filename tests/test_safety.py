from shicheng.domain import Patient
from shicheng.prescription import parse_prescription
from shicheng.safety import check_safety


def findings(text, pregnant=False):
    rx = parse_prescription(text).prescription
    return check_safety(rx, Patient(sex="female" if pregnant else "unknown", pregnant=pregnant))


def rules(text, pregnant=False):
    return {(f.level, f.rule, tuple(sorted(f.herbs))) for f in findings(text, pregnant)}


def test_gancao_haizao():
    assert ("error", "十八反", ("海藻", "甘草")) in rules("海藻15g 炙甘草6g 昆布15g")


def test_fuzi_fabanxia_processed_forms_count_as_base():
    got = rules("制附子10g(先煎) 法半夏9g 干姜6g")
    assert ("error", "十八反", ("半夏", "附子")) in got


def test_wutou_with_gualou_and_beimu_family():
    got = rules("制川乌3g 瓜蒌皮10g 浙贝母10g 白及10g")
    assert {("error", "十八反", ("川乌", "瓜蒌皮")), ("error", "十八反", ("川乌", "浙贝母")),
            ("error", "十八反", ("川乌", "白及"))} <= got


def test_renshen_wulingzhi():
    assert ("error", "十九畏", ("五灵脂", "人参")) in rules("人参10g 五灵脂10g")


def test_lilu_chishao():
    assert ("error", "十八反", ("藜芦", "赤芍")) in rules("藜芦1g 赤芍10g")


def test_other_nineteen_fears():
    assert ("error", "十九畏", ("丁香", "郁金")) in rules("丁香3g 郁金10g")
    assert ("error", "十九畏", ("肉桂", "赤石脂")) in rules("肉桂3g 赤石脂15g")
    assert ("error", "十九畏", ("三棱", "芒硝")) in rules("三棱10g 芒硝10g(冲服)")


def test_pregnancy_contraindicated_and_caution():
    got = rules("水蛭3g 桃仁10g 当归10g", pregnant=True)
    assert ("error", "妊娠禁用", ("水蛭",)) in got
    assert ("warning", "妊娠慎用", ("桃仁",)) in got
    assert not any(r[1].startswith("妊娠") for r in rules("水蛭3g 桃仁10g", pregnant=False))


def test_dose_ranges():
    got = rules("附子30g(先煎) 细辛6g 甘草6g")
    assert ("warning", "剂量", ("附子",)) in got
    assert ("warning", "剂量", ("细辛",)) in got
    assert not any(r[2] == ("甘草",) for r in got)
    # doses of processed forms add up on the base herb: 生甘草 8 + 炙甘草 6 = 14 > 10
    assert ("warning", "剂量", ("甘草",)) in rules("生甘草8g 炙甘草6g")


def test_unknown_herb_is_a_notice_and_clean_prescription_has_no_findings():
    assert ("notice", "未知药名", ("奇异草",)) in rules("奇异草10g 黄芪30g")
    assert findings("黄芪30g 党参15g 白术12g 茯苓15g 炙甘草6g") == []


def test_findings_name_rule_and_herbs():
    f = findings("甘草6g 甘遂1g")[0]
    assert f.rule == "十八反" and f.rule_id and "甘遂" in f.message and f.source.startswith("ChP2020")
