"""Agreement statistics, each a small function over plain arrays: ICC (pingouin), Krippendorff's α with a
bootstrap CI, Kendall τ-b / Spearman / Pearson (scipy), Bland–Altman.

Checked against published values in tests/rate/test_agreement.py: Shrout & Fleiss (1979) for the six ICC
forms, Krippendorff (2011) for α. A statistic that is undefined on the data (too few units, no variance)
is None, never NaN and never 0.
"""

from __future__ import annotations

import math
import warnings

import krippendorff
import numpy as np
import pandas as pd
from scipy import stats

# pingouin lists its six forms in this order; the names are Shrout & Fleiss's, k the number of raters.
ICC_FORMS = ("ICC(1,1)", "ICC(2,1)", "ICC(3,1)", "ICC(1,k)", "ICC(2,k)", "ICC(3,k)")
_PINGOUIN_TYPES = {"ICC1": 0, "ICC2": 1, "ICC3": 2, "ICC1k": 3, "ICC2k": 4, "ICC3k": 5,
                   "ICC(1,1)": 0, "ICC(A,1)": 1, "ICC(C,1)": 2, "ICC(1,k)": 3, "ICC(A,k)": 4, "ICC(C,k)": 5}


def _num(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def icc(table: np.ndarray) -> dict | None:
    """The six Shrout–Fleiss forms for a complete targets × raters table (no missing cell), with 95% CIs.
    None when the table is too small (fewer than 3 targets or 2 raters) or has no variance."""
    import pingouin as pg

    table = np.asarray(table, dtype=float)
    if table.ndim != 2 or np.isnan(table).any():
        raise ValueError("icc needs a complete targets × raters table")
    n, k = table.shape
    if n < 3 or k < 2 or np.allclose(table, table.flat[0]):
        return None
    long = pd.DataFrame([(i, j, table[i, j]) for i in range(n) for j in range(k)], columns=["t", "r", "s"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = pg.intraclass_corr(long, targets="t", raters="r", ratings="s")
    out: dict = {"n_targets": n, "k_raters": k}
    for _, row in res.iterrows():
        name = ICC_FORMS[_PINGOUIN_TYPES[row["Type"]]]
        lo, hi = row["CI95"] if "CI95" in row else row["CI95%"]
        out[name] = {"icc": _num(row["ICC"]), "ci_low": _num(lo), "ci_high": _num(hi), "F": _num(row["F"]),
                     "p": _num(row["pval"])}
    return out


def one_way_icc(table: np.ndarray) -> dict | None:
    """ICC(1,1) and ICC(1,k) for a design where every target has k ratings but not by the same raters: the
    one-way model treats the raters of each target as a random draw, so the column order does not matter."""
    full = icc(table)
    if full is None:
        return None
    return {k: v for k, v in full.items() if k in ("n_targets", "k_raters", "ICC(1,1)", "ICC(1,k)")}


def alpha(data: np.ndarray, level: str = "interval") -> float | None:
    """Krippendorff's α; `data` is raters × units with NaN where a rater did not rate a unit."""
    data = np.asarray(data, dtype=float)
    pairable = (np.sum(~np.isnan(data), axis=0) >= 2).sum()
    values = data[~np.isnan(data)]
    if pairable < 2 or values.size == 0 or np.unique(values).size < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _num(krippendorff.alpha(reliability_data=data, level_of_measurement=level))


def alpha_ci(data: np.ndarray, level: str = "interval", n_boot: int = 1000, seed: int = 0,
             ci: float = 0.95) -> dict:
    """α with a percentile bootstrap CI over units (the items are the sample; the raters stay)."""
    data = np.asarray(data, dtype=float)
    est = alpha(data, level)
    out = {"alpha": est, "ci_low": None, "ci_high": None, "n_units": int((np.sum(~np.isnan(data), axis=0) >= 2).sum()),
           "n_raters": int(data.shape[0]), "level": level}
    if est is None or n_boot <= 0:
        return out
    rng = np.random.default_rng(seed)
    n = data.shape[1]
    boots = []
    for _ in range(n_boot):
        a = alpha(data[:, rng.integers(0, n, n)], level)
        if a is not None:
            boots.append(a)
    if len(boots) >= max(10, n_boot // 2):
        out["ci_low"], out["ci_high"] = (float(np.quantile(boots, (1 - ci) / 2)),
                                         float(np.quantile(boots, 1 - (1 - ci) / 2)))
    return out


def rank_agreement(x, y) -> dict:
    """Kendall τ-b and Spearman ρ between two scorings of the same units (systems, say)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    out = {"n": len(x), "kendall_tau_b": None, "kendall_p": None, "spearman": None, "spearman_p": None}
    if len(x) < 2 or np.unique(x).size < 2 or np.unique(y).size < 2:
        return out
    tau = stats.kendalltau(x, y, variant="b")
    rho = stats.spearmanr(x, y)
    out.update(kendall_tau_b=_num(tau.statistic), kendall_p=_num(tau.pvalue), spearman=_num(rho.statistic),
               spearman_p=_num(rho.pvalue))
    return out


def correlation(x, y) -> dict:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    out = {"n": len(x), "pearson": None, "pearson_p": None, "spearman": None, "spearman_p": None}
    if len(x) < 3 or np.unique(x).size < 2 or np.unique(y).size < 2:
        return out
    r = stats.pearsonr(x, y)
    rho = stats.spearmanr(x, y)
    out.update(pearson=_num(r.statistic), pearson_p=_num(r.pvalue), spearman=_num(rho.statistic),
               spearman_p=_num(rho.pvalue))
    return out


def bland_altman(a, b, ci: float = 0.95) -> dict:
    """Bias (mean of a − b), the SD of the differences, the 95% limits of agreement bias ± 1.96 SD, and a
    t-interval for the bias; the limits' CIs use Bland & Altman's (1999) SE ≈ √(3 SD² / n)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = a - b
    n = len(d)
    out = {"n": n, "bias": None, "sd": None, "loa_low": None, "loa_high": None, "bias_ci_low": None,
           "bias_ci_high": None, "loa_low_ci": None, "loa_high_ci": None}
    if n == 0:
        return out
    bias = float(d.mean())
    out["bias"] = bias
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    t = float(stats.t.ppf(1 - (1 - ci) / 2, n - 1))
    se_bias, se_loa = sd / math.sqrt(n), math.sqrt(3 * sd**2 / n)
    lo, hi = bias - 1.96 * sd, bias + 1.96 * sd
    out.update(sd=sd, loa_low=lo, loa_high=hi, bias_ci_low=bias - t * se_bias, bias_ci_high=bias + t * se_bias,
               loa_low_ci=[lo - t * se_loa, lo + t * se_loa], loa_high_ci=[hi - t * se_loa, hi + t * se_loa])
    return out


def mean_ci(values, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> dict:
    """Mean with a percentile bootstrap CI (the error bars of the physicians' view)."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    out = {"mean": float(v.mean()) if v.size else None, "ci_low": None, "ci_high": None, "n": int(v.size)}
    if v.size >= 2 and n_boot > 0:
        rng = np.random.default_rng(seed)
        means = v[rng.integers(0, v.size, (n_boot, v.size))].mean(axis=1)
        out["ci_low"], out["ci_high"] = (float(np.quantile(means, (1 - ci) / 2)),
                                         float(np.quantile(means, 1 - (1 - ci) / 2)))
    return out


__all__ = ["ICC_FORMS", "alpha", "alpha_ci", "bland_altman", "correlation", "icc", "mean_ci", "one_way_icc",
           "rank_agreement"]
