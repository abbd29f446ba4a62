"""TCMClinicalReason-Bench export: answer every case of its input file and write its submission format.

Input: a JSON list of {"id", "instruction", "input"}. Output: a JSON list of {"id", "output"} where
`output` has the seven keys 思维链, 病因病机分析, 证候诊断, 治法, 处方, 方解, 症状变化与中药加减
(template.to_bench_json). Each answer is appended to OUT.partial.jsonl as soon as it exists, so an
interrupted export resumes where it stopped; OUT.report.json lists the cases whose answer lacked a part.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from shicheng.agent.backends import Backend, GenerationResult
from shicheng.domain import Task
from shicheng.prompts import system_prompt, task_line
from shicheng.template import BENCH_KEYS, parse_answer, parse_bench_json, to_bench_json

REQUIRED_FIELDS = ("id", "instruction", "input")


class BenchInputError(ValueError):
    """The benchmark input file is not what TCMClinicalReason-Bench ships; names the file, item and field."""


@dataclass
class BenchItem:
    id: Any
    instruction: str
    input: str

    @property
    def key(self) -> str:
        return str(self.id)


@dataclass
class BenchReport:
    out: str
    total: int
    answered: int  # generated in this run
    resumed: int  # taken from OUT.partial.jsonl
    incomplete: list[dict] = field(default_factory=list)  # {"id", "missing": [bench keys]}
    seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def read_bench_input(path: str | Path) -> list[BenchItem]:
    path = Path(path)
    if not path.is_file():
        raise BenchInputError(f"{path}: benchmark input not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise BenchInputError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from e
    if not isinstance(data, list):
        raise BenchInputError(f"{path}: expected a JSON list of cases, got {type(data).__name__}")
    items, seen = [], set()
    for i, obj in enumerate(data):
        if not isinstance(obj, dict):
            raise BenchInputError(f"{path}: item [{i}]: expected an object, got {type(obj).__name__}")
        for name in REQUIRED_FIELDS:
            if name not in obj:
                raise BenchInputError(f"{path}: item [{i}]: field '{name}' is missing")
        for name in ("instruction", "input"):
            if not isinstance(obj[name], str):
                raise BenchInputError(f"{path}: item [{i}]: field '{name}' must be text")
        if not isinstance(obj["id"], (str, int)) or isinstance(obj["id"], bool):
            raise BenchInputError(f"{path}: item [{i}]: field 'id' must be a string or an integer")
        item = BenchItem(id=obj["id"], instruction=obj["instruction"], input=obj["input"])
        if item.key in seen:
            raise BenchInputError(f"{path}: item [{i}]: id {item.id!r} appears twice")
        seen.add(item.key)
        items.append(item)
    return items


def bench_messages(item: BenchItem) -> list[dict]:
    """Our generic system prompt, then the benchmark's instruction and case with our full-chain task line
    (the wording of prompts.user_prompt), so the model answers every section the benchmark scores."""
    user = "\n\n".join(p.strip() for p in (item.instruction, item.input) if p.strip())
    user += "\n\n" + task_line(Task.full_chain)
    return [{"role": "system", "content": system_prompt(None)}, {"role": "user", "content": user}]


def read_bench_answer(text: str) -> dict[str, str]:
    """The seven-key output from our <think>/<output> text or, when a model followed the benchmark's own
    instruction and wrote its JSON, from that JSON: whichever reading finds more parts."""
    parsed = parse_answer(text)
    if "{" in text:
        as_json = parse_bench_json(text)
        if len(as_json.found) > len(parsed.found):
            parsed = as_json
    return to_bench_json(parsed.answer)


def missing_keys(output: dict[str, str]) -> list[str]:
    return [k for k in BENCH_KEYS if not (output.get(k) or "").strip()]


def answer_record(item: BenchItem, result: GenerationResult) -> dict:
    output = read_bench_answer(result.text)
    return {"id": item.id, "output": output, "missing": missing_keys(output),
            "raw": result.text, "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens}


def _read_partial(path: Path, wanted: set[str]) -> dict[str, dict]:
    """Answers already written; a line cut short by an interruption (the last one) is skipped."""
    done: dict[str, dict] = {}
    if not path.is_file():
        return done
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and str(record.get("id")) in wanted and isinstance(record.get("output"), dict):
                done[str(record["id"])] = record
    return done


def _chunks(items: list[BenchItem], size: int) -> Iterator[list[BenchItem]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def export_tcmcr(backend: Backend, input_path: str | Path, out_path: str | Path, batch_size: int = 8,
                 resume: bool = True, max_new_tokens: int = 2048, console: Console | None = None,
                 progress: bool = True) -> BenchReport:
    """Answer every case of a TCMClinicalReason-Bench input file and write the submission JSON to out_path.

    Writes OUT.partial.jsonl (one answer per line, raw text kept, appended as answers arrive; a rerun with
    resume=True skips the ids in it) and OUT.report.json (counts and the cases whose answer lacked a part).
    `batch_size` cases go to `backend.generate_batch` at a time (an endpoint answers at most its
    `concurrency` of them at once).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    console = console or Console(stderr=True)
    items = read_bench_input(input_path)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial.jsonl")
    report_path = out.with_name(out.name + ".report.json")
    done = _read_partial(partial, {i.key for i in items}) if resume else {}
    resumed = len(done)
    todo = [i for i in items if i.key not in done]
    gen = {"max_new_tokens": max_new_tokens, "temperature": 0.0}
    started = time.perf_counter()
    columns = (TextColumn("[bold]TCMCR export"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with partial.open("a" if resume else "w", encoding="utf-8") as fh, \
            Progress(*columns, console=console, disable=not progress, transient=False) as bar:
        task = bar.add_task("export", total=len(items), completed=resumed)
        for chunk in _chunks(todo, batch_size):
            # A local model decodes the chunk as one batch; an endpoint gets concurrent requests (vLLM batches).
            results = backend.generate_batch([bench_messages(item) for item in chunk], **gen)
            for item, result in zip(chunk, results, strict=True):
                record = answer_record(item, result)
                done[item.key] = record
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
            bar.advance(task, len(chunk))
    submission = [{"id": i.id, "output": done[i.key]["output"]} for i in items]
    out.write_text(json.dumps(submission, ensure_ascii=False, indent=2), encoding="utf-8")
    fresh = [done[i.key] for i in todo]
    report = BenchReport(
        out=str(out), total=len(items), answered=len(todo), resumed=resumed,
        incomplete=[{"id": i.id, "missing": missing_keys(done[i.key]["output"])}
                    for i in items if missing_keys(done[i.key]["output"])],
        seconds=round(time.perf_counter() - started, 3),
        prompt_tokens=sum(r.get("prompt_tokens") or 0 for r in fresh),
        completion_tokens=sum(r.get("completion_tokens") or 0 for r in fresh),
    )
    report_path.write_text(json.dumps(report.to_dict(), ensure_ascii=False, indent=2), encoding="utf-8")
    return report


__all__ = ["BenchInputError", "BenchItem", "BenchReport", "answer_record", "bench_messages", "export_tcmcr",
           "missing_keys", "read_bench_answer", "read_bench_input"]
