"""The knowledge base as one object: herb lexicon, formulas, merged names, safety rules, units.

`Knowledge.resolve(word)` is the single place where a written herb name becomes (standard name, base
herb, processing). Processed forms map to their base herb so that matching and safety treat 炙甘草 as
甘草 and 法半夏 as 半夏 (DESIGN.md §2).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import opencc

from shicheng.knowledge.loader import (
    DATA_DIR,
    DoseRangeRow,
    FormulaRow,
    HerbRow,
    IncompatibilityRule,
    KnowledgeError,
    UnitTable,
    read_files,
)

# Processing words written before a herb name (炒白术, 酒当归 …). Longest first. Used only when the
# whole word is not itself in the lexicon, so 熟地黄 or 干姜 (their own herbs) are never split.
PREFIXES: tuple[str, ...] = (
    "盐酒炙", "姜汁炒", "米泔制", "蜜炙", "酒炙", "醋炙", "盐炙", "姜炙", "麸炒", "土炒", "米炒", "炒焦", "酒炒",
    "醋炒", "盐炒", "酒洗", "酒蒸", "酒制", "醋制", "制", "炒", "炙", "生", "酒", "醋", "盐", "姜", "蜜", "焦",
    "煅", "炮", "煨", "蒸", "净", "鲜", "嫩", "淡", "川", "广", "建", "怀", "杭", "亳", "云", "北", "南",
)
# Place-of-origin prefixes (道地) are not processing: they are dropped from the label.
ORIGIN_PREFIXES = frozenset("川广建怀杭亳云北南")
SUFFIXES: dict[str, str] = {"炭": "炒炭", "粉": "研粉", "末": "研末", "霜": "制霜", "片": "饮片"}


@dataclass(frozen=True)
class Resolved:
    name: str  # standard written name, processing kept (法半夏)
    base: str  # canonical base herb (半夏)
    processing: str | None = None


@dataclass
class Knowledge:
    herbs: dict[str, HerbRow]
    formulas: dict[str, FormulaRow]  # by name and alias
    merged: dict[str, list[str]]
    rules: list[IncompatibilityRule]
    pregnancy: dict[str, tuple[str, str]]  # base herb -> (level, source)
    dose_ranges: dict[str, DoseRangeRow]  # base herb -> range
    units: UnitTable
    surfaces: dict[str, Resolved] = field(default_factory=dict)
    _t2s: opencc.OpenCC = field(default_factory=lambda: opencc.OpenCC("t2s"), repr=False)

    def to_simplified(self, text: str) -> str:
        return self._t2s.convert(text)

    def resolve(self, word: str) -> Resolved | None:
        """Written herb name -> Resolved, trying the lexicon, then processing prefixes and suffixes."""
        hit = self.surfaces.get(word)
        if hit is not None:
            return hit
        for suffix, label in SUFFIXES.items():
            if word.endswith(suffix) and len(word) > 2:
                inner = self.resolve(word[: -len(suffix)])
                if inner is not None:
                    proc = "+".join(p for p in (inner.processing, label) if p)
                    return Resolved(inner.name + suffix, inner.base, proc)
        for prefix in PREFIXES:
            if word.startswith(prefix) and len(word) > len(prefix) + 1:
                inner = self.surfaces.get(word[len(prefix):])
                if inner is not None:
                    if prefix in ORIGIN_PREFIXES:
                        return inner
                    proc = "+".join(p for p in (prefix, inner.processing) if p)
                    return Resolved(prefix + inner.name, inner.base, proc)
        return None

    def base_of(self, word: str) -> str | None:
        hit = self.resolve(word)
        return hit.base if hit else None

    def describe(self, word: str) -> dict | None:
        """Everything the lexicon knows about a written name (for `shicheng herb NAME`)."""
        simplified = self.to_simplified(word.strip())
        hit = self.resolve(simplified)
        if hit is None:
            formula = self.formulas.get(simplified)
            if formula is not None:
                return {"query": word, "kind": "formula", "formula": formula.model_dump(exclude_none=True)}
            if simplified in self.merged:
                return {"query": word, "kind": "merged", "herbs": self.merged[simplified]}
            return None
        herb = self.herbs[hit.base]
        level = self.pregnancy.get(hit.base)
        dose = self.dose_ranges.get(hit.base)
        return {
            "query": word,
            "kind": "herb",
            "name": hit.name,
            "base": hit.base,
            "processing": hit.processing,
            "pinyin": herb.pinyin,
            "category": herb.category,
            "aliases": herb.aliases,
            "traditional": herb.traditional,
            "processed_forms": [p.standard if p.standard != p.surface else p.surface for p in herb.processed],
            "source": herb.source,
            "incompatible_with": self.incompatible_partners(hit.base),
            "pregnancy": {"level": level[0], "source": level[1]} if level else None,
            "dose_range_g": {"min": dose.min_g, "max": dose.max_g, "note": dose.note, "source": dose.source}
            if dose else None,
            "in_formulas": sorted({f.name for f in self.formulas.values()
                                   if any(self.base_of(h.herb) == hit.base for h in f.herbs)})[:30],
        }

    def incompatible_partners(self, base: str) -> list[dict]:
        out = []
        for rule in self.rules:
            for mine, other in ((rule.a, rule.b), (rule.b, rule.a)):
                if base in mine:
                    out.append({"rule": rule.kind, "id": rule.id, "herbs": other})
        return out


def _build(raw) -> Knowledge:
    problems = list(raw.problems)
    herbs: dict[str, HerbRow] = {}
    surfaces: dict[str, Resolved] = {}
    owner: dict[str, str] = {}  # surface -> where it was defined, for duplicate messages
    t2s = opencc.OpenCC("t2s")

    def claim(surface: str, resolved: Resolved, loc: str, what: str) -> None:
        if surface in surfaces and surfaces[surface] != resolved:
            problems.append(f"{loc}: {what} '{surface}' already defined at {owner[surface]}")
            return
        surfaces[surface] = resolved
        owner.setdefault(surface, loc)

    for loc, row in raw.herbs:
        if row.name in herbs:
            problems.append(f"{loc}: duplicate canonical name '{row.name}' (first at {owner.get(row.name)})")
            continue
        herbs[row.name] = row
        claim(row.name, Resolved(row.name, row.name), loc, "canonical name")
    # Aliases and processed forms come after every canonical name, so a clash with one is always seen.
    for loc, row in raw.herbs:
        if herbs.get(row.name) is not row:
            continue
        for alias in row.aliases:
            claim(alias, Resolved(row.name, row.name), loc, "alias")
        for form in row.processed:
            resolved = Resolved(form.standard, row.name, form.processing or _label(form.standard, row.name))
            claim(form.surface, resolved, loc, "processed form")
            if form.standard not in surfaces:
                claim(form.standard, resolved, loc, "processed form")
        for trad in row.traditional:
            simplified = t2s.convert(trad)
            if simplified in surfaces:
                surfaces.setdefault(trad, surfaces[simplified])
    kb = Knowledge(herbs=herbs, formulas={}, merged={}, rules=[], pregnancy={}, dose_ranges={},
                   units=raw.units or UnitTable(grams={"g": 1}), surfaces=surfaces)

    def need(name: str, loc: str) -> str | None:
        hit = kb.resolve(name)
        if hit is None:
            problems.append(f"{loc}: unknown herb '{name}'")
            return None
        return hit.base

    for loc, f in raw.formulas:
        for n in (f.name, *f.aliases):
            if n in kb.formulas:
                problems.append(f"{loc}: formula name '{n}' already used")
            kb.formulas[n] = f
        for h in f.herbs:
            need(h.herb, loc)
    for loc, m in raw.merged:
        if m.name in surfaces:
            problems.append(f"{loc}: merged name '{m.name}' is also a herb name")
        for h in m.herbs:
            need(h, loc)
        kb.merged[m.name] = m.herbs
    for loc, rule in raw.rules:
        for h in (*rule.a, *rule.b):
            base = need(h, loc)
            if base is not None and base != h:
                problems.append(f"{loc}: safety rule names '{h}', use its base herb '{base}'")
        kb.rules.append(rule)
    for loc, row in raw.pregnancy:
        base = need(row.herb, loc)
        if base is not None:
            if base in kb.pregnancy:
                problems.append(f"{loc}: '{row.herb}' listed twice")
            kb.pregnancy[base] = (row.level, row.source)
    for loc, row in raw.dose_ranges:
        base = need(row.herb, loc)
        if base is not None:
            kb.dose_ranges[base] = row
    if problems:
        raise KnowledgeError(problems)
    return kb


def _label(standard: str, base: str) -> str | None:
    label = standard.replace(base, "")
    return label or None


def load_knowledge(data_dir: str | Path | None = None, units_file: str | Path | None = None) -> Knowledge:
    """Load and cross-check the knowledge files; raises KnowledgeError listing every problem."""
    if data_dir is None and units_file is None:
        return _default()
    return _build(read_files(Path(data_dir) if data_dir else DATA_DIR, Path(units_file) if units_file else None))


@functools.lru_cache(maxsize=1)
def _default() -> Knowledge:
    return _build(read_files(DATA_DIR))
