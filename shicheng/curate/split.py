"""Leak-free split: all cases of one patient land in one split; stratified by master; seeded."""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict

from shicheng.domain import Case

SPLITS = ("train", "validation", "test")


def patient_key(case: Case) -> str:
    return case.patient.id or f"case:{case.id}"


def split_cases(cases: list[Case], seed: int = 0, validation: float = 0.1, test: float = 0.1) -> dict[str, str]:
    """case id -> split. Patients are the unit; each master's patients are shuffled and cut separately."""
    by_patient: dict[str, list[Case]] = defaultdict(list)
    for c in cases:
        by_patient[patient_key(c)].append(c)
    strata: dict[str, list[str]] = defaultdict(list)
    for pid, group in by_patient.items():
        # A patient seen by several masters goes with the master of most of his cases.
        master = Counter(c.master_id or "" for c in group).most_common(1)[0][0]
        strata[master].append(pid)
    assignment: dict[str, str] = {}
    for master in sorted(strata):
        # Sorting by a hash first makes the result independent of input order.
        pids = sorted(strata[master], key=lambda p: hashlib.sha256(p.encode()).hexdigest())
        random.Random(f"{seed}:{master}").shuffle(pids)
        n = len(pids)
        n_test = round(n * test)
        n_val = round(n * validation)
        if n >= 3:  # every split gets at least one patient when there are enough
            n_test, n_val = max(n_test, 1), max(n_val, 1)
        for i, pid in enumerate(pids):
            split = "test" if i < n_test else "validation" if i < n_test + n_val else "train"
            for c in by_patient[pid]:
                assignment[c.id] = split
    return assignment
