"""Which parts of a text are a prescription, which are case narrative, and which medicines it mentions.

A case record names herbs and medicines all the time without prescribing them (曾服知柏地黄丸, BP
150/90mmHg, 舌红花剥苔), so herbs are read only from prescription spans. A text is split into sentences
(。；！？ and line breaks) and each sentence into segments (commas, 、, spaces). A segment is

- rx: herb, merged or formula names with nothing but doses, notes, connectors, remarks in brackets
  (半夏10g(姜制)) and instructions after a herb's dose (紫河车粉3g装胶囊吞服) around them;
- mixed: herb names together with narrative words (长期服|知柏地黄丸, 服用黄芪30g);
- name: one short unknown word on its own (奇异草), which may be an unknown herb in a list;
- narr: narrative (患者男, 高血压10年, 丹参滴丸);
- admin / neutral: 7剂 水煎服 / a dose, a note or a connector on its own.

A run of rx/name/admin/neutral segments is a prescription span when it names a herb and either carries
a dose, a prescribing cue (处方, 方用, 加减 …) or a 加/去 change, or is a whole sentence that is mostly
herb names ("芍药 藜芦 甘草"). A formula name with no cue is a prescription only in a text with no
narrative at all ("桂枝汤"): in a case record it is a medicine the patient took. A label before a colon
(二诊：, 中药处方：) is not part of the span.

A prescription copied twice (in the history and again in the current section) must not be summed: the
caller builds each span and `keep_blocks` keeps one per group of copies, the most complete one (most
herbs), the later one on a tie, because the later section of a record is the current one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from shicheng.prescription_scan import ADMIN_UNITS, ADMIN_WORDS, CONNECTORS, FORMULA_TAIL, Token

HERBISH = frozenset(("herb", "merged", "formula"))
RX_CUES = frozenset(("处方", "方药", "方用", "药用", "方选", "选方", "拟方", "处以", "投以", "主之", "加减", "化裁",
                     "组成", "全方", "rp", "rx"))
# Dosage forms of patent and western medicines; an unknown word ending in one is a medicine name.
MEDICINE_TAILS = ("滴丸", "胶囊", "颗粒", "冲剂", "口服液", "注射液", "注射剂", "合剂", "糖浆", "缓释片", "控释片",
                  "肠溶片", "分散片", "含片", "软膏", "乳膏", "贴膏", "喷雾剂", "气雾剂", "栓剂", "酊剂")
# Words before a medicine name that say the patient took it: stripped from the mentioned name.
_TAIL_IN = re.compile("|".join(MEDICINE_TAILS))
_TOOK = re.compile(r"(服用|口服|自服|曾服|加服|改服|予以|给予|静滴|外用|使用|应用|服|予|用)")
_PRESCRIBER = frozenset("加减去各合配佐入拟投选")
_STRONG_ADMIN = re.compile(r"煎|[温顿分送]服|[日每][^，,]?[一二两三四1-4][剂次]|外用|外敷|熏洗|代茶")


@dataclass
class Block:
    segments: list[tuple[list[Token], bool]]  # the span's segments, each flagged: administration only
    text: str


@dataclass
class Spans:
    blocks: list[Block] = field(default_factory=list)
    context: list[str] = field(default_factory=list)
    mentioned: list[str] = field(default_factory=list)
    admin: list[str] = field(default_factory=list)  # administration written as a sentence of its own


@dataclass
class _Seg:
    tokens: list[Token]
    kind: str  # rx | mixed | name | narr | admin | neutral
    herbs: int = 0
    unknown_dosed: int = 0  # unknown words with a dose (奇异草15g)
    dose: bool = False
    cue: bool = False
    modify: bool = False
    formula_only: bool = False

    @property
    def start(self) -> int:
        return self.tokens[0].start

    @property
    def end(self) -> int:
        t = self.tokens[-1]
        return t.start + len(t.text)


def is_admin(seg: list[Token]) -> bool:
    """7剂, 水煎服, 每服9g, 日一剂; not 川贝粉3g冲服 (a herb, unknown or not, with a preparation note),
    not 曾服丹参滴丸 (a medicine)."""
    if any(t.kind in HERBISH or t.kind == "note" or t.herbal or (t.kind == "unknown" and _medicine(t))
           for t in seg):
        return False
    text = "".join(t.text for t in seg)
    return any(w in text for w in ADMIN_WORDS) or (len(seg) == 2 and seg[0].text.lower() == "x")


def _medicine(t: Token) -> bool:
    w = t.text
    return (t.herbal and w[-1] in FORMULA_TAIL) or w.endswith(MEDICINE_TAILS)


def _classify(tokens: list[Token]) -> _Seg:
    s = _Seg(tokens, "neutral")
    narrative, single_herbs = 0, 0
    # "herb dose instruction" (紫河车粉3g装胶囊吞服) is how a prescription line reads; narrative puts its
    # verb first (服用黄芪30g泡水). Words after a herb's dose at the head of a segment are not narrative.
    head, instruction = True, False
    for k, t in enumerate(tokens):
        kind = t.kind
        if kind in HERBISH:
            s.herbs += 1
            single_herbs += kind != "formula"
        elif kind == "num":
            s.dose = s.dose or t.unit not in ADMIN_UNITS
            instruction = instruction or (head and s.herbs > 0 and t.unit not in ADMIN_UNITS)
        elif kind in ("add", "remove"):
            s.modify = True
        elif kind == "unknown":
            low = t.text.lower()
            if t.bracketed and k > 0:  # 半夏10g(姜制), 生姜3片(自备): a remark on the herb before it
                continue
            if low in CONNECTORS:
                s.cue = s.cue or low in RX_CUES
                continue
            head = False
            if instruction:
                continue
            nxt = tokens[k + 1] if k + 1 < len(tokens) else None
            if nxt is not None and nxt.kind == "num" and nxt.unit not in ADMIN_UNITS:
                if not _medicine(t):
                    s.unknown_dosed += 1  # an unknown herb with its dose (奇异草15g)
                    continue
                if _taken(t.text) is None:
                    continue  # 丹参滴丸10粒 in a list: an item, but never what makes a list a prescription
            if nxt is not None and nxt.kind in ("herb", "merged") and t.text[-1] in _PRESCRIBER \
                    and nxt.start == t.start + len(t.text):
                continue  # 酌加|柴胡, 上方基础上加|丹参: a prescriber's verb
            narrative += 1
    s.formula_only = s.herbs > 0 and single_herbs == 0
    if s.herbs:
        s.kind = "mixed" if narrative else "rx"
    elif is_admin(tokens):
        s.kind = "admin"
    elif narrative == 1:
        words = [t for t in tokens if t.kind == "unknown" and t.text.lower() not in CONNECTORS]
        w = words[0].text
        if len(words) == 1 and _medicine(words[0]):
            # 某某汤加减 on its own: an unknown formula, part of a prescription next to one, else a mention
            s.kind = "name" if _taken(w) is None and len(w) <= 8 else "narr"
        else:
            s.kind = "name" if len(tokens) == 1 and len(w) <= 4 and not any(c.isdigit() for c in w) else "narr"
    elif narrative:
        s.kind = "narr"
    return s


def _split(tokens: list[Token], kind: str) -> list[list[Token]]:
    out, cur = [], []
    for t in tokens:
        if t.kind == kind:
            if cur:
                out.append(cur)
            cur = []
        else:
            cur.append(t)
    if cur:
        out.append(cur)
    return out


def _label(s: _Seg, text: str) -> bool:
    """二诊：, 中药处方：; not an unknown formula title (某某汤加减：), which is the prescription's own name."""
    return (not s.herbs and s.end < len(text) and text[s.end] == ":"
            and not any(t.kind == "unknown" and _medicine(t) for t in s.tokens))


