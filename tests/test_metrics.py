"""Deterministic per-answer metrics, checked against scores computed by hand (in the comments)."""

import json

import pytest

import shicheng.metrics.answer as metrics_answer
from shicheng.domain import Answer, HerbItem, Patient, Prescription, Task
from shicheng.metrics import (
    answer_metrics,
    base_herbs,
    completeness,
    composition_point,
    herb_match,
    statement_agreement,
)
from shicheng.prescription import parse_prescription

GOLD_RX = "柴胡10g 白芍12g 茯苓15g 甘草6g 半夏9g"
# Written with a processed form (炙甘草, 法半夏) and an alias (云苓): bases 甘草 茯苓 半夏 白术.
PRED_RX = "炙甘草6g 云苓15g 法半夏9g 白术10g"


def test_base_herbs_maps_aliases_and_processed_forms_and_keeps_order():
    assert base_herbs(PRED_RX) == ["甘草", "茯苓", "半夏", "白术"]
    # 生甘草 and 炙甘草 are one base herb: listed once, at its first place.
    assert base_herbs("生甘草3g 党参10g 炙甘草3g") == ["甘草", "党参"]
    assert base_herbs(["炙甘草", "云苓", "茯苓"]) == ["甘草", "茯苓"]
    # A herb the lexicon does not know keeps its written name rather than vanishing.
    assert base_herbs("柴胡10g 某某草10g") == ["柴胡", "某某草"]


def test_base_herbs_of_answer_text_reads_only_the_prescription_section():
    text = "<think>可用甘草</think><output>\n## 辨证\n脾虚\n## 处方\n炙甘草6g 云苓15g\n## 方解\n黄芪补气\n</output>"
    assert base_herbs(text) == ["甘草", "茯苓"]
    # Sections without 处方: herbs named in 方解 are not prescribed.
    assert base_herbs("## 辨证\n脾虚\n## 方解\n甘草调和诸药") == []
    # A bare prescription after the reasoning: the reasoning's herbs do not count.
    assert base_herbs("<think>考虑黄芪</think>茯苓10g") == ["茯苓"]


def test_base_herbs_of_hand_built_prescription_without_bases():
    rx = Prescription(herbs=[HerbItem(raw="炙甘草"), HerbItem(raw="云苓", grams=15)])
    assert base_herbs(rx) == ["甘草", "茯苓"]


def test_herb_match_counts_aliases_and_processed_forms_as_the_same_herb():
    m = herb_match(GOLD_RX, PRED_RX)
    # gold 5 herbs, pred 4; matched (gold order) 茯苓 甘草 半夏 = 3
    # precision 3/4 = 0.75, recall 3/5 = 0.6, F1 = 2·3/(4+5) = 2/3, points = 3/5 × 9 = 5.4
    assert m.matched == ("茯苓", "甘草", "半夏")
    assert m.missing == ("柴胡", "白芍")
    assert m.extra == ("白术",)
    assert m.precision == pytest.approx(0.75)
    assert m.recall == pytest.approx(0.6)
    assert m.f1 == pytest.approx(2 / 3)
    assert m.points == pytest.approx(5.4)


def test_herb_match_accepts_prescriptions_lists_and_answer_text_alike():
    by_text = herb_match(GOLD_RX, PRED_RX)
    by_rx = herb_match(parse_prescription(GOLD_RX).prescription, parse_prescription(PRED_RX).prescription)
    by_list = herb_match(["柴胡", "白芍", "茯苓", "甘草", "半夏"], ["炙甘草", "云苓", "法半夏", "白术"])
    by_answer = herb_match(GOLD_RX, f"<output>\n## 辨证\n肝郁脾虚\n## 处方\n{PRED_RX}\n</output>")
    assert by_text == by_rx == by_list == by_answer
    assert json.loads(json.dumps(by_text.to_dict()))["points"] == pytest.approx(5.4)


def test_herb_match_edge_cases_are_none_where_undefined():
    # Nothing predicted: precision 0/0 undefined; recall 0/3 = 0, F1 0, points 0.
    m = herb_match("党参 白术 茯苓", "")
    assert (m.precision, m.recall, m.f1, m.points) == (None, 0.0, 0.0, 0.0)
    assert m.missing == ("党参", "白术", "茯苓")
    # No gold herbs: recall, F1 and points do not apply; precision 0/2 = 0.
    m = herb_match([], "党参 白术")
    assert (m.precision, m.recall, m.f1, m.points) == (0.0, None, None, None)
    # Unknown herbs match by their written name: gold 柴胡 某某草, pred 甘草 某某草 -> 1/2 × 9 = 4.5.
    m = herb_match("柴胡10g 某某草10g", "甘草6g 某某草10g")
    assert m.matched == ("某某草",) and m.points == pytest.approx(4.5)
    with pytest.raises(TypeError, match="herb names must be strings"):
        herb_match(["甘草", 3], "甘草")


