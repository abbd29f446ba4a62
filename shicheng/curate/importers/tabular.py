"""CSV and XLSX exports from hospital systems, read through a YAML column mapping; one row per visit.

Mapping file (targets on the left, the file's column headers on the right):

    columns: {case_id: 病例号, patient_id: 患者编号, master: 医家, sex: 性别, age: 年龄, pregnant: 妊娠,
              visit: 就诊次序, date: 就诊日期, chief_complaint: 主诉, tongue: 舌象, pulse: 脉象,
              syndrome: 证型, treatment_principle: 治法, prescription: 处方, disease: 病名}
    sheet: 医案        # xlsx only; default the first sheet
    encoding: gb18030  # csv only; default detected

Rows with the same case_id form one case, ordered by visit (1, 2, 初诊, 二诊 …; 复诊 or blank = the next).
Row numbers are the ones a spreadsheet shows: the header is row 1.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from shicheng.curate.importers.masters import MasterResolver
from shicheng.curate.importers.result import STEP, ImportResult
from shicheng.curate.ledger import Ledger
from shicheng.domain import Case
from shicheng.records.build import build_patient, build_visits
from shicheng.records.headings import ALL_TARGETS, ANSWER_TARGETS, PRESENTATION_TARGETS
from shicheng.records.prescriptions import PrescriptionReader
from shicheng.records.tidy import tidy_findings
from shicheng.records.values import folded, parse_age, parse_pregnant, parse_sex, visit_number
from shicheng.text import NotTextError, read_text


def cell_text(value: object) -> str:
    """A spreadsheet cell as text: 1001.0 -> "1001", dates as ISO dates, None -> ""."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "isoformat"):
        text = value.isoformat()
        return text[:10] if text.endswith("T00:00:00") else text
    return str(value).strip()


class MappingError(ValueError):
    """The column mapping itself is wrong or missing: a configuration error, not a data reject."""


@dataclass
class ColumnMapping:
    columns: dict[str, str]  # target -> column header in the file
    sheet: str | None = None
    encoding: str | None = None
    delimiter: str | None = None
    source: str = "<mapping>"


