"""Plain-text Chinese case records (医案) -> Cases, tolerant of the ways real collections write them.

A case starts at `【医案】ID`, `医案一`, `病案3`, `案1`, `例1：` (or, in a file without such markers, at its
first record line); visits at 初诊/二诊/…/复诊/末诊, alone on a line or followed by a date or text;
fields at a heading and a colon (full-width or ASCII) or inside 【】, several on one line after 。 or a
space. Tongue and pulse written together (舌脉：舌红苔黄，脉数) or without headings (舌淡红苔薄白，脉弦细。)
are split into their fields. Header fields (医家, 患者, 性别, 年龄, 病名, 妊娠, 病历号) belong to the case,
read field by field however many share a line (姓名：王某  性别：女  年龄：52岁  电话：…, or after ，);
the patient's name and the personal fields (电话, 身份证号, 住址, 单位 …) are read past and stored nowhere.
Every case keeps the line it started on in Case.source; a case with no presentation in any visit is
rejected with that line. Warnings name a field and its line, never its value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from shicheng.curate.importers.encoding import NotTextError, read_text
from shicheng.curate.importers.values import (
    ANSWER_TARGETS,
    FIRST_VISIT_WORDS,
    PRESENTATION_TARGETS,
    STEP,
    ImportResult,
    MasterResolver,
    PrescriptionReader,
    build_patient,
    build_visits,
    join_text,
    parse_age,
    parse_pregnant,
    parse_sex,
    visit_number,
)
from shicheng.curate.ledger import Ledger
from shicheng.domain import Case

HEADINGS: dict[str, tuple[str, ...]] = {
    "chief_complaint": ("主诉",),
    "present_illness": ("现病史", "病史", "刻下症", "刻下", "刻诊", "症见", "现症", "症状", "临床表现"),
    "history": ("既往史", "过敏史", "个人史", "家族史", "月经史", "婚育史"),
    "tongue": ("舌象", "舌苔", "舌质", "舌"),
    "pulse": ("脉象", "脉"),
    "tongue_pulse": ("舌脉", "舌脉象"),
    "other_findings": ("查体", "体格检查", "辅助检查", "理化检查", "实验室检查", "检查", "望诊"),
    "syndrome": ("辨证", "证型", "中医诊断", "诊断", "证候", "辨证分型"),
    "etiology_pathogenesis": ("病因病机", "病机", "病机分析"),
    "treatment_principle": ("治则治法", "治法", "治则", "立法"),
    "prescription": ("处方", "方药", "方剂", "药用", "方用", "处方用药"),
    "prescription_explanation": ("方解",),
    "commentary": ("按语", "按", "评析", "体会", "评按"),
    "advice": ("医嘱", "调护", "调摄", "嘱"),
    "modifications": ("随症加减", "随证加减", "加减"),
    "date": ("就诊日期", "就诊时间", "日期"),
    "master": ("医家", "医师", "医生", "主治医师", "导师"),
    "patient": ("患者", "病人", "姓名", "一般情况"),
    "sex": ("性别",),
    "age": ("年龄",),
    "disease": ("病名", "西医诊断", "疾病"),
    "pregnant": ("妊娠", "是否妊娠"),
    "patient_id": ("病历号", "患者编号", "门诊号", "住院号", "病案号"),
    # Identifying fields with no clinical use: known as headings so that they end the field before them.
    "personal": ("电话", "手机", "手机号", "手机号码", "联系电话", "联系方式", "联系人", "身份证", "身份证号",
                 "身份证号码", "证件号", "证件号码", "住址", "地址", "家庭住址", "家庭地址", "现住址", "工作单位",
                 "单位", "职业", "民族", "籍贯", "婚姻", "婚否", "出生日期", "出生年月", "邮箱", "电子邮箱",
                 "医保号", "医保卡号", "就诊卡号", "卡号", "邮编"),
}
CASE_LEVEL = ("master", "patient", "sex", "age", "disease", "pregnant", "patient_id", "personal")
_TARGET = {word: target for target, words in HEADINGS.items() for word in words}
_WORD = "|".join(sorted(_TARGET, key=len, reverse=True))
_NUM = "[0-9一二三四五六七八九十廿]+"
_VISIT_WORD = rf"初诊|首诊|复诊|再诊|续诊|末诊|第?{_NUM}诊|第{_NUM}次(?:就诊|诊治|复诊)"
_DATE = (r"\d{4}\s*[年./-]\s*\d{1,2}\s*(?:[月./-]\s*\d{1,2}\s*日?|月)"
         r"|\d{1,2}\s*月\s*\d{1,2}\s*日|[(（]\s*\d{4}[^)）]{0,12}[)）]")

# A heading: optionally numbered ("1、") or in 【】, then a colon (or the closing 】); "主诉/症状：" allowed.
_HEADING = re.compile(rf"^\s*(?:[(（]?\d+[)）.、]\s*)?[【\[]?\s*((?:{_WORD})(?:\s*[/／、]\s*(?:{_WORD}))*)\s*"
                      rf"(?:[】\]]\s*[:：]?|[:：])\s*")
_VISIT = re.compile(rf"^\s*[【\[]?\s*({_VISIT_WORD})(?:日期|时间)?\s*[】\]]?\s*[:：，,。.、]?\s*")
_DATE_VISIT = re.compile(rf"^\s*({_DATE})\s*[，,]?\s*({_VISIT_WORD})\s*[:：，,。.]?\s*")
_DATE_AT_START = re.compile(rf"^\s*(?:{_DATE})\s*[。.，,；;]?")
# Where a second heading or visit may begin inside a line: after a sentence end or a space.
_MIDLINE = re.compile(rf"(?<=[。；;！？!?\s])\s*(?=[【\[]?(?:(?:{_WORD})\s*(?:[】\]]|[:：])|(?:{_VISIT_WORD})"
                      rf"(?:日期|时间)?\s*[:：])|(?:{_DATE})\s*[，,]?\s*(?:{_VISIT_WORD}))")
# Inside a header line (患者：王某，男，45岁，电话：…) a field also begins after a comma.
_HEADER_FIELD = re.compile(rf"(?<=[，,、；;。！？!?\s])\s*(?=[【\[]?(?:{_WORD})\s*(?:[】\]]\s*[:：]?|[:：]))")
_CASE_START = re.compile(
    rf"^\s*(?:【\s*(?:医案|病案|验案|案例)\s*({_NUM})?\s*】\s*(.*)"
    rf"|(?:医案|病案|验案|病例|案例)\s*({_NUM})\s*(?:[:：.、．\s]\s*(.*))?$"
    rf"|(?:案|例)\s*({_NUM})\s*(?:[:：.、．\s]\s*(.*))?$)"
)
# "王某，男，45岁" / "患者女性，32岁" / "李某 45岁 男" near the start of a line.
_PATIENT_LIKE = re.compile(r"^.{0,12}?(?:[男女]性?\s*[，,、\s]\s*\d+\s*(?:岁|个月)|\d+\s*岁\s*[，,、\s]?\s*[男女])")
_PATIENT_ID = re.compile(r"(?:病历号|患者编号|门诊号|住院号|病案号)\s*[:：]?\s*([A-Za-z0-9][A-Za-z0-9_\-]*)")
_SEX = re.compile(r"(?:^|[，,、\s:：]|患者|病人)(男|女)(?:性)?(?=$|[，,、。；;\s\d])")
_AGE = re.compile(r"(\d+(?:\.\d+)?\s*(?:岁半?|个月|月龄))")
_TONGUE_START = r"(?:舌(?:质|体|苔|边|尖|象|色|淡|红|暗|黯|紫|胖|瘦|绛|嫩|老|有|光|干|润|青|偏|脉)|苔(?:薄|白|黄|腻|厚|少|剥|滑|燥|润|灰|黑|净))"
_PULSE_START = r"脉(?:象)?\s*[:：]?\s*(?=[弦细沉浮滑数迟缓濡弱涩紧洪虚实结代促芤革牢微散伏动长短大小左右两双六寸关尺平和])"
_CLAUSE = r"(?:^|(?<=[，,。；;\s]))"
_TONGUE_AT = re.compile(_CLAUSE + _TONGUE_START)
_PULSE_AT = re.compile(_CLAUSE + _PULSE_START)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]*$")
_CLAUSE_MARKS = "，,。；; \t"


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
        m = _HEADING.match(text)
        if m:
            target = _TARGET[re.split(r"\s*[/／、]\s*", m.group(1))[0]]
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


def _patient_facts(header: dict[str, str], source: str, warnings: list[str]) -> dict:
    """Sex, age, pregnancy and record number from header fields; the name is never kept."""
    patient_text = header.get("patient", "")
    facts: dict = {"sex": "unknown", "age": None, "pregnant": False, "patient_id": None}
    sex_text = header.get("sex") or (m.group(1) if (m := _SEX.search(patient_text)) else None)
    age_text = header.get("age") or (m.group(1) if (m := _AGE.search(patient_text)) else None)
    for key, text, parse in (("sex", sex_text, parse_sex), ("age", age_text, parse_age),
                             ("pregnant", header.get("pregnant"), parse_pregnant)):
        if text:
            try:
                facts[key] = parse(text.strip("。，,；; "))
            except ValueError as e:
                warnings.append(f"{source}: {key}: {e}; left unknown")
    if re.search(r"(?:孕|妊娠)\s*\d+\s*(?:周|月)|早孕|妊娠期", patient_text):
        facts["pregnant"] = True
    pid = header.get("patient_id") or (m.group(1) if (m := _PATIENT_ID.search(patient_text)) else None)
    if pid:
        facts["patient_id"] = pid.strip("。，,；; ")
    return facts


def _has_answer_or_presentation(v: _Visit) -> bool:
    return any(v.fields.get(k) for k in (*PRESENTATION_TARGETS, *ANSWER_TARGETS, "commentary"))


def read_case_records(text: str, path: Path, ledger: Ledger, masters: MasterResolver, rx: PrescriptionReader,
                      step: str = STEP, name: str | None = None) -> ImportResult:
    """Cases from the text of one file; counts one ledger input per case found. Sources read
    "`name`:line" (`name` defaults to the path as given)."""
    label = name or str(path)
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
            if not _CASE_START.match(line) and not (_HEADING.match(line) or _VISIT.match(line)):
                continue
            started = True
        reader.line(line, number)
    result = ImportResult()
    if not reader.cases:
        ledger.seen(step)
        ledger.reject(step, label, "no case records found: no case, visit or field markers")
    for ordinal, case in enumerate(reader.cases, start=1):
        source = f"{label}:{case.line}"
        ledger.seen(step)
        for v in case.visits:
            tidy_findings(v.fields)
        visits = [v for v in case.visits if _has_answer_or_presentation(v)]
        dropped = len(case.visits) - len(visits)
        if not any(any(v.fields.get(k) for k in PRESENTATION_TARGETS) for v in visits):
            ledger.reject(step, source, "no visit content: no 主诉, 现病史, 舌, 脉 or other presentation found")
            continue
        if dropped:
            result.warnings.append(f"{source}: {dropped} visit marker(s) with nothing under them dropped")
        case_id = case.explicit_id or f"{path.stem}-{ordinal:03d}"
        facts = _patient_facts(case.header, source, result.warnings)
        built = build_visits([(v.index, v.label, v.fields) for v in visits], rx, source)
        result.cases.append(Case(
            id=case_id, master_id=masters.resolve(case.header.get("master", "").strip("。 "), source),
            patient=build_patient(facts["patient_id"], case_id, facts["sex"], facts["age"], facts["pregnant"]),
            disease=(case.header.get("disease") or "").strip("。 ") or None, visits=built, source=source,
        ))
        ledger.keep(step)
    result.warnings.extend(rx.warnings[rx_warnings:])
    return result


def looks_like_case_records(text: str) -> bool:
    """True when a text file has the markers of case records (not a book): two kinds among case or visit
    markers, 主诉, 处方/方药, 辨证, 治法, at the start of lines."""
    kinds = set()
    for line in text.split("\n")[:2000]:
        if _CASE_START.match(line):
            kinds.add("case")
        elif _VISIT.match(line) or _DATE_VISIT.match(line):
            kinds.add("visit")
        elif m := _HEADING.match(line):
            target = _TARGET[re.split(r"\s*[/／、]\s*", m.group(1))[0]]
            if target in ("chief_complaint", "prescription", "syndrome", "treatment_principle"):
                kinds.add(target)
        if len(kinds) >= 2:
            return True
    return False


def import_text_records(paths: str | Path | list[str | Path], ledger: Ledger,
                        masters: dict[str, str] | None = None, default_master: str | None = None,
                        step: str = STEP) -> ImportResult:
    """Cases from one or many plain-text record files; an unreadable file is one reject."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    resolver, rx = MasterResolver(masters, default_master), PrescriptionReader()
    result = ImportResult(warnings=[rx.error] if rx.error else [])
    for path in map(Path, paths):
        try:
            text = read_text(path).text.lstrip("\ufeff")
        except NotTextError as e:
            ledger.seen(step)
            ledger.reject(step, str(path), str(e))
            continue
        result.extend(read_case_records(text, path, ledger, resolver, rx, step))
    result.warnings.extend(resolver.warnings)
    return result
