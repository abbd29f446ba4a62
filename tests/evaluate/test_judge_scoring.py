"""Hybrid scoring and the rubric's rules on hand-made answers whose scores are worked out by hand
(tests/helpers/judge_data.py), and the panel: per-judge and mean scores, agreement, judge-vs-code herbs."""

from __future__ import annotations

import pytest

from shicheng.evaluate.judge import Verdict, judge_predictions
from shicheng.evaluate.judge_backends import OpenAIJudge
from shicheng.evaluate.judge_panel import agreement, herb_count_table, icc, panel_scores, summarize
from shicheng.evaluate.rubric import load_rubric
from tests.helpers import judge_data as data
from tests.helpers.judge_server import JudgeServer, schema_of, verdict_reply

RUBRIC = load_rubric()


def judged(rows, reply, tmp_path, **kw):
    with JudgeServer(reply) as server:
        judge = OpenAIJudge(server.url, server.model, timeout_s=5, backoff_s=0.01)
        verdicts = judge_predictions(rows, data.cases(), [judge], RUBRIC, masters=data.masters(),
                                     cache_dir=tmp_path, progress=False, **kw)
    return verdicts, server


def miscounting(messages, body):
    # Half marks on what it judges; on the herbs it says 3 of 5 matched, 5.4 points.
    return verdict_reply(schema_of(body), 0.5, herb_counts={"matched": 3, "gold": 5},
                         scores__prescription__herb_match=5.4, scores__prescription__composition=1)


def crit(v: Verdict, item: str, key: str):
    return next(c for it in v.items if it.key == item for c in it.criteria if c.key == key)


def test_hybrid_scoring_shows_the_judges_herb_miscount_beside_our_count(tmp_path):
    [v], _ = judged([data.row(data.GOOD)], miscounting, tmp_path)
    herb = crit(v, "prescription", "herb_match")
    assert (herb.points, herb.code_points, herb.judge_points, herb.source) == (9.0, 9.0, 5.4, "code")
    assert v.herbs_code["matched_count"] == v.herbs_code["gold_count"] == 5
    assert v.herbs_code["matched"] == ["附子", "干姜", "党参", "白术", "甘草"]  # 附片 = 附子, 生甘草 = 甘草
    assert v.herbs_judge == {"matched": 3, "gold": 5}
    # Totals: ours uses 9 for the herbs and 5 for completeness; the judge's 5.4 and 2.5.
    assert v.total - v.judge_total == pytest.approx((9 - 5.4) + (5 - 2.5))
    [row] = herb_count_table([v])
    assert (row["code_matched"], row["code_gold"], row["judge_matched"], row["judge_gold"]) == (5, 5, 3, 5)
    assert (row["code_points"], row["judge_points"], row["agree"]) == (9.0, 5.4, False)


def test_judge_scoring_uses_the_judges_numbers_and_keeps_ours_beside(tmp_path):
    [v], _ = judged([data.row(data.GOOD)], miscounting, tmp_path, scoring="judge")
    herb = crit(v, "prescription", "herb_match")
    assert (herb.points, herb.code_points, herb.source) == (5.4, 9.0, "judge")
    assert v.completeness.points == 2.5 and v.completeness.code_points == 5
    assert v.total == pytest.approx(v.judge_total)


def test_unanswered_items_score_zero_and_are_listed_whatever_the_judge_said(tmp_path):
    # PARTIAL lacks 治则治法 and 名医特色理论应用; the judge (half marks everywhere) does not notice.
    [v], _ = judged([data.row(data.PARTIAL)], lambda m, b: verdict_reply(schema_of(b), 0.5), tmp_path)
    assert v.missing == ["treatment_principle", "master_theory"] and v.judge_missing == []
    items = {it.key: it for it in v.items}
    for key in v.missing:
        assert not items[key].answered and items[key].points == 0
        assert all(c.points == 0 and c.source == "unanswered" and c.judge_points > 0 for c in items[key].criteria)
    assert v.completeness.points == pytest.approx(3 / 5 * 5)
    # 附子 干姜 白术 甘草 of 附子 干姜 党参 白术 甘草: 4/5 × 9 = 7.2; 甘草 with 海藻 is 十八反: composition 0.
    assert crit(v, "prescription", "herb_match").points == pytest.approx(7.2)
    assert crit(v, "prescription", "composition").points == 0
    # Judged at half marks: etiology 5 + syndrome 5 = 10; total = 3 + 10 + 7.2 + 0.
    assert v.total == pytest.approx(20.2) and v.max_total == 55


