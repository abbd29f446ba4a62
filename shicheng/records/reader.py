"""Plain-text Chinese case records (医案) -> Cases, tolerant of the ways real collections write them.

A case starts at `【医案】ID`, `医案一`, `病案3`, `案1`, `例1：` (or, in a text without such markers, at its
first record line); visits at 初诊/二诊/…/复诊/末诊, alone on a line or followed by a date or text;
fields at a heading and a colon (full-width or ASCII) or inside 【】, several on one line after 。 or a
space. Tongue and pulse written together (舌脉：舌红苔黄，脉数) or without headings (舌淡红苔薄白，脉弦细。)
are split into their fields. Header fields (医家, 患者, 性别, 年龄, 病名, 妊娠, 病历号) belong to the case,
read field by field however many share a line (姓名：王某  性别：女  年龄：52岁  电话：…, or after ，);
the patient's name and the personal fields (电话, 身份证号, 住址, 单位 …) are read past and stored nowhere.
Every case keeps the line it started on in Case.source; a case with no presentation in any visit is
rejected with that line. Warnings name a field and its line, never its value.

Plain functions over text with no ledger: `read_records` returns the cases, the rejects with their
reasons and the warnings, and the caller (curation's importer, the agent) decides what to count.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shicheng.domain import Case
from shicheng.records.build import build_visits, header_patient
from shicheng.records.headings import (
    ANSWER_TARGETS,
    CASE_LEVEL,
    HEADING,
    HEADING_WORDS,
    PRESENTATION_TARGETS,
    heading_target,
)
from shicheng.records.prescriptions import PrescriptionReader
from shicheng.records.tidy import join_text, tidy_findings
from shicheng.records.values import FIRST_VISIT_WORDS, visit_number

_NUM = "[0-9一二三四五六七八九十廿]+"
_VISIT_WORD = rf"初诊|首诊|复诊|再诊|续诊|末诊|第?{_NUM}诊|第{_NUM}次(?:就诊|诊治|复诊)"
_DATE = (r"\d{4}\s*[年./-]\s*\d{1,2}\s*(?:[月./-]\s*\d{1,2}\s*日?|月)"
         r"|\d{1,2}\s*月\s*\d{1,2}\s*日|[(（]\s*\d{4}[^)）]{0,12}[)）]")

_VISIT = re.compile(rf"^\s*[【\[]?\s*({_VISIT_WORD})(?:日期|时间)?\s*[】\]]?\s*[:：，,。.、]?\s*")
_DATE_VISIT = re.compile(rf"^\s*({_DATE})\s*[，,]?\s*({_VISIT_WORD})\s*[:：，,。.]?\s*")
_DATE_AT_START = re.compile(rf"^\s*(?:{_DATE})\s*[。.，,；;]?")
# Where a second heading or visit may begin inside a line: after a sentence end or a space.
_MIDLINE = re.compile(rf"(?<=[。；;！？!?\s])\s*(?=[【\[]?(?:(?:{HEADING_WORDS})\s*(?:[】\]]|[:：])|(?:{_VISIT_WORD})"
                      rf"(?:日期|时间)?\s*[:：])|(?:{_DATE})\s*[，,]?\s*(?:{_VISIT_WORD}))")
# Inside a header line (患者：王某，男，45岁，电话：…) a field also begins after a comma.
_HEADER_FIELD = re.compile(rf"(?<=[，,、；;。！？!?\s])\s*(?=[【\[]?(?:{HEADING_WORDS})\s*(?:[】\]]\s*[:：]?|[:：]))")
_CASE_START = re.compile(
    rf"^\s*(?:【\s*(?:医案|病案|验案|案例)\s*({_NUM})?\s*】\s*(.*)"
    rf"|(?:医案|病案|验案|病例|案例)\s*({_NUM})\s*(?:[:：.、．\s]\s*(.*))?$"
    rf"|(?:案|例)\s*({_NUM})\s*(?:[:：.、．\s]\s*(.*))?$)"
)
# "王某，男，45岁" / "患者女性，32岁" / "李某 45岁 男" near the start of a line.
_PATIENT_LIKE = re.compile(r"^.{0,12}?(?:[男女]性?\s*[，,、\s]\s*\d+\s*(?:岁|个月)|\d+\s*岁\s*[，,、\s]?\s*[男女])")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]*$")


def _visit_index(word: str, last: int) -> int:
    number = visit_number(re.sub(r"(?:次(?:就诊|诊治|复诊)?|诊)$", "诊", word.removeprefix("第")))
    return number if number is not None and number > last else last + 1


@dataclass
class _Visit:
    line: int
    index: int
    label: str | None
    fields: dict[str, str] = field(default_factory=dict)

    def has_content(self) -> bool:
        return any(v for k, v in self.fields.items() if k != "date")


@dataclass
class _Case:
    line: int
    explicit_id: str | None
    header: dict[str, str] = field(default_factory=dict)
    visits: list[_Visit] = field(default_factory=list)
    current: str | None = None  # the field continuation lines go to

    def has_content(self) -> bool:
        return any(v.has_content() for v in self.visits)


class _Reader:
    """Reads lines in order, keeping the case, the visit and the field that continuation lines belong to."""

    def __init__(self, explicit_cases: bool):
        self.explicit_cases = explicit_cases
        self.cases: list[_Case] = []

    @property
    def case(self) -> _Case | None:
        return self.cases[-1] if self.cases else None

    def start_case(self, line: int, explicit_id: str | None = None) -> _Case:
        self.cases.append(_Case(line, explicit_id))
        return self.cases[-1]

    def visit(self, line: int) -> _Visit:
        case = self.case or self.start_case(line)
        if not case.visits:
            case.visits.append(_Visit(line, 1, None))
        return case.visits[-1]

    def new_visit(self, line: int, word: str) -> _Visit:
        case = self.case or self.start_case(line)
        if word in FIRST_VISIT_WORDS and case.has_content() and not self.explicit_cases:
            case = self.start_case(line)  # a second 初诊 in a file without case markers: the next case
        last = case.visits[-1] if case.visits else None
        carried = {}
        if last is not None and not last.has_content():
            case.visits.pop()  # an implicit visit holding only a 就诊日期 line: the marker takes it over
            carried = last.fields
            last = case.visits[-1] if case.visits else None
        index = _visit_index(word, last.index if last else 0)
        case.visits.append(_Visit(line, index, word, dict(carried)))
        case.current = None
        return case.visits[-1]

    def put(self, target: str, value: str, line: int) -> None:
        case = self.case or self.start_case(line)
        if target in CASE_LEVEL:
            if case.has_content() and not self.explicit_cases and target in ("patient", "master", "disease"):
                case = self.start_case(line)  # a new header after visits, with no case markers: the next case
            case.header[target] = join_text(case.header.get(target), value)
            case.current = None
            return
        fields = self.visit(line).fields
        old = fields.get(target)
        fields[target] = f"{old} {value}".strip() if target == "prescription" and old else join_text(old, value)
        case.current = target

    def free_text(self, text: str, line: int) -> None:
        case = self.case
        before_visits = case is None or not case.visits
        if _PATIENT_LIKE.search(text) and (before_visits or not self.explicit_cases):
            self.put("patient", text, line)
        elif case is not None and case.current:
            self.put(case.current, text, line)
        elif before_visits and len(text) < 20 and not re.search(r"[，,。；;]", text):
            return  # a title line before the first visit (胃脘痛案, 脾肾阳虚证)
        else:
            self.put("present_illness", text, line)

    def segment(self, text: str, line: int) -> None:
        m = _DATE_VISIT.match(text)
        if m:
            visit = self.new_visit(line, m.group(2))
            visit.fields["date"] = m.group(1).strip("（）() ")
            rest = text[m.end():].strip().lstrip(":：，,。.；; ")
            if rest:
                self.free_text(rest, line)
            return
        m = _VISIT.match(text)
        if m:
            visit = self.new_visit(line, m.group(1))
            rest = text[m.end():].strip()
            date = _DATE_AT_START.match(rest)
            if date:
                visit.fields["date"] = date.group(0).strip("（）()。.，,；; ")
                rest = rest[date.end():].strip().lstrip(":：，,。.；; ")
            if rest:
                self.put("present_illness", rest, line)
            return
        m = HEADING.match(text)
        if m:
            target = heading_target(m)
            value = text[m.end():].strip()
            fields = _HEADER_FIELD.split(value) if target in CASE_LEVEL else [value]
            self.put(target, fields[0].strip(), line)
            for rest in fields[1:]:
                if rest.strip():
                    self.segment(rest.strip(), line)
            return
        self.free_text(text, line)

    def line(self, text: str, number: int) -> None:
        m = _CASE_START.match(text)
        if m:
            rest = (m.group(2) or m.group(4) or m.group(6) or "").strip()
            first_word = rest.split(maxsplit=1)[0] if rest else ""
            explicit_id = first_word if m.group(2) is not None and _ID.match(first_word) else None
            self.start_case(number, explicit_id)
            text = rest[len(first_word):] if explicit_id else rest
        for part in _MIDLINE.split(text):
            if part.strip():
                self.segment(part.strip(), number)



def looks_like_case_records(text: str) -> bool:
    """True when a text file has the markers of case records (not a book): two kinds among case or visit
    markers, 主诉, 处方/方药, 辨证, 治法, at the start of lines."""
    kinds = set()
    for line in text.split("\n")[:2000]:
        if _CASE_START.match(line):
            kinds.add("case")
        elif _VISIT.match(line) or _DATE_VISIT.match(line):
            kinds.add("visit")
        elif m := HEADING.match(line):
            target = heading_target(m)
            if target in ("chief_complaint", "prescription", "syndrome", "treatment_principle"):
                kinds.add(target)
        if len(kinds) >= 2:
            return True
    return False


@dataclass
class RecordsRead:
    """What a text of case records held: the cases, the case records rejected with their reasons (in the
    order found; a text with no record at all is one reject), and warnings naming a field and its line."""

    cases: list[Case] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (source "name:line", reason)
    warnings: list[str] = field(default_factory=list)


def _has_answer_or_presentation(v: _Visit) -> bool:
    return any(v.fields.get(k) for k in (*PRESENTATION_TARGETS, *ANSWER_TARGETS, "commentary"))


def read_records(text: str, name: str, id_prefix: str | None = None, *, prescriptions: PrescriptionReader | None = None,
                 master_of: Callable[[str, str], str | None] | None = None) -> RecordsRead:
    """The case records in one text. Sources read "`name`:line"; a case without an explicit id gets
    "`id_prefix`-001", "-002" … (id_prefix defaults to the stem of `name`).

    prescriptions: the reader of the visits' prescriptions (one is made when None; pass one to share its
      lexicon and collect its warnings across texts). master_of(written, source): the master id of the
      name a 医家： field writes; without it every case has master_id None."""
    prefix = id_prefix if id_prefix is not None else Path(name).stem
    rx = prescriptions if prescriptions is not None else PrescriptionReader()
    rx_warnings = len(rx.warnings)
    lines = text.split("\n")
    explicit = any(_CASE_START.match(line) for line in lines)
    reader = _Reader(explicit)
    started = not explicit
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if not started:
            # Lines before the first case marker are a title or preface, unless they hold record fields.
            if not _CASE_START.match(line) and not (HEADING.match(line) or _VISIT.match(line)):
                continue
            started = True
        reader.line(line, number)
    result = RecordsRead()
    if not reader.cases:
        result.rejected.append((name, "no case records found: no case, visit or field markers"))
    for ordinal, case in enumerate(reader.cases, start=1):
        source = f"{name}:{case.line}"
        for v in case.visits:
            tidy_findings(v.fields)
        visits = [v for v in case.visits if _has_answer_or_presentation(v)]
        dropped = len(case.visits) - len(visits)
        if not any(any(v.fields.get(k) for k in PRESENTATION_TARGETS) for v in visits):
            result.rejected.append((source, "no visit content: no 主诉, 现病史, 舌, 脉 or other presentation found"))
            continue
        if dropped:
            result.warnings.append(f"{source}: {dropped} visit marker(s) with nothing under them dropped")
        case_id = case.explicit_id or f"{prefix}-{ordinal:03d}"
        patient = header_patient(case.header, case_id, source, result.warnings)
        master = master_of(case.header.get("master", "").strip("。 "), source) if master_of else None
        result.cases.append(Case(
            id=case_id, master_id=master, patient=patient, disease=(case.header.get("disease") or "").strip("。 ") or None,
            visits=build_visits([(v.index, v.label, v.fields) for v in visits], rx, source), source=source,
        ))
    result.warnings.extend(rx.warnings[rx_warnings:])
    return result


__all__ = ["RecordsRead", "looks_like_case_records", "read_records"]