def _runs(segs: list[_Seg]) -> list[tuple[int, int]]:
    """(first, last) segment index of each maximal run of non-narrative segments."""
    runs, start = [], None
    for k, s in enumerate(segs):
        if s.kind in ("narr", "mixed"):
            if start is not None:
                runs.append((start, k - 1))
            start = None
        elif start is None:
            start = k
    if start is not None:
        runs.append((start, len(segs) - 1))
    return runs


def _qualifies(segs: list[_Seg], a: int, b: int, whole: bool, pure_text: bool) -> bool:
    run = segs[a:b + 1]
    herbs = sum(s.herbs for s in run)
    if not herbs:  # unknown names with doses are a prescription only in a text that is nothing else
        return pure_text and any(s.unknown_dosed for s in run) and all(s.kind != "name" for s in run)
    if any(s.dose or s.cue or s.modify for s in run):
        return True
    if not whole:
        return False
    if all(s.formula_only for s in run if s.herbs):
        return pure_text  # a formula named in a case record is a medicine taken, not this prescription
    names = sum(1 for s in run if s.kind == "name")
    return sum(1 for s in run if s.herbs) >= 2 * names and not any(_medicine(t) for s in run for t in s.tokens)


def _taken(word: str) -> str | None:
    """The medicine in 曾服乳癖消片 (a verb of taking, then a name of 3+ characters)."""
    for m in reversed(list(_TOOK.finditer(word))):
        if len(word) - m.end() >= 3:
            return word[m.end():]
    return None


