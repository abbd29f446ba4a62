"""Read and validate the knowledge files shipped in `shicheng/knowledge/data/`.

Every problem is collected with its file and line, then raised together as a KnowledgeError: a
broken lexicon must never load half-way and silently mis-map herbs.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shicheng.domain import validation_message

DATA_DIR = Path(__file__).parent / "data"


class KnowledgeError(ValueError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        head = f"{len(problems)} problem(s) in the knowledge files:\n  "
        super().__init__(head + "\n  ".join(problems[:50]))


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ProcessedForm(_Row):
    surface: str = Field(min_length=1)
    standard: str
    processing: str | None = None


class HerbRow(_Row):
    name: str = Field(min_length=1)
    pinyin: str = ""
    category: str = ""
    aliases: list[str] = Field(default_factory=list)
    processed: list[ProcessedForm] = Field(default_factory=list)
    traditional: list[str] = Field(default_factory=list)
    source: str = Field(min_length=1)


class FormulaHerb(_Row):
    herb: str
    dose: float | None = None
    unit: str | None = None
    note: str | None = None


class FormulaRow(_Row):
    name: str
    aliases: list[str] = Field(default_factory=list)
    source: str | None = None
    category: str | None = None
    herbs: list[FormulaHerb] = Field(min_length=1)
    note: str | None = None


class MergedRow(_Row):
    name: str
    herbs: list[str] = Field(min_length=2)
    source: str | None = None


class IncompatibilityRule(_Row):
    id: str
    kind: str = Field(pattern="^(十八反|十九畏)$")
    a: list[str] = Field(min_length=1)
    b: list[str] = Field(min_length=1)
    source: str


class PregnancyRow(_Row):
    herb: str
    level: str = Field(pattern="^(禁用|慎用)$")
    source: str


class DoseRangeRow(_Row):
    herb: str
    min_g: float = Field(ge=0)
    max_g: float = Field(gt=0)
    note: str = ""
    source: str


class ComponentRow(_Row):
    """A written form that carries other drugs (朱茯神 = 茯神 coated with 朱砂): components.csv."""

    name: str = Field(min_length=1)
    components: list[str] = Field(min_length=1)
    source: str = Field(min_length=1)


class UnitTable(_Row):
    version: int = 1
    grams: dict[str, float]
    counts: list[str] = Field(default_factory=list)
    volumes: dict[str, float] = Field(default_factory=dict)


@dataclass
class RawKnowledge:
    """The files as read, validated row by row but not yet cross-checked."""

    herbs: list[tuple[str, HerbRow]] = field(default_factory=list)  # (file:line, row)
    formulas: list[tuple[str, FormulaRow]] = field(default_factory=list)
    merged: list[tuple[str, MergedRow]] = field(default_factory=list)
    rules: list[tuple[str, IncompatibilityRule]] = field(default_factory=list)
    pregnancy: list[tuple[str, PregnancyRow]] = field(default_factory=list)
    dose_ranges: list[tuple[str, DoseRangeRow]] = field(default_factory=list)
    components: list[tuple[str, ComponentRow]] = field(default_factory=list)
    units: UnitTable | None = None
    problems: list[str] = field(default_factory=list)


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split("|") if v.strip()]


def parse_processed(entry: str) -> ProcessedForm:
    """`SURFACE[>STANDARD][:PROCESSING]`, e.g. `生军>生大黄:生用`."""
    head, _, processing = entry.partition(":")
    surface, _, standard = head.partition(">")
    return ProcessedForm(surface=surface.strip(), standard=(standard or surface).strip(),
                         processing=processing.strip() or None)


def _csv_rows(path: Path, problems: list[str]):
    """Yield (location, dict) for every data row; '#' lines are comments."""
    text = path.read_text(encoding="utf-8-sig")
    lines = [(i, ln) for i, ln in enumerate(text.splitlines(), start=1) if ln.strip() and not ln.startswith("#")]
    if not lines:
        problems.append(f"{path.name}: no rows")
        return
    reader = csv.reader(io.StringIO("\n".join(ln for _, ln in lines)))
    header = next(reader)
    for (lineno, _), values in zip(lines[1:], reader, strict=False):
        loc = f"{path.name}:{lineno}"
        if len(values) != len(header):
            problems.append(f"{loc}: expected {len(header)} columns ({','.join(header)}), got {len(values)}")
            continue
        yield loc, dict(zip(header, values, strict=True))


def _validate(model, data, loc: str, problems: list[str]):
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems.append(f"{loc}: {validation_message(e, whole='(row)')}")
        return None


def _yaml(path: Path, problems: list[str]) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        problems.append(f"{path.name}: not valid YAML: {e}")
        return {}
    if not isinstance(data, dict):
        problems.append(f"{path.name}: expected a mapping at the top level")
        return {}
    return data


def _yaml_list(path: Path, key: str, model, problems: list[str]) -> list:
    data = _yaml(path, problems)
    items = data.get(key)
    if not isinstance(items, list):
        problems.append(f"{path.name}: missing list '{key}'")
        return []
    out = []
    for i, item in enumerate(items):
        loc = f"{path.name}:{key}[{i}]" + (f" ({item.get('name') or item.get('id')})" if isinstance(item, dict)
                                           and (item.get("name") or item.get("id")) else "")
        row = _validate(model, item, loc, problems)
        if row is not None:
            out.append((loc, row))
    return out


def read_files(data_dir: Path = DATA_DIR, units_file: Path | None = None) -> RawKnowledge:
    raw = RawKnowledge()
    p = raw.problems
    # Name order is the order of the lexicon (and of the tokenizer's added terms): the shipped files are
    # numbered in the 《中药学》 chapter order they hold.
    herb_files = sorted(data_dir.glob("herbs*.csv"))
    if not herb_files:
        p.append(f"{data_dir}: no herbs*.csv files")
    for path in herb_files:
        for loc, row in _csv_rows(path, p):
            try:
                processed = [parse_processed(e) for e in _split(row.get("processed"))]
            except ValidationError:
                p.append(f"{loc}: field 'processed': malformed entry in {row.get('processed')!r}")
                continue
            data = {**row, "aliases": _split(row.get("aliases")), "traditional": _split(row.get("traditional")),
                    "processed": processed}
            herb = _validate(HerbRow, data, loc, p)
            if herb is not None:
                raw.herbs.append((loc, herb))
    raw.formulas = _yaml_list(data_dir / "formulas.yaml", "formulas", FormulaRow, p)
    raw.merged = _yaml_list(data_dir / "merged_names.yaml", "merged", MergedRow, p)
    raw.rules = _yaml_list(data_dir / "incompatibilities.yaml", "rules", IncompatibilityRule, p)
    for name, model, target in (("pregnancy.csv", PregnancyRow, raw.pregnancy),
                                ("dose_ranges.csv", DoseRangeRow, raw.dose_ranges)):
        for loc, row in _csv_rows(data_dir / name, p):
            item = _validate(model, row, loc, p)
            if item is not None:
                target.append((loc, item))
    seen: dict[str, str] = {}
    for loc, row in raw.dose_ranges:
        if row.min_g > row.max_g:
            p.append(f"{loc}: min_g {row.min_g} > max_g {row.max_g}")
        if row.herb in seen:
            p.append(f"{loc}: dose range for '{row.herb}' already given at {seen[row.herb]}")
        seen.setdefault(row.herb, loc)
    # Optional: a data folder made before components.csv existed still loads, with no components.
    if (data_dir / "components.csv").exists():
        for loc, row in _csv_rows(data_dir / "components.csv", p):
            item = _validate(ComponentRow, {**row, "components": _split(row.get("components"))}, loc, p)
            if item is not None:
                raw.components.append((loc, item))
    units_path = units_file or data_dir / "units.yaml"
    raw.units = _validate(UnitTable, _yaml(units_path, p), units_path.name, p)
    return raw


def components_table(rows: list[tuple[str, ComponentRow]], resolve: Callable[[str], Any],
                     problems: list[str]) -> dict[str, tuple[str, ...]]:
    """Cross-check components.csv against the lexicon: standard written form -> canonical component herbs.

    `resolve` is `Knowledge.resolve`. The name must be the standard form the lexicon resolves it to (so a
    prescription's `HerbItem.name` finds it), and each component must be a canonical herb other than the
    carrier itself.
    """
    table: dict[str, tuple[str, ...]] = {}
    for loc, row in rows:
        hit = resolve(row.name)
        if hit is None:
            problems.append(f"{loc}: unknown herb '{row.name}'")
            continue
        if hit.name != row.name:
            problems.append(f"{loc}: components name '{row.name}', use its standard written form '{hit.name}'")
            continue
        if row.name in table:
            problems.append(f"{loc}: '{row.name}' listed twice")
            continue
        comps = []
        for comp in row.components:
            part = resolve(comp)
            if part is None:
                problems.append(f"{loc}: unknown herb '{comp}'")
            elif part.base != comp:
                problems.append(f"{loc}: component '{comp}', use its base herb '{part.base}'")
            elif part.base == hit.base:
                problems.append(f"{loc}: '{comp}' is the herb '{row.name}' itself, not a component")
            elif comp not in comps:
                comps.append(comp)
        table[row.name] = tuple(comps)
    return table
