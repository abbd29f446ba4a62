"""The demo corpus's data files, validated: syndromes (证) with each school's treatment, masters' styles, herbs.

All of it is synthetic demonstration data written for shicheng's `make demo`; nothing here is medical
advice. Herb lists are written as compact strings, one herb a token: `制附子30先煎 大枣4枚 薄荷6后下`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shicheng.domain import validation_message

DEMO_DIR = Path(__file__).parent
SCHOOLS: tuple[str, ...] = ("fuyang", "butu", "wenbing", "jingfang", "huoxue")
NOTES = ("先煎", "后下", "包煎", "烊化", "冲服", "另煎")
_HERB_TOKEN = re.compile(r"^(?P<name>\D+?)(?P<dose>\d+(?:\.\d+)?)(?P<unit>枚|片|g)?(?P<note>" + "|".join(NOTES) + ")?$")


class DemoDataError(ValueError):
    """A demo data file that does not validate; the message names the file and the entry."""


@dataclass(frozen=True)
class HerbDose:
    name: str
    dose: float
    unit: str = "g"
    note: str | None = None


def parse_herb_list(text: str | None) -> list[HerbDose]:
    """`制附子30先煎 大枣4枚` -> [HerbDose('制附子', 30, 'g', '先煎'), HerbDose('大枣', 4, '枚')]."""
    out = []
    for token in (text or "").split():
        m = _HERB_TOKEN.match(token)
        if m is None:
            raise ValueError(f"herb token {token!r} is not NAME DOSE [枚|片] [{'|'.join(NOTES)}]")
        out.append(HerbDose(m["name"], float(m["dose"]), m["unit"] or "g", m["note"]))
    return out


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Treatment(_Model):
    """How one school (or the textbook) treats a syndrome: a named formula and/or explicit herbs, then edits."""

    formula: str | None = None
    herbs: str | None = Field(default=None, description="explicit herb list, used instead of or besides a formula")
    add: str | None = Field(default=None, description="herbs added; a herb already present takes this dose")
    remove: list[str] = Field(default_factory=list)
    syndrome: str | None = Field(default=None, description="how this school names the syndrome")
    principle: str | None = None
    note: str | None = Field(default=None, description="one sentence on why this school treats it so")

    @field_validator("herbs", "add")
    @classmethod
    def _herbs_parse(cls, v: str | None) -> str | None:
        parse_herb_list(v)
        return v


class FollowUp(_Model):
    symptom: str
    principle: str
    add: str
    remove_when_resolved: bool = True

    @field_validator("add")
    @classmethod
    def _herbs_parse(cls, v: str) -> str:
        if not parse_herb_list(v):
            raise ValueError("empty herb list")
        return v


class Syndrome(_Model):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str
    tags: list[str] = Field(min_length=1, description="寒/热/虚/实/气/血/阴/阳/表/湿/痰/瘀 and the zang-fu")
    diseases: list[str] = Field(min_length=1)
    chief: list[str] = Field(min_length=2, description="chief-complaint phrases")
    findings: list[str] = Field(min_length=4, description="accompanying symptom phrases to sample")
    tongue: list[str] = Field(min_length=1)
    pulse: list[str] = Field(min_length=1)
    pathogenesis: str
    principle: str
    advice: str
    triggers: list[str] = Field(default_factory=list)
    sex: str | None = Field(default=None, pattern="^(male|female)$")
    age: tuple[int, int] = (18, 78)
    pregnancy_ok: bool = False
    textbook: Treatment
    schools: dict[str, Treatment] = Field(min_length=2)

    @field_validator("schools")
    @classmethod
    def _known_schools(cls, v: dict[str, Treatment]) -> dict[str, Treatment]:
        unknown = sorted(set(v) - set(SCHOOLS))
        if unknown:
            raise ValueError(f"unknown school(s) {unknown}; known: {list(SCHOOLS)}")
        return v


class SyndromeTable(_Model):
    version: int
    synthetic: bool
    notice: str
    history: list[str] = Field(min_length=3)
    triggers: list[str] = Field(min_length=3)
    followups: list[FollowUp] = Field(min_length=5)
    pregnancy_avoid: list[str] = Field(default_factory=list, description="beyond the pharmacopoeia's 禁用/慎用")
    syndromes: list[Syndrome] = Field(min_length=30)
    case_syndromes: list[str] = Field(default_factory=list, description=(
        "ids of the syndromes the demo's cases are drawn from (empty: all). A tiny model needs many cases per "
        "syndrome and master to learn each master's hand; the other syndromes stay in the treatises"))

    def case_pool(self) -> list[Syndrome]:
        chosen = set(self.case_syndromes)
        return [s for s in self.syndromes if not chosen or s.id in chosen]


class SignatureAdd(_Model):
    """A herb the master adds to most prescriptions when it is absent (his school's hallmark)."""

    herb: str
    doses: list[float] = Field(min_length=1, description="doses to draw from")
    note: str | None = None
    probability: float = Field(ge=0, le=1)
    tags: list[str] = Field(default_factory=list, description="only for syndromes with one of these tags")


class Style(_Model):
    school: str
    lineage: str = Field(min_length=20, description="the school's documented lineage, for the treatise")
    teaching: str = Field(min_length=20, description="the master's teaching at length, for the treatise; the "
                                                      "master file keeps one sentence for the system prompt")
    id_prefix: str = Field(pattern="^[A-Z]{2,4}$")
    signature_adds: list[SignatureAdd] = Field(default_factory=list)
    grow: dict[str, list[float]] = Field(default_factory=dict,
                                         description="herb -> doses it climbs through at follow-ups")
    keep_formula_doses: bool = Field(default=False, description="write the formula's own doses (原方原量)")
    lead_with_signature: bool = Field(default=False, description="write his hallmark herbs first (and as 君)")
    max_followup_adds: int = 2
    principle_suffix: list[str] = Field(default_factory=list)
    pathogenesis_suffix: list[str] = Field(default_factory=list)
    advice: list[str] = Field(min_length=1)
    commentary: list[str] = Field(min_length=2, description="按语 templates")
    outcome: list[str] = Field(min_length=1)

    @field_validator("school")
    @classmethod
    def _known_school(cls, v: str) -> str:
        if v not in SCHOOLS:
            raise ValueError(f"unknown school {v!r}; known: {list(SCHOOLS)}")
        return v


class HerbInfo(_Model):
    dose: tuple[float, float]
    action: str


def _load(path: Path, model: type[BaseModel]):
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return model.model_validate(data)
    except yaml.YAMLError as e:
        raise DemoDataError(f"{path}: not valid YAML: {e}") from e
    except ValidationError as e:
        def name_loc(loc: tuple) -> str:
            parts = list(loc)
            if len(parts) >= 2 and parts[0] == "syndromes" and isinstance(parts[1], int):
                entries = (data or {}).get("syndromes") or []
                if parts[1] < len(entries) and isinstance(entries[parts[1]], dict):
                    parts[1] = f"{parts[1]}({entries[parts[1]].get('id')})"
            return ".".join(str(p) for p in parts)

        raise DemoDataError(f"{path}: {validation_message(e, name_loc=name_loc)}") from e


@functools.lru_cache(maxsize=4)
def load_syndromes(path: Path = DEMO_DIR / "syndromes.yaml") -> SyndromeTable:
    table = _load(path, SyndromeTable)
    seen: set[str] = set()
    for s in table.syndromes:
        if s.id in seen:
            raise DemoDataError(f"{path}: syndrome id {s.id!r} used twice")
        seen.add(s.id)
    unknown = sorted(set(table.case_syndromes) - seen)
    if unknown:
        raise DemoDataError(f"{path}: case_syndromes names unknown syndrome id(s) {unknown}")
    pool = table.case_pool()
    for school in SCHOOLS:
        if not any(school in s.schools for s in pool):
            raise DemoDataError(f"{path}: case_syndromes leave school {school!r} no syndrome to treat")
        if not any(school in s.schools and s.pregnancy_ok and s.sex != "male" for s in pool):
            raise DemoDataError(f"{path}: case_syndromes leave school {school!r} no syndrome for pregnant patients")
    return table


@functools.lru_cache(maxsize=4)
def load_styles(path: Path = DEMO_DIR / "styles.yaml") -> dict[str, Style]:
    class _Styles(_Model):
        version: int
        styles: dict[str, Style]

    return _load(path, _Styles).styles


@functools.lru_cache(maxsize=4)
def load_herb_info(path: Path = DEMO_DIR / "herbs.yaml") -> dict[str, HerbInfo]:
    class _Herbs(_Model):
        version: int
        herbs: dict[str, HerbInfo]

    return _load(path, _Herbs).herbs
