"""Coordinator actions: create a study from `shicheng predict` files, register raters, read progress.

    create_study(store, "pilot", cases=Path("runs/demo/data/cases/test.jsonl"),
                 predictions=[Path("runs/demo/eval/stage-5.jsonl"), Path("runs/demo/eval/gold.jsonl")])
    add_rater(store, "pilot", login="wang", lineage=["li-shouyang"], credential="主任医师")

Items are exactly the answers the judges scored: one per prediction line. A failed generation (a line with
`error`) is left out and counted, never shown as an empty answer; a counterfactual line (a case asked as
another master) is left out too, because its rater pool (the case's master's lineage) and the master the
answer imitates differ, so nobody is the right judge of its style. Letters A, B, C… stand for the systems
and are shuffled per case, so that a letter says nothing about which system wrote the answer.
"""

from __future__ import annotations

import csv
import random
import string
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shicheng.domain import Task
from shicheng.evaluate.predict import find_masters, read_cases, read_predictions
from shicheng.evaluate.results import file_digest
from shicheng.prompts import user_prompt
from shicheng.rate.auth import hash_password
from shicheng.rate.db import Account, Assignment, Item, Rating, Store, Study, audit, study_by_name
from shicheng.rate.rubric import load_rubric

COORDINATOR = "coordinator"


def _label(i: int) -> str:
    return string.ascii_uppercase[i] if i < 26 else f"Z{i - 25}"


def create_study(store: Store, name: str, *, cases: Path, predictions: Sequence[Path], seed: int = 0,
                 masters_file: Path | None = None, actor: str = COORDINATOR) -> dict:
    """Read the cases and predictions, check every line against the cases, and store the items.

    The masters' display names come from `masters_file`, else the masters/ folder beside the curated cases;
    without either the raters see the master ids."""
    if not predictions:
        raise ValueError("a study needs at least one predictions file")
    case_list = read_cases(Path(cases))
    by_id = {c.id: c for c in case_list}
    answers, failures = read_predictions([Path(p) for p in predictions])
    items, seen = [], {}
    skipped_counterfactual = 0
    for row in answers:
        where = f"{row['file']}:{row['line']}"
        case = by_id.get(row["case_id"])
        if case is None:
            raise ValueError(f"{where}: field 'case_id': case '{row['case_id']}' is not in {cases}")
        visit = row["visit"]
        if not isinstance(visit, int) or not 1 <= visit <= len(case.visits):
            raise ValueError(f"{where}: field 'visit': {visit!r} is not a visit of case '{case.id}' "
                             f"(it has {len(case.visits)})")
        try:
            task = Task(row["task"])
        except ValueError:
            raise ValueError(f"{where}: field 'task': unknown task {row['task']!r}") from None
        master = case.master_id or row.get("case_master")
        if not master:
            raise ValueError(f"{where}: case '{case.id}' has no master, and raters are chosen from the lineage "
                             "of the case's master")
        if row["master"] and row["master"] != master:
            skipped_counterfactual += 1
            continue
        key = (case.id, visit, task.value, row["system"])
        if key in seen:
            raise ValueError(f"{seen[key]} and {where} are the same answer (case {case.id}, visit {visit}, "
                             f"task {task.value}, system {row['system']}); each answer must appear once")
        seen[key] = where
        items.append(dict(case_id=case.id, visit=visit, task=task.value, master=master, system=row["system"],
                          output=row["output"], source=where,
                          case_text=user_prompt(case, visit - 1, task)))
    if not items:
        raise ValueError(f"no answer to rate in {', '.join(map(str, predictions))} "
                         f"({len(failures)} failed generations, {skipped_counterfactual} counterfactual lines)")
    # Letters per (case, visit, task): a seeded shuffle of the systems that answered it.
    rng = random.Random(seed)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for it in items:
        groups[(it["case_id"], it["visit"], it["task"])].append(it)
    for group in groups.values():
        order = list(range(len(group)))
        rng.shuffle(order)
        for letter_index, it in zip(order, group, strict=True):
            it["label"] = _label(letter_index)
    rubric = load_rubric()
    profiles = find_masters(None, Path(cases), masters_file)
    sources = {"cases": {"path": str(cases), "sha256": file_digest(cases)},
               "masters": {m: (profiles[m].name if m in profiles else m) for m in sorted({i["master"] for i in items})},
               "predictions": [{"path": str(p), "sha256": file_digest(p)} for p in predictions]}
    with store.session() as s:
        if s.scalar(select(Study).where(Study.name == name)) is not None:
            raise ValueError(f"a study named '{name}' already exists")
        study = Study(name=name, rubric_version=rubric.version, seed=seed, sources=sources)
        s.add(study)
        s.flush()
        s.add_all(Item(study_id=study.id, **it) for it in items)
        audit(s, actor, "create_study", name, items=len(items), failed_generations=len(failures),
              counterfactual_skipped=skipped_counterfactual, **sources)
    return {"study": name, "items": len(items), "systems": sorted({it["system"] for it in items}),
            "masters": sorted({it["master"] for it in items}), "failed_generations": len(failures),
            "counterfactual_skipped": skipped_counterfactual}


