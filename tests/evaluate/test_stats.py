"""Bootstrap intervals over cases, aggregation and paired tests, against known distributions and by hand."""

import math
import warnings

import numpy as np
import pytest

from shicheng.evaluate.stats import (
    aggregate,
    bootstrap_ci,
    compare_systems,
    metric_names,
    paired_compare,
    rank_biserial,
    wilcoxon,
)


def test_bootstrap_ci_of_normal_data_covers_the_mean_with_the_textbook_width():
    # 200 samples of n = 100 from N(5, 2²): the 95 % interval should cover 5 in about 95 % of samples
    # and its width should be close to 2 × 1.96 × 2 / √100 = 0.784.
    rng = np.random.default_rng(7)
    n, sd, covered, widths = 100, 2.0, 0, []
    for i in range(200):
        x = rng.normal(5.0, sd, n)
        ci = bootstrap_ci(list(x), n_boot=1000, seed=i)
        covered += ci.ci_low <= 5.0 <= ci.ci_high
        widths.append(ci.ci_high - ci.ci_low)
        assert ci.n == ci.n_cases == n
        assert ci.mean == pytest.approx(float(x.mean()))
    expected = 2 * 1.96 * sd / math.sqrt(n)
    assert 0.88 <= covered / 200 <= 0.99
    assert np.mean(widths) == pytest.approx(expected, rel=0.06)


def test_bootstrap_ci_is_seeded():
    x = list(np.random.default_rng(0).normal(0, 1, 50))
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    assert bootstrap_ci(x, seed=3) != bootstrap_ci(x, seed=4)


def test_bootstrap_resamples_cases_not_rows():
    # 20 cases, each with 5 identical rows: the case is the unit, so the interval is that of the 20 case
    # values, not the (too narrow) one of 100 "independent" rows.
    values = np.random.default_rng(1).normal(0, 1, 20)
    rows = [v for v in values for _ in range(5)]
    ids = [f"c{i}" for i in range(20) for _ in range(5)]
    by_case = bootstrap_ci(rows, ids, seed=0)
    assert (by_case.n, by_case.n_cases) == (100, 20)
    single = bootstrap_ci(list(values), seed=0)
    assert (by_case.mean, by_case.ci_low, by_case.ci_high) == pytest.approx((single.mean, single.ci_low,
                                                                             single.ci_high))
    naive = bootstrap_ci(rows, seed=0)
    assert naive.ci_high - naive.ci_low < 0.6 * (by_case.ci_high - by_case.ci_low)


def test_each_case_weighs_the_same_and_none_is_left_out():
    # case a: rows 1, 1, 1 (mean 1); case b: rows 0, None (mean 0) -> mean of case means 0.5, not 3/4
    ci = bootstrap_ci([1, 1, 1, 0, None], ["a", "a", "a", "b", "b"], seed=0)
    assert (ci.mean, ci.n, ci.n_cases) == (0.5, 4, 2)
    assert 0.0 <= ci.ci_low <= ci.ci_high <= 1.0
    assert bootstrap_ci([True, False, float("nan")]).mean == 0.5  # booleans are shares; NaN not applicable


def test_degenerate_inputs():
    assert bootstrap_ci([None, None]).to_dict() == {"mean": None, "ci_low": None, "ci_high": None, "n": 0,
                                                     "n_cases": 0}
    one = bootstrap_ci([0.3, 0.5], ["c", "c"])
    assert one.mean == pytest.approx(0.4) and one.ci_low is None and one.n_cases == 1
    with pytest.raises(ValueError, match="metric value 'high' is not a number"):
        bootstrap_ci([0.1, "high"])
    with pytest.raises(ValueError, match="3 values but 2 case ids"):
        bootstrap_ci([1, 2, 3], ["a", "b"])


def _rows(system, values, task="syndrome", master="m1"):
    return [{"case_id": f"c{i}", "visit": 1, "master": master, "task": task, "system": system, "f1": v,
             "status": "ok"} for i, v in enumerate(values)]


def test_aggregate_per_system_master_task():
    rows = (_rows("A", [1.0, 0.0, 1.0]) + _rows("B", [0.5, 0.5, None]) + _rows("A", [0.2, 0.4], task="advice"))
    assert metric_names(rows) == ["f1"]  # ids and text (status) are not metrics
    out = aggregate(rows, n_boot=200)
    keys = [(r["system"], r["task"], r["metric"]) for r in out]
    assert keys == [("A", "advice", "f1"), ("A", "syndrome", "f1"), ("B", "syndrome", "f1")]
    a_syn = out[1]
    assert a_syn["master"] == "m1" and a_syn["mean"] == pytest.approx(2 / 3) and a_syn["n"] == 3
    assert a_syn["ci_low"] <= 2 / 3 <= a_syn["ci_high"]
    assert out[2]["n"] == 2 and out[2]["mean"] == 0.5  # the None row is not applicable, not a zero
    only_system = aggregate(rows, by=("system",), n_boot=200)
    # system A: cases c0 (1.0, 0.2), c1 (0.0, 0.4), c2 (1.0) -> case means 0.6, 0.2, 1.0 -> 0.6
    assert only_system[0]["mean"] == pytest.approx(0.6) and only_system[0]["n_cases"] == 3
    with pytest.raises(ValueError, match="row 0 has no 'case_id'"):
        aggregate([{"system": "A", "f1": 1.0}])
    with pytest.raises(ValueError, match="key 'f1' holds numbers in some rows"):
        metric_names([{"f1": 1.0}, {"f1": "n/a"}])


