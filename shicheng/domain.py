"""The things every step of shicheng talks about: masters, cases, visits, answers, prescriptions, tasks.

One definition each, as pydantic v2 models, so that curation, training, serving and evaluation all
read and write the same JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from enum import Enum
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DISCLAIMER = (
    "Research software: output is not medical advice and never replaces a licensed physician. "
    "研究用途，非医疗建议，不能替代执业医师。"
)


class SectionSpec(BaseModel):
    key: str
    zh: str
    en: str
    optional: bool = False


# The answer's sections in their canonical order. `reasoning` lives inside <think>.
SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec(key="reasoning", zh="思维过程", en="Reasoning"),
    SectionSpec(key="etiology_pathogenesis", zh="病因病机", en="Etiology and Pathogenesis"),
    SectionSpec(key="syndrome", zh="辨证", en="Syndrome Differentiation"),
    SectionSpec(key="treatment_principle", zh="治则治法", en="Treatment Principle"),
    SectionSpec(key="prescription", zh="处方", en="Prescription"),
    SectionSpec(key="prescription_explanation", zh="方解", en="Prescription Explanation"),
    SectionSpec(key="master_theory", zh="名医特色理论应用", en="Master's Theory Applied", optional=True),
    SectionSpec(key="modifications", zh="随症加减", en="Modifications"),
    SectionSpec(key="advice", zh="医嘱", en="Advice"),
)
SECTION_KEYS: tuple[str, ...] = tuple(s.key for s in SECTIONS)
OUTPUT_KEYS: tuple[str, ...] = SECTION_KEYS[1:]
REQUIRED_OUTPUT_KEYS: tuple[str, ...] = tuple(s.key for s in SECTIONS[1:] if not s.optional)
SECTION_BY_KEY: dict[str, SectionSpec] = {s.key: s for s in SECTIONS}


class Task(str, Enum):
    """The seven clinical tasks plus the full chain that asks for every section at once."""

    etiology_pathogenesis = "etiology_pathogenesis"
    syndrome = "syndrome"
    treatment_principle = "treatment_principle"
    prescription = "prescription"
    prescription_explanation = "prescription_explanation"
    modification = "modification"
    advice = "advice"
    full_chain = "full_chain"

    @property
    def sections(self) -> tuple[str, ...]:
        """Answer sections this task asks for."""
        if self is Task.full_chain:
            return SECTION_KEYS
        if self is Task.modification:
            return ("modifications",)
        return (self.value,)

    @property
    def zh(self) -> str:
        return TASK_ZH[self]


TASK_ZH: dict[Task, str] = {
    Task.etiology_pathogenesis: "病因病机分析",
    Task.syndrome: "证候诊断",
    Task.treatment_principle: "治则治法选择",
    Task.prescription: "处方生成",
    Task.prescription_explanation: "方解",
    Task.modification: "症状变化与方药加减",
    Task.advice: "医嘱",
    Task.full_chain: "全流程诊疗",
}
SEVEN_TASKS: tuple[Task, ...] = tuple(t for t in Task if t is not Task.full_chain)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Master(_Model):
    """A master physician (名老中医). Masters are data: one YAML file each."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", description="stable id used in prompts and model ids")
    name: str
    name_en: str | None = None
    school: str = Field(description="流派")
    specialties: list[str] = Field(default_factory=list)
    academic_thoughts: str = Field(default="", description="学术思想")
    signature_formulas: list[str] = Field(default_factory=list)
    signature_herbs: list[str] = Field(default_factory=list)
    fictional: bool = False
    notes: str | None = None


class Patient(_Model):
    id: str | None = None
    sex: Literal["male", "female", "unknown"] = "unknown"
    age: float | None = Field(default=None, ge=0, le=130)
    pregnant: bool = False

    @field_validator("sex", mode="before")
    @classmethod
    def _sex_aliases(cls, v: object) -> object:
        aliases = {"男": "male", "m": "male", "M": "male", "女": "female", "f": "female", "F": "female"}
        return aliases.get(v, v) if isinstance(v, str) else v


class HerbItem(_Model):
    """One herb line of a prescription, as written and as understood."""

    raw: str = Field(description="the text as written in the record")
    name: str | None = Field(default=None, description="standard written name (processed form kept)")
    base: str | None = Field(default=None, description="base herb used for matching and safety")
    processing: str | None = None
    dose: float | None = None
    unit: str | None = None
    grams: float | None = Field(default=None, description="dose converted to grams where defined")
    note: str | None = Field(default=None, description="preparation note: 先煎, 后下, 包煎, 烊化, 另煎, 冲服 …")


class Prescription(_Model):
    formula_name: str | None = None
    herbs: list[HerbItem] = Field(default_factory=list)
    administration: str | None = Field(default=None, description="preparation and administration")
    raw: str | None = None

    def base_herbs(self) -> list[str]:
        return [h.base for h in self.herbs if h.base]