def test_a_gold_answer_without_an_item_shrinks_the_maximum(tmp_path):
    [v], server = judged([data.row(data.GOOD, case_id="judge-b")], lambda m, b: verdict_reply(schema_of(b), 1.0),
                         tmp_path)
    assert v.max_total == 45 and [it.key for it in v.items] == ["etiology_pathogenesis", "syndrome",
                                                                "treatment_principle", "prescription"]
    assert "master_theory" not in schema_of(server.requests[0])["properties"]["scores"]["properties"]
    assert v.total == 45 and v.share == 1.0


def test_a_follow_up_is_matched_against_the_gold_applied_to_the_previous_visit(tmp_path):
    # Visit 2's gold is 上方去党参，加肉桂: 附子 干姜 白术 甘草 肉桂. GOOD keeps 党参 and lacks 肉桂: 4/5.
    [v], server = judged([data.row(data.GOOD, visit=2)], lambda m, b: verdict_reply(schema_of(b), 0.5), tmp_path)
    assert v.herbs_code["missing"] == ["肉桂"] and v.herbs_code["extra"] == ["党参"]
    assert crit(v, "prescription", "herb_match").points == pytest.approx(7.2)
    assert v.max_total == 35  # the visit-2 gold has only 辨证, 治则治法, 处方
    prompt = server.requests[0]["messages"][1]["content"]
    assert "合并上次处方后" in prompt and "上次处方" in prompt


def test_nothing_answered_is_decided_by_the_rule_without_a_call(tmp_path):
    [v], server = judged([data.row(data.EMPTY)], lambda m, b: pytest.fail("no call expected"), tmp_path)
    assert server.calls == 0 and v.status == "scored" and not v.judge_called
    assert v.total == 0 and v.missing == ["etiology_pathogenesis", "syndrome", "treatment_principle", "prescription",
                                          "master_theory"]
    assert all(it.points == 0 and not it.answered for it in v.items) and v.completeness.points == 0


def test_a_single_section_task_answered_in_plain_prose_is_judged(tmp_path):
    rows = [data.row("<think>阳虚。</think>脾胃虚寒证，兼有气滞。", task="syndrome")]
    [v], server = judged(rows, lambda m, b: verdict_reply(schema_of(b), 1.0), tmp_path)
    assert [it.key for it in v.items] == ["syndrome"] and v.max_total == 15 and v.total == 15
    assert "脾胃虚寒证，兼有气滞。" in server.requests[0]["messages"][1]["content"]


def test_tasks_the_rubric_does_not_score_are_not_applicable(tmp_path):
    rows = [data.row(data.GOOD, task="advice"), data.row(data.GOOD, case_id="judge-c")]
    verdicts, server = judged(rows, lambda m, b: verdict_reply(schema_of(b), 0.5), tmp_path, mode="reference")
    assert [v.status for v in verdicts] == ["not_applicable", "not_applicable"] and server.calls == 0
    assert "asks for no section the rubric scores" in verdicts[0].reason
    assert "no gold answer" in verdicts[1].reason
    assert summarize(verdicts)["judge-test"]["not_applicable"] == 2


def test_a_case_without_gold_is_judged_reference_free(tmp_path):
    [v], server = judged([data.row(data.GOOD, case_id="judge-c")], lambda m, b: verdict_reply(schema_of(b), 0.5),
                         tmp_path)
    assert v.mode == "reference_free" and v.status == "scored" and v.herbs_code is None and v.herbs_judge is None
    schema = schema_of(server.requests[0])
    assert "herb_counts" not in schema["properties"]
    fit = crit(v, "prescription", "herb_fit")
    assert (fit.points, fit.source) == (4.5, "judge")
    assert crit(v, "prescription", "composition").points == 1.0  # our code needs no gold for it
    assert "没有标准答案" in server.requests[0]["messages"][1]["content"]


def test_without_a_master_the_theory_item_is_not_scored(tmp_path):
    [v], _ = judged([data.row(data.GOOD, master=None)], lambda m, b: verdict_reply(schema_of(b), 0.5), tmp_path)
    assert "master_theory" not in [it.key for it in v.items] and v.max_total == 45


# --- the panel ------------------------------------------------------------------------------------------

def _v(judge: str, unit: int, total: float | None, max_total: float = 1.0) -> Verdict:
    return Verdict(case_id=f"c{unit}", visit=1, master=None, task="full_chain", system="s", judge=judge,
                   judge_identity={}, rubric_version="t", mode="reference", scoring="hybrid",
                   status="scored" if total is not None else "unscored", total=total, max_total=max_total)


