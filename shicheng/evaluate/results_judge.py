"""The judge's part of results.json: per-answer judge scores on the metric rows, the accounting, the
radar data (per judge × master, one series per system, each rubric item as a share of its maximum),
total scores per master × system, inter-judge agreement and the judge-vs-code herb counts.

Radar charts and totals use the normal rows only, as the paper does: a counterfactual answer is judged
reference-free (judge.py), so its scores are not comparable with those judged against a gold answer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from shicheng.evaluate.judge import Verdict
from shicheng.evaluate.judge_panel import agreement, herb_count_table, panel_scores, summarize
from shicheng.evaluate.rubric import Rubric
from shicheng.evaluate.stats import aggregate

UNIT = ("case_id", "visit", "master", "task", "system")


def judges_of(verdicts: Sequence[Verdict]) -> list[str]:
    return list(dict.fromkeys(v.judge for v in verdicts))


def row_metric_names(verdicts: Sequence[Verdict]) -> list[str]:
    """Judge columns a metric row carries: the panel means first, then each judge's own."""
    if not verdicts:
        return []
    judges = judges_of(verdicts)
    return ["judge_share", "judge_total", *(f"judge_share:{j}" for j in judges), *(f"judge_total:{j}" for j in judges)]


def attach(verdicts: Sequence[Verdict], rows: list[dict]) -> None:
    """Add each judge's total and share, and the panel means over the judges that scored, to the rows.
    A verdict for an answer that is not among the predictions is an error, not ignored."""
    index = {tuple(r[k] for k in UNIT): r for r in rows}
    judges = judges_of(verdicts)
    for r in rows:
        for j in judges:
            r[f"judge_total:{j}"] = r[f"judge_share:{j}"] = None
        r["judge_share"] = r["judge_total"] = None
    scored: dict[tuple, list[Verdict]] = defaultdict(list)
    for v in verdicts:
        key = tuple(getattr(v, k) for k in UNIT)
        row = index.get(key)
        if row is None:
            raise ValueError(f"verdict of judge '{v.judge}' for {dict(zip(UNIT, key, strict=True))} matches no "
                             "prediction row")
        if v.status == "scored":
            row[f"judge_total:{v.judge}"], row[f"judge_share:{v.judge}"] = v.total, v.share
            scored[key].append(v)
    for key, vs in scored.items():
        index[key]["judge_total"] = float(np.mean([v.total for v in vs]))
        index[key]["judge_share"] = float(np.mean([v.share for v in vs if v.share is not None]))


