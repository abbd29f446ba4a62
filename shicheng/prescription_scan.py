"""Scanner of free-text prescriptions: normalized text -> tokens (herb, number, note, connector, unknown …).

A left-to-right longest match over every written form in the lexicon (herbs, merged names, formulas),
with processing written before (炒白术) or after (白术炒) a herb. Two rules keep free text from turning
into herbs and doses:

- a number is a dose only where a dose can stand: 83年, 45岁, 150/90, 5分钟, 十分疲乏, HbA1c 7.5% are
  part of the word around them;
- a herb name glued to other letters with no break is part of one unknown word (松花粉, 朱砂根,
  舌红花剥苔, 尿蛋白及潜血, 丹参滴丸, 甘遂半夏汤), never the herb inside it; herbs glued to herbs still
  split (黄连黄芩), and a connector breaks the word (酌加|柴胡, 柴胡|等).

Every index is bounds-checked: no str can make the scanner read past the end (a model's output ends
anywhere, e.g. right after the prefix 生).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from shicheng.knowledge import Knowledge
from shicheng.knowledge.lexicon import POSTFIXES, PREFIXES, SUFFIXES, Resolved

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
    "调整", "如", "下", "即", "全方", "治疗", "治之", "用法", "服法", "煎服法", "君", "臣", "佐", "使", "君药", "臣药",
    "佐药", "使药", "rp", "r", "rx", "sig",
))
ADMIN_UNITS = ("剂", "付", "贴")
ADMIN_WORDS = ("煎", "服", "剂", "付", "贴", "日", "次", "顿", "饭前", "饭后", "睡前", "温服", "外用", "外敷", "熏洗")
_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8,
              "九": 9}
_CN_NUM = re.compile(r"[零〇一二两三四五六七八九十百廿卅半]+")
_NUM = re.compile(r"([0-9]+(?:\.[0-9]+)?)(?:\s*(?:[-~至到]|～)\s*([0-9]+(?:\.[0-9]+)?))?")
_SENTENCE_END = frozenset("。；;\n！？!?")
# A colon ends a label (初诊处方：, 用法：) the way a comma ends a clause, so it separates segments.
_LIST_SEP = frozenset("，,、 \t/|:")
_TRANSPARENT = frozenset("()[]{}<>\"'“”‘’*·.")
_BOUNDARY = _SENTENCE_END | _LIST_SEP | _TRANSPARENT
SURROGATE = re.compile("[\ud800-\udfff]")
# Pasted text carries invisible format characters (zero-width space, BOM, soft hyphen) inside words, and
# some records use other scripts' digits: drop the first, read the second as 0-9 (BMP; 14 ms at import).
_CLEAN = {c: None for c in range(0x10000) if unicodedata.category(chr(c)) == "Cf"}
_CLEAN.update({c: chr(48 + unicodedata.decimal(chr(c))) for c in range(0x80, 0x10000)
               if unicodedata.category(chr(c)) == "Nd"})
_PAREN_NOTE = re.compile(r"[(\[]\s*(包煎|后下|先煎|冲服|烊化|另煎|后入|先下|布包|包|冲|后|先|烊|另)\s*[)\]]")
# After a number and its unit these make it a time, an age or a rate, not a dose (3个月, 5分钟, 1片/日).
_NOT_DOSE_AFTER_UNIT = frozenset("/年月岁周天次钟时")
_NOT_DOSE_SYMBOLS = frozenset("%‰°^′″")
# A herb glued to one of these begins a formula or medicine name (甘遂半夏汤, 丹参滴丸): one word.
FORMULA_TAIL = frozenset("汤散丸饮方膏丹片")
# An unknown piece ending (before a herb) or starting (after a herb) with one of these is a clause of
# its own: 酌加|柴胡, 选用|黄芪, 柴胡|等药. Anything else glued to a herb makes one unknown word.
_OPEN_BEFORE = frozenset("加减去各用以予合及和与选投拟入配佐服吃食")
_OPEN_AFTER = frozenset("等为和与及加减去并或之各用以")
_SPLIT_WORDS = ("加减", "化裁")  # always their own token, even right after an unknown formula name (某某汤加减)


@dataclass(slots=True)
class Token:
    kind: str  # herb | merged | formula | num | note | each | add | remove | unknown | sep | end
    text: str
    start: int
    resolved: Resolved | None = None
    value: float | None = None
    unit: str | None = None
    range_max: float | None = None
    herbal: bool = False  # an unknown word that swallowed a herb name (丹参滴丸): a medicine, not narrative
    bracketed: bool = False  # an unknown word in brackets after a herb (姜制), (自备): a remark on that herb


def _by_first(words) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for w in sorted(words, key=len, reverse=True):
        out.setdefault(w[0], []).append(w)
    return {k: tuple(v) for k, v in out.items()}


class _Matcher:
    """Longest-match lookup of every written form (herbs, merged names, formulas) by its first two characters."""

    def __init__(self, kb: Knowledge):
        self.kb = kb
        self.kinds: dict[str, str] = {}
        for s in kb.surfaces:
            self.kinds[s] = "herb"
        for s in kb.merged:
            self.kinds[s] = "merged"
        for s in kb.formulas:
            self.kinds.setdefault(s, "formula")
        # Lengths of the written forms by their first two characters: most positions try one or two.
        lengths: dict[str, set[int]] = {}
        for s in self.kinds:
            if len(s) > 1:
                lengths.setdefault(s[:2], set()).add(len(s))
        self.lengths = {k: sorted(v, reverse=True) for k, v in lengths.items()}
        self.singles = frozenset(s for s in self.kinds if len(s) == 1)
        self.prefixes = _by_first(PREFIXES)
        self.postfixes = _by_first(POSTFIXES)
        self.notes = _by_first(NOTES)
        # 剂/付/贴 count doses of the whole prescription (7剂): read as administration, never as a herb's dose.
        units = [*kb.units.grams, *kb.units.counts, *kb.units.volumes, *ADMIN_UNITS]
        alternation = "|".join(re.escape(u) for u in sorted(units, key=len, reverse=True))
        self.unit_re = re.compile(r"\s*(" + alternation + ")", re.IGNORECASE)
        self.num_re = re.compile(_NUM.pattern + r"(?:\s*(" + alternation + "))?", re.IGNORECASE)
        self.unit_names = {u.lower(): u for u in units}

    def longest(self, text: str, i: int) -> int:
        lens = self.lengths.get(text[i:i + 2])  # past the end: '' is no key
        if lens:
            n = len(text)
            kinds = self.kinds
            for L in lens:
                if i + L <= n and text[i:i + L] in kinds:
                    return L
        return 1 if text[i:i + 1] in self.singles else 0

    def word_at(self, text: str, i: int) -> tuple[int, str, Resolved | None]:
        """(length, kind, resolved) of the longest herb-like word starting at i; length 0 if none."""
        best, kind, res = self.longest(text, i), "", None
        if best:
            kind = self.kinds[text[i:i + best]]
            if kind == "herb":
                res = self.kb.surfaces[text[i:i + best]]
        prefixes = self.prefixes.get(text[i:i + 1])
        if prefixes:  # 炒白术, 生甘草: most characters start no processing word
            for p in prefixes:
                if text.startswith(p, i):
                    j = i + len(p)
                    L = self.longest(text, j)
                    if L and len(p) + L > best and self.kinds[text[j:j + L]] == "herb":
                        hit = self.kb.resolve(text[i:j + L])
                        if hit is not None:
                            best, kind, res = len(p) + L, "herb", hit
        if kind == "herb" and text[i + best:i + best + 1] in SUFFIXES:
            hit = self.kb.resolve(text[i:i + best + 1])
            if hit is not None:
                best, res = best + 1, hit
        return best, kind, res

    def postfix_at(self, text: str, i: int) -> str | None:
        """Processing written after a herb (白术炒10): only where the word ends there, so 山药炒白术 keeps
        its usual reading 山药 + 炒白术."""
        if i >= len(text):
            return None
        for p in self.postfixes.get(text[i], ()):
            if text.startswith(p, i):
                j = i + len(p)
                return p if j >= len(text) or not text[j].isalpha() else None
        return None

    def note_at(self, text: str, i: int) -> str | None:
        if i >= len(text):
            return None
        for nt in self.notes.get(text[i], ()):
            if text.startswith(nt, i):
                return nt if nt != "包" or (i > 0 and text[i - 1] == "(") else None
        return None

    def is_dose(self, text: str, j: int, end: int, unit: str | None, value: float, after_latin: bool) -> bool:
        """Is the number text[..j] (its unit up to `end`) a dose? Not in B12/HbA1c (`after_latin`), not a
        serial number (1e6 g is no dose, and inf is no number for JSON), not a time, age or rate."""
        if unit in ADMIN_UNITS:
            return True
        if after_latin or value > 1e6:
            return False
        if unit is not None:  # 3个月, 5分钟, 1片/日 — but 9g天花粉 is a dose and a herb
            return end >= len(text) or text[end] not in _NOT_DOSE_AFTER_UNIT or self.word_at(text, end)[0] > 0
        return not (j < len(text) and text[j] == "/") and self.dose_can_end(text, j)

    def dose_can_end(self, text: str, j: int) -> bool:
        """A number without a unit, or a Chinese numeral, is a dose only if what follows can follow a dose."""
        if j >= len(text):
            return True
        ch = text[j]
        if ch in _NOT_DOSE_SYMBOLS:
            return False  # 85%, 38.5°C, 10^9
        if not ch.isalpha() or ch in "各加去":
            return True
        return self.word_at(text, j)[0] > 0 or self.note_at(text, j) is not None


_MATCHERS: dict[int, _Matcher] = {}


def _matcher(kb: Knowledge) -> _Matcher:
    m = _MATCHERS.get(id(kb))
    if m is None or m.kb is not kb:
        m = _MATCHERS[id(kb)] = _Matcher(kb)
    return m


def normalize(text: str, kb: Knowledge) -> str:
    """Full-width -> half-width (NFKC), traditional -> simplified, short notes in brackets expanded."""
    text = kb.to_simplified(unicodedata.normalize("NFKC", text).translate(_CLEAN))
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


def _unit_at(m: _Matcher, text: str, j: int):
    unit = m.unit_re.match(text, j)
    if unit is None:
        return None
    u, end = unit.group(1), unit.end()
    # mg/dl, mmHg, g/L: a Latin unit glued to more Latin letters is another unit (x of ×7剂 excepted).
    if u.isascii() and end < len(text) and text[end].isascii() and text[end].isalpha() and text[end] not in "xX":
        return None
    return unit


def tokenize(text: str, kb: Knowledge) -> list[Token]:
    """Tokens of normalized text; every index is bounds-checked, so no input can make it read past the end."""
    m = _matcher(kb)
    tokens: list[Token] = []
    i, n = 0, len(text)
    unknown_start, depth = -1, 0  # depth: brackets open here; a bracket always ends an unknown run

    def flush_unknown(end: int) -> None:
        nonlocal unknown_start
        if unknown_start >= 0:
            tokens.append(Token("unknown", text[unknown_start:end], unknown_start, bracketed=depth > 0))
            unknown_start = -1

    append, word_at, postfixes = tokens.append, m.word_at, m.postfixes
    while i < n:
        ch = text[i]
        if ch in _BOUNDARY or not ch.isalnum():
            if unknown_start >= 0:
                flush_unknown(i)
            if ch in _SENTENCE_END:
                append(Token("end", ch, i))
            elif ch not in _TRANSPARENT:  # a separator, or a symbol (%, ◆, +, �) that no word contains
                append(Token("sep", ch, i))
            elif ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth = max(0, depth - 1)
            i += 1
            continue
        if "0" <= ch <= "9":
            num = m.num_re.match(text, i)
            unit, end = num.group(3), num.end()
            j = num.end(2) if num.group(2) else num.end(1)  # the number itself ends here
            u = m.unit_names[unit.lower()] if unit else None
            if u and u.isascii() and end < n and text[end].isascii() and text[end].isalpha() \
                    and text[end] not in "xX":
                u, end = None, j  # mg/dl, mmHg, g/L: a Latin unit glued to more letters is another unit
            value, rmax = float(num.group(1)), float(num.group(2)) if num.group(2) else None
            after_latin = unknown_start >= 0 and text[i - 1].isascii() and text[i - 1].isalpha() \
                and text[i - 1] not in "xX"
            if (u is None and rmax is None and j < n and text[j] in ".、)" and value < 100
                    and "." not in num.group(1) and _list_start(tokens)):
                i = j  # "1." or "2、" numbering a list of herbs: no dose of anything
                continue
            if not m.is_dose(text, j, end, u, max(value, rmax or 0), after_latin):  # 83年, 45岁, 150/90
                if unknown_start < 0:
                    unknown_start = i  # part of the word around it
                i = end
                continue
            if unknown_start >= 0:
                flush_unknown(i)
            append(Token("num", text[i:end], i, None, value, u, rmax))
            i = end
            continue
        if unknown_start >= 0 and ch in "加化" and text.startswith(_SPLIT_WORDS, i):
            flush_unknown(i)
            tokens.append(Token("unknown", text[i:i + 2], i))
            i += 2
            continue
        L, kind, res = word_at(text, i)
        if L:
            if unknown_start >= 0:
                flush_unknown(i)
            if kind == "herb" and i + L < n and text[i + L] in postfixes:
                post = m.postfix_at(text, i + L)
                if post is not None:
                    hit = kb.resolve_postfix(text[i:i + L], post)
                    if hit is not None:
                        res, L = hit, L + len(post)
            append(Token(kind, text[i:i + L], i, res))
            i += L
            continue
        cn = _CN_NUM.match(text, i)
        if cn:
            numeral = cn.group(0)
            unit = _unit_at(m, text, cn.end())
            if unit is None and numeral.endswith("两") and len(numeral) > 1:  # 一两: 两 is the unit here
                numeral = numeral[:-1]
                unit = _unit_at(m, text, i + len(numeral))
            value = cn_number(numeral)
            if unit and value is not None and not unit.group(0)[0].isspace():
                end = unit.end()
                if end < n and text[end] == "半":  # 一钱半
                    value += 0.5
                    end += 1
                if m.dose_can_end(text, end):  # not 十分疲乏, 一两年
                    flush_unknown(i)
                    tokens.append(Token("num", text[i:end], i, value=value,
                                        unit=m.unit_names[unit.group(1).lower()]))
                    i = end
                    continue
        note = m.note_at(text, i)
        if note:
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
    return _glue(tokens, text)


def _list_start(tokens: list[Token]) -> bool:
    """At the start of a text or line, or after a herb's dose and a separator (柴胡10g 2、黄芩10g)."""
    if not tokens or tokens[-1].kind == "end":
        return True
    return tokens[-1].kind == "sep" and (len(tokens) == 1 or tokens[-2].kind in ("num", "end", "sep"))


