"""The knowledge base as one object: herb lexicon, formulas, merged names, safety rules, units.

`Knowledge.resolve(word)` is the single place where a written herb name becomes (standard name, base
herb, processing). Processed forms map to their base herb so that matching and safety treat 炙甘草 as
甘草 and 法半夏 as 半夏 (DESIGN.md §2).
"""

from __future__ import annotations

import functools
import re
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
    components_table,
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
# Origin prefix + herb names that are a different plant, not that herb from another place. Unless the
# lexicon lists them as their own herb they stay unknown, never read as the herb inside them
# (中华本草 / 中药大辞典: 南天仙子 = 水蓑衣 Hygrophila seed, not 天仙子 Hyoscyamus; 云防风 = Seseli
# yunnanense and 川防风 = Ligusticum brachylobum, not 防风 Saposhnikovia; 广升麻 = Serratula chinensis,
# not 升麻 Cimicifuga).
NOT_ORIGIN_FORMS = frozenset(("南天仙子", "云防风", "川防风", "广升麻"))
SUFFIXES: dict[str, str] = {"炭": "炒炭", "粉": "研粉", "末": "研末", "霜": "制霜", "片": "饮片"}
# Processing written after the herb (山药炒, 黄柏盐水炒, 草乌制). Longest first. The value is the prefix
# form to look up (盐水炒 -> 盐: 盐黄柏 is the 盐水炙 product, ChP 2020 通则 0213 盐炙法).
POSTFIXES: dict[str, str] = {
    "盐水炒": "盐", "盐水炙": "盐", "盐水制": "盐", "姜汁炒": "姜汁炒", "姜汁炙": "姜", "米泔制": "米泔制",
    "酒炒": "酒炒", "酒蒸": "酒蒸", "酒洗": "酒洗", "酒炙": "酒炙", "酒制": "酒制", "酒浸": "酒", "醋炒": "醋炒",
    "醋炙": "醋炙", "醋制": "醋制", "蜜炙": "蜜炙", "蜜炒": "蜜", "盐炒": "盐炒", "盐炙": "盐炙", "麸炒": "麸炒",
    "土炒": "土炒", "米炒": "米炒", "炒焦": "炒焦", "炒黄": "炒", "炒炭": "炒炭", "炒香": "炒", "姜制": "姜",
    "制": "制", "炒": "炒", "炙": "炙", "煅": "煅", "炮": "炮", "煨": "煨", "蒸": "蒸", "焙": "焙", "烫": "烫",
}
_SURROGATE = re.compile("[\ud800-\udfff]")


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
    components: dict[str, tuple[str, ...]] = field(default_factory=dict)  # 朱茯神 -> (朱砂,): components.csv
    _t2s: opencc.OpenCC = field(default_factory=lambda: opencc.OpenCC("t2s"), repr=False)

    def to_simplified(self, text: str) -> str:
        # OpenCC encodes to UTF-8, which a lone surrogate (from a broken decode upstream) cannot pass.
        return self._t2s.convert(_SURROGATE.sub("\ufffd", text))

    def resolve(self, word: str) -> Resolved | None:
        """Written herb name -> Resolved, trying the lexicon, then processing prefixes and suffixes."""
        hit = self.surfaces.get(word)
        if hit is not None:
            return hit
        if word in NOT_ORIGIN_FORMS:
            return None
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

    def resolve_postfix(self, herb: str, post: str) -> Resolved | None:
        """A herb with its processing written after it (山药炒 = 炒山药); None if `herb` is not a herb."""
        inner = self.resolve(herb)
        if inner is None:
            return None
        for prefix in dict.fromkeys((POSTFIXES.get(post, post), post)):
            hit = self.resolve(prefix + herb)
            if hit is not None and hit.base == inner.base:
                return hit
        proc = "+".join(p for p in (post, inner.processing) if p)
        return Resolved(post + inner.name, inner.base, proc)

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
            if base in kb.dose_ranges:
                problems.append(f"{loc}: dose range for '{row.herb}' ({base}) given twice")
            kb.dose_ranges[base] = row
    kb.components = components_table(raw.components, kb.resolve, problems)
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
