"""`shicheng reliability`: how far physicians agree with each other, with themselves, and with the judges.

    result = reliability(ratings=Path("ratings.csv"), judge_scores=Path("runs/eval/results.json"),
                         out=Path("runs/reliability"))

Inputs: the long export of the rating app (export.py; CSV or JSONL) and the `results.json` of `shicheng
evaluate`, whose `judge.verdicts` hold each judge's total and maximum per answer. An answer is the unit
(case, visit, task, system). A physician's score is the weighted total (0–100) of one rating; a judge's is
100 × total / max_total, so both sit on 0–100 (the judge's maximum shrinks when the gold answer lacks a
section, hence the share). A verdict that is not "scored" (the judge failed, or nothing applied) and a
rating marked "cannot judge" are left out and counted, never read as 0. Hidden repeats measure each
rater's self-consistency and are otherwise left out, so that no answer counts twice.

What is computed (results.json; report.html shows it):
- inter-rater agreement per dimension and for the total: Krippendorff's α (interval; any design) with a
  bootstrap CI over answers; the six ICC forms when the design is complete (every rater rated every
  answer), ICC(1,·) when every answer has the same number of ratings by different raters;
- self-consistency: first vs repeated rating of the same answer, per rater and pooled;
- per judge vs the physicians' mean per answer: system-level rank agreement (Kendall τ-b, Spearman),
  answer-level correlation and ICC, Bland–Altman (judge − physicians) overall and per master, each
  master's bias relative to the overall one, and the gap between system-level and within-master
  answer-level agreement (a judge can rank systems as physicians do yet miss which answers of one
  master are better: "tracks trends, misses distinctions");
- the physicians' own view: weighted total and each dimension per master × system, with bootstrap CIs.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shicheng.evaluate.results import clean, file_digest
from shicheng.rate import agreement as ag
from shicheng.rate.export import COLUMNS, TOTAL
from shicheng.rate.rubric import load_rubric

Unit = tuple[str, int, str, str]  # case_id, visit, task, system
REQUIRED = ("case_id", "visit", "task", "master", "system", "rater", "dimension", "score", "cannot_judge", "repeat")


@dataclass
class Rating:
    unit: Unit
    master: str
    rater: str
    dimension: str
    score: float | None
    cannot_judge: bool
    repeat: bool


def _bool(value: Any, where: str, field: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise ValueError(f"{where}: field '{field}': {value!r} is not true/false")


def _row(raw: Mapping[str, Any], where: str, dims: set[str]) -> Rating:
    missing = [c for c in REQUIRED if c not in raw]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
    try:
        visit = int(raw["visit"])
    except (TypeError, ValueError):
        raise ValueError(f"{where}: field 'visit': {raw['visit']!r} is not a whole number") from None
    dim = str(raw["dimension"])
    if dim not in dims:
        raise ValueError(f"{where}: field 'dimension': unknown '{dim}'; dimensions: {', '.join(sorted(dims))}")
    cannot = _bool(raw["cannot_judge"], where, "cannot_judge")
    score = raw["score"]
    if score in (None, ""):
        score = None
        if not cannot:
            raise ValueError(f"{where}: field 'score' is empty but the rating is not marked cannot_judge")
    else:
        try:
            score = float(score)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: field 'score': {raw['score']!r} is not a number") from None
        if not 0 <= score <= 100:
            raise ValueError(f"{where}: field 'score': {score} is outside 0–100")
    for f in ("case_id", "task", "master", "system", "rater"):
        if not str(raw[f] or "").strip():
            raise ValueError(f"{where}: field '{f}' is empty")
    return Rating(unit=(str(raw["case_id"]), visit, str(raw["task"]), str(raw["system"])), master=str(raw["master"]),
                  rater=str(raw["rater"]), dimension=dim, score=score, cannot_judge=cannot,
                  repeat=_bool(raw["repeat"], where, "repeat"))


def read_ratings(path: Path) -> list[Rating]:
    """The export of the rating app, CSV or JSONL by suffix; a bad line names file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ratings file not found: {path}")
    dims = {*load_rubric().keys, TOTAL}
    out: list[Rating] = []
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{path}:1: missing column(s) {', '.join(missing)}; the export has {', '.join(COLUMNS)}")
            for n, raw in enumerate(reader, start=2):
                out.append(_row(raw, f"{path}:{n}", dims))
    else:
        with path.open(encoding="utf-8-sig") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(raw, dict):
                    raise ValueError(f"{path}:{n}: expected a JSON object")
                out.append(_row(raw, f"{path}:{n}", dims))
    if not out:
        raise ValueError(f"{path}: no ratings")
    return out


