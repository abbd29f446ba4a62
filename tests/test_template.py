import json

from hypothesis import given, settings
from hypothesis import strategies as st

from shicheng.domain import Answer
from shicheng.template import parse_answer, parse_bench_json, render_answer, to_bench_json

FULL = Answer(
    reasoning="患者胃脘冷痛，喜温喜按，舌淡胖，脉沉细，属虚寒。",
    etiology_pathogenesis="脾肾阳虚，寒从中生，胃失温煦。",
    syndrome="脾肾阳虚证，兼寒凝气滞",
    treatment_principle="温补脾肾，散寒止痛",
    prescription="附子理中汤加减：制附子15g(先煎) 干姜10g 党参15g 炒白术12g 炙甘草6g",
    prescription_explanation="附子为君，干姜为臣。",
    master_theory="扶阳为先，重用附子。",
    modifications="呕吐加吴茱萸。",
    advice="忌生冷，注意保暖。",
)


def test_round_trip_chinese_and_english():
    for lang in ("zh", "en"):
        text = render_answer(FULL, lang=lang)
        parsed = parse_answer(text)
        assert parsed.answer == FULL, lang
        assert parsed.well_formed


def test_missing_and_reordered_sections_and_markdown():
    text = (
        "<think>先辨寒热\n<output>\n**治法**：温中散寒\n# 1. Syndrome\n脾胃虚寒证\n"
        "【处方】理中丸 党参10 干姜6\n### 病因病机：寒邪内盛\n</output>\n多余的尾巴 trailing"
    )
    p = parse_answer(text)
    assert p.answer.reasoning == "先辨寒热"
    assert p.answer.treatment_principle == "温中散寒"
    assert p.answer.syndrome == "脾胃虚寒证"
    assert p.answer.prescription == "理中丸 党参10 干姜6"
    assert p.answer.etiology_pathogenesis == "寒邪内盛"
    assert p.has_think and not p.think_closed
    assert p.trailing == "多余的尾巴 trailing"
    assert "advice" in p.missing() and not p.well_formed


def test_sentence_starting_with_heading_word_is_not_a_heading():
    p = parse_answer("<output>辨证：肝郁脾虚证\n诊断明确，按上方治疗。\n</output>")
    assert p.answer.syndrome == "肝郁脾虚证\n诊断明确，按上方治疗。"
    assert p.found == ["syndrome"]


def test_full_width_colon_and_missing_output_tags():
    p = parse_answer("病因病机：肝气郁结\n辨证（证候诊断）：肝郁气滞证\n医嘱：调畅情志")
    assert p.found == ["etiology_pathogenesis", "syndrome", "advice"]


def test_sections_subset_render():
    text = render_answer(FULL, sections=("syndrome",), think=False)
    assert "<think>" not in text and "## 辨证" in text and "处方" not in text


def test_bench_json_layout():
    bench = to_bench_json(FULL)
    assert list(bench) == ["思维链", "病因病机分析", "证候诊断", "治法", "处方", "方解", "症状变化与中药加减"]
    p = parse_bench_json("```json\n" + json.dumps(bench, ensure_ascii=False) + "\n```")
    assert p.answer.syndrome == FULL.syndrome and p.answer.modifications == FULL.modifications
    assert parse_bench_json({"证候诊断": ["气虚", "血瘀"]}).answer.syndrome == '["气虚", "血瘀"]'
    assert parse_bench_json("not json at all").found == []


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>/thinkoutpu#*【】:：\n 病因机辨证处方治法医嘱加减abc")) , max_size=200))
def test_never_raises_on_tag_soup(text):
    p = parse_answer(text)
    assert set(p.found) <= set(Answer.model_fields)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_never_raises_on_any_text(text):
    parse_answer(text)
    parse_bench_json(text)
