import json

import pytest
from typer.testing import CliRunner

from shicheng.cli import app
from shicheng.domain import Patient
from shicheng.prescription import parse_prescription
from shicheng.safety import SafetyReport, check_safety, safety_report

runner = CliRunner()


def findings(text, pregnant=False):
    rx = parse_prescription(text).prescription
    return check_safety(rx, Patient(sex="female" if pregnant else "unknown", pregnant=pregnant))


def rules(text, pregnant=False):
    return {(f.level, f.rule, tuple(sorted(f.herbs))) for f in findings(text, pregnant)}


def by_base(text):
    return {h.base for h in parse_prescription(text).herbs}


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


# ---------------------------------------------------------------------- issue 8: rules that were missing
def test_wutou_is_in_the_eighteen_antagonisms_and_the_pregnancy_list():
    assert ("error", "十八反", ("乌头", "半夏")) in rules("乌头6g 半夏9g")
    assert ("error", "妊娠禁用", ("乌头",)) in rules("乌头3g 甘草6g", pregnant=True)
    assert ("error", "十九畏", ("乌头", "犀角")) in rules("乌头3g 犀角3g")


def test_mercury_with_arsenic_in_any_written_form():
    assert ("error", "十九畏", ("水银", "砒石")) in rules("水银0.1g 信石0.01g")
    assert ("error", "十九畏", ("水银", "砒石")) in rules("水银0.1g 砒石0.01g")
    assert ("error", "十九畏", ("水银", "砒霜")) in rules("水银0.1g 砒霜0.01g")


def test_ginseng_leaf_with_lilu_and_wulingzhi():
    got = rules("人参叶6g 藜芦1g 五灵脂10g")
    assert ("error", "十八反", ("人参叶", "藜芦")) in got
    assert ("error", "十九畏", ("五灵脂", "人参叶")) in got


def test_shaoyao_is_known_and_flagged_with_lilu_even_without_doses():
    assert ("error", "十八反", ("芍药", "藜芦")) in rules("藜芦1g 芍药10g")
    parsed = parse_prescription("芍药 藜芦 甘草")
    report = safety_report(parsed.prescription, kb=None, unparsed=parsed.unparsed)
    assert ("十八反", ("芍药", "藜芦")) in {(f.rule, tuple(sorted(f.herbs))) for f in report.findings}
    assert set(report.not_dose_checked) == {"芍药", "藜芦", "甘草"} and report.unrecognised == []


@pytest.mark.parametrize(("herb", "level"), [
    ("两头尖", "禁用"), ("丁公藤", "禁用"), ("天山雪莲", "禁用"), ("红粉", "禁用"),
    ("西红花", "慎用"), ("天然冰片", "慎用"), ("艾片", "慎用"), ("赭石", "慎用"), ("硫黄", "慎用"), ("常山", "慎用"),
    ("卷柏", "慎用"), ("急性子", "慎用"), ("片姜黄", "慎用"), ("木鳖子", "慎用"), ("人工牛黄", "慎用"),
    ("马鞭草", "慎用"), ("禹州漏芦", "慎用"), ("苦楝皮", "慎用"),
])
def test_pharmacopoeia_pregnancy_gaps_are_closed(herb, level):
    got = {(f.rule, tuple(f.herbs)) for f in findings(f"{herb}1g 当归10g", pregnant=True)}
    assert (f"妊娠{level}", (herb,)) in got


@pytest.mark.parametrize(("text", "base"), [
    ("大黄30g", "大黄"), ("麝香0.5g", "麝香"), ("肉桂10g", "肉桂"), ("制天南星15g", "天南星"),
    ("胆南星10g", "胆南星"), ("土鳖虫15g", "土鳖虫"), ("三七15g", "三七"), ("黄芪500g", "黄芪"),
])
def test_potent_herbs_have_dose_ranges(text, base):
    assert ("warning", "剂量", (base,)) in rules(text)


def test_powders_in_fractions_of_a_gram_are_in_range():
    assert not any(r[1] == "剂量" for r in rules("麝香0.05g 牛黄0.3g 冰片0.2g 三七3g"))
    assert "入丸散" in next(f.message for f in findings("麝香1g"))


# ---------------------------------------------------------------------- issue 8: written forms
def test_shufu_is_processed_fuzi_and_dried_ginger_is_not_fresh_ginger():
    assert ("error", "十八反", ("半夏", "附子")) in rules("熟附10 法半夏9")
    assert by_base("干生姜6g") == {"干姜"}


