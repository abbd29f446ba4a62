"""The physician-rating rubric: five Delphi-weighted dimensions, worded anchors, the weighted total.

    rubric = load_rubric()                       # rubrics/physician-100-v1.yaml
    rubric.total({"similarity": 5, "theory": 4, "safety": 5, "completeness": 3, "fluency": 4})  # 85.0

The weights live only in the YAML file, so the app, the export and the reliability analysis all read the
same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from shicheng.domain import validation_message

RUBRIC_DIR = Path(__file__).parent / "rubrics"
DEFAULT_RUBRIC = RUBRIC_DIR / "physician-100-v1.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Anchors(_Strict):
    zh: list[str]
    en: list[str]


class Dimension(_Strict):
    key: str
    zh: str
    en: str
    weight: float
    hint_zh: str
    hint_en: str
    anchors: Anchors

    def label(self, lang: str) -> str:
        return self.en if lang == "en" else self.zh

    def hint(self, lang: str) -> str:
        return self.hint_en if lang == "en" else self.hint_zh

    def anchor_words(self, lang: str) -> list[str]:
        return self.anchors.en if lang == "en" else self.anchors.zh


class PhysicianRubric(_Strict):
    version: str
    title: str
    title_en: str
    source: str
    levels: list[int]
    dimensions: list[Dimension]

    @model_validator(mode="after")
    def _consistent(self) -> PhysicianRubric:
        if self.levels != list(range(1, len(self.levels) + 1)) or len(self.levels) < 2:
            raise ValueError(f"levels must be 1..N with N >= 2, got {self.levels}")
        keys = [d.key for d in self.dimensions]
        if len(set(keys)) != len(keys):
            raise ValueError(f"dimension keys repeat: {keys}")
        for d in self.dimensions:
            for lang in ("zh", "en"):
                if len(d.anchor_words(lang)) != len(self.levels):
                    raise ValueError(f"dimension '{d.key}': {len(d.anchor_words(lang))} {lang} anchors for "
                                     f"{len(self.levels)} levels")
        if abs(sum(d.weight for d in self.dimensions) - 100) > 1e-9:
            raise ValueError(f"weights add up to {sum(d.weight for d in self.dimensions)}, not 100")
        return self

    @property
    def keys(self) -> list[str]:
        return [d.key for d in self.dimensions]

    @property
    def top(self) -> int:
        return self.levels[-1]

    def points(self, key: str, level: int) -> float:
        """Points one dimension earns at `level`: level 1 earns 0, the top level the full weight."""
        dim = next(d for d in self.dimensions if d.key == key)
        return dim.weight * (level - 1) / (self.top - 1)

    def total(self, levels: Mapping[str, int | None]) -> float | None:
        """The weighted total (0–100); None until every dimension has a level."""
        if any(levels.get(k) is None for k in self.keys):
            return None
        return sum(self.points(k, int(levels[k])) for k in self.keys)

    def check_level(self, key: str, level: object) -> int | None:
        """A submitted level as an int, None for "not yet"; anything else is a ValueError naming the field."""
        if key not in self.keys:
            raise ValueError(f"unknown dimension '{key}'; dimensions: {', '.join(self.keys)}")
        if level is None or level == "":
            return None
        try:
            value = int(level)
        except (TypeError, ValueError):
            raise ValueError(f"{key}: level {level!r} is not a whole number") from None
        if value not in self.levels or str(value) != str(level).strip():
            raise ValueError(f"{key}: level {level!r} is not one of {self.levels}")
        return value


@lru_cache(maxsize=8)
def load_rubric(path: str | Path = DEFAULT_RUBRIC) -> PhysicianRubric:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    try:
        return PhysicianRubric.model_validate(data)
    except ValidationError as e:
        raise ValueError(f"{path}: {validation_message(e)}") from None


__all__ = ["DEFAULT_RUBRIC", "Dimension", "PhysicianRubric", "load_rubric"]
