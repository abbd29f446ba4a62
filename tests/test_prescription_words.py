"""Where a herb name begins and ends, and what a number before or a word after it means (issue 8 items 2, 3, 5).

The knowledge files grow (another part of issue 8 adds 芍药, 松花粉, formulas …), so the unknown-word rule
is tested on invented words that no lexicon will list, and the issue's own words are tested for what must
hold either way: never read as the herb inside them.
"""

import pytest

from shicheng.knowledge import load_knowledge
from shicheng.prescription import apply_to_previous, parse_prescription, refers_to_previous
from shicheng.safety import check_safety

KB = load_knowledge()


def herbs(text):
    return [(h.base, h.grams) for h in parse_prescription(text, KB).herbs]


def by_base(text):
    return {h.base: h for h in parse_prescription(text, KB).herbs}


# ------------------------------------------------------------------ item 2: dose before the herb
@pytest.mark.parametrize("text, base, grams", [
    ("三钱细辛", "细辛", 9), ("10g细辛", "细辛", 10), ("一两麻黄", "麻黄", 30), ("五分细辛", "细辛", 1.5),
    ("处方：三钱细辛", "细辛", 9), ("3片生姜", "生姜", None),
])
def test_a_dose_with_a_unit_right_before_a_herb_is_its_dose(text, base, grams):
    got = by_base(text)
    assert set(got) == {base} and got[base].grams == grams
    assert parse_prescription(text, KB).unparsed == []


def test_dose_first_prescription_is_dose_checked():
    findings = check_safety(parse_prescription("三钱细辛 二钱桂枝", KB).prescription, None, KB)
    assert herbs("三钱细辛 二钱桂枝") == [("细辛", 9), ("桂枝", 6)]
    assert any(f.rule == "剂量" and f.herbs == ["细辛"] for f in findings)  # 9 g is above the 1–3 g range


@pytest.mark.parametrize("text, expected, unparsed", [
    ("细辛三钱", [("细辛", 9)], []),  # the usual order is untouched
    ("10g细辛5g", [("细辛", 5)], ["10g"]),  # the herb has its own dose: the number before it is not read
    ("黄芪 三钱细辛", [("黄芪", 9), ("细辛", None)], []),  # 黄芪 still waits for a dose: herb-first reading
    ("1.柴胡10g 2.黄芩10g", [("柴胡", 10), ("黄芩", 10)], []),  # list numbers are not doses
])
def test_ambiguous_dose_positions_keep_the_herb_first_reading(text, expected, unparsed):
    p = parse_prescription(text, KB)
    assert [(h.base, h.grams) for h in p.herbs] == expected and p.unparsed == unparsed


@pytest.mark.parametrize("text", ["人参 藜芦 甘草", "藜芦、人参、甘草", "藜芦\n人参\n甘草", "甘草 海藻", "藜芦"])
def test_names_without_a_dose_are_herbs_and_reach_the_safety_check(text):
    p = parse_prescription(text, KB)
    assert p.unparsed == [] and p.herbs and all(h.base and h.dose is None for h in p.herbs)
    findings = check_safety(p.prescription, None, KB)
    if "藜芦" in text and "人参" in text:
        assert any(f.rule == "十八反" and set(f.herbs) == {"藜芦", "人参"} for f in findings)
    if "海藻" in text:
        assert any(f.rule == "十八反" and set(f.herbs) == {"甘草", "海藻"} for f in findings)


def test_issue_example_shaoyao_lilu_gancao_gives_every_name_it_knows():
    got = by_base("芍药 藜芦 甘草")
    assert {"藜芦", "甘草"} <= set(got) and all(h.dose is None for h in got.values())
    p = parse_prescription("芍药 藜芦 甘草", KB)
    assert len(p.herbs) + len(p.unparsed) == 3  # 芍药 is a herb once the lexicon lists it, else unparsed


# ------------------------------------------------------------------ item 3: no herb read inside another word
@pytest.mark.parametrize("word, inner", [("朱砂茎", "朱砂"), ("草乌花", "草乌"), ("石花粉", "天花粉"), ("金花粉", "天花粉")])
def test_an_unknown_word_containing_a_herb_is_unknown(word, inner):
    assert KB.resolve(word) is None  # invented: no lexicon will list them
    p = parse_prescription(f"{word}6g 附子10g 半夏9g", KB)
    unknown = [h for h in p.herbs if h.base is None]
    assert [(u.raw, u.grams) for u in unknown] == [(word, 6)]
    assert inner not in {h.base for h in p.herbs}
    notices = [f for f in check_safety(p.prescription, None, KB) if f.rule == "未知药名"]
    assert [f.herbs for f in notices] == [[word]]


@pytest.mark.parametrize("word, inner", [("松花粉", "天花粉"), ("朱砂根", "朱砂"), ("草乌叶", "草乌"),
                                         ("南天仙子", "天仙子")])
def test_issue_examples_are_never_the_herb_inside_them(word, inner):
    p = parse_prescription(f"{word}10g 附子10g", KB)
    assert [h.raw for h in p.herbs] == [word, "附子"]
    assert p.herbs[0].base != inner
    if word == "松花粉":  # the false 十八反 of the issue: 天花粉 with 附子
        assert not [f for f in check_safety(p.prescription, None, KB) if f.rule == "十八反"]


def test_origin_prefix_forms_of_other_plants_are_not_the_herb():
    for word, inner in (("云防风", "防风"), ("广升麻", "升麻"), ("南天仙子", "天仙子")):
        hit = KB.resolve(word)
        assert hit is None or hit.base != inner, word
    assert KB.resolve("川黄连").base == "黄连" and KB.resolve("怀山药").base == "山药"  # real origin prefixes


