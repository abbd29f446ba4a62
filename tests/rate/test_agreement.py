"""The agreement statistics against published values, and Bland–Altman / rank agreement worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from shicheng.rate import agreement as ag

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges, and their Table 4 values.
SHROUT_FLEISS = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]
SHROUT_FLEISS_ICC = {"ICC(1,1)": 0.17, "ICC(2,1)": 0.29, "ICC(3,1)": 0.71, "ICC(1,k)": 0.44, "ICC(2,k)": 0.62,
                     "ICC(3,k)": 0.91}

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers × 12 units, · missing.
n = np.nan
KRIPPENDORFF = [[1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
                [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
                [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
                [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n]]


def test_icc_reproduces_shrout_and_fleiss():
    res = ag.icc(np.array(SHROUT_FLEISS))
    assert (res["n_targets"], res["k_raters"]) == (6, 4)
    for form, published in SHROUT_FLEISS_ICC.items():
        assert round(res[form]["icc"], 2) == published, form
        assert res[form]["ci_low"] < res[form]["icc"] < res[form]["ci_high"]


def test_alpha_reproduces_krippendorff_2011():
    assert round(ag.alpha(KRIPPENDORFF, "nominal"), 3) == 0.743
    assert round(ag.alpha(KRIPPENDORFF, "interval"), 3) == 0.849


def test_alpha_bootstrap_ci_brackets_the_estimate_and_is_seeded():
    a = ag.alpha_ci(KRIPPENDORFF, "interval", n_boot=300, seed=1)
    b = ag.alpha_ci(KRIPPENDORFF, "interval", n_boot=300, seed=1)
    assert a == b and a["n_units"] == 11 and a["n_raters"] == 4  # unit 12 has one value: not pairable
    assert a["ci_low"] < a["alpha"] < a["ci_high"] <= 1


def test_undefined_statistics_are_none_not_zero():
    assert ag.alpha([[3, 3, 3], [3, 3, 3]]) is None  # no variance
    assert ag.icc(np.array([[1, 2], [2, 3]])) is None  # two targets
    assert ag.rank_agreement([1, 1, 1], [1, 2, 3])["kendall_tau_b"] is None
    with pytest.raises(ValueError, match="complete"):
        ag.icc(np.array([[1, np.nan], [2, 3], [4, 5]]))


def test_bland_altman_by_hand():
    # differences 1, 0, 1, 2: bias 1, SD sqrt(2/3); limits 1 ± 1.96 SD.
    ba = ag.bland_altman([1, 2, 3, 4], [0, 2, 2, 2])
    sd = np.sqrt(2 / 3)
    assert ba["n"] == 4 and ba["bias"] == pytest.approx(1.0) and ba["sd"] == pytest.approx(sd)
    assert (ba["loa_low"], ba["loa_high"]) == pytest.approx((1 - 1.96 * sd, 1 + 1.96 * sd))
    # t(0.975, 3) = 3.182: the bias CI is 1 ± 3.182 · SD/2.
    assert ba["bias_ci_low"] == pytest.approx(1 - 3.1824 * sd / 2, abs=1e-3)


def test_rank_agreement_tau_b_with_ties():
    # x has a tie; tau-b = (C - D) / sqrt((n0 - n1)(n0 - n2)) = (5 - 0) / sqrt(5 · 6) for these four.
    res = ag.rank_agreement([1, 2, 2, 3], [1, 2, 3, 4])
    assert res["kendall_tau_b"] == pytest.approx(5 / np.sqrt(30))
    assert res["spearman"] == pytest.approx(np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1])
