"""Long-format export: one row per (rating, dimension), plus a `total` row with the weighted total.

Columns: study, item, case_id, visit, task, master, system, rater, lineage, credential, dimension, level,
score, weight, comment, cannot_judge, repeat, seconds, rated_at, rubric_version. `score` is the points
the level earns (rubric.points), so the dimension rows of a rating add up to its `total` row. A rating
marked "cannot judge" is exported with empty levels and scores, so that no analysis can read it as 0. An
item the rater has not touched has no rows; a rating with some dimensions missing exports the dimensions
that were given and no total.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from shicheng.rate.db import Account, Assignment, Item, Rating, Store, study_by_name
from shicheng.rate.rubric import load_rubric

COLUMNS = ("study", "item", "case_id", "visit", "task", "master", "system", "rater", "lineage", "credential",
           "dimension", "level", "score", "weight", "comment", "cannot_judge", "repeat", "seconds", "rated_at",
           "rubric_version")
TOTAL = "total"


def export_rows(s: Session, study: str) -> list[dict]:
    st = study_by_name(s, study)
    rubric = load_rubric()
    if st.rubric_version != rubric.version:
        raise ValueError(f"study '{study}' was rated under rubric {st.rubric_version}, this version reads "
                         f"{rubric.version}")
    weights = {d.key: d.weight for d in rubric.dimensions}
    rows = []
    q = (select(Rating, Assignment, Item, Account).join(Assignment, Rating.assignment_id == Assignment.id)
         .join(Item, Assignment.item_id == Item.id).join(Account, Assignment.rater_id == Account.id)
         .where(Assignment.study_id == st.id).order_by(Item.id, Account.login, Assignment.repeat))
    for rating, a, item, rater in s.execute(q).all():
        base = {"study": study, "item": item.id, "case_id": item.case_id, "visit": item.visit, "task": item.task,
                "master": item.master, "system": item.system, "rater": rater.login, "lineage": ";".join(rater.lineage),
                "credential": rater.credential, "comment": rating.comment, "cannot_judge": rating.cannot_judge,
                "repeat": a.repeat, "seconds": round(rating.seconds, 1),
                "rated_at": datetime.fromtimestamp(rating.updated_at, timezone.utc).isoformat(timespec="seconds"),
                "rubric_version": rating.rubric_version}
        for key in rubric.keys:
            level = None if rating.cannot_judge else rating.levels.get(key)
            if level is None and not rating.cannot_judge:
                continue
            rows.append({**base, "dimension": key, "level": level, "weight": weights[key],
                         "score": None if level is None else rubric.points(key, level)})
        total = None if rating.cannot_judge else rating.total
        if total is not None or rating.cannot_judge:
            rows.append({**base, "dimension": TOTAL, "level": None, "weight": 100.0, "score": total})
    return rows


def export_text(s: Session, study: str, fmt: str) -> str:
    rows = export_rows(s, study)
    if fmt == "jsonl":
        return "".join(json.dumps({c: r[c] for c in COLUMNS}, ensure_ascii=False) + "\n" for r in rows)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({c: ("" if r[c] is None else r[c]) for c in COLUMNS})
        return buf.getvalue()
    raise ValueError(f"export format must be csv or jsonl, got {fmt!r}")


def write_export(store: Store, study: str, out: Path) -> int:
    """Write the export to `out` (.csv or .jsonl by its suffix); returns the number of rows."""
    out = Path(out)
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"{out}: the export file must end in .csv or .jsonl")
    with store.session() as s:
        text = export_text(s, study, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return max(0, text.count("\n") - (1 if fmt == "csv" else 0))


__all__ = ["COLUMNS", "TOTAL", "export_rows", "export_text", "write_export"]