@pytest.mark.parametrize("text, expected", [
    ("法半夏10黄连5黄芩10干姜6", [("半夏", 10), ("黄连", 5), ("黄芩", 10), ("干姜", 6)]),
    ("黄连黄芩", [("黄连", None), ("黄芩", None)]),
    ("黄连黄芩各10g", [("黄连", 10), ("黄芩", 10)]),
    ("酌加柴胡10g", [("柴胡", 10)]),
    ("柴胡10g等", [("柴胡", 10)]),
    ("上方基础上加丹参15g", [("丹参", 15)]),
])
def test_herbs_that_run_together_still_split(text, expected):
    assert herbs(text) == expected


@pytest.mark.parametrize("name", ["半夏瓜蒌汤", "黄芪当归汤", "细辛膏", "人参藜芦丸", "甘草黄连散"])
def test_an_unknown_formula_name_is_not_split_into_its_herbs(name):
    assert name not in KB.formulas  # invented names
    p = parse_prescription(f"{name}加减：茯苓15g", KB)
    assert herbs(f"{name}加减：茯苓15g") == [("茯苓", 15)]
    assert p.unparsed == [name]  # reported as not read, next to the prescription
    assert not check_safety(parse_prescription(name, KB).prescription, None, KB)  # 人参+藜芦 is no 十八反 here


@pytest.mark.parametrize("name", ["甘遂半夏汤", "海藻玉壶汤"])
def test_issue_formula_names_are_the_formula_or_nothing(name):
    p = parse_prescription(name, KB)
    if name in KB.formulas:
        assert p.prescription.formula_name == KB.formulas[name].name and all(h.raw == name for h in p.herbs)
    else:
        assert p.herbs == [] and name in p.mentioned


def test_patent_medicine_names_are_words():
    p = parse_prescription("柴胡10g 黄芩10g 丹参滴丸10粒 复方甘草片2片", KB)
    assert [h.raw for h in p.herbs] == ["柴胡", "黄芩", "丹参滴丸", "复方甘草片"]
    assert [h.base for h in p.herbs[2:]] == [None, None]  # unknown: reported as not safety-checked
    alone = parse_prescription("丹参滴丸10粒 复方甘草片2片", KB)
    assert alone.herbs == [] and alone.mentioned == ["丹参滴丸", "复方甘草片"]


# ------------------------------------------------------------------ item 5: processing written after the herb
@pytest.mark.parametrize("text, base, name, processing", [
    ("山药炒15g", "山药", "炒山药", "炒"), ("白术炒10", "白术", "炒白术", "炒"), ("黄柏盐水炒10g", "黄柏", "盐黄柏", "盐"),
    ("草乌制3g", "草乌", "制草乌", "制"), ("牛膝酒蒸10g", "牛膝", "酒蒸牛膝", "酒蒸"),
])
def test_processing_after_the_herb(text, base, name, processing):
    p = parse_prescription(text, KB)
    assert p.unparsed == [] and len(p.herbs) == 1
    h = p.herbs[0]
    assert (h.raw, h.base, h.name) == (text.rstrip("0123456789g"), base, name)
    assert processing in h.processing and h.grams is not None


def test_processing_after_is_dose_checked_as_its_base():
    p = parse_prescription("草乌制10g 半夏9g", KB)
    findings = check_safety(p.prescription, None, KB)
    assert any(f.rule == "十八反" and set(f.herbs) == {"草乌", "半夏"} for f in findings)
    assert any(f.rule == "剂量" and f.herbs == ["草乌"] for f in findings)


def test_a_processing_word_followed_by_a_herb_is_that_herbs_prefix():
    got = by_base("山药炒白术10")
    assert got["山药"].dose is None and got["白术"].name == "炒白术" and got["白术"].grams == 10


# ------------------------------------------------------------------ follow-ups keep working
def test_follow_up_written_against_the_previous_prescription():
    previous = parse_prescription("柴胡10g 黄芩10g 白芍12g 延胡索10g", KB).prescription
    text = "上方去延胡索，加焦山楂15g、炒麦芽15g"
    assert refers_to_previous(text)
    parsed = parse_prescription(text, KB)
    assert parsed.removed == ["延胡索"] and herbs(text) == [("山楂", 15), ("麦芽", 15)]
    full = apply_to_previous(previous, parsed)
    assert [h.base for h in full.herbs] == ["柴胡", "黄芩", "白芍", "山楂", "麦芽"]
    assert not refers_to_previous("柴胡10g 上方")


def test_processing_and_remarks_in_brackets_after_the_dose():
    got = by_base("甘草6g(炙) 白术10g（土炒） 半夏10g(姜制) 附子10g(先煎1小时) 生姜3片(自备)")
    assert (got["甘草"].name, got["白术"].name, got["半夏"].name) == ("炙甘草", "土炒白术", "姜半夏")
    assert got["附子"].grams == 10 and got["附子"].note.startswith("先煎")
    assert got["生姜"].note == "自备"
    assert parse_prescription("甘草6g(炙) 半夏10g(姜制)", KB).unparsed == []


@pytest.mark.parametrize("text, expected", [
    ("中药处方：当归15g 白芍15g", [("当归", 15), ("白芍", 15)]),
    ("二诊：上方加丹参15g，7剂", [("丹参", 15)]),
    ("紫河车粉3g装胶囊吞服", [("紫河车", 3)]),
])
def test_labels_and_instructions_around_a_prescription_line(text, expected):
    p = parse_prescription(text, KB)
    assert [(h.base, h.grams) for h in p.herbs] == expected
    assert not [u for u in p.unparsed if u in ("中药处方", "二诊")]
