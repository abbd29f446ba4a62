"""`shicheng curate`: raw materials -> clean cases + corpus -> expanded answers -> split -> stage datasets + card.

    materials ─import─▶ cases, corpus ─clean─▶ ─complete follow-ups─▶ ─expand (teacher | composer)─▶
    ─split by patient─▶ five stage datasets ─▶ card (README.md + card.json), rejects.jsonl
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import Progress

from shicheng.curate.card import build_card, write_card
from shicheng.curate.clean import clean_cases, clean_corpus
from shicheng.curate.datasets import build_stage_rows, write_jsonl_rows, write_stages
from shicheng.curate.importers import import_path
from shicheng.curate.ledger import Ledger
from shicheng.curate.scrub import redact
from shicheng.curate.split import SPLITS, split_cases
from shicheng.domain import Case, load_master_files
from shicheng.prescription import apply_to_previous, format_herbs, refers_to_previous
from shicheng.records.prescriptions import UnreadablePrescription, read_prescription

SKIP_NAMES = ("README", "mapping")  # documentation and column mappings travel with materials; they are not data
MAX_WARNINGS = 200  # the card lists this many; `warnings_total` counts them all


@dataclass
class CurateResult:
    out_dir: Path
    card: dict
    ledger: Ledger
    cases: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def discover(materials: list[Path]) -> tuple[list[Path], list[Path], dict[Path, Path]]:
    """(data files, master YAML files, csv/xlsx -> sibling mapping.yaml) under the given paths, sorted."""
    files, master_files, mappings = [], [], {}
    for root in materials:
        for p in _files_under(root):
            if p.parent.name == "masters" and p.suffix in (".yaml", ".yml"):
                master_files.append(p)
            elif p.name.startswith(SKIP_NAMES) or p.name.startswith("."):
                continue
            else:
                files.append(p)
                sibling = p.parent / "mapping.yaml"
                if p.suffix.lower() in (".csv", ".xlsx") and sibling.exists():
                    mappings[p] = sibling
    return files, master_files, mappings


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]


def source_names(materials: list[Path]) -> dict[Path, str]:
    """file -> the name sources give it: its path relative to its materials root (POSIX separators).

    The same materials curated from two places give the same output. With several folders each name
    starts with its folder's name; a name that would still repeat gets "#2", "#3" …
    """
    names: dict[Path, str] = {}
    taken: set[str] = set()
    for root in materials:
        prefix = f"{root.name}/" if len(materials) > 1 and root.is_dir() else ""
        for p in _files_under(root):
            if p in names:
                continue
            name = prefix + (p.relative_to(root).as_posix() if root.is_dir() else p.name)
            unique, k = name, 1
            while unique in taken:
                k += 1
                unique = f"{name}#{k}"
            names[p] = unique
            taken.add(unique)
    return names


def materials_fingerprint(materials: list[Path], names: dict[Path, str]) -> list[dict]:
    """Per materials root: the number of files and one sha256 over their names and bytes. The card records
    this instead of the paths as typed, which differ between machines and may name a person."""
    out = []
    for root in materials:
        digest, n = hashlib.sha256(), 0
        for p in _files_under(root):
            digest.update(f"{names[p]}\0{hashlib.sha256(p.read_bytes()).hexdigest()}\n".encode())
            n += 1
        out.append({"files": n, "sha256": digest.hexdigest()})
    return out


SYNTHETIC_MARKS = ("合成演示数据", "synthetic demonstration data")


def is_synthetic(path: Path) -> bool:
    """Files the demo generator wrote say so in their first lines; their cases are marked synthetic."""
    try:
        with path.open("rb") as fh:
            head = fh.read(600).decode("utf-8", errors="ignore")
    except OSError:
        return False
    return any(mark in head for mark in SYNTHETIC_MARKS)


def complete_followups(case: Case) -> Case:
    """Parse prescriptions; a follow-up written as 上方去X加Y becomes the full list (kept after the original).

    A visit whose prescription the parser fails on is left as imported: the expand step (composer or
    teacher) reads it again and rejects the case with the parser's reason."""
    visits = []
    for k, v in enumerate(case.visits):
        text = v.answer.prescription if v.answer else None
        if text:
            try:
                parsed = read_prescription(text)
                rx = parsed.prescription
                if k > 0 and refers_to_previous(text) and visits[k - 1].prescription:
                    rx = apply_to_previous(visits[k - 1].prescription, parsed)
                    text = f"{text.rstrip('。')}。全方：{format_herbs(rx.herbs)}"
            except UnreadablePrescription:
                visits.append(v)
                continue
            v = v.model_copy(update={"prescription": rx, "answer": v.answer.model_copy(update={"prescription": text})})
        visits.append(v)
    return case.model_copy(update={"visits": visits})


