"""The parser never raises on a str (issue 8 item 1): GRPO rewards parse whatever a tiny model writes, and a
model's output ends anywhere, including right after a one-character processing or origin prefix."""

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shicheng.knowledge import load_knowledge
from shicheng.knowledge.lexicon import ORIGIN_PREFIXES, POSTFIXES, PREFIXES, SUFFIXES
from shicheng.prescription import NOTES, parse_prescription

KB = load_knowledge()
ENDINGS = sorted({*PREFIXES, *POSTFIXES, *SUFFIXES, *ORIGIN_PREFIXES, *NOTES})
UNITS = sorted({*KB.units.grams, *KB.units.counts, *KB.units.volumes, "剂", "付", "贴"})
LEXICON_CHARS = sorted({c for s in (*KB.surfaces, *KB.formulas, *KB.merged) for c in s})
PUNCT = list("，,、 \t/|:：。；;\n！？!?()（）[]{}<>\"'“”‘’*·.-~～%+×x各加去半十百廿卅一二两三")
WORDS = sorted({*KB.surfaces, *KB.formulas, *KB.merged, *ENDINGS, *UNITS})


def well_formed(text: str) -> None:
    """What every caller relies on: no exception, finite numbers, JSON out, herbs taken from the text."""
    parsed = parse_prescription(text, KB)
    out = json.dumps(parsed.to_dict(), ensure_ascii=False, allow_nan=False)
    assert "mentioned" in json.loads(out)
    for h in parsed.herbs:
        assert h.raw
        for x in (h.dose, h.grams):
            assert x is None or (math.isfinite(x) and x >= 0)


@pytest.mark.parametrize("text", ["柴胡10 白芍10 生", "大青盐", "白沙蜜", "患者女，32岁，籍贯四川", "产地：云南",
                                  "柴胡10g 黄芩", "法半夏10黄连5黄芩10干姜6生", "生", "炒", "蜜"])
def test_issue_examples_do_not_raise(text):
    well_formed(text)


def test_the_issue_crash_input_still_reads_its_herbs():
    p = parse_prescription("柴胡10 白芍10 生", KB)
    assert [(h.base, h.grams) for h in p.herbs] == [("柴胡", 10), ("白芍", 10)]
    assert p.unparsed == ["生"]  # reported, not dropped


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("head", ["", "柴胡10 白芍10 ", "黄芪30g当归", "患者男，45岁，", "10g", "大青"])
def test_every_prefix_suffix_and_note_at_the_end_of_the_text(head, ending):
    well_formed(head + ending)


@pytest.mark.parametrize("text", [
    "\ud800当归10g", "当归\udfff", "\x00\x01\x7f", "\ufeff柴胡10g", "当归\u200b10g", "١٢g当归", "𝟙𝟘g当归",
    "9" * 5000 + "g当归", "当归10-" + "9" * 400 + "g", "当归" + "0." * 300, "(" * 500, "各各各各10g", "去去去",
    "x" * 1000, "。" * 1000, "加减" * 100, "1.2.3.4.5.", "柴胡１０ｇ（先煎）", "黄芪30g\r\n当归10g\r\n",
])
def test_hostile_strings(text):
    well_formed(text)


def test_lone_surrogates_and_invisible_characters_do_not_hide_herbs():
    for text in ("\ud800当归10g", "当归\u200b10g", "\ufeff当归10g", "当\u00ad归10g"):
        assert [(h.base, h.grams) for h in parse_prescription(text, KB).herbs] == [("当归", 10)], repr(text)


def test_other_scripts_digits_are_read_as_digits():
    assert [(h.base, h.grams) for h in parse_prescription("当归١٢g", KB).herbs] == [("当归", 12)]


def test_an_absurd_number_is_not_a_dose():
    p = parse_prescription("当归" + "9" * 400 + "g", KB)
    assert all(h.grams is None or math.isfinite(h.grams) for h in p.herbs)


def test_none_is_empty_and_other_types_are_a_clear_error():
    assert parse_prescription(None, KB).herbs == []
    with pytest.raises(TypeError, match="text must be a str, not bytes"):
        parse_prescription("当归10g".encode(), KB)


pieces = st.one_of(
    st.sampled_from(WORDS),
    st.sampled_from(LEXICON_CHARS),
    st.sampled_from(PUNCT),
    st.sampled_from(UNITS),
    st.integers(min_value=0, max_value=10**12).map(str),
    st.decimals(min_value=0, max_value=1000, places=2, allow_nan=False).map(str),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(pieces, max_size=30), st.sampled_from(ENDINGS))
def test_property_random_strings_over_the_lexicon_never_raise(parts, ending):
    well_formed("".join(parts) + ending)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_property_any_text_never_raises(text):
    well_formed(text)


def test_long_inputs_stay_linear():
    """A model can write thousands of lines; copies are found without comparing every pair of them."""
    import time

    for text in ("柴胡10g\n" * 6000, "柴胡10g 黄芩10g。" * 6000, "患者头晕，舌红，脉弦。" * 6000, "桂枝汤 " * 6000):
        t0 = time.perf_counter()
        well_formed(text)
        assert time.perf_counter() - t0 < 8, text[:20]
    assert [(h.base, h.grams) for h in parse_prescription("柴胡10g\n" * 6000, KB).herbs] == [("柴胡", 10)]
