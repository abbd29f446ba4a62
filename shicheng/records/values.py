"""Field values as real records write them -> the domain's types, for the text reader and the table importer.

Visit numbers (1, "2", 3.0, 初诊, 二诊, 复诊, 末诊, 第三诊), sex (男/女), age (45岁, 45, 6个月, 3岁半),
pregnancy (是/否, true/false, 孕12周). Each parser raises ValueError with a short reason that shows the
value's kind, never its text (describe_value); the caller adds file, row or line and column.
"""

from __future__ import annotations

import re

from shicheng.prescription import cn_number
from shicheng.text import normalise_text

_VISIT_WORD = re.compile(r"^(?:第\s*)?([0-9零〇一二两三四五六七八九十廿]+)\s*(?:诊|次就诊|次诊|次)$")
FIRST_VISIT_WORDS = ("初诊", "首诊", "一诊")
NEXT_VISIT_WORDS = ("复诊", "再诊", "续诊", "末诊")


def describe_value(value: object) -> str:
    """A field value as an error message may show it: its kind and length, never its text.

    Messages leave curation (the card's warnings, rejects.jsonl), and a value in the wrong column may be a
    name, a phone or an ID number; the file with its row or line locates it for whoever holds the materials.
    """
    if isinstance(value, bool):
        return "a true/false value"
    if isinstance(value, (int, float)):
        return f"a {sum(c.isdigit() for c in str(value))}-digit number (withheld)"
    text = str(value)
    kinds = [name for name, present in (
        ("Chinese", any("\u3400" <= c <= "\u9fff" for c in text)), ("digits", any(c.isdigit() for c in text)),
        ("letters", any(c.isascii() and c.isalpha() for c in text)),
        ("other signs", any(not (c.isalnum() or c.isspace()) for c in text))) if present]
    return f"a {len(text)}-character value ({', '.join([*kinds, 'withheld'])})"


def folded(value: object) -> str:
    """What every value parser sees first: full-width digits, letters and colons as ASCII (NFKC), stripped."""
    return normalise_text(str(value), fold="nfkc", simplified=False).strip()


def visit_number(value: object) -> int | None:
    """1, "2", 3.0, 初诊, 二诊, 第三诊 -> the number; 复诊/末诊/blank -> None (the next visit in order)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a visit number: {describe_value(value)}")
    if isinstance(value, (int, float)):
        if float(value).is_integer() and value >= 1:
            return int(value)
        raise ValueError(f"not a visit number: {describe_value(value)}")
    text = folded(value)
    if text.endswith(".0"):
        text = text[:-2]
    if text.isdigit() and int(text) >= 1:
        return int(text)
    if text in FIRST_VISIT_WORDS:
        return 1
    if text in NEXT_VISIT_WORDS:
        return None
    m = _VISIT_WORD.match(text)
    if m:
        word = m.group(1)
        number = int(word) if word.isdigit() else cn_number(word)
        if number and number >= 1 and float(number).is_integer():
            return int(number)
    raise ValueError(f"not a visit number: {describe_value(value)}; expected 1, 2 … or 初诊, 二诊 … 复诊")


def parse_sex(value: object) -> str:
    if value is None:
        return "unknown"
    text = folded(value).lower()
    if text in ("", "未知", "不详", "unknown", "u"):
        return "unknown"
    if text in ("男", "男性", "m", "male", "1"):
        return "male"
    if text in ("女", "女性", "f", "female", "2"):
        return "female"
    raise ValueError(f"not a sex: {describe_value(value)}; expected 男/女")


_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*(?:周岁|岁|y|yr|yrs|years?)?\s*(半)?$")
_AGE_MONTHS = re.compile(r"^(?:(\d+)\s*岁\s*)?(\d+)\s*(?:个)?月(?:龄)?$")


def parse_age(value: object) -> float | None:
    """45, 45.0, "45岁", "45周岁", "3岁半", "6个月", "1岁2个月" -> years; blank -> None."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        years = float(value)
    else:
        text = folded(value).lower()
        if not text:
            return None
        m, months = _AGE.match(text), _AGE_MONTHS.match(text)
        if m:
            years = float(m.group(1)) + (0.5 if m.group(2) else 0)
        elif months:
            years = int(months.group(1) or 0) + int(months.group(2)) / 12
        else:
            raise ValueError(f"not an age: {describe_value(value)}; expected e.g. 45 or 45岁")
    if not 0 <= years <= 130:
        raise ValueError(f"age out of range: {describe_value(value)}; expected 0 to 130 years")
    return round(years, 2)


_PREGNANT_WEEKS = re.compile(r"(?:孕|妊娠)\s*\d+\s*(?:周|月)|早孕|中孕|晚孕|妊娠期|怀孕")


def parse_pregnant(value: object) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    text = folded(value).lower()
    if text in ("", "否", "无", "未孕", "非孕", "false", "no", "n", "0", "0.0", "-"):
        return False
    if text in ("是", "有", "妊娠", "孕", "true", "yes", "y", "1", "1.0") or _PREGNANT_WEEKS.search(text):
        return True
    raise ValueError(f"not a pregnancy flag: {describe_value(value)}; expected 是/否")


__all__ = ["FIRST_VISIT_WORDS", "NEXT_VISIT_WORDS", "describe_value", "folded", "parse_age", "parse_pregnant",
           "parse_sex", "visit_number"]
