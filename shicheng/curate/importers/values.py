"""Field values as real records write them -> the domain's types, shared by the tabular and text importers.

Visit numbers (1, "2", 3.0, 初诊, 二诊, 复诊, 末诊, 第三诊), sex (男/女), age (45岁, 45, 6个月, 3岁半),
pregnancy (是/否, true/false, 孕12周), master names -> master ids, and the dict of named fields -> Visit.
Each parser raises ValueError with a short reason; the importer adds file, row or line and column.
Also what every importer returns (ImportResult) and the ledger step they count in.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from shicheng.curate.rxread import UnreadablePrescription, read_prescription
from shicheng.domain import Answer, Case, Patient, Prescription, Visit
from shicheng.prescription import apply_to_previous, cn_number, refers_to_previous

STEP = "import"


@dataclass
class ImportResult:
    cases: list[Case] = field(default_factory=list)
    corpus: list[dict] = field(default_factory=list)  # {"text", "source": "file:para N"}
    warnings: list[str] = field(default_factory=list)

    def extend(self, other: ImportResult) -> ImportResult:
        self.cases.extend(other.cases)
        self.corpus.extend(other.corpus)
        self.warnings.extend(other.warnings)
        return self


# Targets a record field can be mapped to. Case-level ones describe the patient or the case, visit-level
# ones one visit, answer-level ones the master's answer for that visit.
CASE_TARGETS = ("case_id", "patient_id", "master", "sex", "age", "pregnant", "disease")
VISIT_TARGETS = ("visit", "date", "chief_complaint", "present_illness", "history", "tongue", "pulse",
                 "tongue_pulse", "other_findings", "commentary")  # tongue_pulse: one 舌脉 column, split later
PRESENTATION_TARGETS = ("chief_complaint", "present_illness", "tongue", "pulse", "other_findings")
ANSWER_TARGETS = ("etiology_pathogenesis", "syndrome", "treatment_principle", "prescription",
                  "prescription_explanation", "master_theory", "modifications", "advice")
ALL_TARGETS = CASE_TARGETS + VISIT_TARGETS + ANSWER_TARGETS

_VISIT_WORD = re.compile(r"^(?:第\s*)?([0-9零〇一二两三四五六七八九十廿]+)\s*(?:诊|次就诊|次诊|次)$")
FIRST_VISIT_WORDS = ("初诊", "首诊", "一诊")
NEXT_VISIT_WORDS = ("复诊", "再诊", "续诊", "末诊")


def describe(value: object) -> str:
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


def nfkc(text: str) -> str:
    """Full-width digits, letters and colons -> ASCII; what every value parser sees first."""
    return unicodedata.normalize("NFKC", text).strip()


def visit_number(value: object) -> int | None:
    """1, "2", 3.0, 初诊, 二诊, 第三诊 -> the number; 复诊/末诊/blank -> None (the next visit in order)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a visit number: {describe(value)}")
    if isinstance(value, (int, float)):
        if float(value).is_integer() and value >= 1:
            return int(value)
        raise ValueError(f"not a visit number: {describe(value)}")
    text = nfkc(str(value))
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
    raise ValueError(f"not a visit number: {describe(value)}; expected 1, 2 … or 初诊, 二诊 … 复诊")


def parse_sex(value: object) -> str:
    if value is None:
        return "unknown"
    text = nfkc(str(value)).lower()
    if text in ("", "未知", "不详", "unknown", "u"):
        return "unknown"
    if text in ("男", "男性", "m", "male", "1"):
        return "male"
    if text in ("女", "女性", "f", "female", "2"):
        return "female"
    raise ValueError(f"not a sex: {describe(value)}; expected 男/女")


_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*(?:周岁|岁|y|yr|yrs|years?)?\s*(半)?$")
_AGE_MONTHS = re.compile(r"^(?:(\d+)\s*岁\s*)?(\d+)\s*(?:个)?月(?:龄)?$")


def parse_age(value: object) -> float | None:
    """45, 45.0, "45岁", "45周岁", "3岁半", "6个月", "1岁2个月" -> years; blank -> None."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        years = float(value)
    else:
        text = nfkc(str(value)).lower()
        if not text:
            return None
        m, months = _AGE.match(text), _AGE_MONTHS.match(text)
        if m:
            years = float(m.group(1)) + (0.5 if m.group(2) else 0)
        elif months:
            years = int(months.group(1) or 0) + int(months.group(2)) / 12
        else:
            raise ValueError(f"not an age: {describe(value)}; expected e.g. 45 or 45岁")
    if not 0 <= years <= 130:
        raise ValueError(f"age out of range: {describe(value)}; expected 0 to 130 years")
    return round(years, 2)


_PREGNANT_WEEKS = re.compile(r"(?:孕|妊娠)\s*\d+\s*(?:周|月)|早孕|中孕|晚孕|妊娠期|怀孕")


def parse_pregnant(value: object) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    text = nfkc(str(value)).lower()
    if text in ("", "否", "无", "未孕", "非孕", "false", "no", "n", "0", "0.0", "-"):
        return False
    if text in ("是", "有", "妊娠", "孕", "true", "yes", "y", "1", "1.0") or _PREGNANT_WEEKS.search(text):
        return True
    raise ValueError(f"not a pregnancy flag: {describe(value)}; expected 是/否")


def cell_text(value: object) -> str:
    """A spreadsheet cell as text: 1001.0 -> "1001", dates as ISO dates, None -> ""."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "isoformat"):
        text = value.isoformat()
        return text[:10] if text.endswith("T00:00:00") else text
    return str(value).strip()


