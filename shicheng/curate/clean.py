"""Cleaning: text normalisation, personal-data removal, quality filters and duplicate detection.

Every rejected case goes to the Ledger with its reason; every personal datum removed is counted by
kind so the card can say what was taken out.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from datetime import date

import opencc
from datasketch import MinHash, MinHashLSH

from shicheng.curate.ledger import Ledger
from shicheng.domain import Case

_T2S = opencc.OpenCC("t2s")
# Full-width letters and digits become ASCII; Chinese full-width punctuation (，。：) is kept on purpose.
_FULLWIDTH = {c: c - 0xFEE0 for c in (*range(0xFF10, 0xFF1A), *range(0xFF21, 0xFF3B), *range(0xFF41, 0xFF5B))}
_FULLWIDTH.update({0x3000: 0x20, 0xFF05: ord("%"), 0xFF0B: ord("+"), 0xFF0D: ord("-"), 0xFF0E: ord(".")})

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
]
_NAME = re.compile(r"(患者|病人|病者|姓名|患儿)\s*[:：]?\s*([\u4e00-\u9fff])([\u4e00-\u9fff]{1,2})(?=[，,。\s(（：:;；]|$)")
_DATE = re.compile(r"(?<!\d)((?:19|20)\d{2})\s*[年./-]\s*(\d{1,2})\s*[月./-]\s*(\d{1,2})\s*日?")


def normalize_text(text: str) -> str:
    return _T2S.convert(text.translate(_FULLWIDTH))


def _parse_date(m: re.Match) -> date | None:
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
        d = _parse_date(m)
        if anchor is None or d is None:
            return "[日期]"
        return f"第{(d - anchor).days}天"

    return _DATE.sub(rel, text)


def _first_date(case: Case) -> date | None:
    for v in case.visits:
        for field in (v.date, v.present_illness):
            m = _DATE.search(field or "")
            if m:
                return _parse_date(m)
    return None


def _map_strings(obj, fn):
    """Apply fn to every string field of a pydantic model tree (returns a new model)."""
    data = obj.model_dump()

    def walk(x):
        if isinstance(x, str):
            return fn(x)
        if isinstance(x, list):
            return [walk(i) for i in x]
        if isinstance(x, dict):
            return {k: (walk(v) if k not in ("id", "master_id", "source", "sex") else v) for k, v in x.items()}
        return x

    return type(obj).model_validate(walk(data))


def pseudonymize(value: str, salt: str = "shicheng") -> str:
    return "p-" + hashlib.sha256(f"{salt}:{value}".encode()).hexdigest()[:12]


def clean_case(case: Case, counts: Counter) -> Case:
    """Normalised, scrubbed copy of a case: patient id hashed, dates relative to the first visit."""
    case = _map_strings(case, normalize_text)
    anchor = _first_date(case)
    case = _map_strings(case, lambda s: scrub_text(s, counts, anchor))
    if case.patient.id and not case.patient.id.startswith("p-"):
        counts["patient_id"] += 1
        case = case.model_copy(update={"patient": case.patient.model_copy(update={"id": pseudonymize(case.patient.id)})})
    return case


def quality_problem(case: Case, min_chars: int = 10) -> str | None:
    if not any(v.has_presentation() for v in case.visits):
        return "no presentation: no visit has a complaint, history, tongue, pulse or findings"
    if not any(v.answer and (v.answer.prescription or v.answer.syndrome) for v in case.visits):
        return "no answer: no visit has the master's syndrome or prescription"
    if not any(v.answer and v.answer.prescription for v in case.visits):
        return "no prescription: no visit records the prescription"
    chars = sum(len(x or "") for v in case.visits
                for x in (v.chief_complaint, v.present_illness, v.tongue, v.pulse, v.other_findings))
    if chars < min_chars:
        return f"too short: {chars} characters of presentation (< {min_chars})"
    return None


def case_text(case: Case) -> str:
    parts = []
    for v in case.visits:
        parts.extend(x or "" for x in (v.chief_complaint, v.present_illness, v.tongue, v.pulse, v.other_findings))
        if v.answer:
            parts.extend(x or "" for x in (v.answer.syndrome, v.answer.treatment_principle, v.answer.prescription))
    return "|".join(parts)


_PUNCT = re.compile(r"[\s\W_]+")


def _minhash(text: str, num_perm: int) -> MinHash:
    text = _PUNCT.sub("", text)  # punctuation and spacing edits do not make a different case
    mh = MinHash(num_perm=num_perm, seed=1)
    shingles = {text[i:i + 3] for i in range(max(1, len(text) - 2))}
    mh.update_batch([s.encode("utf-8") for s in shingles])
    return mh


def clean_cases(cases: list[Case], ledger: Ledger, near_threshold: float = 0.8, num_perm: int = 128,
                min_chars: int = 10) -> tuple[list[Case], Counter]:
    """Normalise and scrub every case, then drop low-quality, exact and near duplicates (first one wins)."""
    counts: Counter = Counter()
    kept: list[Case] = []
    exact: dict[str, str] = {}
    ids: set[str] = set()
    lsh = MinHashLSH(threshold=near_threshold, num_perm=num_perm)
    for case in cases:
        ledger.seen("clean")
        cleaned = clean_case(case, counts)
        source = case.source or case.id
        problem = quality_problem(cleaned, min_chars)
        if problem:
            ledger.reject("clean", source, problem, {"case_id": cleaned.id})
            continue
        text = case_text(cleaned)
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest in exact:
            ledger.reject("clean", source, f"duplicate: same content as case {exact[digest]}", {"case_id": cleaned.id})
            continue
        mh = _minhash(text, num_perm)
        near = lsh.query(mh)
        if near:
            ledger.reject("clean", source, f"near-duplicate: of case {sorted(near)[0]} (MinHash ≥ {near_threshold})",
                          {"case_id": cleaned.id})
            continue
        if cleaned.id in ids:
            ledger.reject("clean", source, f"duplicate id: case id {cleaned.id} seen before", {"case_id": cleaned.id})
            continue
        ids.add(cleaned.id)
        exact[digest] = cleaned.id
        lsh.insert(cleaned.id, mh)
        kept.append(cleaned)
        ledger.keep("clean")
    return kept, counts


def clean_corpus(records: list[dict], ledger: Ledger, min_chars: int = 20) -> tuple[list[dict], Counter]:
    counts: Counter = Counter()
    seen: dict[str, str] = {}
    kept = []
    for rec in records:
        ledger.seen("clean-corpus")
        text = scrub_text(normalize_text(rec["text"]), counts).strip()
        if len(text) < min_chars:
            ledger.reject("clean-corpus", rec.get("source", "?"), f"too short: {len(text)} characters")
            continue
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest in seen:
            ledger.reject("clean-corpus", rec.get("source", "?"), f"duplicate: same paragraph as {seen[digest]}")
            continue
        seen[digest] = rec.get("source", "?")
        kept.append({**rec, "text": text})
        ledger.keep("clean-corpus")
    return kept, counts