def load_mapping(mapping: ColumnMapping | dict | str | Path) -> ColumnMapping:
    """A mapping from a YAML file, a dict of the same shape, or an already built ColumnMapping."""
    if isinstance(mapping, ColumnMapping):
        return mapping
    source = "<mapping>"
    if isinstance(mapping, (str, Path)):
        source = str(mapping)
        try:
            mapping = yaml.safe_load(Path(mapping).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise MappingError(f"{source}: cannot read the column mapping: {e}") from e
    if not isinstance(mapping, dict) or not isinstance(mapping.get("columns"), dict):
        raise MappingError(f"{source}: a column mapping needs `columns:` mapping targets to column headers")
    columns = {str(k): folded(str(v)) for k, v in mapping["columns"].items() if v is not None and str(v).strip()}
    unknown = sorted(set(columns) - set(ALL_TARGETS))
    if unknown:
        hint = ""
        if set(unknown) == set(columns) and set(mapping["columns"].values()) <= set(ALL_TARGETS):
            hint = " (the mapping looks inverted: write `target: column header`)"
        raise MappingError(f"{source}: unknown mapping targets {unknown}{hint}; known: {', '.join(ALL_TARGETS)}")
    if "case_id" not in columns:
        raise MappingError(f"{source}: the mapping must name the case_id column")
    if not set(columns) & {*PRESENTATION_TARGETS, "tongue_pulse"}:
        raise MappingError(f"{source}: the mapping must name at least one of {', '.join(PRESENTATION_TARGETS)}")
    extra = set(mapping) - {"columns", "sheet", "encoding", "delimiter"}
    if extra:
        raise MappingError(f"{source}: unknown mapping keys {sorted(extra)}")
    return ColumnMapping(columns=columns, sheet=mapping.get("sheet"), encoding=mapping.get("encoding"),
                         delimiter=mapping.get("delimiter"), source=source)


class _FileRejected(Exception):
    """The whole file is unusable; the reason is rejected once (or once per data row when rows are known)."""


def _blank(row: list) -> bool:
    return all(cell is None or (isinstance(cell, str) and not cell.strip()) for cell in row)


def _csv_rows(path: Path, mapping: ColumnMapping) -> Iterator[tuple[int, list]]:
    text = read_text(path, mapping.encoding).text.lstrip("\ufeff")
    first = text.split("\n", 1)[0]
    # csv.Sniffer guesses from quoting patterns and fails on short or quote-free files; the header line
    # has one delimiter between every pair of column names, so the most frequent candidate there wins.
    delimiter = mapping.delimiter or max(",\t;|", key=first.count)
    if path.suffix.lower() == ".tsv" and not mapping.delimiter:
        delimiter = "\t"
    try:
        yield from enumerate(csv.reader(io.StringIO(text), delimiter=delimiter), start=1)
    except csv.Error as e:
        raise _FileRejected(f"malformed CSV: {e}") from e


def _xlsx_rows(path: Path, mapping: ColumnMapping) -> Iterator[tuple[int, list]]:
    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as e:
        raise _FileRejected(f"unreadable xlsx: {e}") from e
    try:
        if mapping.sheet is not None and mapping.sheet not in book.sheetnames:
            raise _FileRejected(f"sheet {mapping.sheet!r} not found (sheets: {', '.join(book.sheetnames)})")
        sheet = book[mapping.sheet] if mapping.sheet is not None else book.worksheets[0]
        for number, row in enumerate(sheet.iter_rows(values_only=True), start=1):
            yield number, list(row)
    finally:
        book.close()


@dataclass
class _Row:
    number: int
    visit: int | None
    label: str | None
    fields: dict[str, str]
    case_values: dict[str, object] = field(default_factory=dict)


def _read_row(number: int, values: dict[str, object], mapping: ColumnMapping) -> _Row:
    """Raises ValueError("column '年龄' (age): not an age: 'abc'") for a bad value."""
    def column(target: str) -> str:
        return f"column '{mapping.columns[target]}' ({target})"

    case_values: dict[str, object] = {}
    parsers = {"sex": parse_sex, "age": parse_age, "pregnant": parse_pregnant, "visit": visit_number}
    for target, parse in parsers.items():
        if target in values:
            try:
                case_values[target] = parse(values[target])
            except ValueError as e:
                raise ValueError(f"bad value: {column(target)}: {e}") from e
    fields = {k: cell_text(v) for k, v in values.items() if k not in parsers}
    tidy_findings(fields)
    if not fields.get("case_id"):
        raise ValueError(f"missing value: {column('case_id')} is empty")
    if not any(fields.get(k) for k in (*PRESENTATION_TARGETS, *ANSWER_TARGETS)):
        raise ValueError("no visit content: no presentation or answer column has a value")
    raw_visit = cell_text(values.get("visit"))
    label = raw_visit if raw_visit and not raw_visit.replace(".", "").isdigit() else None
    return _Row(number, case_values.pop("visit", None), label, fields, case_values)


def _assemble(case_id: str, rows: list[_Row], source: str, ledger: Ledger, step: str,
              masters: MasterResolver, rx: PrescriptionReader) -> Case | None:
    placed: dict[int, _Row] = {}
    for row in rows:
        index = row.visit if row.visit is not None else max(placed, default=0) + 1
        if index in placed:
            ledger.seen(step)
            ledger.reject(step, f"{source}:row {row.number}",
                          f"duplicate visit: case {case_id} visit {index} is already at row {placed[index].number}")
            continue
        placed[index] = row
    if not placed:
        return None
    ordered = [placed[i] for i in sorted(placed)]

    def first(key: str, where: str = "fields") -> object:
        for row in ordered:
            value = getattr(row, where).get(key)
            if value not in (None, "", "unknown"):
                return value
        return None

    visits = build_visits([(index, row.label, row.fields) for index, row in zip(sorted(placed), ordered, strict=True)],
                          rx, f"{source}:row {ordered[0].number}")
    patient = build_patient(
        first("patient_id"), case_id, sex=first("sex", "case_values") or "unknown",
        age=first("age", "case_values"),
        # Pregnancy is a safety fact: recorded at any visit, it holds for the case.
        pregnant=any(row.case_values.get("pregnant") for row in ordered),
    )
    case_source = f"{source}:row {ordered[0].number}"
    master_id = masters.resolve(first("master"), case_source)
    return Case(id=case_id, master_id=master_id, patient=patient, disease=first("disease"), visits=visits,
                source=case_source)


def import_table(path: str | Path, ledger: Ledger, mapping: ColumnMapping | dict | str | Path,
                 masters: dict[str, str] | None = None, default_master: str | None = None,
                 step: str = STEP, name: str | None = None) -> ImportResult:
    """Cases from a .csv/.tsv/.xlsx file through a column mapping; bad rows and bad files go to the ledger.
    Sources read "`name`:row N" (`name` defaults to the path as given)."""
    path, mapping = Path(path), load_mapping(mapping)
    label = name or str(path)
    resolver = MasterResolver(masters, default_master)
    rx = PrescriptionReader()
    result = ImportResult(warnings=[rx.error] if rx.error else [])
    reader = _xlsx_rows if path.suffix.lower() in (".xlsx", ".xlsm") else _csv_rows
    try:
        rows = [(n, row) for n, row in reader(path, mapping) if not _blank(row)]
    except (_FileRejected, NotTextError) as e:
        ledger.seen(step)
        ledger.reject(step, label, str(e).replace(str(path), label))
        return result
    if not rows:
        ledger.seen(step)
        ledger.reject(step, label, "empty file: no header row")
        return result
    # Exports often put a title line above the header: the header is the first row naming the case_id column.
    at = next((i for i, (_, row) in enumerate(rows[:10])
               if mapping.columns["case_id"] in (folded(cell_text(h)) for h in row)), 0)
    header = [folded(cell_text(h)) for h in rows[at][1]]
    data = rows[at + 1:]
    missing = [(t, c) for t, c in mapping.columns.items() if c not in header]
    if missing:
        names = ", ".join(f"'{c}' ({t})" for t, c in missing)
        reason = (f"missing mapped column: {names} not in {path.name} (mapping {Path(mapping.source).name}); "
                  f"the file has: {', '.join(h for h in header if h)}")
        for number, _ in data or [(1, None)]:
            ledger.seen(step)
            ledger.reject(step, f"{label}:row {number}", reason)
        return result
    position = {c: header.index(c) for c in mapping.columns.values()}
    by_case: dict[str, list[_Row]] = {}
    for number, cells in data:
        values = {t: (cells[position[c]] if position[c] < len(cells) else None) for t, c in mapping.columns.items()}
        try:
            row = _read_row(number, values, mapping)
        except ValueError as e:
            ledger.seen(step)
            ledger.reject(step, f"{label}:row {number}", str(e))
            continue
        by_case.setdefault(row.fields["case_id"], []).append(row)
    for case_id, case_rows in by_case.items():
        case = _assemble(case_id, case_rows, label, ledger, step, resolver, rx)
        if case is not None:
            ledger.seen(step)
            ledger.keep(step)
            result.cases.append(case)
    result.warnings.extend(resolver.warnings)
    result.warnings.extend(rx.warnings)
    return result