def _glued(a: Token, b: Token) -> bool:
    """Is unknown piece and herb a-b one word? 朱砂|根, 松|花粉: yes; 酌加|柴胡, 柴胡|等: no."""
    if a.start + len(a.text) != b.start:
        return False
    u, herb_first = (b, True) if a.kind != "unknown" else (a, False)
    w = u.text
    if w.lower() in CONNECTORS:
        return False
    if herb_first:
        return w[0] in FORMULA_TAIL or (not w[0].isdigit() and w[0] not in _OPEN_AFTER)
    return w[-1] not in _OPEN_BEFORE


def _glue(tokens: list[Token], text: str) -> list[Token]:
    """A run of herb names touching an unknown piece with no break between them is one unknown word."""
    out: list[Token] = []
    k, n = 0, len(tokens)
    while k < n:
        t = tokens[k]
        if t.kind not in ("herb", "merged", "unknown") or k + 1 >= n:
            out.append(t)
            k += 1
            continue
        j, hard = k, False
        while j + 1 < n:
            a, b = tokens[j], tokens[j + 1]
            if b.kind not in ("herb", "merged", "unknown") or a.start + len(a.text) != b.start:
                break
            if a.kind == "unknown" and b.kind == "unknown":
                break
            if a.kind != "unknown" and b.kind != "unknown":
                j += 1  # 黄连黄芩: two herbs, glued only if an unknown piece joins the run
                continue
            if not _glued(a, b):
                break
            hard = True
            j += 1
        if hard:
            end = tokens[j].start + len(tokens[j].text)
            out.append(Token("unknown", text[t.start:end], t.start, herbal=True))
        else:
            out.extend(tokens[k:j + 1])
        k = j + 1
    return out
