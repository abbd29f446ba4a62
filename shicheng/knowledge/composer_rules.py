"""The offline composer's rule tables (`data/composer_rules.yaml`): schema, loader and cross-checks.

The composer (shicheng/curate/compose.py) reads a visit's syndrome, tongue, pulse and findings through
these tables. Like the rest of the knowledge, the file is checked whole before use and every problem is
reported with the file, the line and the field; a rule that could never fire (hidden by an earlier,
shorter term, or naming a herb or category the lexicon does not have) is an error, not a silent no-op.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shicheng.knowledge.lexicon import Knowledge, load_knowledge
from shicheng.knowledge.loader import DATA_DIR, KnowledgeError

RULES_FILE = DATA_DIR / "composer_rules.yaml"
Text = Annotated[str, Field(min_length=1)]


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


class Nature(_Row):
    """A syndrome element (证素) and what the composer writes for it."""

    term: Text
    pathogenesis: Text
    treatment: Text
    advice: Text


class Sign(_Row):
    """A tongue or pulse sign and what it indicates."""

    sign: Text
    meaning: Text


class CategoryAction(_Row):
    category: Text  # a word of the lexicon's category, e.g. 发散风寒 in 解表药/发散风寒药
    action: Text


class Envoy(_Row):
    herb: Text  # canonical lexicon name: the composer compares it with HerbItem.base
    role: Text


class SymptomRule(_Row):
    keywords: list[str] = Field(min_length=1)
    condition: Text
    add: list[str] = Field(min_length=1)
    purpose: Text

    @field_validator("keywords", "add")
    @classmethod
    def _no_blank(cls, values: list[str]) -> list[str]:
        values = [v.strip() for v in values]
        if not all(values):
            raise ValueError("entries must not be blank")
        return values

    def matches(self, findings: str) -> bool:
        return any(k in findings for k in self.keywords)


class CategoryRule(_Row):
    category: Text
    sentence: Text

    @field_validator("sentence")
    @classmethod
    def _one_placeholder(cls, sentence: str) -> str:
        try:
            sentence.format(herbs="X")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"only the placeholder {{herbs}} may appear ({type(e).__name__}: {e})") from None
        if "{herbs}" not in sentence:
            raise ValueError("must name the herbs with {herbs}")
        return sentence


class ComposerRules(_Row):
    version: int = 1
    source: Text
    natures: list[Nature] = Field(min_length=1)
    locations: list[str] = Field(min_length=1)
    tongue_signs: list[Sign] = Field(min_length=1)
    pulse_signs: list[Sign] = Field(min_length=1)
    category_actions: list[CategoryAction] = Field(min_length=1)
    envoys: list[Envoy] = Field(min_length=1)
    symptom_rules: list[SymptomRule] = Field(min_length=1)
    category_rules: list[CategoryRule] = Field(min_length=1)

    @functools.cached_property
    def envoy_roles(self) -> dict[str, str]:
        return {e.herb: e.role for e in self.envoys}


# The tables read first-match-wins with the match blanked out: (table, the field that is matched).
_ORDERED = (("natures", "term"), ("locations", None), ("tongue_signs", "sign"), ("pulse_signs", "sign"),
            ("category_actions", "category"))


def _item_lines(text: str) -> dict[str, list[int]]:
    """1-based line of every item of every top-level list, so that a problem names its line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[str, list[int]] = {}
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if isinstance(value, yaml.SequenceNode):
                lines[str(key.value)] = [item.start_mark.line + 1 for item in value.value]
    return lines