def _mentions(segs: list[_Seg], out: list[str]) -> None:
    listing = False  # the segment before named a medicine: 曾服逍遥丸、乳癖消片
    for s in segs:
        named = False
        for t in s.tokens:
            name = None
            if t.kind == "formula":
                name = t.text
            elif t.kind == "unknown" and len(t.text) >= 3:
                tail = _TAIL_IN.search(t.text)
                if _medicine(t) or tail:  # 自服板蓝根颗粒预防: the name ends with its dosage form
                    word = t.text if _medicine(t) else t.text[:tail.end()]
                    name = _taken(word) or word
                elif t.text[-1] in FORMULA_TAIL:
                    name = _taken(t.text) or (t.text if listing and t is s.tokens[0] else None)
            if name:
                named = True
                if name not in out:
                    out.append(name)
        listing = named


def read_spans(tokens: list[Token], text: str) -> Spans:
    out = Spans()
    sentences = [[_classify(seg) for seg in _split(sent, "sep")] for sent in _split(tokens, "end")]
    sentences = [s for s in sentences if s]
    pure_text = all(seg.kind not in ("narr", "mixed") for segs in sentences for seg in segs)
    pending_admin: list[str] = []
    for segs in sentences:
        runs = [r for r in _runs(segs)
                if _qualifies(segs, r[0], r[1], r == (0, len(segs) - 1), pure_text)]
        if not runs:
            strong = any(s.kind == "admin" for s in segs) and all(s.kind in ("admin", "neutral") for s in segs) \
                and _STRONG_ADMIN.search(text[segs[0].start:segs[-1].end])
            if strong:
                pending_admin.append(text[segs[0].start:segs[-1].end])
            else:
                out.context.append(text[segs[0].start:segs[-1].end])
                _mentions(segs, out.mentioned)
            continue
        a, b = runs[0][0], runs[-1][1]
        if all(s.kind not in ("narr", "mixed") for s in segs):  # a list: an unknown name at its edge is a herb
            a, b = 0, len(segs) - 1
        while a < b and segs[a].kind == "name" and _label(segs[a], text):  # 中药处方：, 二诊： are labels
            a += 1
        for lo, hi in ((0, a - 1), (b + 1, len(segs) - 1)):
            if lo <= hi:
                out.context.append(text[segs[lo].start:segs[hi].end])
                _mentions(segs[lo:hi + 1], out.mentioned)
        region = segs[a:b + 1]
        out.blocks.append(Block([(s.tokens, s.kind == "admin") for s in region],
                                text[region[0].start:region[-1].end]))
    if out.blocks:
        out.admin = pending_admin
    else:
        out.context = [*out.context, *pending_admin]
    return out


def keep_blocks(names: list[frozenset[str]], removes: list[bool]) -> list[int]:
    """Indices of the blocks to keep: one per group of copies (most herbs, the later on a tie).

    Two blocks are copies when more than half the herbs of the smaller are in the larger (by written
    name, so 生白术 and 炒白术 on two lines stay two herbs). A block that removes herbs (上方去X加Y) is a
    change to a prescription, never a copy of it.
    """
    parent = list(range(len(names)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Equal name sets are copies at once; other pairs are compared only where they share a name, and
    # only with the last 64 blocks naming it, so a text of thousands of lines stays linear.
    first: dict[frozenset[str], int] = {}
    by_name: dict[str, list[int]] = {}
    for j, herbs in enumerate(names):
        if removes[j] or not herbs:
            continue
        if herbs in first:
            parent[root(j)] = root(first[herbs])
            continue
        first[herbs] = j
        seen: set[int] = set()
        for name in herbs:
            for i in by_name.get(name, [])[-64:]:
                if i not in seen:
                    seen.add(i)
                    if len(names[i] & herbs) * 2 > min(len(names[i]), len(herbs)):
                        parent[root(i)] = root(j)
            by_name.setdefault(name, []).append(j)
    best: dict[int, int] = {}
    for i in range(len(names)):
        r = root(i)
        if r not in best or len(names[i]) >= len(names[best[r]]):
            best[r] = i
    return sorted(best.values())