def test_composition_point_is_zero_only_for_18_fan_and_19_wei_pairs():
    assert composition_point("甘草6g 海藻10g") == 0.0  # 十八反
    assert composition_point("炙甘草6g 海藻10g") == 0.0  # processed form still 甘草
    assert composition_point("人参10g 五灵脂10g") == 0.0  # 十九畏
    assert composition_point("党参10g 白术10g 茯苓10g 炙甘草6g") == 1.0
    # Pregnancy and dose findings are not about composition: they do not cost the point.
    assert composition_point("三棱10g 附子30g") == 1.0
    # Nothing prescribed: no composition to call sound (the rubric scores an unanswered item 0).
    assert composition_point("") == 0.0
    assert composition_point(Prescription(herbs=[HerbItem(raw="炙甘草"), HerbItem(raw="海藻")])) == 0.0


def test_completeness_is_the_share_of_the_tasks_required_sections():
    answer = Answer(syndrome="脾虚", treatment_principle="健脾", prescription="党参10g")
    # full chain requires 7 sections (master_theory optional, reasoning apart); 3 present -> 3/7.
    share, missing = completeness(answer, Task.full_chain)
    assert share == pytest.approx(3 / 7)
    assert missing == ["etiology_pathogenesis", "prescription_explanation", "modifications", "advice"]
    assert completeness(answer, "syndrome") == (1.0, [])
    assert completeness(Answer(), Task.prescription) == (0.0, ["prescription"])
    assert completeness(Answer(modifications="加砂仁"), Task.modification) == (1.0, [])
    with pytest.raises(ValueError, match="unknown task 'diagnose'"):
        completeness(answer, "diagnose")


def test_statement_agreement_normalises_framing_words_order_and_final_zheng():
    # gold clauses 脾胃虚寒 (证 dropped), 气滞; pred 气滞, 脾胃虚寒: same set -> exact; chars identical -> F1 1.
    assert statement_agreement("气滞，脾胃虚寒", "主证：脾胃虚寒证；兼证：气滞") == (True, 1.0)
    # principle: gold 温中健脾 理气 (6 chars), pred 温中健脾 (4 chars), overlap 4 -> F1 = 8/10.
    exact, f1 = statement_agreement("温中健脾", "治法：温中健脾，理气", kind="principle")
    assert exact is False and f1 == pytest.approx(0.8)
    assert statement_agreement("理气、温中健脾", "治法：温中健脾，理气", kind="principle")[0] is True
    assert statement_agreement("", "肝郁脾虚证") == (False, 0.0)
    assert statement_agreement("肝郁脾虚", None) == (None, None)
    assert statement_agreement("肝鬱脾虛", "肝郁脾虚")[0] is True  # traditional characters


GOLD = Answer(syndrome="主证：脾胃虚寒证；兼证：气滞", treatment_principle="治法：温中健脾，理气",
              prescription="党参15g 白术10g 干姜6g 炙甘草6g 木香6g")
OUTPUT = ("<think>脾阳不足</think><output>\n## 辨证\n气滞，脾胃虚寒\n## 治则治法\n温中健脾\n"
          "## 处方\n党参10g 白术10g 干姜6g 生甘草3g 炙甘草3g 三棱10g\n</output>")


def test_answer_metrics_full_chain_by_hand():
    row = answer_metrics(GOLD, OUTPUT, Task.full_chain, Patient(sex="female", pregnant=True))
    json.dumps(row, ensure_ascii=False)  # flat and JSON-able
    assert row["status"] == "ok" and row["unparseable_parts"] is None
    assert row["completeness"] == pytest.approx(3 / 7)  # 辨证, 治则治法, 处方 of 7
    assert row["well_formed"] is False
    # pred bases 党参 白术 干姜 甘草 三棱 (5), gold 5, matched 4 -> P = R = F1 = 0.8, points 4/5 × 9 = 7.2
    assert (row["herbs_gold"], row["herbs_pred"], row["herbs_matched"]) == (5, 5, 4)
    assert row["herb_f1"] == pytest.approx(0.8) and row["herb_points"] == pytest.approx(7.2)
    # doses on matched herbs: 党参 15 vs 10 (|5|, rel 1/3), 白术 0, 干姜 0, 甘草 6 vs 3+3 (0)
    # -> MAE 5/4 = 1.25 g, relative (1/3)/4 = 1/12
    assert row["dose_n"] == 4
    assert row["dose_mae_g"] == pytest.approx(1.25)
    assert row["dose_rel_error"] == pytest.approx(1 / 12)
    assert row["composition_point"] == 1.0  # no 十八反/十九畏 pair
    assert (row["syndrome_exact"], row["syndrome_char_f1"]) == (True, 1.0)
    assert row["principle_exact"] is False and row["principle_char_f1"] == pytest.approx(0.8)
    # pregnant patient: 三棱 is 妊娠禁用 (an error), nothing else applies
    assert row["safety_error"] == 1 and row["safety_妊娠禁用"] == 1
    assert row["safety_warning"] == 0 and row["safety_十八反"] == 0
    assert row["followup_added_f1"] is None  # first visit