class _Where:
    """`composer_rules.yaml:57 natures[3] (阳虚)` for a table row; the file alone for the rest."""

    def __init__(self, path: Path, text: str, data: dict[str, Any]):
        self.name, self.lines, self.data = path.name, _item_lines(text), data

    def __call__(self, table: str, index: int | None = None) -> str:
        if index is None:
            return f"{self.name}: {table}"
        line = self.lines.get(table, [])
        at = f":{line[index]}" if index < len(line) else ""
        row = (self.data.get(table) or [None] * (index + 1))[index]
        keys = ("term", "sign", "category", "herb", "condition")
        label = row if isinstance(row, str) else next(
            (row[k] for k in keys if isinstance(row, dict) and k in row), None)
        return f"{self.name}{at} {table}[{index}]" + (f" ({label})" if label else "")


def _schema_problems(e: ValidationError, where: _Where) -> list[str]:
    problems = []
    for err in e.errors():
        loc = list(err["loc"])
        if len(loc) >= 2 and isinstance(loc[1], int):
            head, rest = where(str(loc[0]), loc[1]), loc[2:]
        else:
            head, rest = where.name, loc
        field = ".".join(str(p) for p in rest)
        problems.append(f"{head}: " + (f"field '{field}': " if field else "") + err["msg"])
    return problems


def _hidden_rows(rules: ComposerRules, where: _Where) -> list[str]:
    """A row whose term contains an earlier row's term can never match: the earlier one takes it first."""
    problems = []
    for table, key in _ORDERED:
        terms = [row if key is None else getattr(row, key) for row in getattr(rules, table)]
        for j, term in enumerate(terms):
            for i in range(j):
                if terms[i] in term:
                    problems.append(f"{where(table, j)}: '{term}' is hidden by '{terms[i]}' at {table}[{i}]; "
                                    "put the longer term first")
                    break
    return problems


def _lexicon_problems(rules: ComposerRules, kb: Knowledge, where: _Where) -> list[str]:
    problems = []
    categories = {row.category for row in kb.herbs.values() if row.category}
    for table in ("category_actions", "category_rules"):
        for i, row in enumerate(getattr(rules, table)):
            if not any(row.category in c for c in categories):
                problems.append(f"{where(table, i)}: field 'category': no herb category of the lexicon "
                                f"contains '{row.category}'")
    for i, envoy in enumerate(rules.envoys):
        hit = kb.resolve(envoy.herb)
        if hit is None:
            problems.append(f"{where('envoys', i)}: field 'herb': unknown herb '{envoy.herb}'")
        elif hit.base != envoy.herb:
            problems.append(f"{where('envoys', i)}: field 'herb': use the canonical name '{hit.base}'")
    for i, rule in enumerate(rules.symptom_rules):
        for herb in rule.add:
            if kb.resolve(herb) is None:
                problems.append(f"{where('symptom_rules', i)}: field 'add': unknown herb '{herb}'")
    return problems


def read_composer_rules(path: str | Path = RULES_FILE, kb: Knowledge | None = None) -> ComposerRules:
    """Read and check a composer rules file against the lexicon (default: the shipped knowledge).

    Raises KnowledgeError listing every problem, each with its file, line, table row and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as e:
        raise KnowledgeError([f"{path}: cannot read: {e}"]) from e
    except yaml.YAMLError as e:
        raise KnowledgeError([f"{path.name}: not valid YAML: {e}"]) from e
    if not isinstance(data, dict):
        raise KnowledgeError([f"{path.name}: expected a mapping at the top level"])
    where = _Where(path, text, data)
    try:
        rules = ComposerRules.model_validate(data)
    except ValidationError as e:
        raise KnowledgeError(_schema_problems(e, where)) from None
    problems = _hidden_rows(rules, where) + _lexicon_problems(rules, kb or load_knowledge(), where)
    if problems:
        raise KnowledgeError(problems)
    return rules


@functools.lru_cache(maxsize=1)
def load_composer_rules() -> ComposerRules:
    """The shipped composer rules, read and checked once per process."""
    return read_composer_rules()


__all__ = ["RULES_FILE", "CategoryAction", "CategoryRule", "ComposerRules", "Envoy", "Nature", "Sign",
           "SymptomRule", "load_composer_rules", "read_composer_rules"]
