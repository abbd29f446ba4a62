"""Plain-text case record files (医案) -> Cases, counted in the ledger: the file side of shicheng.records.

Reading the records themselves (headings, visits, header lines, field tidying) is shicheng.records;
here are the files (any encoding; an unreadable file is one reject), the masters mapping, and the
ledger: one input per case record found, kept or rejected with its file and line.
"""

from __future__ import annotations

from pathlib import Path

from shicheng.curate.importers.masters import MasterResolver
from shicheng.curate.importers.result import STEP, ImportResult
from shicheng.curate.ledger import Ledger
from shicheng.records import read_records
from shicheng.records.prescriptions import PrescriptionReader
from shicheng.text import NotTextError, read_text


def read_case_records(text: str, path: Path, ledger: Ledger, masters: MasterResolver, rx: PrescriptionReader,
                      step: str = STEP, name: str | None = None) -> ImportResult:
    """Cases from the text of one file; counts one ledger input per case found. Sources read
    "`name`:line" (`name` defaults to the path as given)."""
    read = read_records(text, name or str(path), path.stem, prescriptions=rx, master_of=masters.resolve)
    ledger.seen(step, len(read.cases) + len(read.rejected))
    for source, reason in read.rejected:
        ledger.reject(step, source, reason)
    ledger.keep(step, len(read.cases))
    return ImportResult(cases=read.cases, warnings=read.warnings)


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