# Honorifics written after a master's name in real records; stripped only to look the name up.
_TITLES = ("国医大师", "名老中医", "主任医师", "副主任医师", "教授", "主任", "老师", "先生", "医师", "大夫")


@dataclass
class MasterResolver:
    """Master names or ids as written -> master ids the caller knows; unknown names become warnings."""

    masters: dict[str, str] | None = None
    default: str | None = None
    warnings: list[str] = field(default_factory=list)
    _warned: set[str] = field(default_factory=set)

    def resolve(self, written: str | None, source: str) -> str | None:
        written = nfkc(written or "")
        if not written:
            return self.default
        table = {nfkc(k): v for k, v in (self.masters or {}).items()}
        if written in table.values():
            return written
        if written in table:
            return table[written]
        bare = written
        for title in _TITLES:
            bare = bare.removeprefix(title).removesuffix(title).strip()
        if bare in table:
            return table[bare]
        if written not in self._warned:
            self._warned.add(written)
            self.warnings.append(f"{source}: master '{written}' is not in the masters mapping; "
                                 "cases by this master are kept with master_id None")
        return None


class PrescriptionReader:
    """parse_prescription when the herb lexicon loads; otherwise prescriptions stay text (with one warning)."""

    def __init__(self) -> None:
        self._kb = None
        self.error: str | None = None
        self.warnings: list[str] = []
        try:
            from shicheng.knowledge import load_knowledge

            self._kb = load_knowledge()
        except (OSError, ValueError) as e:  # KnowledgeError is a ValueError; a missing data file an OSError
            self.error = f"prescriptions kept as text only: herb lexicon not loadable ({str(e)[:200]})"

    def parse(self, text: str | None, previous: Prescription | None = None, where: str = "") -> Prescription | None:
        """The herbs of a visit; a follow-up written as 上方去X加Y becomes the previous list changed, and
        without a previous prescription to change it stays text only (its herb list would be wrong).
        A text the parser fails on stays text only too, with a warning naming `where` (file:line)."""
        if not text or self._kb is None:
            return None
        try:
            parsed = read_prescription(text, self._kb)
        except UnreadablePrescription as e:
            self.warnings.append(f"{where or 'a visit'}: prescription kept as text only: {e}")
            return None
        if refers_to_previous(text):
            return apply_to_previous(previous, parsed) if previous is not None else None
        rx = parsed.prescription
        return rx if rx.herbs or rx.formula_name else None


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


def build_visits(numbered: list[tuple[int, str | None, dict[str, str]]], rx: PrescriptionReader,
                 where: str = "") -> list[Visit]:
    """(index, label, fields) of a case's visits in order -> Visits, each follow-up read against the last."""
    visits: list[Visit] = []
    for index, label, fields in numbered:
        visits.append(build_visit(fields, index, label, rx, visits[-1].prescription if visits else None,
                                  f"{where} visit {index}".strip()))
    return visits


def build_visit(fields: dict[str, str], index: int, label: str | None, rx: PrescriptionReader,
                previous: Prescription | None = None, where: str = "") -> Visit:
    """Named fields of one visit (visit- and answer-level targets) -> Visit with Answer and parsed prescription."""
    def get(key: str) -> str | None:
        value = (fields.get(key) or "").strip()
        return value or None

    answer_values = {k: get(k) for k in ANSWER_TARGETS}
    answer = Answer(**answer_values) if any(answer_values.values()) else None
    return Visit(
        index=index, label=label, date=get("date"), chief_complaint=get("chief_complaint"),
        present_illness=get("present_illness"), history=get("history"), tongue=get("tongue"), pulse=get("pulse"),
        other_findings=get("other_findings"), answer=answer, prescription=rx.parse(get("prescription"), previous, where),
        commentary=get("commentary"),
    )


def build_patient(patient_id: str | None, case_id: str, sex: str = "unknown", age: float | None = None,
                  pregnant: bool = False) -> Patient:
    """Patient.id from the record number when there is one (clean.py hashes it), else from the case id."""
    return Patient(id=patient_id or f"patient-{case_id}", sex=sex, age=age, pregnant=pregnant)
