"""A simulated rating study with known truth, written in the rating app's export format and as the
`results.json` of `shicheng evaluate`.

Three masters (m-a, m-b, m-c), four systems whose true quality is 45, 55, 65, 75 (0–100), ten cases per
master. Each answer's true quality adds a case effect (SD 8). Each master has three raters of its
lineage who rate every answer of that master: each dimension's level is the true quality plus the
rater's noise (SD 5), mapped to the 1–5 scale; the points follow the rubric, so the totals are exactly
what the app would export. The judge scores the true quality plus noise (SD 5) plus BIAS for master m-b
only, as a 55-point total; one verdict failed (status "unscored"), which must be left out, not read as 0.
A tenth of the ratings are repeated (the hidden repeats), with fresh noise.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from shicheng.rate.export import COLUMNS
from shicheng.rate.rubric import load_rubric

MASTERS = ("m-a", "m-b", "m-c")
SYSTEMS = {"sys-1": 45.0, "sys-2": 55.0, "sys-3": 65.0, "sys-4": 75.0}
BIASED_MASTER, BIAS = "m-b", 12.0
N_CASES = 10


def _level(q: float) -> int:
    return int(np.clip(round(1 + 4 * q / 100), 1, 5))


def simulate(folder: Path, seed: int = 7) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    rubric = load_rubric()
    rows, verdicts = [], []
    item = 0
    for m in MASTERS:
        raters = [f"{m}-r{i}" for i in range(3)]
        for c in range(N_CASES):
            case_effect = rng.normal(0, 8)
            for system, base in SYSTEMS.items():
                item += 1
                q = base + case_effect
                judge = q + rng.normal(0, 5) + (BIAS if m == BIASED_MASTER else 0.0)
                failed = (m, c, system) == ("m-a", 0, "sys-1")
                verdicts.append({"case_id": f"{m}-case-{c}", "visit": 1, "master": m, "task": "full_chain",
                                 "system": system, "judge": "sim-judge", "status": "unscored" if failed else "scored",
                                 "counterfactual": False, "total": None if failed else 55 * np.clip(judge, 0, 100) / 100,
                                 "max_total": 55.0, "reason": "HTTP 500" if failed else None})
                for rater in raters:
                    for repeat in (False, True):
                        if repeat and rng.random() > 0.1:
                            continue
                        levels = {d: _level(q + rng.normal(0, 5)) for d in rubric.keys}
                        base_row = {"study": "sim", "item": item, "case_id": f"{m}-case-{c}", "visit": 1,
                                    "task": "full_chain", "master": m, "system": system, "rater": rater,
                                    "lineage": m, "credential": "主治医师", "comment": "", "cannot_judge": False,
                                    "repeat": repeat, "seconds": 60.0, "rated_at": "2026-01-01T00:00:00+00:00",
                                    "rubric_version": rubric.version}
                        for d in rubric.keys:
                            rows.append({**base_row, "dimension": d, "level": levels[d],
                                         "weight": rubric.dimensions[rubric.keys.index(d)].weight,
                                         "score": rubric.points(d, levels[d])})
                        rows.append({**base_row, "dimension": "total", "level": None, "weight": 100.0,
                                     "score": rubric.total(levels)})
    folder.mkdir(parents=True, exist_ok=True)
    ratings = folder / "ratings.csv"
    with ratings.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r[k] is None else r[k]) for k in COLUMNS})
    results = folder / "results.json"
    results.write_text(json.dumps({"schema_version": 1, "judge": {"available": True, "judges": ["sim-judge"],
                                                                  "verdicts": verdicts}}, default=float),
                       encoding="utf-8")
    return ratings, results