def radar(verdicts: Sequence[Verdict], rubric: Rubric, systems: Sequence[str]) -> dict[str, Any]:
    acc: dict[tuple[str, str], dict[str, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(
        lambda: defaultdict(list)))
    for v in verdicts:
        if v.status != "scored" or v.counterfactual or not v.master:
            continue
        for it in v.items:
            if it.points is not None and it.max_points:
                acc[(v.judge, v.master)][v.system][it.key].append(it.points / it.max_points)
    charts = []
    for (judge, master), by_system in acc.items():
        series = {s: {it.key: float(np.mean(by_system[s][it.key])) if by_system[s].get(it.key) else None
                      for it in rubric.items} for s in systems if s in by_system}
        charts.append({"judge": judge, "master": master, "series": series,
                       "n": {s: max((len(x) for x in by_system[s].values()), default=0) for s in series}})
    charts.sort(key=lambda c: (judges_of(verdicts).index(c["judge"]), c["master"]))
    return {"items": [{"key": it.key, "zh": it.zh, "max_points": it.points} for it in rubric.items],
            "charts": charts}


def totals(verdicts: Sequence[Verdict], rows: Sequence[dict], n_boot: int, seed: int) -> list[dict]:
    normal = [r for r in rows if not r["counterfactual"] and r["master"]]
    if not normal:
        return []
    maxima: dict[tuple, list[float]] = defaultdict(list)
    for v in verdicts:
        if v.status == "scored" and not v.counterfactual:
            maxima[(v.judge, v.system, v.master)].append(v.max_total)
    out = []
    for judge in judges_of(verdicts):
        found = aggregate(normal, [f"judge_total:{judge}", f"judge_share:{judge}"], by=("system", "master"),
                          n_boot=n_boot, seed=seed)
        cells: dict[tuple, dict] = {}
        for e in found:
            cell = cells.setdefault((e["system"], e["master"]), {"judge": judge, "system": e["system"],
                                                                 "master": e["master"]})
            name = "total" if e["metric"].startswith("judge_total") else "share"
            cell[name] = {k: e[k] for k in ("mean", "ci_low", "ci_high", "n", "n_cases")}
        for (system, master), cell in cells.items():
            m = maxima.get((judge, system, master))
            cell["max_total_mean"] = float(np.mean(m)) if m else None
            out.append(cell)
    return out


def herb_counts(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    rows = herb_count_table(verdicts)
    summary = {}
    for judge in judges_of(verdicts):
        part = [r for r in rows if r["judge"] == judge]
        if not part:
            summary[judge] = {"n": 0}
            continue
        pts = [(r["code_points"], r["judge_points"]) for r in part
               if r["code_points"] is not None and r["judge_points"] is not None]
        summary[judge] = {
            "n": len(part), "agree": sum(r["agree"] for r in part), "disagree": sum(not r["agree"] for r in part),
            "agree_rate": sum(r["agree"] for r in part) / len(part),
            "mean_abs_diff_matched": float(np.mean([abs(r["judge_matched"] - r["code_matched"]) for r in part])),
            "mean_abs_diff_gold": float(np.mean([abs(r["judge_gold"] - r["code_gold"]) for r in part])),
            "mean_code_points": float(np.mean([c for c, _ in pts])) if pts else None,
            "mean_judge_points": float(np.mean([j for _, j in pts])) if pts else None}
    return {"summary": summary, "rows": rows}


def compact(v: Verdict) -> dict[str, Any]:
    return {**{k: getattr(v, k) for k in UNIT}, "judge": v.judge, "status": v.status, "mode": v.mode,
            "counterfactual": v.counterfactual, "total": v.total, "max_total": v.max_total, "share": v.share,
            "judge_total": v.judge_total, "reason": v.reason, "cached": v.cached, "key": v.key,
            "items": {it.key: it.points for it in v.items}}


def _empty() -> dict[str, Any]:
    return {"available": False, "judges": [], "summary": {}, "unscored": {"total": 0, "by_judge": {}},
            "agreement": None, "agreement_items": {}, "radar": {"items": [], "charts": []}, "totals": [],
            "herb_counts": {"summary": {}, "rows": []}, "panel": [], "verdicts": []}


def judge_results(verdicts: Sequence[Verdict], rows: list[dict], rubric: Rubric, *, n_boot: int, seed: int
                  ) -> dict[str, Any]:
    """The judge section of results.json; adds the judge columns to `rows` (see `attach`)."""
    if not verdicts:
        return _empty()
    other = sorted({v.rubric_version for v in verdicts} - {rubric.version})
    if other:
        raise ValueError(f"verdicts were given under rubric {other}, but the results use rubric {rubric.version}; "
                         "pass the rubric the judges used")
    attach(verdicts, rows)
    judges = judges_of(verdicts)
    summary = summarize(verdicts)
    unscored = {j: summary[j]["unscored"] for j in judges}
    items = [it.key for it in rubric.items]
    return {"available": True, "judges": judges, "summary": summary,
            "unscored": {"total": sum(unscored.values()), "by_judge": unscored},
            "agreement": agreement(verdicts),
            "agreement_items": {k: agreement(verdicts, k) for k in items} if len(judges) > 1 else {},
            "radar": radar(verdicts, rubric, list(dict.fromkeys(r["system"] for r in rows))),
            "totals": totals(verdicts, rows, n_boot, seed), "herb_counts": herb_counts(verdicts),
            "panel": panel_scores(verdicts), "verdicts": [compact(v) for v in verdicts]}


__all__ = ["attach", "herb_counts", "judge_results", "judges_of", "radar", "row_metric_names", "totals"]