def test_icc_matches_shrout_and_fleiss_1979():
    # Their Table 2: six targets, four judges. Published: ICC(2,1) = .29, ICC(3,1) = .71.
    x = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]
    got = icc(x)
    assert round(got["icc2_1"], 2) == 0.29 and round(got["icc3_1"], 2) == 0.71


def test_krippendorff_alpha_matches_the_published_example_with_missing_ratings():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers × 12 units, gaps
    # as None; interval alpha = 0.849.
    d = [[1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None], [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
         [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None], [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]]
    verdicts = [_v(f"j{j}", u, value) for j, ratings in enumerate(d) for u, value in enumerate(ratings)]
    got = agreement(verdicts)
    assert round(got["alpha_interval"], 3) == 0.849
    assert got["units"] == 12 and got["complete_units"] == 8  # units 2-9, rated by all four observers


def test_pairwise_correlations_and_means_of_a_panel():
    a = [10, 20, 30, 40, 50]
    verdicts = [_v("a", u, t, 55) for u, t in enumerate(a)] + [_v("b", u, 2 * t + 1, 55) for u, t in enumerate(a)] \
        + [_v("c", u, 55 - t, 55) for u, t in enumerate(a)]
    got = agreement(verdicts)
    pairs = {tuple(p["judges"]): p for p in got["pairs"]}
    assert pairs["a", "b"]["pearson"]["r"] == pytest.approx(1.0) and pairs["a", "b"]["spearman"]["r"] == pytest.approx(1.0)
    assert pairs["a", "c"]["pearson"]["r"] == pytest.approx(-1.0) and pairs["a", "c"]["n"] == 5
    rows = panel_scores(verdicts)
    assert rows[0]["totals"] == {"a": 10, "b": 21, "c": 45} and rows[0]["mean_total"] == pytest.approx(76 / 3)


def test_an_unscored_verdict_is_left_out_of_the_mean_not_counted_as_zero():
    verdicts = [_v("a", 0, 40, 55), _v("b", 0, None, 55)]
    [row] = panel_scores(verdicts)
    assert row["mean_total"] == 40 and row["judges_scored"] == 1 and row["statuses"]["b"] == "unscored"
    assert agreement(verdicts)["pairs"][0]["n"] == 0
    assert agreement([_v("a", 0, 1)])["note"] == "agreement needs at least two judges"


def test_panel_from_two_real_judges_and_item_level_agreement(tmp_path):
    rows = [data.row(o, system=s) for o, s in ((data.GOOD, "g"), (data.PARTIAL, "p"), (data.EMPTY, "e"),
                                               (data.good_variant(1), "v"))]
    with JudgeServer(lambda m, b: verdict_reply(schema_of(b), 0.8), model="deepseek-test") as a, \
            JudgeServer(lambda m, b: verdict_reply(schema_of(b), 0.6), model="gpt-test") as b:
        judges = [OpenAIJudge(s.url, s.model, backoff_s=0.01) for s in (a, b)]
        verdicts = judge_predictions(rows, data.cases(), judges, RUBRIC, masters=data.masters(), cache_dir=tmp_path,
                                     progress=False)
    by = {(v.system, v.judge): v for v in verdicts}
    # Syndrome is judged: 0.8 × 10 = 8 and 0.6 × 10 = 6 where answered; the empty answer 0 for both.
    assert [by[s, "deepseek-test"].items[1].points for s in "gpev"] == pytest.approx([8, 8, 0, 8])
    assert [by[s, "gpt-test"].items[1].points for s in "gpev"] == pytest.approx([6, 6, 0, 6])
    got = agreement(verdicts, item="syndrome")
    assert got["on"] == "syndrome" and got["pairs"][0]["pearson"]["r"] == pytest.approx(1.0)
    assert got["pairs"][0]["mean_abs_diff"] == pytest.approx(1.5)
    assert len(panel_scores(verdicts)) == 4


def test_a_counterfactual_row_is_judged_reference_free_against_the_asked_master(tmp_path):
    rows = [data.row(data.GOOD, master="su-qingyuan")]
    [v], server = judged(rows, lambda m, b: verdict_reply(schema_of(b), 0.5), tmp_path)
    assert v.counterfactual and v.mode == "reference_free" and v.status == "scored"
    prompt = server.requests[0]["messages"][1]["content"]
    assert "苏清源" in prompt and "没有标准答案" in prompt and "李守阳重视阳气" not in prompt.split("【模型回答】")[0]
    [forced], _ = judged(rows, lambda m, b: verdict_reply(schema_of(b), 0.5), tmp_path, mode="reference")
    assert forced.counterfactual and forced.mode == "reference"