class Answer(_Model):
    """The master's answer in the eight-part format; every part optional because tasks ask for subsets."""

    reasoning: str | None = None
    etiology_pathogenesis: str | None = None
    syndrome: str | None = None
    treatment_principle: str | None = None
    prescription: str | None = None
    prescription_explanation: str | None = None
    master_theory: str | None = None
    modifications: str | None = None
    advice: str | None = None

    def present(self) -> list[str]:
        return [k for k in SECTION_KEYS if getattr(self, k)]

    def missing(self, keys: Iterable[str] = REQUIRED_OUTPUT_KEYS) -> list[str]:
        return [k for k in keys if not getattr(self, k)]


class Visit(_Model):
    index: int = Field(default=1, ge=1, description="1 = 初诊, 2 = 二诊 …")
    label: str | None = Field(default=None, description="as written: 初诊, 二诊, 复诊 …")
    date: str | None = Field(default=None, description="relative date after scrubbing, e.g. 'day 14'")
    chief_complaint: str | None = Field(default=None, description="主诉")
    present_illness: str | None = Field(default=None, description="现病史")
    history: str | None = Field(default=None, description="既往史, 过敏史, 月经史 …")
    tongue: str | None = Field(default=None, description="舌象")
    pulse: str | None = Field(default=None, description="脉象")
    other_findings: str | None = Field(default=None, description="查体, 辅助检查 …")
    answer: Answer | None = None
    prescription: Prescription | None = None
    commentary: str | None = Field(default=None, description="按语")

    def has_presentation(self) -> bool:
        return any((self.chief_complaint, self.present_illness, self.tongue, self.pulse, self.other_findings))


class Case(_Model):
    id: str
    master_id: str | None = None
    patient: Patient = Field(default_factory=Patient)
    disease: str | None = None
    visits: list[Visit] = Field(min_length=1)
    source: str | None = Field(default=None, description="file and line or row it came from")
    synthetic: bool = False


M = TypeVar("M", bound=BaseModel)


class JsonlError(ValueError):
    """A JSONL line that could not be read; names file, line and field."""

    def __init__(self, path: str, line: int, message: str):
        self.path, self.line = path, line
        super().__init__(f"{path}:{line}: {message}")


def validation_message(err: ValidationError, *, whole: str = "(record)", limit: int | None = None,
                       name_loc: Callable[[tuple], str] | None = None, where: str = "field '{}'") -> str:
    """A pydantic ValidationError as one line: "field 'patient.age': Input should be a valid number; …".

    whole: what an error about the object itself (an empty location) is called, e.g. "(file)".
    limit: at most this many errors, then "; and N more". name_loc: writes a location instead of
    joining it with dots (to name a list item by its id, say). where: how a location is shown ("{}"
    for the bare path, as request and judge errors are written)."""
    errors = err.errors()
    shown = errors if limit is None else errors[:limit]
    parts = []
    for e in shown:
        loc = name_loc(tuple(e["loc"])) if name_loc else ".".join(str(p) for p in e["loc"])
        parts.append(f"{where.format(loc or whole)}: {e['msg']}")
    more = len(errors) - len(shown)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def iter_jsonl(path: str | Path, model: type[M]) -> Iterator[M | JsonlError]:
    """Yield a model per line, or a JsonlError naming the line and field; blank lines are skipped."""
    path = Path(path)
    with path.open(encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield model.model_validate(json.loads(line))
            except json.JSONDecodeError as e:
                yield JsonlError(str(path), lineno, f"not valid JSON ({e.msg} at column {e.colno})")
            except ValidationError as e:
                yield JsonlError(str(path), lineno, validation_message(e))


def read_jsonl(path: str | Path, model: type[M]) -> list[M]:
    """Strict reader: the first bad line raises JsonlError."""
    out = []
    for item in iter_jsonl(path, model):
        if isinstance(item, JsonlError):
            raise item
        out.append(item)
    return out


def write_jsonl(path: str | Path, items: Iterable[BaseModel]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for item in items:
            fh.write(item.model_dump_json(exclude_none=True) + "\n")
            n += 1
    return n


def load_master(path: str | Path) -> Master:
    """One master from its YAML file (JSON, a subset of YAML, reads too)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Master.model_validate(data)
    except ValidationError as e:
        raise ValueError(f"{path}: {validation_message(e)}") from e


MASTER_SUFFIXES = (".yaml", ".yml")


def load_master_files(source: str | Path | Iterable[str | Path], suffixes: tuple[str, ...] = MASTER_SUFFIXES
                      ) -> dict[str, Master]:
    """Masters by id from master YAML files: a folder (its files ending in `suffixes`, in name order) or
    the files themselves. Two files giving the same id are refused, naming both: a silent winner would
    train or serve one master's cases under the other's profile."""
    if isinstance(source, (str, Path)):
        folder = Path(source)
        if not folder.is_dir():
            raise ValueError(f"{folder}: not a folder of master files")
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    else:
        files = sorted({Path(p).resolve(): Path(p) for p in source}.values())  # one file named twice is one
    masters: dict[str, Master] = {}
    given_by: dict[str, Path] = {}
    for file in files:
        master = load_master(file)
        if master.id in masters:
            raise ValueError(f"{file}: master id {master.id!r} is already given by {given_by[master.id]}")
        masters[master.id], given_by[master.id] = master, file
    return masters
