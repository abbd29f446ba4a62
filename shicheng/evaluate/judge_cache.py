"""The judge's on-disk cache: one append-only JSONL file, one line per finished judgement.

Keyed by sha256 of (rubric version, the judge's identity, the full prompt, the verdict schema), so a rerun
of the same evaluation makes zero calls, and a changed rubric, judge model, decoding setting or prompt
never reuses an old verdict. A line is written as soon as its judgement finishes, so a killed run keeps
everything finished before the kill and resumes from there.

Failures (invalid replies after the validation retries, calls that failed after the transport retries)
are recorded too: a rerun reproduces the same unscored verdicts without calling again. Pass
`retry_failed=True` to `judge_predictions` to ask those again; the newer line then wins.

A kill can leave half a line at the end of the file. Reading skips it (and counts it in `bad_lines`), and
the next append starts on a fresh line, so the damage never spreads.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

CACHE_FILE = "judge-cache.jsonl"


def cache_key(rubric_version: str, identity: dict[str, Any], messages: list[dict], schema: dict[str, Any]) -> str:
    blob = json.dumps([rubric_version, identity, messages, schema], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class VerdictCache:
    """In-memory index of the JSONL file at `directory/judge-cache.jsonl`; `directory=None` caches nothing."""

    def __init__(self, directory: str | Path | None):
        self.path = Path(directory) / CACHE_FILE if directory is not None else None
        self.entries: dict[str, dict] = {}
        self.bad_lines = 0
        self._lock = threading.Lock()
        self._needs_newline = False
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            return
        raw = self.path.read_bytes()
        self._needs_newline = bool(raw) and not raw.endswith(b"\n")
        for line in raw.split(b"\n"):
            if not line.strip():
                continue
            try:
                entry = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                self.bad_lines += 1
                continue
            if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                self.entries[entry["key"]] = entry
            else:
                self.bad_lines += 1

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, entry: dict) -> None:
        """Append one entry (it must carry its `key`) and flush it to the file at once."""
        if not isinstance(entry.get("key"), str):
            raise ValueError("a cache entry needs its 'key'")
        line = json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n"
        with self._lock:
            self.entries[entry["key"]] = entry
            if self.path is None:
                return
            with self.path.open("a", encoding="utf-8") as fh:
                if self._needs_newline:
                    fh.write("\n")
                    self._needs_newline = False
                fh.write(line)
                fh.flush()


__all__ = ["CACHE_FILE", "VerdictCache", "cache_key"]