def test_paired_test_finds_a_clearly_better_system():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.6, 30)
    a = _rows("A", list(base + 0.2 + rng.uniform(0, 0.05, 30)))
    b = _rows("B", list(base))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = paired_compare(a, b, "f1")
    assert r.n_pairs == r.n_clusters == 30
    assert r.mean_diff == pytest.approx(r.mean_a - r.mean_b)
    assert 0.2 < r.ci_low <= r.mean_diff <= r.ci_high < 0.25
    assert r.p_bootstrap < 0.01 and r.p_wilcoxon < 0.01
    assert r.effect_size == 1.0  # every pair favours A
    reverse = paired_compare(b, a, "f1")
    assert reverse.effect_size == -1.0 and reverse.mean_diff == pytest.approx(-r.mean_diff)


def test_identical_systems_give_p_one_and_no_effect_without_warnings():
    a = _rows("A", [0.1, 0.5, 0.3, 0.3, 0.9])
    b = _rows("B", [0.1, 0.5, 0.3, 0.3, 0.9])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = paired_compare(a, b, "f1")
    assert (r.p_bootstrap, r.p_wilcoxon, r.effect_size, r.mean_diff) == (1.0, 1.0, 0.0, 0.0)
    assert (r.ci_low, r.ci_high) == (0.0, 0.0)


def test_wilcoxon_and_rank_biserial_by_hand():
    # diffs 1, 2, −3, 4: ranks of |d| 1, 2, 3, 4; R+ = 7, R− = 3 -> r = (7 − 3)/10 = 0.4.
    # T = min(R+, R−) = 3; exact null: 5 of the 16 sign patterns give R+ ≤ 3 ({}, {1}, {2}, {3}, {1,2})
    # -> two-sided p = 10/16 = 0.625.
    d = np.array([1.0, 2.0, -3.0, 4.0])
    assert rank_biserial(d) == pytest.approx(0.4)
    assert wilcoxon(d) == pytest.approx((3.0, 0.625))
    # zeros are dropped (Wilcoxon's convention) and float noise counts as zero
    assert rank_biserial(np.array([0.0, 1e-15, 1.0, -2.0])) == pytest.approx((1 - 2) / 3)
    assert wilcoxon(np.zeros(5)) == (0.0, 1.0)


def test_pairs_need_the_same_keys_and_are_counted():
    a = _rows("A", [0.9, 0.8, 0.7, None])
    b = _rows("B", [0.5, 0.4])  # c2, c3 missing in B
    r = paired_compare(a, b, "f1")
    # pairs c0, c1 (diffs 0.4, 0.4); c2 only in A; c3 has no value in A
    assert (r.n_pairs, r.n_only_a, r.n_only_b) == (2, 1, 0)
    assert r.mean_diff == pytest.approx(0.4)
    with pytest.raises(ValueError, match="share the key"):
        paired_compare(a + a[:1], b, "f1")


def test_pairs_within_a_case_are_averaged_before_testing():
    # case c0 has two tasks (diffs 0.2 and 0.4 -> 0.3), case c1 one (diff 0.1): two clusters, mean 0.2
    a = _rows("A", [0.6, 0.5]) + _rows("A", [0.9], task="advice")
    b = _rows("B", [0.4, 0.4]) + _rows("B", [0.5], task="advice")
    r = paired_compare(a, b, "f1")
    assert (r.n_pairs, r.n_clusters) == (3, 2) and r.mean_diff == pytest.approx(0.2)
    per_pair = paired_compare(a, b, "f1", unit="pair")
    assert per_pair.n_clusters == 3 and per_pair.mean_diff == pytest.approx(0.7 / 3)


def test_compare_systems_over_all_metrics():
    rows = _rows("A", [0.9, 0.8, 0.7]) + _rows("B", [0.5, 0.4, 0.3])
    out = compare_systems(rows, "A", "B", n_boot=200)
    assert [(o["system_a"], o["system_b"], o["metric"], o["n_pairs"]) for o in out] == [("A", "B", "f1", 3)]
    with pytest.raises(ValueError, match="no rows for system 'C'"):
        compare_systems(rows, "A", "C")
