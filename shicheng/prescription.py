"""Free-text prescription -> herbs with dose, unit, grams, processing and preparation notes.

Real records are messy (DESIGN.md §2): herbs and doses run together ("法半夏10黄连5"), doses are shared
("各10g"), names are merged (生熟地), aliased (云苓), traditional (當歸) or processed (炙甘草, 山药炒),
units are old (三钱, also written before the herb: 三钱细辛), formulas stand for their herbs
("桂枝汤加葛根"), and the prescription may sit inside a case record. Three steps:

1. `shicheng.prescription_scan.tokenize`: normalized text -> tokens; no herb is read inside another
   word and no year, age or lab value becomes a dose.
2. `shicheng.prescription_spans.read_spans`: herbs come only from prescription spans; the rest of a
   case record is `context`, and the medicines it names (知柏地黄丸, 复方甘草片) are `mentioned`.
3. `_Builder`: doses, 各, notes and 去 applied to the tokens of each span; a copy of the same
   prescription written twice (history and current section) is read once, never summed.

Whatever cannot be read inside a prescription span is returned in `unparsed`, never dropped.
`parse_prescription` never raises on a str: GRPO rewards parse whatever a model writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from shicheng.domain import HerbItem, Prescription
from shicheng.knowledge import Knowledge, load_knowledge
from shicheng.knowledge.lexicon import POSTFIXES, PREFIXES
from shicheng.prescription_scan import (  # noqa: F401 (re-exported: the parser's public vocabulary)
    ADMIN_UNITS,
    CONNECTORS,
    NOTES,
    SURROGATE,
    Token,
    cn_number,
    normalize,
    tokenize,
)
from shicheng.prescription_spans import keep_blocks, read_spans


@dataclass
class ParsedPrescription:
    prescription: Prescription
    unparsed: list[str] = field(default_factory=list)  # pieces of a prescription span that could not be read
    context: list[str] = field(default_factory=list)  # text read as case narrative, not prescription
    removed: list[str] = field(default_factory=list)  # base herbs named after 去 (上方去黄芩)
    mentioned: list[str] = field(default_factory=list)  # medicines named outside the prescription (曾服逍遥丸)

    @property
    def herbs(self) -> list[HerbItem]:
        return self.prescription.herbs

    def to_dict(self) -> dict:
        return {
            "formula_name": self.prescription.formula_name,
            "administration": self.prescription.administration,
            "herbs": [h.model_dump(include={"raw", "name", "base", "processing", "dose", "unit", "grams", "note"})
                      for h in self.herbs],
            "unparsed": self.unparsed,
            "mentioned": self.mentioned,
        }


@dataclass(slots=True)
class _Item:
    """A herb line while its span is read; becomes a HerbItem once (one validation, not one per field)."""
    raw: str
    name: str | None = None
    base: str | None = None
    processing: str | None = None
    dose: float | None = None
    unit: str | None = None
    grams: float | None = None
    note: str | None = None

    def herb(self) -> HerbItem:
        return HerbItem(raw=self.raw, name=self.name, base=self.base, processing=self.processing, dose=self.dose,
                        unit=self.unit, grams=self.grams, note=self.note)


class _Builder:
    """Turns the tokens of one prescription span into herb items, applying doses, 各, notes and 去."""

    def __init__(self, kb: Knowledge):
        self.kb = kb
        self.items: list[_Item] = []
        self.formulas: list[tuple[str, int]] = []  # (formula name, insert position)
        self.removed: set[str] = set()
        self.unparsed: list[str] = []
        self.admin: list[str] = []
        self.group: list[_Item] = []  # items created by the last herb or merged name, awaiting a dose
        self.last: list[_Item] = []  # the items a following note (先煎, 后下 …) belongs to
        self.each = False
        self.removing = False

    def add(self, item: _Item, group: list[_Item]) -> None:
        self.items.append(item)
        group.append(item)
        self.last = group

    def segment(self, seg: list[Token], admin: bool) -> None:
        if admin:
            self.admin.append("".join(t.text for t in seg))
            return
        k = 0
        while k < len(seg):
            t, nxt = seg[k], seg[k + 1] if k + 1 < len(seg) else None
            after = seg[k + 2] if k + 2 < len(seg) else None
            # 三钱细辛, 10g细辛: a dose with a unit right before a herb that has no dose of its own.
            if (t.kind == "num" and t.unit is not None and t.unit not in ADMIN_UNITS and not self.group
                    and not self.each and nxt is not None and nxt.kind in ("herb", "merged")
                    and (after is None or after.kind != "num")
                    and all(x.kind == "unknown" and x.text.lower() in CONNECTORS for x in seg[:k])):
                self.token(nxt, t)
                self.token(t, after)
                k += 2
                continue
            self.token(t, nxt)
            k += 1

    def token(self, t: Token, nxt: Token | None) -> None:
        if t.kind == "herb":
            r = t.resolved
            if self.removing:
                self.removed.add(r.base)
                return
            self.group = []
            self.add(_Item(t.text, r.name, r.base, r.processing), self.group)
        elif t.kind == "merged":
            self.group = []
            for h in self.kb.merged[t.text]:
                r = self.kb.resolve(h)
                if self.removing:
                    self.removed.add(r.base)
                else:
                    self.add(_Item(t.text, r.name, r.base, r.processing), self.group)
        elif t.kind == "formula":
            self.formulas.append((t.text, len(self.items)))
            self.group = []
        elif t.kind == "num":
            self.dose(t)
        elif t.kind == "note":
            for item in self.last:
                item.note = f"{item.note}、{t.text}" if item.note else t.text
        elif t.kind == "each":
            self.each = True
        elif t.kind == "add":
            self.removing = False
        elif t.kind == "remove":
            self.removing = True
        elif t.kind == "unknown":
            if t.text.lower() in CONNECTORS:
                return
            if t.bracketed and self.last:
                self.remark(t.text)
                return
            if nxt is not None and nxt.kind == "num" and nxt.unit not in ADMIN_UNITS:
                self.group = []
                self.add(_Item(t.text), self.group)
            else:
                self.unparsed.append(t.text)

    def remark(self, word: str) -> None:
        """A word in brackets after a herb: its processing (甘草6g(炙) = 炙甘草), else a note (自备, 1小时)."""
        if word in POSTFIXES or word in PREFIXES:
            for item in self.last:
                hit = self.kb.resolve_postfix(item.raw, word) if item.base and not item.processing else None
                if hit is not None and hit.base == item.base:
                    item.name, item.processing = hit.name, hit.processing
            if all(item.processing for item in self.last):
                return
        for item in self.last:
            item.note = f"{item.note}、{word}" if item.note else word

    def dose(self, t: Token) -> None:
        if t.unit in ADMIN_UNITS:
            self.admin.append(t.text)
            return
        value = t.range_max if t.range_max is not None else t.value
        if self.each:
            targets = []
            for item in reversed(self.items):
                if item.dose is not None:
                    break
                targets.append(item)
            share = value
            self.each = False
        else:
            targets = [i for i in self.group if i.dose is None]
            # A merged name with one dose and no 各 (生熟地20) is dispensed half and half (处方应付 convention).
            share = value / len(targets) if targets else value
        if not targets:
            self.unparsed.append(t.text)
            return
        for item in targets:
            item.dose = round(share, 4)
            item.unit = t.unit
            item.grams = self._grams(share, t.unit)
        self.group = []
        self.last = targets

    def _grams(self, value: float, unit: str | None) -> float | None:
        if unit is None:
            return round(value, 4)  # modern prescriptions omit the unit: grams
        factor = self.kb.units.grams.get(unit) or self.kb.units.grams.get(unit.lower())
        return round(value * factor, 4) if factor is not None else None

    def expand_formulas(self, listed: set[str], added: set[str]) -> str | None:
        """Add a named formula's herbs unless the text lists most of them (`listed`: a title such as
        六君子汤加减 before its list); `added` keeps a herb two formulas share from coming in twice.
        Returns the name of the first formula named."""
        for name, pos in sorted(self.formulas, key=lambda f: -f[1]):
            bases = [self.kb.resolve(h.herb) for h in self.kb.formulas[name].herbs]
            if sum(1 for r in bases if r.base in listed) * 2 >= len(bases):
                continue
            new = [_Item(name, r.name, r.base, r.processing) for r in bases
                   if r.base not in listed and r.base not in self.removed and r.base not in added]
            added.update(h.base for h in new)
            self.items[pos:pos] = new
        if self.formulas:
            return self.kb.formulas[min(self.formulas, key=lambda f: f[1])[0]].name
        return None


def parse_prescription(text: str, kb: Knowledge | None = None) -> ParsedPrescription:
    """Parse a prescription, or a case record that may contain one, into herbs. Never raises on a str."""
    if text is None:
        text = ""
    elif not isinstance(text, str):
        raise TypeError(f"parse_prescription: text must be a str, not {type(text).__name__}")
    # A lone surrogate (a broken decode upstream) is no character; UTF-8, JSON and pydantic all reject it.
    text = SURROGATE.sub("\ufffd", text)
    kb = kb or load_knowledge()
    norm = normalize(text, kb)
    spans = read_spans(tokenize(norm, kb), norm)
    built = []
    for block in spans.blocks:
        b = _Builder(kb)
        for seg, admin in block.segments:
            b.segment(seg, admin)
        built.append(b)
    keep = keep_blocks([frozenset(h.name or h.raw for h in b.items) for b in built], [bool(b.removed) for b in built])
    context = list(spans.context)
    context += [spans.blocks[k].text for k in range(len(built)) if k not in keep]  # copies, read once
    kept = [built[k] for k in keep]
    listed = {i.base for b in kept for i in b.items if i.base}
    items, admin, unparsed, removed, added, formula_name = [], [], [], set(), set(), None
    for b in kept:
        formula_name = formula_name or b.expand_formulas(listed, added)
        items += [i.herb() for i in b.items]
        admin += b.admin
        unparsed += b.unparsed
        removed |= b.removed
    rx = Prescription(formula_name=formula_name, herbs=items, administration="，".join(admin + spans.admin) or None,
                      raw=text)
    return ParsedPrescription(prescription=rx, unparsed=unparsed, context=context, removed=sorted(removed),
                              mentioned=spans.mentioned)


_PREVIOUS = re.compile(r"^\s*(?:处方[:：]?\s*)?(上方|原方|前方|守方|效不更方|守上方|继服上方|上方基础)")


def refers_to_previous(text: str) -> bool:
    """True when a follow-up prescription is written relative to the last one (上方去黄芩加丹参15g)."""
    return bool(_PREVIOUS.search(text or ""))


def apply_to_previous(previous: Prescription, parsed: ParsedPrescription) -> Prescription:
    """The full prescription of a follow-up visit written as changes to the previous one."""
    changed = {h.base for h in parsed.herbs if h.base}
    gone = set(parsed.removed)
    kept = [h for h in previous.herbs if h.base not in gone and h.base not in changed]
    return Prescription(formula_name=previous.formula_name, herbs=[*kept, *parsed.herbs],
                        administration=parsed.prescription.administration or previous.administration,
                        raw=parsed.prescription.raw)


def resolve_prescription(text: str, previous: Prescription | None = None) -> Prescription:
    """A prescription section as a full prescription: 上方去黄芩加丹参 applied to the previous visit's."""
    parsed = parse_prescription(text)
    if previous is not None and previous.herbs and refers_to_previous(text):
        return apply_to_previous(previous, parsed)
    return parsed.prescription


def format_herbs(herbs: list[HerbItem]) -> str:
    """Herbs as a pharmacist writes them: 柴胡10g 白芍12g 生石膏30g(先煎)."""
    out = []
    for h in herbs:
        dose = f"{h.dose:g}{h.unit or 'g'}" if h.dose is not None else ""
        note = f"({h.note})" if h.note else ""
        out.append(f"{h.name or h.raw}{dose}{note}")
    return " ".join(out)
