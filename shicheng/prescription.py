"""Free-text prescription -> herbs with dose, unit, grams, processing and preparation notes.

Real records are messy (DESIGN.md §2): herbs and doses run together ("法半夏10黄连5"), doses are shared
("各10g"), names are merged (生熟地), aliased (云苓), traditional (當歸) or processed (炙甘草), units are
old (三钱), formulas stand for their herbs ("桂枝汤加葛根"), and the prescription may sit inside a
sentence of the case record. The parser reads left to right with a longest-match over every written
form in the lexicon; whatever it cannot read is returned in `unparsed`, never dropped.

A hand-written scanner rather than jieba or a regex alternation: the lexicon's own forms define the
tokens, and a dictionary longest-match keeps one prescription well under 200 µs (benchmarks/).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from shicheng.domain import HerbItem, Prescription
from shicheng.knowledge import Knowledge, load_knowledge
from shicheng.knowledge.lexicon import PREFIXES, SUFFIXES, Resolved

NOTES: tuple[str, ...] = (
    "研末冲服", "研末吞服", "研细冲服", "分次冲服", "先煎", "后下", "后入", "先下", "包煎", "布包", "烊化", "烊冲",
    "另煎", "另炖", "单煎", "冲服", "兑服", "吞服", "研冲", "久煎", "打碎", "捣碎", "去皮尖", "去心", "去节", "去皮",
    "去核", "去毛", "研末", "后煎", "同煎", "包",
)
_SHORT_NOTES = {"包": "包煎", "冲": "冲服", "后": "后下", "先": "先煎", "烊": "烊化", "另": "另煎", "后入": "后下",
                "先下": "先煎", "布包": "包煎"}
# Words that join herbs in a prescription and carry no herb themselves.
CONNECTORS = frozenset((
    "加", "减", "去", "各", "加减", "化裁", "合", "方", "用", "处方", "方药", "药用", "方用", "组成", "如下", "予",
    "予以", "以", "及", "和", "与", "等", "味", "另", "另加", "再加", "并", "改", "为", "共", "原方", "上方", "前方",
    "守方", "续服", "同上", "方选", "选方", "拟方", "拟", "投", "处以", "治以", "主之", "之", "药", "用药", "药物",
    "调整", "如", "下", "即", "全方", "rp", "r", "rx", "sig",
))
CUES = ("处方", "方药", "方用", "药用", "予以", "方选", "选方", "拟方", "处以", "投以", "治以", "主之", "加减",
        "rp", "rx")
ADMIN_UNITS = ("剂", "付", "贴")
ADMIN_WORDS = ("煎", "服", "剂", "付", "贴", "日", "次", "顿", "饭前", "饭后", "睡前", "温服", "外用", "外敷", "熏洗")
_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8,
              "九": 9}
_CN_NUM = re.compile(r"[零〇一二两三四五六七八九十百廿卅半]+")
_NUM = re.compile(r"(\d+(?:\.\d+)?)(?:\s*(?:[-~至到]|～)\s*(\d+(?:\.\d+)?))?")
_SENTENCE_END = set("。；;\n！？!?")
_LIST_SEP = set("，,、 \t/|")
_TRANSPARENT = set("()[]{}<>\"'“”‘’:*·.")
_PAREN_NOTE = re.compile(r"[(\[]\s*(包煎|后下|先煎|冲服|烊化|另煎|后入|先下|布包|包|冲|后|先|烊|另)\s*[)\]]")


@dataclass
class Token:
    kind: str  # herb | merged | formula | num | note | each | add | remove | unknown | sep | end
    text: str
    start: int
    resolved: Resolved | None = None
    value: float | None = None
    unit: str | None = None
    range_max: float | None = None


@dataclass
class ParsedPrescription:
    prescription: Prescription
    unparsed: list[str] = field(default_factory=list)
    context: list[str] = field(default_factory=list)  # sentences read as case narrative, not prescription
    removed: list[str] = field(default_factory=list)  # base herbs named after 去 (上方去黄芩)

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
        }


class _Matcher:
    """Longest-match lookup of every written form (herbs, merged names, formulas) by first character."""

    def __init__(self, kb: Knowledge):
        self.kb = kb
        self.kinds: dict[str, str] = {}
        for s in kb.surfaces:
            self.kinds[s] = "herb"
        for s in kb.merged:
            self.kinds[s] = "merged"
        for s in kb.formulas:
            self.kinds.setdefault(s, "formula")
        self.lengths: dict[str, list[int]] = {}
        for s in self.kinds:
            self.lengths.setdefault(s[0], []).append(len(s))
        for k, v in self.lengths.items():
            self.lengths[k] = sorted(set(v), reverse=True)
        self.prefixes = [p for p in PREFIXES]
        # 剂/付/贴 count doses of the whole prescription (7剂): read as administration, never as a herb's dose.
        units = [*kb.units.grams, *kb.units.counts, *kb.units.volumes, *ADMIN_UNITS]
        self.unit_re = re.compile(r"\s*(" + "|".join(re.escape(u) for u in sorted(units, key=len, reverse=True))
                                  + ")", re.IGNORECASE)
        self.unit_names = {u.lower(): u for u in units}

    def longest(self, text: str, i: int) -> int:
        lens = self.lengths.get(text[i])
        if lens:
            n = len(text)
            for L in lens:
                if i + L <= n and text[i:i + L] in self.kinds:
                    return L
        return 0

    def word_at(self, text: str, i: int) -> tuple[int, str, Resolved | None]:
        """(length, kind, resolved) of the longest herb-like word starting at i; length 0 if none."""
        best, kind, res = self.longest(text, i), "", None
        if best:
            kind = self.kinds[text[i:i + best]]
            res = self.kb.surfaces.get(text[i:i + best]) if kind == "herb" else None
        for p in self.prefixes:
            if text.startswith(p, i):
                L = self.longest(text, i + len(p))
                if L and len(p) + L > best and self.kinds[text[i + len(p):i + len(p) + L]] == "herb":
                    word = text[i:i + len(p) + L]
                    hit = self.kb.resolve(word)
                    if hit is not None:
                        best, kind, res = len(word), "herb", hit
        if kind == "herb" and best and i + best < len(text) and text[i + best] in SUFFIXES:
            hit = self.kb.resolve(text[i:i + best + 1])
            nxt = text[i + best + 1] if i + best + 1 < len(text) else ""
            if hit is not None and not nxt.isdigit():
                best, res = best + 1, hit
        return best, kind, res


_MATCHERS: dict[int, _Matcher] = {}


def _matcher(kb: Knowledge) -> _Matcher:
    m = _MATCHERS.get(id(kb))
    if m is None or m.kb is not kb:
        m = _MATCHERS[id(kb)] = _Matcher(kb)
    return m


def normalize(text: str, kb: Knowledge) -> str:
    """Full-width -> half-width (NFKC), traditional -> simplified, short notes in brackets expanded."""
    text = kb.to_simplified(unicodedata.normalize("NFKC", text))
    text = text.replace("×", "x").replace("＊", "*")
    return _PAREN_NOTE.sub(lambda m: f"({_SHORT_NOTES.get(m.group(1), m.group(1))})", text)


def cn_number(text: str) -> float | None:
    """Chinese numeral to a number: 三 3, 十五 15, 二十 20, 一百二十 120, 二钱半 handled by the caller (半 = .5)."""
    if not text:
        return None
    half = text.endswith("半") and len(text) > 1
    if half:
        text = text[:-1]
    if text == "半":
        return 0.5
    text = text.replace("廿", "二十").replace("卅", "三十")
    total, current = 0, 0
    for ch in text:
        if ch in _CN_DIGITS:
            current = _CN_DIGITS[ch]
        elif ch == "十":
            total += (current or 1) * 10
            current = 0
        elif ch == "百":
            total += (current or 1) * 100
            current = 0
        else:
            return None
    return total + current + (0.5 if half else 0)


def tokenize(text: str, kb: Knowledge) -> list[Token]:
    m = _matcher(kb)
    tokens: list[Token] = []
    i, n = 0, len(text)
    unknown_start = -1

    def flush_unknown(end: int) -> None:
        nonlocal unknown_start
        if unknown_start >= 0:
            tokens.append(Token("unknown", text[unknown_start:end], unknown_start))
            unknown_start = -1

    while i < n:
        ch = text[i]
        if ch in _SENTENCE_END or ch in _LIST_SEP or ch in _TRANSPARENT or ch.isspace():
            flush_unknown(i)
            if ch in _SENTENCE_END:
                tokens.append(Token("end", ch, i))
            elif ch in _LIST_SEP or ch.isspace():
                tokens.append(Token("sep", ch, i))
            i += 1
            continue
        if ch.isdigit():
            flush_unknown(i)
            num = _NUM.match(text, i)
            value = float(num.group(1))
            rmax = float(num.group(2)) if num.group(2) else None
            j = num.end()
            unit = m.unit_re.match(text, j)
            tok = Token("num", text[i:(unit.end() if unit else j)], i, value=value, range_max=rmax,
                        unit=m.unit_names[unit.group(1).lower()] if unit else None)
            tokens.append(tok)
            i = unit.end() if unit else j
            continue
        L, kind, res = m.word_at(text, i)
        if L:
            flush_unknown(i)
            tokens.append(Token(kind, text[i:i + L], i, resolved=res))
            i += L
            continue
        cn = _CN_NUM.match(text, i)
        if cn:
            numeral = cn.group(0)
            unit = m.unit_re.match(text, cn.end())
            if unit is None and numeral.endswith("两") and len(numeral) > 1:  # 一两: 两 is the unit here
                numeral = numeral[:-1]
                unit = m.unit_re.match(text, i + len(numeral))
            value = cn_number(numeral)
            if unit and value is not None and not unit.group(0)[0].isspace():
                flush_unknown(i)
                end = unit.end()
                if end < n and text[end] == "半":  # 一钱半
                    value += 0.5
                    end += 1
                tokens.append(Token("num", text[i:end], i, value=value, unit=m.unit_names[unit.group(1).lower()]))
                i = end
                continue
        note = next((nt for nt in NOTES if text.startswith(nt, i)), None)
        if note and (note != "包" or (i > 0 and text[i - 1] in "(")):
            flush_unknown(i)
            tokens.append(Token("note", _SHORT_NOTES.get(note, note), i))
            i += len(note)
            continue
        # 上方去X加Y: a connector written right before 各/加/去 must not swallow them into an unknown run.
        if ch in "各加去" and (unknown_start < 0 or text[unknown_start:i].lower() in CONNECTORS):
            flush_unknown(i)
            tokens.append(Token({"各": "each", "加": "add", "去": "remove"}[ch], ch, i))
            i += 1
            continue
        if unknown_start < 0:
            unknown_start = i
        i += 1
    flush_unknown(n)
    return tokens


@dataclass
class _Sentence:
    tokens: list[Token]
    text: str


def _sentences(tokens: list[Token], text: str) -> list[_Sentence]:
    out, cur, start = [], [], 0
    for t in tokens:
        if t.kind == "end":
            if cur:
                out.append(_Sentence(cur, text[start:t.start]))
            cur, start = [], t.start + 1
        else:
            if not cur:
                start = t.start
            cur.append(t)
    if cur:
        out.append(_Sentence(cur, text[start:]))
    return out


def _is_prescription(s: _Sentence) -> bool:
    herbs = [t for t in s.tokens if t.kind in ("herb", "merged", "formula")]
    if any(t.kind == "num" and t.unit not in ADMIN_UNITS for t in s.tokens) and herbs:
        return True
    low = s.text.lower()
    return len(herbs) >= 2 or (bool(herbs) and any(c in low for c in CUES))


def _segments(tokens: list[Token]) -> list[list[Token]]:
    segs, cur = [], []
    for t in tokens:
        if t.kind == "sep":
            if cur:
                segs.append(cur)
            cur = []
        else:
            cur.append(t)
    if cur:
        segs.append(cur)
    return segs


def _is_admin(seg: list[Token]) -> bool:
    if any(t.kind in ("herb", "merged", "formula") for t in seg):
        return False
    text = "".join(t.text for t in seg)
    return any(w in text for w in ADMIN_WORDS) or (len(seg) == 2 and seg[0].text.lower() == "x")


class _Builder:
    """Turns the tokens of prescription sentences into herb items, applying doses, 各, notes and 去."""

    def __init__(self, kb: Knowledge):
        self.kb = kb
        self.items: list[HerbItem] = []
        self.formulas: list[tuple[str, int]] = []  # (formula name, insert position)
        self.removed: set[str] = set()
        self.unparsed: list[str] = []
        self.admin: list[str] = []
        self.group: list[HerbItem] = []  # items created by the last herb or merged name, awaiting a dose
        self.last: list[HerbItem] = []  # the items a following note (先煎, 后下 …) belongs to
        self.each = False
        self.removing = False

    def add(self, item: HerbItem, group: list[HerbItem]) -> None:
        self.items.append(item)
        group.append(item)
        self.last = group

    def sentence(self, s: _Sentence) -> None:
        self.removing = False
        for seg in _segments(s.tokens):
            if _is_admin(seg):
                self.admin.append("".join(t.text for t in seg))
                continue
            for k, t in enumerate(seg):
                self.token(t, seg[k + 1] if k + 1 < len(seg) else None)

    def token(self, t: Token, nxt: Token | None) -> None:
        if t.kind == "herb":
            r = t.resolved
            if self.removing:
                self.removed.add(r.base)
                return
            self.group = []
            self.add(HerbItem(raw=t.text, name=r.name, base=r.base, processing=r.processing), self.group)
        elif t.kind == "merged":
            self.group = []
            for h in self.kb.merged[t.text]:
                r = self.kb.resolve(h)
                if self.removing:
                    self.removed.add(r.base)
                else:
                    self.add(HerbItem(raw=t.text, name=r.name, base=r.base, processing=r.processing), self.group)
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
            if nxt is not None and nxt.kind == "num" and nxt.unit not in ADMIN_UNITS:
                self.group = []
                self.add(HerbItem(raw=t.text), self.group)
            elif t.text.lower() not in CONNECTORS and not t.text.isdigit():
                self.unparsed.append(t.text)

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

    def expand_formulas(self) -> str | None:
        """Add a named formula's herbs unless the text already lists most of them (a title like 六君子汤加减)."""
        first = None
        listed = {i.base for i in self.items if i.base}
        for offset, (name, pos) in enumerate(sorted(self.formulas, key=lambda f: -f[1])):
            formula = self.kb.formulas[name]
            first = formula.name if offset == len(self.formulas) - 1 else first
            bases = [(h, self.kb.resolve(h.herb)) for h in formula.herbs]
            covered = sum(1 for _, r in bases if r.base in listed)
            if covered * 2 >= len(bases):
                continue
            new = [HerbItem(raw=name, name=r.name, base=r.base, processing=r.processing)
                   for h, r in bases if r.base not in listed and r.base not in self.removed]
            self.items[pos:pos] = new
        if self.formulas:
            return self.kb.formulas[min(self.formulas, key=lambda f: f[1])[0]].name
        return first


