"""The judging rubric as data: a versioned YAML file (`rubrics/*.yaml`) holding the points, the prompt and,
derived from them, the JSON schema of a verdict and the pydantic model that validates one.

The shipped rubric is the paper's 55 points (Med-Shicheng, arXiv 2603.23520, "Automatic judging"). A
rubric knows which of its items apply to one answer (`scored_items`): the items the task asks for, less
those the gold answer lacks (the maximum shrinks) and the master's-theory item when no master is named.
Two modes:
`reference` (the judge sees the gold answer) and `reference_free` (no gold: criteria that need a gold
answer use their `reference_free` variant, e.g. herb match becomes herb fitness, judged).

The verdict schema is built per answer from the scored items only, so a judge cannot score an item that
is not scored. Strings are bounded by a regex rather than maxLength: xgrammar enforces a pattern's
length as characters of the decoded JSON string and emits no raw control characters under it, while its
maxLength rule lets control characters through (which strict JSON parsers reject).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from string import Template
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    model_validator,
)

from shicheng.domain import SECTION_BY_KEY, validation_message

Mode = Literal["reference", "reference_free"]
MODES: tuple[str, ...] = ("reference", "reference_free")
RUBRICS_DIR = Path(__file__).with_name("rubrics")
DEFAULT_RUBRIC = "paper-55-v1"
CODE_CRITERIA = ("herb_match", "composition")  # what shicheng.metrics computes (judge.py wires them)
MAX_HERBS = 99  # bound on the judge's herb counts: no real prescription has more
_KEY = r"^[a-z][a-z0-9_]*$"
# JSON Schema counts 3.0 as an integer; strict pydantic would not, so whole floats become ints first.
_Count = Annotated[int, BeforeValidator(lambda v: int(v) if isinstance(v, float) and v.is_integer() else v)]
PLACEHOLDERS = {
    "reference": ({"case", "master", "gold", "answer", "criteria", "max_total", "rationale_max_chars", "format"},
                  {"gold", "answer", "format"}),
    "reference_free": ({"case", "master", "answer", "criteria", "max_total", "rationale_max_chars", "format"},
                       {"answer", "format"}),
    "retry": ({"error"}, {"error"}),
}


class RubricError(ValueError):
    """A rubric file that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


class CriterionVariant(_Strict):
    """What changes in a criterion when there is no gold answer (reference-free mode)."""

    key: str | None = Field(default=None, pattern=_KEY)
    zh: str | None = None
    description: str | None = None
    computed_by: Literal["judge", "code"] | None = None
    code: Literal["herb_match", "composition"] | None = None


class Criterion(_Strict):
    key: str = Field(pattern=_KEY)
    zh: str
    points: float = Field(gt=0)
    description: str
    computed_by: Literal["judge", "code"] = "judge"
    code: Literal["herb_match", "composition"] | None = Field(
        default=None, description="the function of our code that computes it in hybrid scoring")
    reference_free: CriterionVariant | None = None

    @model_validator(mode="after")
    def _code_named(self) -> Criterion:
        if (self.computed_by == "code") != (self.code is not None):
            raise ValueError(f"criterion '{self.key}': computed_by 'code' needs `code` (one of {CODE_CRITERIA}), "
                             "and `code` needs computed_by 'code'")
        return self

    def in_mode(self, mode: Mode) -> Criterion:
        """This criterion as scored in `mode`; reference-free overrides apply only there."""
        if mode == "reference" or self.reference_free is None:
            return self
        update = self.reference_free.model_dump(exclude_none=True)
        if update.get("computed_by") == "judge":
            update.setdefault("code", None)
        return self.model_copy(update={**update, "reference_free": None})


class Item(_Strict):
    key: str = Field(pattern=_KEY)
    section: str
    zh: str
    points: float = Field(gt=0)
    needs_master: bool = False
    criteria: list[Criterion] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Item:
        if self.section not in SECTION_BY_KEY or self.section == "reasoning":
            raise ValueError(f"item '{self.key}': unknown answer section '{self.section}'; "
                             f"known: {[k for k in SECTION_BY_KEY if k != 'reasoning']}")
        keys = [c.key for c in self.criteria]
        if len(set(keys)) != len(keys):
            raise ValueError(f"item '{self.key}': criterion keys repeat: {keys}")
        total = sum(c.points for c in self.criteria)
        if abs(total - self.points) > 1e-9:
            raise ValueError(f"item '{self.key}': criteria add up to {total:g}, not the item's {self.points:g} points")
        return self

    def criteria_in(self, mode: Mode) -> list[Criterion]:
        return [c.in_mode(mode) for c in self.criteria]


class Completeness(_Strict):
    zh: str
    points: float = Field(gt=0)
    computed_by: Literal["judge", "code"] = "code"
    description: str


