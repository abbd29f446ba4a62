"""Cleaning: text normalisation, personal-data removal (scrub.py), quality filters and duplicate detection.

Every rejected case goes to the Ledger with its reason; every personal datum removed is counted by
kind so the card can say what was taken out.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from datetime import date

from datasketch import MinHash, MinHashLSH

from shicheng.curate.ledger import Ledger
from shicheng.curate.scrub import DATE, parse_date, scrub_text
from shicheng.domain import Case
from shicheng.text import normalise_text


def _first_date(case: Case) -> date | None:
    for v in case.visits:
        for field in (v.date, v.present_illness):
            m = DATE.search(field or "")
            if m:
                return parse_date(m)
    return None


def _map_strings(obj, fn):
    """Apply fn to every string field of a pydantic model tree (returns a new model)."""
    data = obj.model_dump()

    def walk(x):
        if isinstance(x, str):
            return fn(x)
        if isinstance(x, list):
            return [walk(i) for i in x]
        if isinstance(x, dict):
            return {k: (walk(v) if k not in ("id", "master_id", "sex") else v) for k, v in x.items()}
        return x

    return type(obj).model_validate(walk(data))


def pseudonymize(value: str, salt: str = "shicheng") -> str:
    return "p-" + hashlib.sha256(f"{salt}:{value}".encode()).hexdigest()[:12]


def clean_case(case: Case, counts: Counter) -> Case:
    """Normalised, scrubbed copy of a case: patient id hashed, dates relative to the first visit."""
    case = _map_strings(case, normalise_text)
    anchor = _first_date(case)
    case = _map_strings(case, lambda s: scrub_text(s, counts, anchor))
    if case.patient.id and not case.patient.id.startswith("p-"):
        counts["patient_id"] += 1
        case = case.model_copy(update={"patient": case.patient.model_copy(update={"id": pseudonymize(case.patient.id)})})
    return case


def quality_problem(case: Case, min_chars: int = 10) -> str | None:
    if not any(v.has_presentation() for v in case.visits):
        return "no presentation: no visit has a complaint, history, tongue, pulse or findings"
    if not any(v.answer and (v.answer.prescription or v.answer.syndrome) for v in case.visits):
        return "no answer: no visit has the master's syndrome or prescription"
    if not any(v.answer and v.answer.prescription for v in case.visits):
        return "no prescription: no visit records the prescription"
    chars = sum(len(x or "") for v in case.visits
                for x in (v.chief_complaint, v.present_illness, v.tongue, v.pulse, v.other_findings))
    if chars < min_chars:
        return f"too short: {chars} characters of presentation (< {min_chars})"
    return None


def case_text(case: Case) -> str:
    parts = []
    for v in case.visits:
        parts.extend(x or "" for x in (v.chief_complaint, v.present_illness, v.tongue, v.pulse, v.other_findings))
        if v.answer:
            parts.extend(x or "" for x in (v.answer.syndrome, v.answer.treatment_principle, v.answer.prescription))
    return "|".join(parts)


_PUNCT = re.compile(r"[\s\W_]+")


def _minhash(text: str, num_perm: int) -> MinHash:
    text = _PUNCT.sub("", text)  # punctuation and spacing edits do not make a different case
    mh = MinHash(num_perm=num_perm, seed=1)
    shingles = {text[i:i + 3] for i in range(max(1, len(text) - 2))}
    mh.update_batch([s.encode("utf-8") for s in shingles])
    return mh


def clean_cases(cases: list[Case], ledger: Ledger, near_threshold: float = 0.8, num_perm: int = 128,
                min_chars: int = 10) -> tuple[list[Case], Counter]:
    """Normalise and scrub every case, then drop low-quality, exact and near duplicates (first one wins)."""
    counts: Counter = Counter()
    kept: list[Case] = []
    exact: dict[str, str] = {}
    ids: set[str] = set()
    lsh = MinHashLSH(threshold=near_threshold, num_perm=num_perm)
    for case in cases:
        ledger.seen("clean")
        cleaned = clean_case(case, counts)
        source = case.source or case.id
        problem = quality_problem(cleaned, min_chars)
        if problem:
            ledger.reject("clean", source, problem, {"case_id": cleaned.id})
            continue
        text = case_text(cleaned)
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest in exact:
            ledger.reject("clean", source, f"duplicate: same content as case {exact[digest]}", {"case_id": cleaned.id})
            continue
        mh = _minhash(text, num_perm)
        near = lsh.query(mh)
        if near:
            ledger.reject("clean", source, f"near-duplicate: of case {sorted(near)[0]} (MinHash ≥ {near_threshold})",
                          {"case_id": cleaned.id})
            continue
        if cleaned.id in ids:
            ledger.reject("clean", source, f"duplicate id: case id {cleaned.id} seen before", {"case_id": cleaned.id})
            continue
        ids.add(cleaned.id)
        exact[digest] = cleaned.id
        lsh.insert(cleaned.id, mh)
        kept.append(cleaned)
        ledger.keep("clean")
    return kept, counts


def clean_corpus(records: list[dict], ledger: Ledger, min_chars: int = 20) -> tuple[list[dict], Counter]:
    counts: Counter = Counter()
    seen: dict[str, str] = {}
    kept = []
    for rec in records:
        ledger.seen("clean-corpus")
        text = scrub_text(normalise_text(rec["text"]), counts).strip()
        if len(text) < min_chars:
            ledger.reject("clean-corpus", rec.get("source", "?"), f"too short: {len(text)} characters")
            continue
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest in seen:
            ledger.reject("clean-corpus", rec.get("source", "?"), f"duplicate: same paragraph as {seen[digest]}")
            continue
        seen[digest] = rec.get("source", "?")
        kept.append({**rec, "text": text, "source": scrub_text(rec.get("source", "?"), counts)})
        ledger.keep("clean-corpus")
    return kept, counts
