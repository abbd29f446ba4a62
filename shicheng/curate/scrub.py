"""Personal data out of text: the one scrubber every text leaving curation passes through.

Used on case and corpus text by clean.py (counted by kind for the card), and on every reject reason,
source and record by the Ledger, and on every warning the card carries, so that a value an importer
quotes, a rejected paragraph or a teacher's reply never carries a phone, ID number, address, record
number, a patient's name after 患者/姓名, or an exact date out of curation.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import date

# The most common Chinese surnames (they cover the large majority of the population); a name after
# 患者/姓名 is only removed when it starts with one, so that "患者诉…" or "患者女" are left alone.
SURNAMES = set(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔"
    "钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
_NAME_STOP = set("诉因于自既平近述现主感某") | set("男女")
PII_PATTERNS: list[tuple[str, re.Pattern, str]] = [
    ("id_card", re.compile(r"(?<!\d)\d{6}(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx](?!\d)"),
     "[身份证号]"),
    ("record_number", re.compile(r"(病历号|住院号|门诊号|病案号|登记号|就诊号|ID号|卡号)\s*[:：]?\s*[A-Za-z0-9-]{4,}"),
     r"\1：[编号]"),
    ("phone", re.compile(r"(?<!\d)(?:\+?86[- ]?)?1[3-9]\d[- ]?\d{4}[- ]?\d{4}(?!\d)"), "[电话]"),
    ("phone", re.compile(r"(?<!\d)0\d{2,3}-\d{7,8}(?!\d)"), "[电话]"),
    ("address", re.compile(r"(住址|地址|家住|现住|居住地|户籍)\s*[:：]?\s*[^，。；;,\n]{2,40}"), r"\1：[地址]"),
    ("address", re.compile(r"[\u4e00-\u9fff]{2,6}(?:省|自治区)[\u4e00-\u9fff]{2,6}市[\u4e00-\u9fff0-9]{2,20}"
                           r"(?:路|街|道|巷|村)[0-9一二三四五六七八九十]+号?"), "[地址]"),
    ("email", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), "[邮箱]"),
    # A value after its label goes whatever its format (an old 15-digit ID, a phone written with spaces).
    ("id_card", re.compile(r"(身份证(?:号码|号)?|证件号(?:码)?)\s*[:：]?\s*[0-9][0-9Xx \-]{7,}[0-9Xx]"),
     r"\1：[身份证号]"),
    ("phone", re.compile(r"(电话|手机(?:号码|号)?|联系电话|联系方式)\s*[:：]?\s*\+?[0-9][0-9 \-]{5,}[0-9]"), r"\1：[电话]"),
]
_NAME = re.compile(r"(患者|病人|病者|姓名|患儿)\s*[:：]?\s*([\u4e00-\u9fff])([\u4e00-\u9fff]{1,2})(?=[，,。\s(（：:;；]|$)")
DATE = re.compile(r"(?<!\d)((?:19|20)\d{2})\s*[年./-]\s*(\d{1,2})\s*[月./-]\s*(\d{1,2})\s*日?")



def parse_date(m: re.Match) -> date | None:
    try:
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None


def scrub_text(text: str, counts: Counter, anchor: date | None = None) -> str:
    """Remove personal data from one text; exact dates become days relative to `anchor` (first visit)."""
    for kind, pattern, repl in PII_PATTERNS:
        text, n = pattern.subn(repl, text)
        counts[kind] += n

    def name(m: re.Match) -> str:
        first, rest = m.group(2), m.group(3)
        if first not in SURNAMES or rest[0] in _NAME_STOP or set(rest) <= {"某"}:
            return m.group(0)
        counts["name"] += 1
        return f"{m.group(1)}{first}某"

    text = _NAME.sub(name, text)

    def rel(m: re.Match) -> str:
        counts["date"] += 1
        d = parse_date(m)
        if anchor is None or d is None:
            return "[日期]"
        return f"第{(d - anchor).days}天"

    return DATE.sub(rel, text)


def redact(value, counts: Counter | None = None):
    """A copy of a string, or of the strings inside a dict/list (keys kept), with personal data removed."""
    counts = Counter() if counts is None else counts
    if isinstance(value, str):
        return scrub_text(value, counts)
    if isinstance(value, dict):
        return {k: redact(v, counts) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, counts) for v in value]
    return value