def test_cinnabar_coating_counts_in_pregnancy():
    got = findings("朱茯神15g 当归10g", pregnant=True)
    zhusha = [f for f in got if f.herbs == ["朱砂"]]
    assert zhusha and zhusha[0].rule == "妊娠禁用" and "朱茯神(含朱砂)" in zhusha[0].message
    assert findings("朱茯神15g 当归10g") == []  # not pregnant: nothing, and no dose check of a coating
    assert any(f.herbs == ["朱砂"] for f in findings("炒朱茯神15g", pregnant=True))


def test_names_that_contain_a_herb_are_their_own_herbs():
    assert by_base("米仁根30g") == {"薏苡根"}
    assert not findings("米仁根30g", pregnant=True)  # 薏苡仁 is 慎用; its root is another drug
    assert by_base("松花粉3g 附子10g") == {"松花粉", "附子"} and not findings("松花粉3g 附子10g")
    assert not findings("朱砂根6g 当归10g", pregnant=True)
    assert ("warning", "妊娠慎用", ("草乌叶",)) in rules("草乌叶1g", pregnant=True)
    assert not any(r[2] == ("草乌",) for r in rules("草乌叶1g 半夏9g", pregnant=True))
    assert not findings("南天仙子3g", pregnant=True)


# ---------------------------------------------------------------------- issue 8: the report
def test_report_says_what_was_not_checked():
    rx = parse_prescription("茯神15g 当归10g 生姜3片 奇异草10g").prescription
    report = safety_report(rx, unparsed=["舌红苔白"])
    assert report.not_dose_checked == ["茯神", "生姜"]  # 茯神: no ChP range; 生姜 3 片: no grams
    assert report.unrecognised == ["奇异草", "舌红苔白"]
    assert report.findings == check_safety(rx)
    line = report.summary()
    assert "未发现安全问题" not in line and "no safety findings" not in line
    assert "茯神" in line and "奇异草" in line and "\n" not in line


def test_issue_example_is_no_longer_clean():
    rx = parse_prescription("当归200g 黄芪500g 茯苓300g 熟地黄250g").prescription
    report = safety_report(rx)
    assert {f.herbs[0] for f in report.findings if f.rule == "剂量"} == {"当归", "黄芪", "茯苓", "熟地黄"}
    assert "发现 4 项安全问题" in report.summary()


def test_summary_claims_no_problems_only_when_everything_was_checked():
    clean = safety_report(parse_prescription("黄芪30g 党参15g 白术12g 茯苓15g 炙甘草6g").prescription,
                          Patient(sex="male"))
    assert clean.not_dose_checked == [] and clean.unrecognised == [] and clean.findings == []
    assert clean.summary().startswith("未发现安全问题")
    assert "no herbs" in safety_report(parse_prescription("").prescription).summary()
    # 大枣 written as a count has no grams: one herb unchecked is enough to withhold the claim
    partial = safety_report(parse_prescription("黄芪30g 大枣5枚").prescription, Patient(sex="male"))
    assert partial.not_dose_checked == ["大枣"] and "未发现安全问题" not in partial.summary()


def test_summary_says_when_pregnancy_rules_were_not_applied():
    rx = parse_prescription("桃仁10g 红花6g 当归10g").prescription
    assert "桃仁" in safety_report(rx, Patient(sex="female")).summary()
    assert "pregnancy rules not applied" not in safety_report(rx, Patient(sex="male")).summary()
    assert "pregnancy rules not applied" not in safety_report(rx, Patient(sex="female", pregnant=True)).summary()


def test_hand_built_report_summary():
    r = SafetyReport(findings=[], not_dose_checked=["当归"], unrecognised=[])
    assert "当归" in r.summary() and "未发现安全问题" not in r.summary()


# ---------------------------------------------------------------------- issue 8: the CLI
def test_cli_reports_unchecked_herbs_in_text_and_json():
    res = runner.invoke(app, ["check-prescription", "茯神15g 当归10g 奇异草10g"])
    assert res.exit_code == 0, res.output
    assert "No safety findings" not in res.output and "未核剂量" in res.output and "奇异草" in res.output
    res = runner.invoke(app, ["check-prescription", "当归200g 黄芪500g 茯苓300g 熟地黄250g", "--json"])
    out = json.loads(res.output)
    assert len(out["findings"]) == 4 and out["not_dose_checked"] == [] and out["unrecognised"] == []
    assert out["summary"].startswith("发现 4 项安全问题")
    res = runner.invoke(app, ["check-prescription", "芍药 藜芦 甘草", "--json"])
    out = json.loads(res.output)
    assert any(f["rule"] == "十八反" for f in out["findings"]) and "芍药" in out["not_dose_checked"]


def test_cli_herb_shows_components():
    out = json.loads(runner.invoke(app, ["herb", "朱茯神", "--json"]).output)
    assert out["base"] == "茯神" and out["components"] == ["朱砂"]
