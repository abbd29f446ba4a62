"""JSONL in shicheng's own Case schema, one case per line; each broken line is a reject, the rest are kept."""

from __future__ import annotations

import tempfile
from pathlib import Path

from shicheng.curate.importers.result import STEP, ImportResult
from shicheng.curate.ledger import Ledger
from shicheng.domain import Case, JsonlError, iter_jsonl
from shicheng.text import NotTextError, read_text


def _reason(err: JsonlError) -> str:
    message = str(err).removeprefix(f"{err.path}:{err.line}: ")
    return message if message.startswith("not valid JSON") else f"schema error: {message}"


def import_jsonl(path: str | Path, ledger: Ledger, step: str = STEP, name: str | None = None) -> ImportResult:
    """Cases from a JSONL file; a bad line is rejected as "file:line" with the reason and field (the file
    is called `name`, default the path as given)."""
    path = Path(path)
    label = name or str(path)
    try:
        decoded = read_text(path)
    except NotTextError as e:
        ledger.seen(step)
        ledger.reject(step, label, str(e).replace(str(path), label))
        return ImportResult()
    lines = decoded.text.split("\n")
    record_lines = [i for i, line in enumerate(lines, start=1) if line.strip()]
    if decoded.encoding in ("utf-8", "utf-8-sig"):
        items = list(iter_jsonl(path, Case))
    else:
        # JSON is UTF-8 by RFC 8259, but a GB18030 export is still readable: re-encode, then read as usual.
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / path.name
            copy.write_text(decoded.text, encoding="utf-8")
            items = list(iter_jsonl(copy, Case))
    cases = []
    for lineno, item in zip(record_lines, items, strict=True):
        ledger.seen(step)
        source = f"{label}:{lineno}"
        if isinstance(item, JsonlError):
            ledger.reject(step, source, _reason(item))
            continue
        if item.source is None:
            item = item.model_copy(update={"source": source})
        cases.append(item)
        ledger.keep(step)
    return ImportResult(cases=cases)