class Prompts(_Strict):
    system: str
    reference: str
    reference_free: str
    retry: str

    @model_validator(mode="after")
    def _placeholders(self) -> Prompts:
        for name, (known, required) in PLACEHOLDERS.items():
            used = template_names(getattr(self, name))
            if used - known:
                raise ValueError(f"prompt '{name}': unknown placeholders {sorted(used - known)}; known: {sorted(known)}")
            if required - used:
                raise ValueError(f"prompt '{name}': missing placeholders {sorted(required - used)}")
        return self


class Rubric(_Strict):
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    title: str
    source: str
    total: float = Field(gt=0)
    rationale_max_chars: int = Field(default=200, ge=10, le=2000)
    completeness: Completeness
    items: list[Item] = Field(min_length=1)
    prompts: Prompts
    _models: dict = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _adds_up(self) -> Rubric:
        keys = [i.key for i in self.items]
        if len(set(keys)) != len(keys):
            raise ValueError(f"item keys repeat: {keys}")
        total = self.completeness.points + sum(i.points for i in self.items)
        if abs(total - self.total) > 1e-9:
            raise ValueError(f"completeness and items add up to {total:g}, not the declared total {self.total:g}")
        return self

    def item(self, key: str) -> Item:
        for it in self.items:
            if it.key == key:
                return it
        raise KeyError(f"rubric {self.version} has no item '{key}'; items: {[i.key for i in self.items]}")

    def scored_items(self, sections_asked: tuple[str, ...] | list[str], gold_sections: set[str] | None,
                     has_master: bool) -> list[Item]:
        """Items that apply: asked by the task, present in the gold answer (`gold_sections`; None in
        reference-free mode, where nothing is left out for want of a gold answer), and the master's-theory
        item only when a master is named."""
        return [it for it in self.items
                if it.section in sections_asked and (has_master or not it.needs_master)
                and (gold_sections is None or it.section in gold_sections)]

    def max_total(self, items: list[Item]) -> float:
        return self.completeness.points + sum(i.points for i in items) if items else 0.0

    # --- the verdict's schema, its validator, and the prompt ------------------------------------------

    def verdict_schema(self, items: list[Item], mode: Mode) -> dict[str, Any]:
        """JSON schema of the judge's reply for these items (sent as response_format, and used for
        constrained decoding)."""
        scores = {it.key: _object({c.key: _number(c.points) for c in it.criteria_in(mode)}) for it in items}
        props: dict[str, Any] = {"completeness": _number(self.completeness.points), "scores": _object(scores)}
        if self._asks_herb_counts(items, mode):
            props["herb_counts"] = _object({"matched": _integer(MAX_HERBS), "gold": _integer(MAX_HERBS)})
        props["missing"] = {"type": "array", "items": {"type": "string", "enum": [it.key for it in items]},
                            "maxItems": len(items)}
        props["rationale"] = {"type": "string", "pattern": f"^[^\\x00-\\x1f]{{0,{self.rationale_max_chars}}}$"}
        return _object(props)

    def verdict_model(self, items: list[Item], mode: Mode) -> type[BaseModel]:
        """The pydantic model that validates a reply against `verdict_schema` (strict types and bounds).

        The rationale is only required to be a string: its length bound exists to make constrained decoding
        finish, a remote judge that writes a longer or multi-line rationale has still scored, and xgrammar's
        output can decode a few characters longer than the bound (judge_local.py says why)."""
        # Keyed by the items' content, not their keys: a model_copy with other points needs another model.
        cache_key = (json.dumps([i.model_dump() for i in items], sort_keys=True), self.completeness.points, mode)
        if cache_key in self._models:
            return self._models[cache_key]
        # strict: a number must be a JSON number (not "5", not true), exactly as the schema says.
        forbid = ConfigDict(extra="forbid", strict=True)
        score_fields: dict[str, Any] = {}
        for it in items:
            fields = {c.key: (float, Field(ge=0, le=c.points)) for c in it.criteria_in(mode)}
            score_fields[it.key] = (create_model(f"Scores_{it.key}", __config__=forbid, **fields), ...)
        fields: dict[str, Any] = {
            "completeness": (float, Field(ge=0, le=self.completeness.points)),
            "scores": (create_model("Scores", __config__=forbid, **score_fields), ...)}
        if self._asks_herb_counts(items, mode):
            counts = {"matched": (_Count, Field(ge=0, le=MAX_HERBS)), "gold": (_Count, Field(ge=0, le=MAX_HERBS))}
            fields["herb_counts"] = (create_model("HerbCounts", __config__=forbid, **counts), ...)
        keys = tuple(it.key for it in items)
        fields["missing"] = (list[Literal[keys]], Field(max_length=len(items)))  # type: ignore[valid-type]
        fields["rationale"] = (str, ...)
        model = create_model("JudgeVerdict", __config__=forbid, **fields)
        self._models[cache_key] = model
        return model

    @staticmethod
    def _asks_herb_counts(items: list[Item], mode: Mode) -> bool:
        return any(c.code == "herb_match" for it in items for c in it.criteria_in(mode))

    def criteria_text(self, items: list[Item], mode: Mode) -> str:
        lines = [f"- completeness {self.completeness.zh}（{self.completeness.points:g}分）：{self.completeness.description}"]
        for it in items:
            lines.append(f"- {it.key} {it.zh}（{it.points:g}分）：")
            for c in it.criteria_in(mode):
                lines.append(f"    - {c.key} {c.zh}（{c.points:g}分）：{c.description}")
        return "\n".join(lines)

    def format_hint(self, items: list[Item], mode: Mode) -> str:
        """The reply's layout in words, for judges that get no response_format (and as a reminder for all)."""
        lines = ["{", f'  "completeness": <0～{self.completeness.points:g}的数>,', '  "scores": {']
        for n, it in enumerate(items):
            parts = ", ".join(f'"{c.key}": <0～{c.points:g}>' for c in it.criteria_in(mode))
            lines.append(f'    "{it.key}": {{{parts}}}' + ("," if n < len(items) - 1 else ""))
        lines.append("  },")
        if self._asks_herb_counts(items, mode):
            lines.append('  "herb_counts": {"matched": <匹配药味数，整数>, "gold": <标准处方药味数，整数>},')
        lines.append(f'  "missing": [<未作答条目的键名，取自 {", ".join(it.key for it in items)}>],')
        lines.append(f'  "rationale": "<不超过{self.rationale_max_chars}字的评分理由>"')
        lines.append("}")
        return "\n".join(lines)

    def messages(self, *, mode: Mode, items: list[Item], case: str, master: str, answer: str,
                 gold: str | None = None) -> list[dict[str, str]]:
        """[system, user] for one judgement."""
        if mode == "reference" and not gold:
            raise ValueError("reference mode needs the gold answer text")
        values = {"case": case, "master": master, "answer": answer, "gold": gold or "",
                  "criteria": self.criteria_text(items, mode), "max_total": f"{self.max_total(items):g}",
                  "rationale_max_chars": str(self.rationale_max_chars), "format": self.format_hint(items, mode)}
        user = Template(getattr(self.prompts, mode)).substitute(values)
        return [{"role": "system", "content": self.prompts.system}, {"role": "user", "content": user.strip()}]

    def retry_message(self, error: str) -> dict[str, str]:
        return {"role": "user", "content": Template(self.prompts.retry).substitute(error=error).strip()}


