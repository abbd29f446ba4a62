"""What a clinician's pasted text says that the safety check needs: sex, age, pregnancy, a previous prescription.

Real notes rarely have headings: "患者女，30岁，妊娠12周。咳嗽三日…". The readers look for the facts
anywhere, and stay away from what only resembles them: a relative's age (母亲60岁), an age in the
history (10岁时), obstetric history (孕2产1), a denial (否认怀孕, 未孕), a menarche (14岁初潮).
Traditional characters are read as simplified (shicheng.text.normalise_text, as curation does).

Every fact keeps the words it was read from (`evidence`) and where (`position`, a character offset in
the text as given), so a page can show a clinician why the check believed the patient was pregnant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from shicheng.text import normalise_text

FactField = Literal["sex", "age", "pregnant"]
FactSource = Literal["flag", "header", "text", "case"]


class PatientFact(BaseModel):
    """One patient fact, and where it came from: a command-line flag or request field, a record header
    (性别：女), the running text, or a structured case file."""

    field: FactField
    value: bool | float | str
    evidence: str | None = Field(default=None, description="the words the fact was read from")
    position: int | None = Field(default=None, description="character offset of the evidence in the text")
    source: FactSource = "text"

    def describe(self) -> str:
        """'女 (text: 患者女)' — for pages and notices."""
        shown = {"male": "男", "female": "女", True: "妊娠", False: "未妊娠"}.get(self.value, self.value) \
            if not isinstance(self.value, float) else f"{self.value:g}岁"
        where = f"{self.source}: {self.evidence}" if self.evidence else self.source
        return f"{shown} ({where})"


def _aligned(text: str) -> str:
    """The normalised text with the same length as `text`, so offsets found in it point into `text`.

    OpenCC converts phrases and may change a length now and then; then each character is converted alone."""
    whole = normalise_text(text)
    if len(whole) == len(text):
        return whole
    out = []
    for ch in text:
        converted = normalise_text(ch)
        out.append(converted if len(converted) == 1 else ch)
    return "".join(out)


# ---- numbers ------------------------------------------------------------------------------------------------

_CN_DIGIT = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8,
             "九": 9}
_NUM = r"(?:\d+(?:\.\d+)?|[零〇一二两三四五六七八九十百]+)"


def _number(text: str) -> float | None:
    """'30', '三十', '十二', '一百零二' -> the number; None for anything else."""
    text = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    if not text or any(c not in _CN_DIGIT and c not in "十百" for c in text):
        return None
    total, current = 0, 0
    for c in text:
        if c == "百":
            total += (current or 1) * 100
            current = 0
        elif c == "十":
            total += (current or 1) * 10
            current = 0
        else:
            current = current * 10 + _CN_DIGIT[c]
    return float(total + current)


# ---- clauses and context ------------------------------------------------------------------------------------

_CLAUSE_END = "，,。；;！？!?\n"


def _clause_before(s: str, start: int) -> str:
    """The text from the start of the clause holding `start` up to it."""
    i = start
    while i > 0 and s[i - 1] not in _CLAUSE_END:
        i -= 1
    return s[i:start]


# Someone else's age or sex: 母亲60岁, 其父70岁, 丈夫35岁, 女儿5岁.
_KIN = re.compile(r"母亲|父亲|其母|其父|母|父|丈夫|妻子|爱人|配偶|儿子|女儿|孩子|哥哥|姐姐|弟弟|妹妹|兄|姐|弟|妹|"
                  r"祖父|祖母|外婆|外公|爷爷|奶奶|孙|家属|其夫|其妻|同事|朋友|邻居")
# An age that dates an event rather than the patient: 10岁时, 自20岁起, 14岁初潮, 50岁绝经, 30岁以前.
_AGE_EVENT_AFTER = re.compile(r"\s*(?:时|那年|起|开始|以前|以后|之前|之后|前|后|以来|左右时|初潮|月经|来潮|绝经|"
                              r"停经|发病|患|即|曾|至|到|[-~～—])")
_AGE_EVENT_BEFORE = re.compile(r"(?:于|自|从|在|至|到|直到|直至|[-~～—])\s*$")

_SEX_WORD = {"男": "male", "女": "female"}
_SEX_PATTERNS: list[tuple[re.Pattern, FactSource]] = [
    (re.compile(r"性别\s*[:：]?\s*(男|女)"), "header"),
    # 患者女 / 患者：王某，女 / 患儿，男
    (re.compile(r"(?:患者|病人|病者|患儿|病员)\s*[:：，,]?\s*(?:[\u4e00-\u9fff]{1,3}\s*[，,、]\s*)?(男|女)(?:性)?"
                r"(?=$|[，,、。；;:：\s\d（(]|[零〇一二两三四五六七八九十]+岁)"), "text"),
    # 女性患者 / 男患者
    (re.compile(r"(?:^|(?<=[，,。；;\s:：（(]))(男|女)性?\s*(?:患者|病人|患儿)"), "text"),
    # 女，30岁 / 男 45岁 / 女性，三十岁
    (re.compile(r"(?:^|(?<=[，,。；;\s:：（(]))(男|女)性?\s*[，,、\s]?\s*(?=" + _NUM + r"\s*(?:周岁|岁))"), "text"),
    # 30岁女性 / 45岁，男
    (re.compile(_NUM + r"\s*(?:周岁|岁)\s*[，,、\s]?\s*(男|女)性?(?=$|[，,、。；;\s]|患者|病人)"), "text"),
    # a clause that is only 男性/女性 (or the text starts with 男，/女，)
    (re.compile(r"(?:^|(?<=[，,。；;\s:：]))(男|女)性(?=$|[，,、。；;\s])"), "text"),
    (re.compile(r"^\s*(男|女)(?=[，,、。\s])"), "text"),
]
_AGE_HEADER = re.compile(r"年龄\s*[:：]?\s*(" + _NUM + r")\s*(?:(周岁|岁)(半)?|(个月|月龄))?")
_AGE = re.compile(r"(" + _NUM + r")\s*(?:余|多)?\s*(?:周岁|岁)(半)?(?:\s*(" + _NUM + r")\s*个月)?")
_INFANT = re.compile(r"(?:患儿|婴儿|男婴|女婴)\s*[，,、:：]?\s*(?:(?:男|女)\s*[，,、]\s*)?(" + _NUM +
                     r")\s*(?:个月|月龄)(?=$|[，,、。；;\s])")

# Pregnancy: 妊娠12周, 孕3月, 孕8+3周, 怀孕2个月, 早孕, 妊娠期, 孕妇 …
_PREGNANT = re.compile(r"(?:妊娠|怀孕|孕)\s*(?:第\s*)?" + _NUM + r"\s*(?:\+\s*\d+\s*)?(?:周|个月|月|天|日|[wW](?![a-zA-Z]))"
                       r"|早孕|中孕|晚孕|妊娠期|妊娠|孕期|孕妇|怀孕|有孕|身孕")
_PREGNANT_HEADER = re.compile(r"(?:是否妊娠|妊娠|怀孕)\s*[:：]\s*(是|有|否|无|未孕|非孕|不详)")
# Words around 孕/妊娠 that are not a current pregnancy: 孕2产1 (obstetric history), 备孕, 避孕, 不孕, 孕酮 …
_NOT_PREGNANCY_AFTER = re.compile(r"\s*(?:史|次|产|试验|激素|酮|前|检|育|禁|慎|忌)|\s*" + _NUM + r"\s*(?:产|次|胎)")
_NOT_PREGNANCY_BEFORE = re.compile(r"(?:备|避|不|试|助|促|未|无|非)$")
_DENIAL = re.compile(r"否认|未|无|非|没有|排除|并非|不是")
_POSSIBLE = re.compile(r"不排除|不除外|不能排除|可能|疑似|待排")
_PAST = re.compile(r"既往|曾|以前|之前|前次|上次|产后|流产后|术后|已终止")
_PAST_AFTER = re.compile(r"\s*(?:时|终止|流产史|引产|分娩|已产)")


def _sex_facts(s: str, text: str) -> list[PatientFact]:
    facts: list[PatientFact] = []
    taken: set[int] = set()
    for pattern, source in _SEX_PATTERNS:
        for m in pattern.finditer(s):
            pos = m.start(1)
            if pos in taken or _KIN.search(_clause_before(s, m.start())):
                continue
            taken.add(pos)
            facts.append(PatientFact(field="sex", value=_SEX_WORD[m.group(1)],
                                     evidence=text[m.start():m.end()].rstrip("，,、 "),
                                     position=m.start(), source=source))
    return facts


def _age_value(number: str, half: str | None = None, months: str | None = None) -> float | None:
    years = _number(number)
    if years is None:
        return None
    years += 0.5 if half else 0
    if months:
        extra = _number(months)
        years += (extra or 0) / 12
    return round(years, 2) if 0 < years <= 130 else None


def _age_facts(s: str, text: str) -> list[PatientFact]:
    facts: list[PatientFact] = []
    for m in _AGE_HEADER.finditer(s):
        months = m.group(4)
        value = _age_value(m.group(1)) if not months else (
            round(n / 12, 2) if (n := _number(m.group(1))) is not None and 0 < n < 36 else None)
        if value is not None:
            facts.append(PatientFact(field="age", value=value, evidence=text[m.start():m.end()], position=m.start(),
                                     source="header"))
    header_spans = [(f.position, f.position + len(f.evidence or "")) for f in facts]
    for m in _INFANT.finditer(s):
        n = _number(m.group(1))
        if n is not None and 0 < n < 36:
            facts.append(PatientFact(field="age", value=round(n / 12, 2), evidence=text[m.start():m.end()],
                                     position=m.start()))
    for m in _AGE.finditer(s):
        if any(a <= m.start() < b for a, b in header_spans):
            continue
        before = _clause_before(s, m.start())
        if _KIN.search(before) or _AGE_EVENT_BEFORE.search(before) or _AGE_EVENT_AFTER.match(s, m.end()):
            continue
        value = _age_value(m.group(1), m.group(2), m.group(3))
        if value is not None:
            facts.append(PatientFact(field="age", value=value, evidence=text[m.start():m.end()], position=m.start()))
    return facts


def _pregnancy_facts(s: str, text: str) -> list[PatientFact]:
    facts: list[PatientFact] = []
    header_spans = []
    for m in _PREGNANT_HEADER.finditer(s):
        value = m.group(1) in ("是", "有")
        if m.group(1) == "不详":
            continue
        facts.append(PatientFact(field="pregnant", value=value, evidence=text[m.start():m.end()], position=m.start(),
                                 source="header"))
        header_spans.append((m.start(), m.end()))
    for m in _PREGNANT.finditer(s):
        if any(a <= m.start() < b for a, b in header_spans):
            continue
        word = m.group(0)
        bare = not re.search(r"\d|[一二两三四五六七八九十]", word)
        if bare and _NOT_PREGNANCY_AFTER.match(s, m.end()):
            continue  # 孕2产1 is matched with its number, so this is 妊娠史, 孕酮, 孕前 …
        if re.match(r"\s*(?:产|次|胎)", s[m.end():]) and not word.startswith(("妊娠", "怀孕")):
            continue  # 孕2产1, 孕3次: obstetric history
        before = _clause_before(s, m.start())
        if _NOT_PREGNANCY_BEFORE.search(before) and word.startswith("孕"):
            continue  # 备孕, 避孕, 不孕, 未孕
        evidence = text[m.start():m.end()]
        if _POSSIBLE.search(before):
            facts.append(PatientFact(field="pregnant", value=True, evidence=text[m.start() - len(before):m.end()],
                                     position=m.start() - len(before)))
            continue
        if _DENIAL.search(before[-6:]) or (word.startswith("孕") and re.search(r"未|无|非", before[-1:])):
            facts.append(PatientFact(field="pregnant", value=False, evidence=text[m.start() - len(before[-6:]):m.end()],
                                     position=m.start() - len(before[-6:])))
            continue
        if _PAST.search(before) or _PAST_AFTER.match(s, m.end()):
            continue  # 既往妊娠期糖尿病, 妊娠12周时流产: history, not now
        facts.append(PatientFact(field="pregnant", value=True, evidence=evidence, position=m.start()))
    return facts


def find_patient_facts(text: str) -> list[PatientFact]:
    """Sex, age and pregnancy read from any text, in order of position. A denial (否认怀孕, 妊娠：否) is a
    fact with value False; the caller decides (patient_from_facts: any current pregnancy wins)."""
    if not text:
        return []
    s = _aligned(text)
    facts = [*_sex_facts(s, text), *_age_facts(s, text), *_pregnancy_facts(s, text)]
    return sorted(facts, key=lambda f: (f.position if f.position is not None else -1, f.field))


def pick_facts(facts: list[PatientFact]) -> dict[str, PatientFact]:
    """The fact used for each field: for sex and age the first header fact, else the first in the text;
    for pregnancy any fact saying pregnant (a false alarm costs a warning, a miss costs a patient)."""
    chosen: dict[str, PatientFact] = {}
    for name in ("sex", "age"):
        of_field = [f for f in facts if f.field == name]
        headed = [f for f in of_field if f.source == "header"]
        if headed or of_field:
            chosen[name] = (headed or of_field)[0]
    pregnancy = [f for f in facts if f.field == "pregnant"]
    if pregnancy:
        chosen["pregnant"] = next((f for f in pregnancy if f.value is True), pregnancy[0])
    return chosen


# ---- a previous prescription written inside the text --------------------------------------------------------

@dataclass(frozen=True)
class TextSpan:
    text: str
    start: int
    end: int


_PREVIOUS_RX = re.compile(
    r"(?:(?:服用?|续服|已服)?(?:前方|上方|原方)|上次(?:就诊)?处方|前次处方|上诊处方|前诊处方|初诊处方|首诊处方|"
    r"既往处方|上次方药|前次方药|上次用药|曾服方|前服方)\s*(?:为|如下)?\s*[:：]\s*")
# The prescription runs to the end of its line or sentence, or to the next heading (舌象：, 脉象：).
_SPAN_END = re.compile(r"[。\n]|(?<=[，,；;\s])(?=[\u4e00-\u9fff]{1,4}\s*[:：])")


def find_previous_prescription(text: str) -> TextSpan | None:
    """The prescription a follow-up note says the patient took (二诊：… 前方：柴胡10g …), or None.

    Only a marker followed by a colon counts: 前方 alone also means 'in front'."""
    s = _aligned(text or "")
    m = _PREVIOUS_RX.search(s)
    if m is None:
        return None
    end = _SPAN_END.search(s, m.end())
    stop = end.start() if end else len(s)
    body = text[m.end():stop].strip(" ，,；;")
    if not body:
        return None
    return TextSpan(text=body, start=m.start(), end=stop + (1 if end and s[stop:stop + 1] == "。" else 0))


__all__ = ["FactField", "FactSource", "PatientFact", "TextSpan", "find_patient_facts", "find_previous_prescription",
           "pick_facts"]