def curate(materials: list[Path], out_dir: Path, mapping: Path | None = None, masters_dir: Path | None = None,
           teacher=None, seed: int = 0, show_progress: bool = True) -> CurateResult:
    """Run every curation step and write the stage datasets; `teacher` is a TeacherConfig or None (offline)."""
    from shicheng.curate.compose import compose_cases
    from shicheng.curate.teacher import expand_cases

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger()
    materials = [Path(m) for m in materials]
    files, master_files, mappings = discover(materials)
    names = source_names(materials)
    if masters_dir is not None:
        master_files += sorted(Path(masters_dir).glob("*.y*ml"))
    masters = load_master_files(master_files)
    master_names = {m.name: m.id for m in masters.values()} | {m.id: m.id for m in masters.values()}
    cases: list[Case] = []
    corpus: list[dict] = []
    warnings: list[str] = []
    with Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task("import", total=len(files))
        for path in files:
            result = import_path(path, ledger, mapping=mapping or mappings.get(path), masters=master_names,
                                 name=names[path])
            if is_synthetic(path):
                result.cases = [c.model_copy(update={"synthetic": True}) for c in result.cases]
            cases += result.cases
            corpus += result.corpus
            warnings += result.warnings
            progress.advance(task)
        progress.update(task, description="clean")
        cases, pii = clean_cases(cases, ledger)
        corpus, pii_corpus = clean_corpus(corpus, ledger)
        cases = [complete_followups(c) for c in cases]
        progress.update(task, description="expand answers")
        if teacher is not None:
            cases = expand_cases(cases, masters, teacher, ledger)
        else:
            cases = compose_cases(cases, masters, ledger)
    assignment = split_cases(cases, seed)
    stage_rows = build_stage_rows(cases, corpus, masters, assignment, seed)
    files_info = write_stages(out_dir, stage_rows)
    for split in SPLITS:
        write_jsonl_rows(out_dir / "cases" / f"{split}.jsonl",
                         [c.model_dump(exclude_none=True) for c in cases if assignment[c.id] == split])
    write_jsonl_rows(out_dir / "corpus.jsonl", corpus)
    ledger.write_rejects(out_dir / "rejects.jsonl")
    (out_dir / "masters").mkdir(exist_ok=True)
    for m in masters.values():
        (out_dir / "masters" / f"{m.id}.json").write_text(m.model_dump_json(indent=2), encoding="utf-8")
    split_counts = dict(Counter(assignment.values()))
    split_info = {"seed": seed, "unit": "patient", "stratified_by": "master",
                  "cases": {s: split_counts.get(s, 0) for s in SPLITS}, "assignment": dict(sorted(assignment.items()))}
    (out_dir / "split.json").write_text(json.dumps(split_info, ensure_ascii=False, indent=1), encoding="utf-8")
    ledger.check()
    pii_total = dict(sorted((pii + pii_corpus).items()))
    card = build_card(stage_rows, files_info, ledger.summary(), pii_total,
                      {k: v for k, v in split_info.items() if k != "assignment"},
                      {"seed": seed, "masters": sorted(masters), "synthetic": any(c.synthetic for c in cases)
                       or any(m.fictional for m in masters.values()), "teacher": teacher.model if teacher else
                       "offline composer", "warnings": [redact(w) for w in warnings[:MAX_WARNINGS]],
                       "warnings_total": len(warnings), "materials": materials_fingerprint(materials, names)})
    write_card(out_dir, card)
    return CurateResult(out_dir=out_dir, card=card, ledger=ledger, cases=split_info["cases"],
                        seconds=time.perf_counter() - t0)
