"""What every importer returns, and the ledger step it counts its records in."""

from __future__ import annotations

from dataclasses import dataclass, field

from shicheng.domain import Case

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