def test_answer_metrics_not_applicable_is_none_never_zero():
    # Reference-free (no gold): herb match and agreement do not apply; completeness, composition and
    # safety do.
    row = answer_metrics(None, OUTPUT, Task.full_chain)
    assert row["herb_f1"] is None and row["herb_points"] is None and row["syndrome_exact"] is None
    assert row["composition_point"] == 1.0 and row["safety_error"] == 0
    # A syndrome task asks for no prescription.
    row = answer_metrics(GOLD, "## 辨证\n脾胃虚寒证，气滞", "syndrome")
    assert row["completeness"] == 1.0 and row["syndrome_exact"] is True
    assert row["herb_f1"] is None and row["has_prescription"] is None and row["composition_point"] is None
    assert row["principle_exact"] is None and row["safety_error"] is None
    # A prescription task answered without a prescription fails (0), it is not "not applicable".
    row = answer_metrics(GOLD, "## 辨证\n脾虚", Task.prescription)
    assert row["has_prescription"] is False and row["completeness"] == 0.0
    assert (row["herb_recall"], row["herb_f1"], row["herb_points"], row["composition_point"]) == (0, 0, 0, 0)
    assert row["herb_precision"] is None and row["dose_mae_g"] is None


def previous() -> Prescription:
    return parse_prescription("党参15g 白术10g 干姜6g 炙甘草6g 木香6g").prescription


def test_followup_added_and_removed_f1():
    gold = Answer(prescription="上方去木香加砂仁6g")  # gold new: +砂仁, −木香
    # pred written relative to the previous visit: +陈皮, −木香 -> added F1 0, removed F1 1
    row = answer_metrics(gold, "## 处方\n上方去木香加陈皮6g", Task.prescription, None, previous())
    assert (row["followup_added_f1"], row["followup_removed_f1"]) == (0.0, 1.0)
    assert (row["followup_gold_added"], row["followup_gold_removed"]) == (1, 1)
    # herb match is against the full new gold prescription 党参 白术 干姜 甘草 砂仁: 4 of 5 -> 7.2
    assert row["herb_points"] == pytest.approx(7.2)
    # pred in full: added {砂仁, 陈皮} vs {砂仁} -> 2·1/(2+1) = 2/3; removed {木香} vs {木香} -> 1
    row = answer_metrics(gold, "## 处方\n党参15g 白术10g 干姜6g 甘草6g 砂仁6g 陈皮6g", "prescription", None,
                         previous())
    assert row["followup_added_f1"] == pytest.approx(2 / 3) and row["followup_removed_f1"] == 1.0
    # unchanged by both: agreement on "nothing added, nothing removed" is 1, not undefined
    row = answer_metrics(Answer(prescription="守上方"), "## 处方\n上方续服", "prescription", None, previous())
    assert (row["followup_added_f1"], row["followup_removed_f1"]) == (1.0, 1.0)
    # no predicted prescription at a follow-up: 0 on both
    row = answer_metrics(gold, "## 辨证\n脾虚", "prescription", None, previous())
    assert (row["followup_added_f1"], row["followup_removed_f1"]) == (0.0, 0.0)


def test_followup_modification_task_reads_add_and_remove_lines():
    gold = Answer(prescription="上方去木香加砂仁6g", modifications="腹胀已减，去木香，加砂仁")
    row = answer_metrics(gold, "## 随症加减\n加：砂仁6g\n去：木香", Task.modification, None, previous())
    assert (row["followup_added_f1"], row["followup_removed_f1"]) == (1.0, 1.0)
    assert row["herb_f1"] is None  # the modification task asks for no 处方 section
    row = answer_metrics(gold, "## 随症加减\n去：干姜\n调整后处方：党参15g 白术10g 炙甘草6g 木香6g 砂仁6g",
                         "modification", None, previous())
    # 调整后处方 wins over the 加/去 lines: added {砂仁} -> 1; removed {干姜} vs {木香} -> 0
    assert (row["followup_added_f1"], row["followup_removed_f1"]) == (1.0, 0.0)


def test_parser_exception_gives_unparseable_not_a_crash(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("parser bug")

    monkeypatch.setattr(metrics_answer, "parse_prescription", broken)
    row = answer_metrics(GOLD, OUTPUT, Task.full_chain)
    assert row["status"] == "unparseable"
    assert row["unparseable_parts"] == "gold_prescription,prescription"
    assert row["herb_f1"] is None and row["composition_point"] is None and row["has_prescription"] is None
    assert row["syndrome_exact"] is True  # the parts that could be read are still scored
    monkeypatch.setattr(metrics_answer, "parse_answer", broken)
    row = answer_metrics(GOLD, OUTPUT, Task.full_chain)
    assert row["status"] == "unparseable" and row["unparseable_parts"].startswith("answer")
    assert row["completeness"] is None and row["syndrome_exact"] is None
