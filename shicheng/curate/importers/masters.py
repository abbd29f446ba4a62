"""Master names as records write them (王某, 王某教授, 国医大师王某) -> the master ids curation was given."""

from __future__ import annotations

from dataclasses import dataclass, field

from shicheng.records.values import folded

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
        written = folded(written or "")
        if not written:
            return self.default
        table = {folded(k): v for k, v in (self.masters or {}).items()}
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
