"""The parser on the messy forms real records contain (DESIGN.md §2). Examples are written for these tests."""

import pytest

from shicheng.prescription import cn_number, parse_prescription


def herbs(text):
    return [(h.base, h.grams) for h in parse_prescription(text).herbs]


def by_base(text):
    return {h.base: h for h in parse_prescription(text).herbs}


def test_no_separators():
    assert herbs("法半夏10黄连5黄芩10干姜6") == [("半夏", 10), ("黄连", 5), ("黄芩", 10), ("干姜", 6)]


def test_ordinary_outpatient_prescription_with_units_and_notes():
    p = parse_prescription("柴胡12g 黄芩9g 法半夏9g 党参15g 炙甘草6g 生姜3片 大枣4枚 生石膏30g(先煎) 薄荷6g(后下)"
                           "，7剂，水煎服，日一剂")
    got = {h.base: h for h in p.herbs}
    assert got["半夏"].name == "法半夏" and got["半夏"].processing
    assert got["甘草"].name == "炙甘草"
    assert (got["生姜"].dose, got["生姜"].unit, got["生姜"].grams) == (3, "片", None)
    assert (got["大枣"].dose, got["大枣"].unit) == (4, "枚")
    assert got["石膏"].note == "先煎" and got["石膏"].grams == 30
    assert got["薄荷"].note == "后下"
    assert p.prescription.administration and "水煎服" in p.prescription.administration
    assert p.unparsed == []


def test_shared_dose_ge():
    got = by_base("党参、白术、茯苓各15g，陈皮6g")
    assert [got[b].grams for b in ("党参", "白术", "茯苓", "陈皮")] == [15, 15, 15, 6]


def test_merged_names():
    got = by_base("生熟地各15g 赤白芍各10g 天麦冬各10 焦三仙30g")
    assert got["生地黄"].grams == 15 and got["熟地黄"].grams == 15
    assert got["赤芍"].grams == 10 and got["白芍"].grams == 10
    assert got["天冬"].grams == 10 and got["麦冬"].grams == 10
    assert {"山楂", "麦芽", "神曲"} <= set(got)
    assert got["山楂"].grams == 10  # 焦三仙30g without 各: split equally


def test_aliases():
    got = by_base("元参15 首乌20 云苓15 川军6 银花15 枣仁20")
    assert set(got) == {"玄参", "何首乌", "茯苓", "大黄", "金银花", "酸枣仁"}


def test_traditional_characters_and_full_width_digits():
    got = by_base("當歸１２ｇ　黃芪３０ｇ　川芎６ｇ　熟地黃１５ｇ")
    assert got["当归"].grams == 12 and got["黄芪"].grams == 30 and got["熟地黄"].grams == 15


def test_chinese_numerals_and_old_units():
    got = by_base("桂枝三钱 白芍三钱 炙甘草二钱 生姜三片 大枣十二枚 麻黄一两 细辛五分")
    assert got["桂枝"].grams == 9 and got["甘草"].grams == 6
    assert got["麻黄"].grams == 30 and got["细辛"].grams == pytest.approx(1.5)
    assert got["大枣"].dose == 12 and got["大枣"].unit == "枚"


def test_unit_conversion_is_configurable(tmp_path):
    from shicheng.knowledge import load_knowledge

    units = tmp_path / "units.yaml"
    units.write_text("version: 1\ngrams: {g: 1, 钱: 3.125, 两: 31.25}\ncounts: [枚]\n", encoding="utf-8")
    kb = load_knowledge(units_file=units)
    got = {h.base: h for h in parse_prescription("桂枝二钱 麻黄一两", kb).herbs}
    assert got["桂枝"].grams == 6.25 and got["麻黄"].grams == 31.25


def test_doses_without_units_are_grams():
    h = parse_prescription("黄芪30 当归10").herbs
    assert [(x.unit, x.grams) for x in h] == [(None, 30), (None, 10)]


def test_processed_forms_map_to_base():
    got = by_base("麸炒白术12g 酒白芍10g 烫水蛭3g 制附子10g 姜半夏9g 炒枳壳10 焦山栀10 蜜炙麻黄6 黄芩炭10")
    assert got["白术"].processing and got["白芍"].name == "酒白芍"
    assert {"水蛭", "附子", "半夏", "枳壳", "栀子", "麻黄", "黄芩"} <= set(got)
    assert "炭" in got["黄芩"].processing


def test_formula_name_expands_with_modifications():
    p = parse_prescription("桂枝汤加葛根15g")
    bases = [h.base for h in p.herbs]
    assert {"桂枝", "白芍", "甘草", "生姜", "大枣", "葛根"} <= set(bases)
    assert p.prescription.formula_name == "桂枝汤"
    removed = [h.base for h in parse_prescription("小柴胡汤去人参加桂枝10g").herbs]
    assert "人参" not in removed and "桂枝" in removed and "柴胡" in removed


def test_formula_as_title_is_not_expanded_twice():
    p = parse_prescription("六君子汤加减：党参15g 炒白术12g 茯苓15g 炙甘草6g 陈皮10g 法半夏9g 木香6g(后下)")
    bases = [h.base for h in p.herbs]
    assert len(bases) == len(set(bases)) == 7
    assert p.prescription.formula_name == "六君子汤"


def test_herbs_embedded_in_case_record_sentence():
    record = ("患者张某，女，45岁。胃脘胀痛3月，嗳气，舌红苔薄黄，脉弦。辨证属肝胃不和。"
              "治以疏肝和胃，方用柴胡疏肝散加减，药用柴胡10g、白芍12g、枳壳10g、香附10g、川芎6g、陈皮6g、"
              "炙甘草5g、延胡索10g。7剂，水煎服。")
    got = by_base(record)
    assert {"柴胡", "白芍", "枳壳", "香附", "川芎", "陈皮", "甘草", "延胡索"} == set(got)
    assert got["延胡索"].grams == 10


def test_unknown_words_are_reported_not_dropped():
    p = parse_prescription("黄芪30g 奇异草15g 当归10g 某某")
    unknown = [h for h in p.herbs if h.base is None]
    assert [u.raw for u in unknown] == ["奇异草"] and unknown[0].grams == 15
    assert "某某" in p.unparsed


def test_cn_number():
    assert [cn_number(x) for x in ("三", "十五", "二十", "一百二十", "廿", "半", "两")] == [3, 15, 20, 120, 20, 0.5, 2]


@pytest.mark.parametrize("text", ["", "   ", "。。。", "10g", "各", "(先煎)", "x7剂", "加减", "\x00\x01"])
def test_degenerate_inputs_do_not_raise(text):
    parse_prescription(text)