def add_rater(store: Store, study: str, *, login: str, lineage: Sequence[str], credential: str = "",
              display_name: str = "", password: str | None = None, actor: str = COORDINATOR) -> None:
    """Register a rater of `study` who trained under the masters in `lineage`."""
    login = login.strip()
    if not login:
        raise ValueError("a rater needs a login")
    lineage = [m.strip() for m in lineage if m.strip()]
    if not lineage:
        raise ValueError(f"rater '{login}': lineage is empty; name the master(s) the rater trained under")
    with store.session() as s:
        st = study_by_name(s, study)
        if s.scalar(select(Account).where(Account.login == login)) is not None:
            raise ValueError(f"login '{login}' is taken")
        known = set(s.scalars(select(Item.master).where(Item.study_id == st.id).distinct()))
        unknown = [m for m in lineage if m not in known]
        if unknown:
            raise ValueError(f"rater '{login}': master(s) {', '.join(unknown)} have no item in study '{study}'; "
                             f"its masters: {', '.join(sorted(known))}")
        acc = Account(login=login, role="rater", study_id=st.id, display_name=display_name or login,
                      lineage=lineage, credential=credential,
                      password_hash=hash_password(password) if password else None)
        s.add(acc)
        audit(s, actor, "add_rater", login, study=study, lineage=lineage, credential=credential)


def add_raters_file(store: Store, study: str, path: Path, actor: str = COORDINATOR) -> int:
    """Raters from a CSV with columns login, lineage (master ids separated by ';'), credential, name."""
    path = Path(path)
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("login", "lineage") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}:1: missing column(s) {', '.join(missing)}; columns: login, lineage, "
                             "credential, name")
        rows = list(reader)
    for n, row in enumerate(rows, start=2):
        try:
            add_rater(store, study, login=row["login"] or "", lineage=(row["lineage"] or "").split(";"),
                      credential=row.get("credential") or "", display_name=row.get("name") or "", actor=actor)
        except ValueError as e:
            raise ValueError(f"{path}:{n}: {e}") from None
    return len(rows)


def add_coordinator(store: Store, login: str, password: str, actor: str = COORDINATOR) -> None:
    if len(password) < 8:
        raise ValueError("a coordinator password needs at least 8 characters")
    with store.session() as s:
        if s.scalar(select(Account).where(Account.login == login)) is not None:
            raise ValueError(f"login '{login}' is taken")
        s.add(Account(login=login, role="coordinator", display_name=login, password_hash=hash_password(password)))
        audit(s, actor, "add_coordinator", login)


def progress_rows(s: Session, study: Study) -> list[dict]:
    """Per rater: assigned, rated (every dimension or cannot-judge), started, minutes spent."""
    out = []
    raters = s.scalars(select(Account).where(Account.study_id == study.id, Account.role == "rater")
                       .order_by(Account.login)).all()
    for r in raters:
        assigned = s.scalar(select(func.count()).select_from(Assignment).where(Assignment.rater_id == r.id)) or 0
        ratings = s.scalars(select(Rating).join(Assignment, Rating.assignment_id == Assignment.id)
                            .where(Assignment.rater_id == r.id)).all()
        done = sum(1 for x in ratings if x.cannot_judge or x.total is not None)
        out.append({"rater": r.login, "lineage": r.lineage, "credential": r.credential, "assigned": assigned,
                    "rated": done, "started": len(ratings), "minutes": round(sum(x.seconds for x in ratings) / 60, 1)})
    return out


def progress(store: Store, study: str) -> list[dict]:
    with store.session() as s:
        return progress_rows(s, study_by_name(s, study))


__all__ = ["add_coordinator", "add_rater", "add_raters_file", "create_study", "progress", "progress_rows"]