def _number(maximum: float) -> dict[str, Any]:
    return {"type": "number", "minimum": 0, "maximum": maximum}


def _integer(maximum: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": 0, "maximum": maximum}


def _object(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def template_names(text: str) -> set[str]:
    """Placeholder names used in a `string.Template` text ($name or ${name}); `$$` is a literal dollar."""
    names = set()
    for m in Template.pattern.finditer(text):
        if m.group("invalid") is not None:
            raise ValueError(f"bad '$' at character {m.start('invalid')}: write $$ for a literal dollar")
        name = m.group("named") or m.group("braced")
        if name:
            names.add(name)
    return names




def shipped_rubrics() -> list[Path]:
    return sorted(RUBRICS_DIR.glob("*.yaml"))


def load_rubric(path_or_name: str | Path | None = None) -> Rubric:
    """Load a rubric by file path, or by the name of a shipped one (default: the paper's 55 points).

    Errors name the file and the field: `.../x.yaml: field 'items.1.criteria.0.points': ...`."""
    name = DEFAULT_RUBRIC if path_or_name is None else str(path_or_name)
    path = Path(name)
    if not path.is_file():
        shipped = RUBRICS_DIR / f"{name}.yaml"
        if not re.fullmatch(r"[A-Za-z0-9._-]+", name) or not shipped.is_file():
            raise RubricError(f"{name}: no such rubric file, and not a shipped rubric "
                              f"({', '.join(p.stem for p in shipped_rubrics())})")
        path = shipped
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise RubricError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise RubricError(f"{path}: expected a mapping at the top, got {type(data).__name__}")
    try:
        return Rubric.model_validate(data)
    except ValidationError as e:
        raise RubricError(f"{path}: {validation_message(e, whole='(file)')}") from e


__all__ = ["CODE_CRITERIA", "DEFAULT_RUBRIC", "MAX_HERBS", "MODES", "RUBRICS_DIR", "Completeness", "Criterion",
           "CriterionVariant", "Item", "Mode", "Prompts", "Rubric", "RubricError", "load_rubric",
           "shipped_rubrics", "template_names"]
