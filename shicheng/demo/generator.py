"""Generate the demo's raw materials: what a hospital would hand over, so `make demo` exercises the importers.

    generate_demo(out_dir, seed=0, n_cases=1600) -> counts

writes, every file headed by the synthetic-data notice:

    records/<master_id>.txt   plain-text 医案 of each fictional master (【医案】 format, 1–3 visits)
    records/general.txt       textbook cases (医家：教材) for stage 2, ~25 % of the cases
    cases.csv + mapping.yaml  ~15 % of the master cases, one row per visit, with the column mapping
    treatises/<master_id>.md  a short treatise per master; treatises/classics.md the formulas used
    README.md                 what all this is

~20 % of the records carry fictional personal data (病历号, 电话, 身份证, 住址) for the scrubber, ~10 % of
the patients are pregnant (and get prescriptions without 禁用/慎用 herbs), and 1–2 % of the records are
exact or near duplicates for dedup. Everything is drawn from random.Random(seed): same seed, same bytes.
"""

from __future__ import annotations

import csv
import io
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from shicheng.demo import load_demo_masters, masters_dir
from shicheng.demo.cases import CaseBuilder, DemoCase
from shicheng.demo.data import load_styles, load_syndromes
from shicheng.demo.render import (
    CSV_COLUMNS,
    HEADER,
    MAPPING,
    csv_rows,
    record_text,
    write_prescription,
)
from shicheng.demo.story import StoryTeller
from shicheng.demo.treatise import classics_page, master_treatise
from shicheng.knowledge import load_knowledge

# Enough cases that each (syndrome, master) pair of the case pool has about twenty: what the tiny CPU model
# needs to learn each master's formula and hallmark herbs (fewer, and its answers do not tell masters apart).
DEFAULT_CASES = 1600
GENERAL_SHARE = 0.25
CSV_SHARE = 0.15
PREGNANT_SHARE = 0.10
PERSONAL_SHARE = 0.20
DUPLICATE_SHARE = 0.015  # of the cases, each for exact and for near duplicates
GENERAL_PREFIX = "JC"
SIGNATURE_WEIGHT = 3.0


@dataclass
class DemoCorpus:
    cases: list[DemoCase]
    prescriptions: dict[str, list[str]]  # case id -> 处方 as written, per visit
    records: dict[str, str]  # case id -> plain-text record (text-channel cases only)
    csv_ids: list[str]
    exact_duplicates: dict[str, str] = field(default_factory=dict)  # new id -> original id
    near_duplicates: dict[str, str] = field(default_factory=dict)
    duplicate_records: dict[str, str] = field(default_factory=dict)  # new id -> record text

    def file_of(self, case: DemoCase) -> str:
        return case.master.id if case.master else "general"


def build_demo(seed: int = 0, n_cases: int = DEFAULT_CASES) -> DemoCorpus:
    """All demo cases in memory, rendered; generate_demo writes them. Deterministic in seed."""
    if n_cases < 10:
        raise ValueError(f"n_cases must be at least 10 (got {n_cases})")
    kb, table, styles, masters = load_knowledge(), load_syndromes(), load_styles(), load_demo_masters()
    missing = sorted(set(masters) - set(styles))
    if missing:
        raise ValueError(f"styles.yaml has no style for master(s) {missing}")
    teller = StoryTeller(CaseBuilder(kb, table, styles))
    rng = random.Random(seed)
    n_general = round(n_cases * GENERAL_SHARE)
    plan = [masters[mid] for i in range(n_cases - n_general) for mid in [sorted(masters)[i % len(masters)]]]
    plan += [None] * n_general
    counters: dict[str, int] = {}
    cases: list[DemoCase] = []
    for master in plan:
        school = styles[master.id].school if master else None
        pregnant = rng.random() < PREGNANT_SHARE
        candidates = [s for s in table.case_pool() if (school is None or school in s.schools)
                      and (not pregnant or (s.pregnancy_ok and s.sex != "male"))]
        syndrome = rng.choices(candidates, weights=[_weight(s, master, school) for s in candidates])[0]
        prefix = styles[master.id].id_prefix if master else GENERAL_PREFIX
        counters[prefix] = counters.get(prefix, 0) + 1
        case_id = f"{prefix}-{counters[prefix]:04d}"
        case_rng = random.Random(f"{seed}/{case_id}")
        cases.append(teller.case(case_id, master, syndrome, case_rng, pregnant=pregnant,
                                 personal=rng.random() < PERSONAL_SHARE,
                                 n_visits=rng.choices((1, 2, 3), weights=(25, 40, 35))[0]))
    master_ids = [c.id for c in cases if c.master]
    csv_ids = sorted(rng.sample(master_ids, round(len(master_ids) * CSV_SHARE)))
    corpus = DemoCorpus(cases=cases, prescriptions={}, records={}, csv_ids=csv_ids)
    csv_set = set(csv_ids)
    for case in cases:
        render_rng = random.Random(f"{seed}/{case.id}/render")
        written = [write_prescription(v, render_rng, case.school) for v in case.visits]
        corpus.prescriptions[case.id] = written
        if case.id not in csv_set:
            corpus.records[case.id] = record_text(case, render_rng, written)
    _add_duplicates(corpus, rng, counters, n_cases)
    return corpus


