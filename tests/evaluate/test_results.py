"""results.json on hand-made predictions (tests/helpers/report_data.py): the leaderboard equals what
metrics.answer_metrics and stats.bootstrap_ci give, the hand-computed herb scores, the counterfactual
switch matrix, safety counts, the judge's radar and totals from real verdicts (loopback judges), the
paired tests, the worst answers, and a JSON round trip without NaN."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from shicheng.evaluate.judge_panel import herb_count_table
from shicheng.evaluate.results import build_results, clean, write_results
from shicheng.evaluate.stats import bootstrap_ci, compare_systems
from shicheng.metrics import answer_metrics
from shicheng.template import render_answer
from tests.helpers import report_data as d

N_BOOT, SEED = 400, 7


def build(predictions=None, **kw):
    options = {"train_cases": d.train_cases(), "masters": d.masters(), "n_boot": N_BOOT, "seed": SEED} | kw
    return build_results(d.predictions() if predictions is None else predictions, d.cases(), **options)


@pytest.fixture(scope="module")
def plain():
    return build()


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory):
    return d.judged(d.predictions(), tmp_path_factory.mktemp("judge-cache"))


@pytest.fixture(scope="module")
def judged(verdicts):
    return build(verdicts=verdicts)


def test_leaderboard_equals_answer_metrics_and_bootstrap(plain):
    cases = d.cases()
    for system in ("gold", "stage-5", "baseline"):
        rows = [r for r in d.predictions() if r["system"] == system and "case_master" not in r]
        metrics = []
        for r in rows:
            visit = cases[r["case_id"]].visits[r["visit"] - 1]
            previous = d.LI_GOLD_1.prescription if r["visit"] == 2 else None
            metrics.append(answer_metrics(visit.answer, r["output"], r["task"], cases[r["case_id"]].patient, previous))
        board = plain["leaderboard"]["systems"][system]
        assert (board["n_answers"], board["n_cases"]) == (5, 4)
        for name in ("herb_f1", "herb_points", "completeness", "syndrome_char_f1", "principle_char_f1",
                     "composition_point", "safety_warning"):
            want = bootstrap_ci([m[name] for m in metrics], [r["case_id"] for r in rows], n_boot=N_BOOT, seed=SEED)
            got = board["metrics"][name]
            assert (got["mean"], got["ci_low"], got["ci_high"], got["n"], got["n_cases"]) == pytest.approx(
                (want.mean, want.ci_low, want.ci_high, want.n, want.n_cases)), (system, name)


def test_hand_computed_herb_scores_of_stage_5(plain):
    answers = {(a["case_id"], a["visit"]): a for a in plain["answers"] if a["system"] == "stage-5"
               and not a["counterfactual"]}
    for key, f1 in d.STAGE5_HERB_F1.items():
        assert answers[key]["herb_f1"] == pytest.approx(f1), key
    first = answers[("t-li-1", 1)]  # 附子 干姜 党参 白术 of the gold's 附子 干姜 党参 白术 甘草
    assert (first["herb_precision"], first["herb_recall"], first["herb_points"]) == pytest.approx((1.0, 0.8, 7.2))
    # The gold's 上方去党参，加肉桂6g applied to visit 1 is what the second visit is scored against.
    assert answers[("t-li-1", 2)]["herbs_gold"] == 5
    assert answers[("t-su-1", 1)]["completeness"] == pytest.approx(6 / 7)  # no 医嘱
    assert answers[("t-su-1", 1)]["missing_sections"] == "advice"
    mean = plain["leaderboard"]["systems"]["stage-5"]["metrics"]["herb_f1"]["mean"]
    assert mean == pytest.approx(d.STAGE5_HERB_F1_MEAN)  # each case weighs the same: t-li-1's visits average first
    assert plain["leaderboard"]["systems"]["gold"]["metrics"]["herb_f1"]["mean"] == 1.0


def test_counterfactual_rows_feed_the_switch_matrix_not_the_leaderboard(plain):
    assert plain["counts"] == {"predictions": 17, "normal": 15, "counterfactual": 2, "cases": 4, "unparseable": 0,
                               "per_system": {"gold": 5, "stage-5": 7, "baseline": 5}}
    style = plain["style"]["systems"]["stage-5"]
    assert style["attribution"]["matrix"] == [[3, 0, 0], [0, 2, 0]] and style["attribution"]["accuracy"] == 1.0
    switch = plain["style"]["counterfactual"]["stage-5"]
    assert switch["rows"] == [d.LI, d.SU] and switch["columns"] == [d.LI, d.SU, "(none)"]
    # Asked as 李守阳: three own cases kept, t-su-1 stayed with 苏清源; asked as 苏清源: two own + t-li-1 switched.
    assert switch["matrix"] == [[3, 1, 0], [0, 3, 0]]
    assert (switch["n_switch"], switch["switch_rate"], switch["stay_rate"]) == (2, 0.5, 0.5)
    assert set(plain["style"]["counterfactual"]) == {"stage-5"}
    cf = {a["case_id"]: a for a in plain["answers"] if a["counterfactual"]}
    assert cf["t-li-1"]["style_match"] == 1.0 and cf["t-su-1"]["style_match"] == 0.0
    assert cf["t-su-1"]["case_master"] == d.SU and cf["t-su-1"]["style_attributed"] == d.SU
    # The gold answers read the same way as the gold distribution: no divergence.
    assert plain["style"]["systems"]["gold"]["herb_js"] == {d.LI: 0.0, d.SU: 0.0}


def test_safety_findings_are_counted_by_rule_and_level():
    unsafe = d.row("unsafe", "t-li-1", render_answer(d.li_answer("附子15g 干姜10g 甘草6g 海藻10g")))
    results = build([*d.predictions(), unsafe])
    [row] = [s for s in results["safety"] if s["system"] == "unsafe"]
    assert row["by_rule"]["十八反"] == 1 and row["by_level"]["error"] == 1
    assert (row["answers"], row["answers_checked"], row["answers_with_error"]) == (1, 1, 1)
    modes = {(s["system"], s["mode"]) for s in results["safety"]}
    assert ("stage-5", "counterfactual") in modes and ("gold", "counterfactual") not in modes


def test_paired_tests_default_to_every_system_against_the_first(plain):
    pairs = list(dict.fromkeys((p["system_a"], p["system_b"]) for p in plain["paired"]))
    assert pairs == [("stage-5", "gold"), ("baseline", "gold")]
    normal = [r for r in plain["answers"] if not r["counterfactual"]]
    [want] = compare_systems(normal, "stage-5", "gold", ["herb_f1"], n_boot=N_BOOT, seed=SEED)
    [got] = [p for p in plain["paired"] if p["system_a"] == "stage-5" and p["metric"] == "herb_f1"]
    assert got == pytest.approx(want)
    assert got["mean_diff"] == pytest.approx(d.STAGE5_HERB_F1_MEAN - 1.0) and got["n_clusters"] == 4

    chosen = build(pairs=[("stage-5", "baseline")])
    assert {(p["system_a"], p["system_b"]) for p in chosen["paired"]} == {("stage-5", "baseline")}
    with pytest.raises(ValueError, match="no predictions for system 'stage-9'"):
        build(pairs=[("stage-9", "gold")])


def test_worst_answers_carry_their_case_and_never_a_perfect_one(plain):
    worst = [w for w in plain["worst"] if w["system"] == "stage-5"]
    assert [(w["case_id"], w["visit"]) for w in worst] == [("t-su-2", 1), ("t-li-1", 1), ("t-su-1", 1)]
    first = worst[0]
    assert first["herb_f1"] == pytest.approx(1 / 3) and first["why"] == ["herb_f1"]
    assert "咳嗽，咽痒" in first["case_text"] and "桑叶10g 薄荷6g" in first["output"]
    assert "杏仁9g" in first["gold"] and "<output>" not in first["gold"]
    assert first["herbs"]["matched"] == ["桑叶"] and first["herbs"]["extra"] == ["薄荷"]
    assert all(w["herb_f1"] < 1 for w in plain["worst"])
    assert not any(w["system"] == "gold" for w in plain["worst"])


def test_json_round_trip_without_nan(plain, tmp_path):
    path = write_results(plain, tmp_path)
    assert path.name == "results.json"

    def refuse(constant):
        raise AssertionError(f"{constant} in results.json")

    back = json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)
    assert back == plain
    assert back["schema_version"] == 1 and back["rubric_version"] == "paper-55-v1"
    assert (back["seed"], back["n_boot"]) == (SEED, N_BOOT)
    assert all(len(back["inputs_sha256"][k]) == 64 for k in ("predictions", "cases", "train_cases"))
    assert back["inputs_sha256"]["verdicts"] is None
    assert clean({"a": float("nan"), "b": np.float64(1.5), "c": (np.int64(2), math.inf), "d": np.bool_(True)}) == \
        {"a": None, "b": 1.5, "c": [2, None], "d": True}


def test_input_digests_follow_the_inputs(plain, tmp_path):
    again = build()
    assert again["inputs_sha256"] == plain["inputs_sha256"]
    rows = d.predictions()
    rows[0] = rows[0] | {"output": rows[0]["output"] + "\n"}
    assert build(rows)["inputs_sha256"]["predictions"] != plain["inputs_sha256"]["predictions"]
    f = tmp_path / "p.jsonl"
    f.write_text("x\n", encoding="utf-8")
    with_file = build(input_files={"predictions": f})
    assert with_file["inputs_sha256"]["predictions_file"] == \
        "73cb3858a687a8494ca3323053016282f3dad39d42cf62ca4e79dda2aac7d9ac"  # sha256 of b"x\n"


def test_judge_sections_from_real_verdicts(judged, verdicts):
    judge = judged["judge"]
    assert judge["available"] and judge["judges"] == ["deepseek-chat", "gpt-4o"]
    # gpt-like fails (HTTP 500) on stage-5's t-su-2: unscored, counted, never 0.
    assert judge["unscored"] == {"total": 1, "by_judge": {"deepseek-chat": 0, "gpt-4o": 1}}
    t_su_2 = next(a for a in judged["answers"] if a["system"] == "stage-5" and a["case_id"] == "t-su-2")
    deep = next(v for v in verdicts if v.judge == "deepseek-chat" and v.system == "stage-5" and v.case_id == "t-su-2")
    assert t_su_2["judge_total:gpt-4o"] is None and t_su_2["judge_share"] == pytest.approx(deep.share)

    # Radar: per judge × master, one series per system, each item's mean points over its maximum.
    normal = [v for v in verdicts if v.status == "scored" and not v.counterfactual]
    chart = next(c for c in judge["radar"]["charts"] if c["judge"] == "gpt-4o" and c["master"] == d.SU)
    for system, series in chart["series"].items():
        part = [v for v in normal if v.judge == "gpt-4o" and v.master == d.SU and v.system == system]
        for key, value in series.items():
            shares = [it.points / it.max_points for v in part for it in v.items if it.key == key]
            assert value == (pytest.approx(np.mean(shares)) if shares else None), (system, key)
    assert [it["key"] for it in judge["radar"]["items"]] == ["etiology_pathogenesis", "syndrome",
                                                             "treatment_principle", "prescription", "master_theory"]

    # Totals per master × system: the mean over cases of the verdicts' totals.
    cell = next(t for t in judge["totals"] if (t["judge"], t["system"], t["master"]) == ("deepseek-chat", "gold", d.LI))
    li = {v.case_id: [] for v in normal if v.master == d.LI}
    for v in normal:
        if (v.judge, v.system, v.master) == ("deepseek-chat", "gold", d.LI):
            li[v.case_id].append(v.total)
    assert cell["total"]["mean"] == pytest.approx(np.mean([np.mean(x) for x in li.values()]))
    assert cell["total"]["n"] == 3 and cell["max_total_mean"] < 55  # visit 2's gold has three sections only

    # Judge vs code herbs: the table of judge_panel, summarised per judge.
    assert judge["herb_counts"]["rows"] == herb_count_table(verdicts)
    gpt = judge["herb_counts"]["summary"]["gpt-4o"]
    assert gpt["n"] == sum(r["judge"] == "gpt-4o" for r in herb_count_table(verdicts))
    assert gpt["agree"] == sum(r["agree"] for r in herb_count_table(verdicts) if r["judge"] == "gpt-4o")
    assert judge["agreement"]["judges"] == ["deepseek-chat", "gpt-4o"]
    assert set(judge["agreement_items"]) == {it["key"] for it in judge["radar"]["items"]}
    [panel] = [p for p in judge["panel"] if (p["system"], p["case_id"]) == ("stage-5", "t-su-2")]
    assert panel["statuses"] == {"deepseek-chat": "scored", "gpt-4o": "unscored"} and panel["judges_scored"] == 1
    assert "judge_share" in judged["leaderboard"]["metrics"] and "judge_total:gpt-4o" in judged["leaderboard"]["metrics"]
    # A worst answer by judge share shows the verdicts beside it.
    by_judge = [w for w in judged["worst"] if "judge_share" in w["why"]]
    assert by_judge and all(len(w["verdicts"]) == 2 for w in by_judge)


def test_verdicts_read_back_from_json_give_the_same_results(judged, verdicts):
    again = build(verdicts=[json.loads(v.model_dump_json()) for v in verdicts])
    assert again == judged


def test_no_judge_and_no_training_cases_are_said_plainly():
    results = build(train_cases=None)
    assert results["style"] is None and results["judge"]["available"] is False
    assert any("No training cases" in w for w in results["warnings"])
    assert any("No LLM judge" in w for w in results["warnings"])
    assert results["leaderboard"]["systems"]["gold"]["metrics"]["style_match"]["n"] == 0


def test_bad_input_names_what_and_where(verdicts):
    rows = d.predictions()
    with pytest.raises(ValueError, match="prediction row 0: case 'nope'"):
        build([rows[0] | {"case_id": "nope"}])
    with pytest.raises(ValueError, match="prediction row 0 and prediction row 1 answer the same"):
        build([rows[0], dict(rows[0])])
    located = [r | {"file": "p.jsonl", "line": n + 1} for n, r in enumerate(rows[:2])]
    with pytest.raises(ValueError, match=r"p\.jsonl:2: case 'nope'"):
        build([located[0], located[1] | {"case_id": "nope"}])
    with pytest.raises(ValueError, match=r"p\.jsonl:1: unknown task 'diagnose'"):
        build([located[0] | {"task": "diagnose"}])
    with pytest.raises(ValueError, match="prediction row 0: no 'system'"):
        build([{k: v for k, v in rows[0].items() if k != "system"}])
    with pytest.raises(ValueError, match="case 't-li-1' has 2 visit"):
        build([rows[0] | {"visit": 3}])
    with pytest.raises(ValueError, match="case_master 'su-qingyuan' but case 't-li-1' belongs to 'li-shouyang'"):
        build([rows[0] | {"case_master": d.SU}])
    with pytest.raises(ValueError, match="matches no prediction row"):
        build([r for r in rows if r["system"] != "baseline"], verdicts=verdicts)
    other = [v.model_copy(update={"rubric_version": "old-1"}) for v in verdicts]
    with pytest.raises(ValueError, match=r"rubric \['old-1'\]"):
        build(verdicts=other)
    with pytest.raises(ValueError, match="at least one prediction"):
        build([])
