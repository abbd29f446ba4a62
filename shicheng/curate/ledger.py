"""Counts and rejects for every curation step: nothing is dropped without a written reason.

Each step records what came in, what it kept and what it rejected (with file, line or row, and the
reason); `check()` enforces `in = kept + rejected`, and the rejects are written as JSONL. Reason, source
and record pass the scrubber as they are recorded: rejects.jsonl and the card leave curation, and a
rejected record has often not been through clean.py (a paragraph too short, a row with a bad value).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from shicheng.curate.scrub import redact


@dataclass
class Reject:
    step: str  # import, clean, dedup, quality, teacher …
    source: str  # "file:line" or "file:row N" or a case id
    reason: str
    record: dict | str | None = None  # the offending record, scrubbed

    def to_dict(self) -> dict:
        return {"step": self.step, "source": self.source, "reason": self.reason, "record": self.record}


@dataclass
class StepCount:
    inputs: int = 0
    kept: int = 0
    rejected: int = 0


@dataclass
class Ledger:
    rejects: list[Reject] = field(default_factory=list)
    steps: dict[str, StepCount] = field(default_factory=dict)

    def count(self, step: str) -> StepCount:
        return self.steps.setdefault(step, StepCount())

    def seen(self, step: str, n: int = 1) -> None:
        self.count(step).inputs += n

    def keep(self, step: str, n: int = 1) -> None:
        self.count(step).kept += n

    def reject(self, step: str, source: str, reason: str, record: dict | str | None = None) -> None:
        self.rejects.append(Reject(step, redact(source), redact(reason), redact(record)))
        self.count(step).rejected += 1

    def check(self) -> None:
        """Raise if any step lost or invented records."""
        bad = {s: c for s, c in self.steps.items() if c.inputs != c.kept + c.rejected}
        if bad:
            detail = "; ".join(f"{s}: in {c.inputs} != kept {c.kept} + rejected {c.rejected}" for s, c in bad.items())
            raise AssertionError(f"curation lost records: {detail}")

    def summary(self) -> dict:
        reasons = Counter((r.step, r.reason.split(":")[0]) for r in self.rejects)
        return {
            "steps": {s: vars(c) for s, c in self.steps.items()},
            "rejects_by_reason": [{"step": s, "reason": r, "count": n} for (s, r), n in reasons.most_common()],
            "rejected_total": len(self.rejects),
        }

    def write_rejects(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as fh:
            for r in self.rejects:
                fh.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")

    def merge(self, other: Ledger) -> None:
        self.rejects.extend(other.rejects)
        for s, c in other.steps.items():
            mine = self.count(s)
            mine.inputs += c.inputs
            mine.kept += c.kept
            mine.rejected += c.rejected