def read_judge_scores(path: Path) -> tuple[dict[str, dict[Unit, float]], dict[str, int]]:
    """({judge: {unit: score 0–100}}, {judge: verdicts left out}) from results.json's judge verdicts."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"judge results not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    verdicts = ((data or {}).get("judge") or {}).get("verdicts") if isinstance(data, dict) else None
    if not isinstance(verdicts, list) or not verdicts:
        raise ValueError(f"{path}: no judge.verdicts; pass the results.json of a `shicheng evaluate` run with a judge")
    scores: dict[str, dict[Unit, float]] = defaultdict(dict)
    left_out: dict[str, int] = defaultdict(int)
    for i, v in enumerate(verdicts):
        where = f"{path}: judge.verdicts[{i}]"
        if not isinstance(v, dict):
            raise ValueError(f"{where}: expected an object")
        for f in ("case_id", "visit", "task", "system", "judge", "status"):
            if v.get(f) in (None, ""):
                raise ValueError(f"{where}: field '{f}' is missing")
        if v["status"] != "scored" or v.get("counterfactual"):
            left_out[v["judge"]] += 1
            continue
        total, top = v.get("total"), v.get("max_total")
        if not isinstance(total, (int, float)) or not isinstance(top, (int, float)) or top <= 0:
            raise ValueError(f"{where}: a scored verdict needs a numeric total and a positive max_total, "
                             f"got total={total!r}, max_total={top!r}")
        unit = (str(v["case_id"]), int(v["visit"]), str(v["task"]), str(v["system"]))
        if unit in scores[v["judge"]]:
            raise ValueError(f"{where}: judge '{v['judge']}' scores {unit} twice")
        scores[v["judge"]][unit] = 100.0 * total / top
    return dict(scores), {j: left_out.get(j, 0) for j in {*scores, *left_out}}


def _matrix(ratings: Sequence[Rating], units: list[Unit]) -> tuple[np.ndarray, list[str]]:
    """raters × units, NaN where a rater gave no score."""
    raters = sorted({r.rater for r in ratings})
    col = {u: i for i, u in enumerate(units)}
    row = {r: i for i, r in enumerate(raters)}
    m = np.full((len(raters), len(units)), np.nan)
    for r in ratings:
        m[row[r.rater], col[r.unit]] = r.score
    return m, raters


def inter_rater(ratings: Sequence[Rating], n_boot: int, seed: int) -> dict:
    usable = [r for r in ratings if r.score is not None]
    units = sorted({r.unit for r in usable})
    m, raters = _matrix(usable, units)
    out: dict[str, Any] = {"n_units": len(units), "n_raters": len(raters),
                           "alpha_interval": ag.alpha_ci(m, "interval", n_boot, seed)}
    counts = np.sum(~np.isnan(m), axis=0)
    if units and not np.isnan(m).any():
        out["design"], out["icc"] = "complete", ag.icc(m.T)
    elif units and counts.min() == counts.max() >= 2:
        # Each answer has the same number of ratings by different raters: stack them in slots.
        table = np.array([sorted(m[~np.isnan(m[:, j]), j]) for j in range(len(units))])
        out["design"], out["icc"] = f"one-way (k={int(counts[0])})", ag.one_way_icc(table)
    else:
        out["design"], out["icc"] = "incomplete", None
        out["icc_note"] = ("raters differ in number per answer: ICC needs a complete or balanced design, "
                           "Krippendorff's alpha does not")
    return out


def self_consistency(totals: Sequence[Rating], n_boot: int, seed: int) -> dict:
    first = {(r.rater, r.unit): r.score for r in totals if not r.repeat and r.score is not None}
    pairs = [(r.rater, first[(r.rater, r.unit)], r.score) for r in totals
             if r.repeat and r.score is not None and (r.rater, r.unit) in first]
    per_rater = {}
    for rater in sorted({p[0] for p in pairs}):
        mine = [(a, b) for who, a, b in pairs if who == rater]
        data = np.array(mine, dtype=float).T
        per_rater[rater] = {"n_pairs": len(mine), "mean_abs_diff": float(np.mean(np.abs(data[0] - data[1]))),
                            "alpha_interval": ag.alpha(data, "interval")}
    pooled = None
    if pairs:
        data = np.array([(a, b) for _, a, b in pairs], dtype=float)
        pooled = {"n_pairs": len(pairs), "mean_abs_diff": float(np.mean(np.abs(data[:, 0] - data[:, 1]))),
                  "alpha_interval": ag.alpha_ci(data.T, "interval", n_boot, seed), "icc": ag.icc(data)}
    return {"pooled": pooled, "per_rater": per_rater}


def judge_vs_physicians(phys: Mapping[Unit, float], master_of: Mapping[Unit, str], judge: Mapping[Unit, float],
                        n_boot: int, seed: int) -> dict:
    units = sorted(set(phys) & set(judge))
    out: dict[str, Any] = {"n_units": len(units), "n_physician_only": len(set(phys) - set(judge))}
    if not units:
        out["note"] = "no answer scored by both this judge and the physicians"
        return out
    p = np.array([phys[u] for u in units])
    j = np.array([judge[u] for u in units])
    systems = sorted({u[3] for u in units})
    sys_p = [float(np.mean([phys[u] for u in units if u[3] == s])) for s in systems]
    sys_j = [float(np.mean([judge[u] for u in units if u[3] == s])) for s in systems]
    out["system_level"] = {"systems": systems, "physicians": sys_p, "judge": sys_j, **ag.rank_agreement(sys_p, sys_j)}
    out["item_level"] = {**ag.correlation(j, p), "icc": ag.icc(np.column_stack([p, j]))}
    overall = ag.bland_altman(j, p)
    out["bland_altman"] = overall
    per_master, within = {}, {}
    for m in sorted({master_of[u] for u in units}):
        idx = [i for i, u in enumerate(units) if master_of[u] == m]
        ba = ag.bland_altman(j[idx], p[idx])
        ba["relative_bias"] = None if ba["bias"] is None else ba["bias"] - overall["bias"]
        per_master[m] = ba
        within[m] = ag.correlation(j[idx], p[idx])
    out["bland_altman_per_master"] = per_master
    out["within_master_item_level"] = within
    rhos = [(w["spearman"], w["n"]) for w in within.values() if w["spearman"] is not None]
    mean_within = float(np.average([r for r, _ in rhos], weights=[n for _, n in rhos])) if rhos else None
    sys_rho = out["system_level"]["spearman"]
    out["trend_vs_distinction"] = {
        "system_level_spearman": sys_rho, "within_master_item_spearman": mean_within,
        "gap": None if sys_rho is None or mean_within is None else sys_rho - mean_within}
    return out


def physicians_view(ratings: Sequence[Rating], dims: Sequence[str], n_boot: int, seed: int) -> list[dict]:
    """Per master × system, each dimension and the total: the mean over answers of the raters' mean score."""
    per_unit: dict[tuple[Unit, str], list[float]] = defaultdict(list)
    master_of = {}
    for r in ratings:
        if r.score is not None:
            per_unit[(r.unit, r.dimension)].append(r.score)
            master_of[r.unit] = r.master
    cells = []
    for m in sorted(set(master_of.values())):
        for s in sorted({u[3] for u in master_of if master_of[u] == m}):
            cell = {"master": m, "system": s}
            for d in [*dims, TOTAL]:
                vals = [float(np.mean(v)) for (u, dim), v in per_unit.items()
                        if dim == d and u[3] == s and master_of[u] == m]
                cell[d] = ag.mean_ci(vals, n_boot, seed)
            cells.append(cell)
    return cells


