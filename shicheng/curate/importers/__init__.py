"""Raw materials -> cases and corpus paragraphs, whatever form an institute holds them in.

`import_path` takes a file or a directory (walked in sorted order) and dispatches by extension:
.jsonl (shicheng's Case schema), .csv/.tsv/.xlsx (with a column mapping), .txt (case records when it
has their markers, otherwise corpus text), .md/.docx/.pdf (corpus). Every record that comes in is
counted in the ledger's "import" step and either kept or rejected with file, line/row and reason.
Rejected case data carries no record in the ledger: before clean.py has scrubbed it, it would hold
personal data; the file and line or row locate it.
"""

from __future__ import annotations

from pathlib import Path

from shicheng.curate.importers.corpus import MIN_CHARS, import_corpus
from shicheng.curate.importers.jsonl import import_jsonl
from shicheng.curate.importers.masters import MasterResolver
from shicheng.curate.importers.result import STEP, ImportResult
from shicheng.curate.importers.tabular import ColumnMapping, MappingError, import_table, load_mapping
from shicheng.curate.importers.text_records import import_text_records, read_case_records
from shicheng.curate.ledger import Ledger
from shicheng.records import looks_like_case_records
from shicheng.records.prescriptions import PrescriptionReader
from shicheng.text import NotTextError, read_text

TABLE_EXTENSIONS = (".csv", ".tsv", ".xlsx", ".xlsm")
CORPUS_EXTENSIONS = (".md", ".markdown", ".docx", ".pdf")
TEXT_EXTENSIONS = (".jsonl", ".csv", ".tsv", ".txt", ".md", ".markdown")
SUPPORTED = (".jsonl", *TABLE_EXTENSIONS, ".txt", *CORPUS_EXTENSIONS)
_OLD_FORMATS = {".xls": ".xlsx", ".doc": ".docx", ".wps": ".docx", ".et": ".xlsx"}
_MAPPING_NAMES = ("mapping.yaml", "mapping.yml")

__all__ = ["ColumnMapping", "ImportResult", "MappingError", "import_corpus", "import_jsonl", "import_path", "import_table",
           "import_text_records", "load_mapping"]


def _is_mapping_file(path: Path) -> bool:
    return path.name.lower() in _MAPPING_NAMES or path.name.lower().endswith((".mapping.yaml", ".mapping.yml"))


def _find_mapping(path: Path) -> Path | None:
    """A mapping next to the table: `<stem>.mapping.yaml`, then `mapping.yaml` in the same folder."""
    for candidate in (path.with_name(f"{path.stem}.mapping.yaml"), path.with_name(f"{path.stem}.mapping.yml"),
                      *(path.with_name(name) for name in _MAPPING_NAMES)):
        if candidate.is_file():
            return candidate
    return None


def _walk(root: Path) -> list[Path]:
    """Files under a folder in sorted order, without hidden files, Office lock files (~$) or mappings."""
    files = []
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if not path.is_file() or any(p.startswith(".") for p in parts) or path.name.startswith("~$"):
            continue
        if not _is_mapping_file(path):
            files.append(path)
    return files


def _import_file(path: Path, ledger: Ledger, mapping, masters, default_master, min_chars: int,
                 step: str, name: str) -> ImportResult:
    suffix = path.suffix.lower()

    def reject(reason: str) -> ImportResult:
        ledger.seen(step)
        ledger.reject(step, name, reason.replace(str(path), name))
        return ImportResult()

    if suffix in _OLD_FORMATS:
        return reject(f"unsupported file type: {suffix} (old binary format); save it as {_OLD_FORMATS[suffix]}")
    if suffix not in SUPPORTED:
        return reject(f"unsupported file type: '{suffix or path.name}' (supported: {', '.join(SUPPORTED)})")
    if path.stat().st_size == 0:
        return reject("empty file")
    text = None
    if suffix in TEXT_EXTENSIONS:
        encoding = None
        if suffix in TABLE_EXTENSIONS and mapping is not None:
            encoding = load_mapping(mapping).encoding
        try:
            text = read_text(path, encoding).text.lstrip("\ufeff")
        except NotTextError as e:
            return reject(str(e))
        if not text.strip():
            return reject("empty file")
    if suffix == ".jsonl":
        return import_jsonl(path, ledger, step, name)
    if suffix in TABLE_EXTENSIONS:
        mapping = mapping if mapping is not None else _find_mapping(path)
        if mapping is None:
            raise MappingError(f"{path}: CSV/XLSX files need a column mapping: pass mapping= or put mapping.yaml "
                               "(or <name>.mapping.yaml) next to the file")
        return import_table(path, ledger, mapping, masters, default_master, step, name)
    if suffix == ".txt" and text is not None and looks_like_case_records(text):
        resolver, rx = MasterResolver(masters, default_master), PrescriptionReader()
        result = read_case_records(text, path, ledger, resolver, rx, step, name)
        result.warnings[:0] = [rx.error] if rx.error else []
        result.warnings.extend(resolver.warnings)
        return result
    return import_corpus(path, ledger, min_chars, step, name)


def import_path(path: str | Path, ledger: Ledger, mapping: ColumnMapping | dict | str | Path | None = None,
                masters: dict[str, str] | None = None, default_master: str | None = None,
                min_chars: int = MIN_CHARS, step: str = STEP, name: str | None = None) -> ImportResult:
    """Import a file or a folder of raw materials.

    mapping: the column mapping for CSV/XLSX (a YAML path, a dict or a ColumnMapping); when None, a
      mapping.yaml next to each table is used, and a table without one raises MappingError.
    masters: master names or ids as written in the records -> master ids; names not in it leave
      master_id None and add a warning. default_master: the master of records that name none.
    name: what sources call `path` ("name:line", "name/sub/file.csv:row 3"); default the path as given.
      Curation passes the path relative to the materials root, so the output does not depend on where
      the materials lie.
    Raises FileNotFoundError for a path that does not exist; bad records never raise, they are rejected.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    files = _walk(path) if path.is_dir() else [path]
    if isinstance(mapping, (str, Path)):
        files = [f for f in files if f.resolve() != Path(mapping).resolve()]
    result = ImportResult()
    label = name or str(path)
    for file in files:
        file_name = label if file == path else f"{label}/{file.relative_to(path).as_posix()}"
        result.extend(_import_file(file, ledger, mapping, masters, default_master, min_chars, step, file_name))
    result.warnings = list(dict.fromkeys(result.warnings))  # the lexicon warning repeats once per file
    return result
