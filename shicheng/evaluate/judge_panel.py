"""A panel of judges: per-judge and mean scores, inter-judge agreement, judge-vs-code herb counts, and the
accounting (calls, tokens, cost, unscored verdicts) a report must show.

Agreement is computed on each answer's score share (total / max_total), because maxima differ between
answers whose gold lacks items; for one rubric item it is computed on that item's points. Reported:
Pearson and Spearman per judge pair (scipy), ICC(2,1) (two-way random, absolute agreement) and ICC(3,1)
(two-way mixed, consistency) over the answers every judge scored (Shrout & Fleiss 1979), and
Krippendorff's alpha, interval level, which also uses answers only some judges scored (the
`krippendorff` package).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from itertools import combinations
from typing import Any

import krippendorff
import numpy as np
from scipy import stats as sps

from shicheng.evaluate.judge import Verdict

UNIT = ("case_id", "visit", "master", "task", "system")


def _unit(v: Verdict) -> tuple:
    return tuple(getattr(v, k) for k in UNIT)


def _value(v: Verdict, item: str | None) -> float | None:
    if v.status != "scored":
        return None
    if item is None:
        return v.share
    for it in v.items:
        if it.key == item:
            return it.points
    return None


def summarize(verdicts: Sequence[Verdict]) -> dict[str, dict[str, Any]]:
    """Per judge: verdict counts by status, how many came from the cache or from the rule alone, and the
    calls, tokens and cost spent in this run (cached verdicts spent nothing now; `*_all` include them)."""
    out: dict[str, dict[str, Any]] = {}
    for v in verdicts:
        s = out.setdefault(v.judge, {"verdicts": 0, "scored": 0, "unscored": 0, "not_applicable": 0,
                                     "rule_only": 0, "cached": 0, "calls": 0, "prompt_tokens": 0,
                                     "completion_tokens": 0, "cost": None, "prompt_tokens_all": 0,
                                     "completion_tokens_all": 0, "unscored_reasons": Counter()})
        s["verdicts"] += 1
        s[v.status] += 1
        s["rule_only"] += v.status == "scored" and not v.judge_called
        s["prompt_tokens_all"] += v.prompt_tokens
        s["completion_tokens_all"] += v.completion_tokens
        if v.cached:
            s["cached"] += 1
        else:
            s["calls"] += v.calls
            s["prompt_tokens"] += v.prompt_tokens
            s["completion_tokens"] += v.completion_tokens
            if v.cost is not None:
                s["cost"] = (s["cost"] or 0.0) + v.cost
        if v.status == "unscored":
            s["unscored_reasons"][(v.reason or "")[:120]] += 1
    for s in out.values():
        s["unscored_reasons"] = dict(s["unscored_reasons"].most_common())
    return out


def panel_scores(verdicts: Sequence[Verdict]) -> list[dict[str, Any]]:
    """One row per answer: each judge's total (None when unscored), the mean over the judges that scored,
    and the mean points per rubric item. Rows in first-seen order."""
    by_unit: dict[tuple, list[Verdict]] = defaultdict(list)
    for v in verdicts:
        by_unit[_unit(v)].append(v)
    rows = []
    for unit, vs in by_unit.items():
        scored = [v for v in vs if v.status == "scored"]
        items: dict[str, list[float]] = defaultdict(list)
        for v in scored:
            for it in v.items:
                if it.points is not None:
                    items[it.key].append(it.points)
        rows.append({**dict(zip(UNIT, unit, strict=True)), "max_total": max(v.max_total for v in vs),
                     "totals": {v.judge: v.total for v in vs}, "statuses": {v.judge: v.status for v in vs},
                     "judges_scored": len(scored),
                     "mean_total": float(np.mean([v.total for v in scored])) if scored else None,
                     "mean_share": float(np.mean([v.share for v in scored])) if scored else None,
                     "mean_items": {k: float(np.mean(x)) for k, x in items.items()}})
    return rows


def icc(matrix: np.ndarray) -> dict[str, float | None]:
    """ICC(2,1) and ICC(3,1) of an n targets × k raters matrix without gaps (Shrout & Fleiss 1979)."""
    x = np.asarray(matrix, dtype=float)
    n, k = x.shape
    if n < 2 or k < 2 or np.isnan(x).any():
        return {"icc2_1": None, "icc3_1": None}
    grand = x.mean()
    msr = k * ((x.mean(axis=1) - grand) ** 2).sum() / (n - 1)
    msc = n * ((x.mean(axis=0) - grand) ** 2).sum() / (k - 1)
    resid = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + grand
    mse = (resid ** 2).sum() / ((n - 1) * (k - 1))
    den2, den3 = msr + (k - 1) * mse + k * (msc - mse) / n, msr + (k - 1) * mse
    return {"icc2_1": float((msr - mse) / den2) if den2 else None,
            "icc3_1": float((msr - mse) / den3) if den3 else None}


def _corr(fn, a: np.ndarray, b: np.ndarray) -> dict[str, float | None]:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return {"r": None, "p": None}  # undefined without spread
    res = fn(a, b)
    return {"r": float(res[0]), "p": float(res[1])}


def agreement(verdicts: Sequence[Verdict], item: str | None = None) -> dict[str, Any]:
    """Inter-judge agreement on score shares (or on one item's points with `item`)."""
    judges = list(dict.fromkeys(v.judge for v in verdicts))
    units = list(dict.fromkeys(_unit(v) for v in verdicts))
    col = {j: n for n, j in enumerate(judges)}
    row = {u: n for n, u in enumerate(units)}
    m = np.full((len(units), len(judges)), np.nan)
    for v in verdicts:
        value = _value(v, item)
        if value is not None:
            m[row[_unit(v)], col[v.judge]] = value
    out: dict[str, Any] = {"on": item or "share", "judges": judges, "units": len(units), "pairs": []}
    if len(judges) < 2:
        return {**out, "complete_units": 0, "icc2_1": None, "icc3_1": None, "alpha_interval": None,
                "note": "agreement needs at least two judges"}
    for a, b in combinations(range(len(judges)), 2):
        both = ~np.isnan(m[:, a]) & ~np.isnan(m[:, b])
        xa, xb = m[both, a], m[both, b]
        out["pairs"].append({"judges": [judges[a], judges[b]], "n": int(both.sum()),
                             "pearson": _corr(sps.pearsonr, xa, xb), "spearman": _corr(sps.spearmanr, xa, xb),
                             "mean_abs_diff": float(np.abs(xa - xb).mean()) if both.any() else None})
    complete = m[~np.isnan(m).any(axis=1)]
    out.update(complete_units=len(complete), **icc(complete))
    rated = m[(~np.isnan(m)).sum(axis=1) >= 2]  # alpha needs two ratings of a unit to learn from it
    alpha = None
    if len(rated) >= 2 and np.nanstd(rated) > 0:
        alpha = float(krippendorff.alpha(reliability_data=rated.T, level_of_measurement="interval"))
    out["alpha_interval"] = alpha
    return out


def herb_count_table(verdicts: Sequence[Verdict]) -> list[dict[str, Any]]:
    """Judge versus code on the prescription: herbs matched, gold herbs, and the herb-match points.

    One row per scored verdict that has both counts; `agree` is False where the judge miscounted."""
    rows = []
    for v in verdicts:
        if v.status != "scored" or not v.herbs_code or not v.herbs_judge:
            continue
        crit = next((c for it in v.items if it.key == "prescription" for c in it.criteria if c.key == "herb_match"),
                    None)
        code_m, code_g = v.herbs_code["matched_count"], v.herbs_code["gold_count"]
        judge_m, judge_g = v.herbs_judge["matched"], v.herbs_judge["gold"]
        rows.append({**{k: getattr(v, k) for k in UNIT}, "judge": v.judge,
                     "code_matched": code_m, "code_gold": code_g, "judge_matched": judge_m, "judge_gold": judge_g,
                     "code_points": crit.code_points if crit else None,
                     "judge_points": crit.judge_points if crit else None,
                     "agree": (code_m, code_g) == (judge_m, judge_g)})
    return rows


__all__ = ["agreement", "herb_count_table", "icc", "panel_scores", "summarize"]
