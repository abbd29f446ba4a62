"""A rater's queue and the one way a rating is saved.

Every save carries the item's whole state (the level of each dimension, the comment, "cannot judge") and
the seconds spent since the last save that was acknowledged; it is one transaction that also writes the
audit line, so a rating is either saved with its audit line or not at all. The assignment row is locked
first (FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers), so two saves of the
same item from two tabs cannot both insert.

A rater reaches items only by position in their own queue: the query is always filtered by the session's
account, so another rater's position is simply "no such item".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shicheng.rate.db import Account, Assignment, Item, Rating, audit, now
from shicheng.rate.rubric import PhysicianRubric

MAX_COMMENT = 4000
MAX_SECONDS_PER_SAVE = 3600.0  # a tab left open overnight does not count as a night's work


class NotFound(LookupError):
    """No such position in this rater's queue."""


@dataclass
class QueueEntry:
    assignment: Assignment
    item: Item
    rating: Rating | None

    @property
    def done(self) -> bool:
        return self.rating is not None and (self.rating.cannot_judge or self.rating.total is not None)


def queue(s: Session, rater: Account) -> list[QueueEntry]:
    rows = s.execute(select(Assignment, Item, Rating).join(Item, Assignment.item_id == Item.id)
                     .outerjoin(Rating, Rating.assignment_id == Assignment.id)
                     .where(Assignment.rater_id == rater.id).order_by(Assignment.position)).all()
    return [QueueEntry(a, i, r) for a, i, r in rows]


def entry_at(s: Session, rater: Account, position: int, lock: bool = False) -> QueueEntry:
    stmt = select(Assignment).where(Assignment.rater_id == rater.id, Assignment.position == position)
    if lock:
        stmt = stmt.with_for_update()
    a = s.scalar(stmt)
    if a is None:
        raise NotFound(position)
    item = s.get(Item, a.item_id)
    rating = s.scalar(select(Rating).where(Rating.assignment_id == a.id))
    return QueueEntry(a, item, rating)


def resume_position(entries: list[QueueEntry]) -> int | None:
    """Where the rater left off: the first item not yet done; None when every item is done."""
    for e in entries:
        if not e.done:
            return e.assignment.position
    return None


def read_state(payload: Mapping[str, Any], rubric: PhysicianRubric) -> dict:
    """The submitted state, checked; a ValueError names the field that is wrong."""
    levels_in = payload.get("levels") or {}
    if not isinstance(levels_in, Mapping):
        raise ValueError("levels: expected an object of dimension → level")
    unknown = sorted(set(levels_in) - set(rubric.keys))
    if unknown:
        raise ValueError(f"levels: unknown dimension(s) {', '.join(unknown)}; dimensions: {', '.join(rubric.keys)}")
    levels = {k: rubric.check_level(k, levels_in.get(k)) for k in rubric.keys}
    comment = payload.get("comment") or ""
    if not isinstance(comment, str):
        raise ValueError("comment: expected text")
    if len(comment) > MAX_COMMENT:
        raise ValueError(f"comment: {len(comment)} characters, at most {MAX_COMMENT}")
    cannot = payload.get("cannot_judge", False)
    if isinstance(cannot, str):
        cannot = cannot.lower() in ("1", "true", "on", "yes")
    try:
        seconds = float(payload.get("seconds") or 0)
    except (TypeError, ValueError):
        raise ValueError(f"seconds: {payload.get('seconds')!r} is not a number") from None
    if not 0 <= seconds < 10 * MAX_SECONDS_PER_SAVE:
        raise ValueError(f"seconds: {seconds} is out of range")
    return {"levels": levels, "comment": comment, "cannot_judge": bool(cannot),
            "seconds": min(seconds, MAX_SECONDS_PER_SAVE)}


def save(s: Session, rater: Account, position: int, payload: Mapping[str, Any], rubric: PhysicianRubric) -> dict:
    """Save the state of the item at `position`; returns what the page shows as saved."""
    state = read_state(payload, rubric)
    entry = entry_at(s, rater, position, lock=True)
    r = entry.rating
    before = None if r is None else {"levels": dict(r.levels), "comment": r.comment, "cannot_judge": r.cannot_judge}
    if r is None:
        r = Rating(assignment_id=entry.assignment.id, rubric_version=rubric.version, levels={}, comment="",
                   cannot_judge=False, seconds=0.0, version=0)
        s.add(r)
    r.levels = state["levels"]
    r.comment = state["comment"]
    r.cannot_judge = state["cannot_judge"]
    r.total = rubric.total(state["levels"])
    r.seconds = (r.seconds or 0.0) + state["seconds"]
    r.version = (r.version or 0) + 1
    r.updated_at = now()
    after = {"levels": state["levels"], "comment": state["comment"], "cannot_judge": state["cannot_judge"]}
    if before != after:
        changes = {k: [None if before is None else before[k], after[k]] for k in after
                   if before is None or before[k] != after[k]}
        audit(s, rater, "rate", f"assignment:{entry.assignment.id}", position=position, changes=changes)
    s.flush()
    return {"position": position, "version": r.version, "total": r.total, "done": r.cannot_judge or r.total is not None,
            "levels": r.levels, "comment": r.comment, "cannot_judge": r.cannot_judge, "saved_at": r.updated_at}


__all__ = ["NotFound", "QueueEntry", "entry_at", "queue", "read_state", "resume_position", "save"]