def analyse(ratings: Sequence[Rating], judges: Mapping[str, Mapping[Unit, float]], *, n_boot: int = 1000,
            seed: int = 0, judge_left_out: Mapping[str, int] | None = None) -> dict:
    rubric = load_rubric()
    dims = rubric.keys
    first = [r for r in ratings if not r.repeat]
    masters: dict[Unit, set[str]] = defaultdict(set)
    for r in ratings:
        masters[r.unit].add(r.master)
    clash = [u for u, ms in masters.items() if len(ms) > 1]
    if clash:
        raise ValueError(f"answer {clash[0]} is listed under masters {sorted(masters[clash[0]])}")
    master_of = {u: next(iter(ms)) for u, ms in masters.items()}
    totals = [r for r in ratings if r.dimension == TOTAL]
    phys_scores: dict[Unit, list[float]] = defaultdict(list)
    for r in totals:
        if not r.repeat and r.score is not None:
            phys_scores[r.unit].append(r.score)
    phys = {u: float(np.mean(v)) for u, v in phys_scores.items()}
    counts = {"ratings": len({(r.rater, r.unit, r.repeat) for r in ratings}),
              "answers_rated": len(phys), "raters": len({r.rater for r in ratings}),
              "cannot_judge": len({(r.rater, r.unit, r.repeat) for r in ratings if r.cannot_judge}),
              "repeats": len({(r.rater, r.unit) for r in ratings if r.repeat}),
              "judge_verdicts_left_out": dict(judge_left_out or {})}
    inter = {d: inter_rater([r for r in first if r.dimension == d], n_boot, seed) for d in [*dims, TOTAL]}
    inter_master = {m: inter_rater([r for r in first if r.dimension == TOTAL and master_of[r.unit] == m], n_boot, seed)
                    for m in sorted(set(master_of.values()))}
    return clean({
        "schema_version": 1, "rubric_version": rubric.version, "seed": seed, "n_boot": n_boot, "ci_level": 0.95,
        "scale": "0-100: physicians' weighted total; judges' 100 x total / max_total",
        "counts": counts, "masters": sorted(set(master_of.values())), "systems": sorted({u[3] for u in master_of}),
        "inter_rater": inter, "inter_rater_per_master": inter_master,
        "self_consistency": self_consistency(totals, n_boot, seed),
        "judges": {name: judge_vs_physicians(phys, master_of, scores, n_boot, seed)
                   for name, scores in sorted(judges.items())},
        "physicians_view": physicians_view(first, dims, n_boot, seed),
    })


@dataclass
class ReliabilityResult:
    results_path: Path
    report_path: Path
    results: dict


def reliability(*, ratings: Path, judge_scores: Path, out: Path, n_boot: int = 1000, seed: int = 0
                ) -> ReliabilityResult:
    from shicheng.rate.reliability_report import render_report

    rows = read_ratings(ratings)
    judges, left_out = read_judge_scores(judge_scores)
    results = analyse(rows, judges, n_boot=n_boot, seed=seed, judge_left_out=left_out)
    results["inputs_sha256"] = {"ratings": file_digest(ratings), "judge_scores": file_digest(judge_scores)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    path.write_text(json.dumps(results, ensure_ascii=False, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    report = render_report(results, out / "report.html")
    return ReliabilityResult(path, report, results)


__all__ = ["Rating", "ReliabilityResult", "analyse", "judge_vs_physicians", "read_judge_scores", "read_ratings",
           "reliability"]
