"""Field text put in order: text appended to a field, and tongue and pulse moved into their own fields.

Real records write tongue and pulse together (舌脉：舌红苔黄，脉数) or inside the narrative (…舌淡红苔薄白，
脉弦细。) as often as under their own headings; the text reader and the table importer both tidy the
fields of a visit with `tidy_findings` before building it.
"""

from __future__ import annotations

import re

_TONGUE_START = (r"(?:舌(?:质|体|苔|边|尖|象|色|淡|红|暗|黯|紫|胖|瘦|绛|嫩|老|有|光|干|润|青|偏|脉)"
                 r"|苔(?:薄|白|黄|腻|厚|少|剥|滑|燥|润|灰|黑|净))")
_PULSE_START = r"脉(?:象)?\s*[:：]?\s*(?=[弦细沉浮滑数迟缓濡弱涩紧洪虚实结代促芤革牢微散伏动长短大小左右两双六寸关尺平和])"
_CLAUSE = r"(?:^|(?<=[，,。；;\s]))"
_TONGUE_AT = re.compile(_CLAUSE + _TONGUE_START)
_PULSE_AT = re.compile(_CLAUSE + _PULSE_START)
_CLAUSE_MARKS = "，,。；; \t"


def join_text(old: str | None, new: str) -> str:
    """Append text to a field: Chinese joins without a space, a new clause after a clause mark."""
    new = new.strip()
    if not old:
        return new
    if not new:
        return old
    if old[-1].isascii() and old[-1].isalnum() and new[0].isascii() and new[0].isalnum():
        return f"{old} {new}"
    return old + new


def _split_tongue_pulse(text: str) -> tuple[str | None, str | None]:
    """'舌红苔黄，脉数' -> ('舌红苔黄', '脉数'); text without a pulse clause is all tongue."""
    m = _PULSE_AT.search(text)
    if not m:
        return text.strip(_CLAUSE_MARKS) or None, None
    pulse = re.sub(r"^脉象?\s*[:：]\s*", "脉", text[m.start():]).strip(" \t")
    return text[:m.start()].strip(_CLAUSE_MARKS) or None, pulse or None


def _take_sentence(text: str, start: int) -> tuple[str, str]:
    """Cut the sentence that begins at `start` out of text -> (sentence, text without it)."""
    end = text.find("。", start)
    end = len(text) if end < 0 else end + 1
    before = text[:start].rstrip("，,；; ")
    if before and not before.endswith(("。", "！", "？")):
        before += "。"  # the cut clause ended this sentence
    return text[start:end], (before + text[end:]).strip()


def tidy_findings(fields: dict[str, str]) -> None:
    """Split a joint 舌脉 field, and move tongue and pulse clauses written inside narrative fields into
    their own fields (舌淡红苔薄白，脉弦细 at the end of 现病史)."""
    joint = fields.pop("tongue_pulse", None)
    if joint:
        tongue_part, pulse_part = _split_tongue_pulse(joint)
        for key, part in (("tongue", tongue_part), ("pulse", pulse_part)):
            if part:
                fields[key] = join_text(fields.get(key), part)
    tongue = fields.get("tongue")
    if tongue and not fields.get("pulse"):
        tongue_part, pulse_part = _split_tongue_pulse(tongue)
        if pulse_part:
            fields["tongue"], fields["pulse"] = tongue_part or "", pulse_part
    for key in ("present_illness", "chief_complaint", "other_findings"):
        text = fields.get(key)
        if not text:
            continue
        m = _TONGUE_AT.search(text)
        if m and not fields.get("tongue"):
            sentence, text = _take_sentence(text, m.start())
            tongue_part, pulse_part = _split_tongue_pulse(sentence)
            fields["tongue"] = tongue_part or ""
            if pulse_part and not fields.get("pulse"):
                fields["pulse"] = pulse_part
        m = _PULSE_AT.search(text)
        if m and not fields.get("pulse"):
            sentence, text = _take_sentence(text, m.start())
            fields["pulse"] = sentence
        fields[key] = text


__all__ = ["join_text", "tidy_findings"]