def _weight(syndrome, master, school: str | None) -> float:
    """A master's collection leans on his signature formulas: those syndromes come up more often."""
    if master is None:
        return 1.0
    return SIGNATURE_WEIGHT if syndrome.schools[school].formula in master.signature_formulas else 1.0


def _add_duplicates(corpus: DemoCorpus, rng: random.Random, counters: dict[str, int], n_cases: int) -> None:
    """Copies under new ids, as when one case appears in two collections: exact, and lightly edited."""
    n = max(1, round(n_cases * DUPLICATE_SHARE))
    chosen = rng.sample(sorted(corpus.records), 2 * n)
    for k, original in enumerate(chosen):
        prefix = original.split("-")[0]
        counters[prefix] += 1
        new_id = f"{prefix}-{counters[prefix]:04d}"
        text = corpus.records[original].replace(f"【医案】{original}\n", f"【医案】{new_id}\n", 1)
        if k < n:
            corpus.exact_duplicates[new_id] = original
        else:
            text = near_copy(text, rng)
            corpus.near_duplicates[new_id] = original
        corpus.duplicate_records[new_id] = text


def near_copy(text: str, rng: random.Random) -> str:
    """Drop one symptom phrase from the first present illness and change the first number of packs."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        head, sep, body = line.partition("：")
        if sep and head in ("现病史", "刻下症", "病史"):
            parts = body.split("，")
            if len(parts) > 3:
                del parts[rng.randrange(1, len(parts) - 1)]
            lines[i] = head + sep + "，".join(parts)
            break
    text = "\n".join(lines)
    return re.sub(r"(\d+)剂", lambda m: f"{int(m.group(1)) + rng.choice((3, 7))}剂", text, count=1)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="\n")


def generate_demo(out_dir: str | Path, seed: int = 0, n_cases: int = DEFAULT_CASES) -> dict:
    """Write the demo raw materials under out_dir and return what was written, counted."""
    out = Path(out_dir)
    corpus = build_demo(seed, n_cases)
    kb, table, styles, masters = load_knowledge(), load_syndromes(), load_styles(), load_demo_masters()
    by_file: dict[str, list[str]] = {}
    for case in corpus.cases:
        if case.id in corpus.records:
            by_file.setdefault(corpus.file_of(case), []).append(corpus.records[case.id])
    rng = random.Random(f"{seed}/files")
    for new_id in sorted(corpus.duplicate_records):
        original = corpus.exact_duplicates.get(new_id) or corpus.near_duplicates[new_id]
        name = corpus.file_of(next(c for c in corpus.cases if c.id == original))
        records = by_file[name]
        records.insert(rng.randint(len(records) // 2, len(records)), corpus.duplicate_records[new_id])
    files = []
    for name in sorted(by_file):
        path = out / "records" / f"{name}.txt"
        _write(path, HEADER + "\n\n" + "\n".join(by_file[name]))
        files.append(path)
    files += _write_csv(out, corpus)
    for mid in sorted(masters):
        path = out / "treatises" / f"{mid}.md"
        _write(path, master_treatise(masters[mid], styles[mid], table, kb))
        files.append(path)
    for src in sorted(masters_dir().glob("*.yaml")):  # curate finds masters/*.yaml among the materials
        path = out / "masters" / src.name
        _write(path, src.read_text(encoding="utf-8"))
        files.append(path)
    path = out / "treatises" / "classics.md"
    _write(path, classics_page(table, kb))
    files.append(path)
    counts = _counts(corpus, files, out)
    readme = out / "README.md"
    _write(readme, _readme(counts, seed))
    counts["files"] = sorted([*counts["files"], "README.md"])
    return counts


def _write_csv(out: Path, corpus: DemoCorpus) -> list[Path]:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    by_id = {c.id: c for c in corpus.cases}
    for n, case_id in enumerate(corpus.csv_ids, start=1):
        case = by_id[case_id]
        patient_id = case.patient.personal.get("病历号") or f"HZ{n:06d}"
        writer.writerows(csv_rows(case, corpus.prescriptions[case_id], patient_id))
    csv_path, mapping_path = out / "cases.csv", out / "mapping.yaml"
    _write(csv_path, buf.getvalue())
    mapping = yaml.safe_dump({"columns": MAPPING, "encoding": "utf-8"}, allow_unicode=True, sort_keys=False)
    _write(mapping_path, f"# {HEADER}\n# Column mapping of cases.csv for the shicheng tabular importer; one row per "
                         f"visit.\n# The 备注 column (unmapped) carries the synthetic-data notice on every row.\n"
                         + mapping)
    return [csv_path, mapping_path]


def _counts(corpus: DemoCorpus, files: list[Path], out: Path) -> dict:
    cases = corpus.cases
    per_master: dict[str, int] = {}
    for c in cases:
        if c.master:
            per_master[c.master.id] = per_master.get(c.master.id, 0) + 1
    return {
        "cases": len(cases),
        "master_cases": dict(sorted(per_master.items())),
        "general_cases": sum(1 for c in cases if c.master is None),
        "text_records": len(corpus.records) + len(corpus.duplicate_records),
        "csv_cases": len(corpus.csv_ids),
        "csv_rows": sum(len(by.visits) for by in cases if by.id in set(corpus.csv_ids)),
        "visits": sum(len(c.visits) for c in cases),
        "multi_visit_cases": sum(1 for c in cases if len(c.visits) > 1),
        "pregnant": sum(1 for c in cases if c.patient.pregnant_weeks),
        "with_personal_data": sum(1 for c in cases if c.patient.personal),
        "exact_duplicates": len(corpus.exact_duplicates),
        "near_duplicates": len(corpus.near_duplicates),
        "syndromes": len({c.syndrome.id for c in cases}),
        "treatises": sum(1 for f in files if f.parent.name == "treatises"),
        "files": sorted(str(f.relative_to(out)) for f in files),
    }


def _readme(counts: dict, seed: int) -> str:
    masters = "\n".join(f"- {mid} (`records/{mid}.txt` and `cases.csv`): {n} cases"
                        for mid, n in counts["master_cases"].items())
    return f"""{HEADER}

# shicheng demo raw materials (seed {seed})

Generated by `shicheng.demo.generate_demo`. The five masters are FICTIONAL; every case, patient,
name, phone number, ID number and address is invented. This is synthetic demonstration data for the
shicheng pipeline (curate → train → evaluate) and is not medical advice. 本数据为合成演示数据，医家为虚构人物，
患者信息均为虚构，非医疗建议。

- {counts['cases']} cases ({counts['visits']} visits, {counts['multi_visit_cases']} with follow-ups), \
{counts['syndromes']} syndromes
{masters}
- `records/general.txt`: {counts['general_cases']} textbook cases (医家：教材), for stage 2
- `cases.csv` + `mapping.yaml`: {counts['csv_cases']} master cases as {counts['csv_rows']} rows (one per visit)
- `treatises/`: one treatise per master and `classics.md` on the formulas, for stage 1
- {counts['with_personal_data']} records carry fictional personal data (to exercise scrubbing); \
{counts['pregnant']} patients are pregnant
- {counts['exact_duplicates']} exact and {counts['near_duplicates']} near duplicate records (to exercise dedup)
"""