def parse_prescription(text: str, kb: Knowledge | None = None) -> ParsedPrescription:
    """Parse free text (a prescription, or a case record that contains one) into herbs."""
    kb = kb or load_knowledge()
    norm = normalize(text or "", kb)
    sentences = _sentences(tokenize(norm, kb), norm)
    chosen = [s for s in sentences if _is_prescription(s)]
    if not chosen:
        chosen = [s for s in sentences if any(t.kind in ("herb", "merged", "formula") for t in s.tokens)] \
            or sentences
    b = _Builder(kb)
    context = []
    for s in sentences:
        if any(s is c for c in chosen):
            b.sentence(s)
        else:
            context.append(s.text.strip())
    formula_name = b.expand_formulas()
    rx = Prescription(formula_name=formula_name, herbs=b.items, administration="，".join(b.admin) or None,
                      raw=text)
    return ParsedPrescription(prescription=rx, unparsed=b.unparsed, context=[c for c in context if c],
                              removed=sorted(b.removed))


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


def format_herbs(herbs: list[HerbItem]) -> str:
    """Herbs as a pharmacist writes them: 柴胡10g 白芍12g 生石膏30g(先煎)."""
    out = []
    for h in herbs:
        dose = f"{h.dose:g}{h.unit or 'g'}" if h.dose is not None else ""
        note = f"({h.note})" if h.note else ""
        out.append(f"{h.name or h.raw}{dose}{note}")
    return " ".join(out)
