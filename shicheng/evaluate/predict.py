"""`shicheng predict`: answer held-out cases with one system and write one JSONL line per answer.

    predict("runs/demo/model/stage-5-master-grpo", cases=Path("runs/demo/data/cases/test.jsonl"),
            out=Path("runs/demo/eval/stage-5.jsonl"), all_masters=True)

A line: {case_id, visit (1-based), master (asked as), case_master (the case's own), task, system, output,
tokens (generated), prompt_tokens, seconds, error (only when the answer failed)}. A failed generation is
written with its error and an empty output, and evaluation leaves it out and counts it, instead of
scoring an empty answer 0. A rerun retries those lines.

Systems: a stage checkpoint directory (batched through `Backend.generate_batch`), an OpenAI-compatible
URL with `model_name` (the backend runs up to `concurrency` requests at once), `retrieval` (the nearest
training case of the same master, baseline.py) and `gold` (the gold answers: the ceiling). The literal
names `gold` and `retrieval` mean those systems; a directory of that name is passed as `./gold`.

What is asked, exactly as training asked (prompts.prompt_messages, the master named in the system prompt
and the task line): every visit of every case, for each task; `modification` only on follow-up visits.
The default task is the full chain alone. It asks for every section at once, so one answer feeds every
metric and every rubric item, and it keeps a CPU demo cheap; the single-section tasks are there with
`tasks=`. Normal mode asks each case as its own master (a case without one generically);
`all_masters` (counterfactual mode) asks every case as every master, `case_master` staying the case's
own, which is how style switching is measured; a case without a master is still asked once, generically.

Decoding: what is given (max_new_tokens, temperature, top_p), the rest the backend's own defaults: for a
model directory, its saved generation_config (the repetition penalty and n-gram block training set);
greedy unless told otherwise. The report says what was used (`decoding`).

Resumable: lines already in OUT with the same (case_id, visit, master, task, system) are kept and not
asked again; answers are appended and flushed after every batch, so a killed run loses one batch at most.
A last line cut short by the kill is dropped on the next run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import openai
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from shicheng.agent.backends import Backend, GenerationResult, is_gguf, is_url, load_masters, make_backend
from shicheng.agent.consult import guided, guides
from shicheng.domain import MASTER_SUFFIXES, Case, JsonlError, Master, Task, load_master_files, read_jsonl
from shicheng.evaluate.baseline import RetrievalBaseline, gold_text
from shicheng.prompts import prompt_messages

GOLD, RETRIEVAL = "gold", "retrieval"
DEFAULT_TASKS: tuple[Task, ...] = (Task.full_chain,)
KEY_FIELDS = ("case_id", "visit", "master", "task", "system")
# The endpoint refuses every request: stop instead of writing a file of identical errors.
_FATAL = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)


@dataclass(frozen=True)
class Query:
    """One answer to get: a visit of a case, a task, and the master it is asked as."""

    case: Case
    visit_index: int  # 0-based
    task: Task
    master_id: str | None  # asked as
    master: Master | None  # the profile, for the system prompt (None for gold/retrieval or a generic ask)

    def key(self, system: str) -> tuple:
        return (self.case.id, self.visit_index + 1, self.master_id, self.task.value, system)

    def messages(self) -> list[dict]:
        return prompt_messages(self.case, self.visit_index, self.task, self.master)

    def row(self, system: str, output: str, **extra: Any) -> dict:
        return {"case_id": self.case.id, "visit": self.visit_index + 1, "master": self.master_id,
                "case_master": self.case.master_id, "task": self.task.value, "system": system, "output": output,
                **extra}


@dataclass
class PredictReport:
    out: str
    system: str
    total: int  # answers the plan asks for
    generated: int  # answered in this run (failures included)
    resumed: int  # already in OUT
    failed: int  # answered in this run with an error
    seconds: float
    prompt_tokens: int
    completion_tokens: int
    decoding: dict | None = None  # the generation options used (None for gold and retrieval)

    def to_dict(self) -> dict:
        return asdict(self)


def parse_tasks(tasks: Iterable[str | Task] | None) -> list[Task]:
    if not tasks:
        return list(DEFAULT_TASKS)
    out = []
    for t in tasks:
        try:
            task = Task(t)
        except ValueError:
            raise ValueError(f"unknown task {t!r}; tasks: {', '.join(x.value for x in Task)}") from None
        if task not in out:
            out.append(task)
    return out


def plan_queries(cases: Sequence[Case], tasks: Sequence[Task], masters: dict[str, Master], *,
                 only: Sequence[str] | None = None, all_masters: bool = False, profiles: bool = True,
                 limit: int | None = None, per_master: int | None = None) -> list[Query]:
    """The answers to get, in case, visit, master, task order.

    `only` restricts to cases of these masters (normal mode) or asks as these masters (counterfactual);
    `profiles` says the system needs each master's profile for its prompt (a model does; gold and
    retrieval only need the id). `per_master` keeps the first N cases of each master (and N without one),
    a small sample that still covers every style; `limit` then keeps the first N cases."""
    known = sorted(masters) if masters else sorted({c.master_id for c in cases if c.master_id})
    for m in only or ():
        if m not in known:
            raise ValueError(f"unknown master id '{m}'; known masters: {', '.join(known) or 'none'}")
    if all_masters and not (only or known):
        raise ValueError("all_masters asks every case as every master, but no master is known: give a masters file")
    chosen = list(cases)
    if only and not all_masters:
        chosen = [c for c in chosen if c.master_id in only]
    if per_master is not None:
        taken: dict[str | None, int] = {}
        sample = []
        for c in chosen:
            if taken.get(c.master_id, 0) < per_master:
                taken[c.master_id] = taken.get(c.master_id, 0) + 1
                sample.append(c)
        chosen = sample
    if limit is not None:
        chosen = chosen[:limit]

    def profile(mid: str | None, case: Case) -> Master | None:
        if mid is None or not profiles:
            return None
        if mid not in masters:
            raise ValueError(f"case '{case.id}' is asked as master '{mid}', whose profile is unknown; known "
                             f"masters: {', '.join(sorted(masters)) or 'none'} (pass a masters file)")
        return masters[mid]

    queries = []
    for case in chosen:
        # A case without a master is asked generically in either mode: it has no style to switch from.
        asked = list(only or known) if all_masters and case.master_id else [case.master_id]
        for vi in range(len(case.visits)):
            for mid in asked:
                master = profile(mid, case)
                for task in tasks:
                    if task is Task.modification and vi == 0:
                        continue  # a first visit has no earlier prescription to modify
                    queries.append(Query(case, vi, task, mid, master))
    return queries


def read_out(path: Path) -> dict[tuple, dict]:
    """Rows already written, by key. A last line cut short by a kill, and lines whose answer failed (to be
    asked again), are removed from the file; any other unreadable line is an error naming it."""
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    done: dict[tuple, dict] = {}
    keep: list[str] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            key = tuple(row[k] for k in KEY_FIELDS)
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            if n == len(lines) and not line.endswith("\n"):
                continue  # the write a kill interrupted
            raise JsonlError(str(path), n, f"not a prediction line ({type(e).__name__}: {e}); "
                                           "fix or remove it, or rerun with --no-resume") from None
        if row.get("error"):
            continue
        done[key] = row
        keep.append(line if line.endswith("\n") else line + "\n")
    if len(keep) != len([ln for ln in lines if ln.strip()]):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(keep), encoding="utf-8")
        os.replace(tmp, path)
    return done


def decoding(max_new_tokens: int | None, temperature: float | None, top_p: float | None) -> dict:
    """The generation keywords given; the backend's defaults (a model directory's saved generation_config)
    fill the rest."""
    given = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
    return {k: v for k, v in given.items() if v is not None}


def _one(backend: Backend, messages: list[dict], gen: dict) -> GenerationResult | BaseException:
    try:
        return backend.generate(messages, **gen)
    except _FATAL:
        raise
    except Exception as e:  # recorded on its row; the run goes on
        return e


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e)[:500]}"


def generate_rows(backend: Backend, queries: Sequence[Query], system: str, gen: dict, workers: int = 1
                  ) -> list[dict]:
    """Answer a batch; an answer that fails becomes a row with its error. When the batch call fails as a
    whole, each query is asked alone (`workers` at a time) so that one bad prompt or one failed request
    does not cost the others their answer."""
    msgs = [q.messages() for q in queries]
    started = time.perf_counter()
    results: list[GenerationResult | BaseException]
    try:
        results = list(backend.generate_batch(msgs, **gen))
    except _FATAL:
        raise
    except Exception as e:
        if len(msgs) == 1:
            results = [e]
        else:
            with ThreadPoolExecutor(max_workers=max(1, min(workers, len(msgs)))) as pool:
                results = list(pool.map(lambda m: _one(backend, m, gen), msgs))
    # Each answer's share of the batch's wall time: summed over rows, the generation time of the run.
    share = (time.perf_counter() - started) / len(queries)
    rows = []
    for q, r in zip(queries, results, strict=True):
        if isinstance(r, BaseException):
            rows.append(q.row(system, "", tokens=0, prompt_tokens=getattr(r, "prompt_tokens", None) or 0,
                              seconds=round(share, 4), error=_error(r)))
        else:
            rows.append(q.row(system, r.text, tokens=r.completion_tokens, prompt_tokens=r.prompt_tokens,
                              seconds=round(share, 4)))
    return rows


def copied_rows(queries: Sequence[Query], system: str, baseline: RetrievalBaseline | None) -> list[dict]:
    """Gold answers, or the retrieval baseline's copies; a query with nothing to copy is an error row."""
    rows = []
    for q in queries:
        started = time.perf_counter()
        extra: dict[str, Any] = {}
        try:
            if baseline is None:
                text = gold_text(q.case, q.visit_index, q.task)
                if text is None:
                    raise ValueError(f"visit {q.visit_index + 1} of case '{q.case.id}' has no gold answer for "
                                     f"task {q.task.value}")
            else:
                hit = baseline.nearest(q.case, q.visit_index, q.task, q.master_id)
                text = hit.text
                extra["retrieved"] = {"case_id": hit.case_id, "visit": hit.visit,
                                      "similarity": round(hit.similarity, 6)}
        except ValueError as e:
            rows.append(q.row(system, "", tokens=0, prompt_tokens=0, seconds=0.0, error=_error(e)))
            continue
        rows.append(q.row(system, text, tokens=0, prompt_tokens=0,
                          seconds=round(time.perf_counter() - started, 6), **extra))
    return rows


def system_name(model: str, model_name: str | None, system: str | None) -> str:
    if system:
        return system
    if model in (GOLD, RETRIEVAL):
        return model
    if is_url(model):
        return model_name or "endpoint"
    return Path(model).resolve().name


def _chunks(items: Sequence[Query], size: int, by_task: bool = False) -> Iterable[Sequence[Query]]:
    """Batches of `size` in order; `by_task` starts a new batch where the task changes (a guided decoding
    follows one task's sections per batch)."""
    batch: list[Query] = []
    for q in items:
        if batch and (len(batch) == size or (by_task and q.task is not batch[-1].task)):
            yield batch
            batch = []
        batch.append(q)
    if batch:
        yield batch


def predict(model: str, *, cases: Path, out: Path, model_name: str | None = None, tasks=None,
            masters: Sequence[str] | None = None, all_masters: bool = False, system: str | None = None,
            batch_size: int = 8, concurrency: int = 4, max_new_tokens: int | None = None,
            temperature: float | None = None, top_p: float | None = None, resume: bool = True,
            progress: bool = True, split: str = "test", train_cases: Path | None = None,
            masters_file: Path | None = None, limit: int | None = None, per_master: int | None = None,
            device: str = "auto", guide: bool | None = None,
            api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 300.0, backend: Backend | None = None,
            console: Console | None = None) -> PredictReport:
    """Answer `cases` (a JSONL of Case, or a `shicheng curate` folder with `split`) with `model` and append
    the rows to `out`; see the module docstring. `backend` replaces the one `model` would make (tests,
    notebooks); `model` still names the system and where its masters and decoding defaults are."""
    if batch_size < 1 or concurrency < 1:
        raise ValueError(f"batch_size and concurrency must be at least 1, got {batch_size} and {concurrency}")
    model = str(model)
    console = console or Console(stderr=True)
    cases_path = resolve_cases(cases, split)
    case_list = read_cases(cases_path)
    copied = model in (GOLD, RETRIEVAL)
    if is_url(model) and not model_name:
        raise ValueError(f"{model}: an endpoint URL needs model_name (--model-name), the model id it serves")
    profiles = find_masters(model, cases_path, masters_file)
    name = system_name(model, model_name, system)
    queries = plan_queries(case_list, parse_tasks(tasks), profiles, only=masters, all_masters=all_masters,
                           profiles=not copied, limit=limit, per_master=per_master)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = read_out(out) if resume else {}
    todo = [q for q in queries if q.key(name) not in done]
    resumed = len(queries) - len(todo)
    baseline = None
    if model == RETRIEVAL and todo:
        train_path = resolve_train_cases(train_cases, cases_path)
        baseline = RetrievalBaseline(read_cases(train_path))
        leaked = sorted({c.id for c in case_list} & baseline.ids)
        if leaked:
            raise ValueError(f"{train_path} holds {len(leaked)} of the cases to answer ({', '.join(leaked[:5])}): "
                             "the baseline would copy their own gold answers; use a held-out split")
        console.print(f"retrieval baseline: {len(baseline.cases)} training cases from {train_path}", soft_wrap=True,
                      markup=False)
    gen = decoding(max_new_tokens, temperature, top_p)
    endpoint = is_url(model)
    owned = not copied and bool(todo) and backend is None  # close only what this call opened
    if owned:
        backend = make_backend(model, model_name=model_name, device=device, api_key_env=api_key_env,
                               timeout_s=timeout_s, concurrency=concurrency)
    guided_run = not copied and backend is not None and guides(backend, guide)
    options = backend.options(**gen).to_dict() if backend is not None and not copied else None
    if options is not None:
        options["sections"] = "guided" if guided_run else None  # each task's own sections (shicheng.guide)
    if not copied and not endpoint:
        # Similar lengths in one batch waste less on left padding; a guided run batches one task at a time.
        todo.sort(key=lambda q: ((q.task.value if guided_run else ""), len(q.messages()[-1]["content"])))
    size = max(batch_size, concurrency) if endpoint else batch_size
    workers = concurrency if endpoint else 1  # a local model generates one batch at a time anyway
    stats = {"generated": 0, "failed": 0, "prompt_tokens": 0, "completion_tokens": 0}
    started = time.perf_counter()
    columns = (TextColumn(f"[bold]predict {name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    try:
        with out.open("a" if resume else "w", encoding="utf-8") as fh, \
                Progress(*columns, console=console, disable=not progress, transient=False) as bar:
            task = bar.add_task("predict", total=len(queries), completed=resumed)
            for chunk in _chunks(todo, size, by_task=guided_run):
                if copied:
                    rows = copied_rows(chunk, name, baseline)
                else:
                    rows = generate_rows(backend, chunk, name, guided(backend, chunk[0].task, guide, gen), workers)
                for row in rows:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                    stats["generated"] += 1
                    stats["failed"] += bool(row.get("error"))
                    stats["prompt_tokens"] += row.get("prompt_tokens") or 0
                    stats["completion_tokens"] += row.get("tokens") or 0
                fh.flush()
                bar.advance(task, len(chunk))
    finally:
        if owned:
            backend.close()
    return PredictReport(out=str(out), system=name, total=len(queries), resumed=resumed,
                         seconds=round(time.perf_counter() - started, 3), decoding=options, **stats)


def read_cases(path: Path) -> list[Case]:
    """Cases of a JSONL file; an empty file or a repeated id is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cases file not found: {path}")
    cases = read_jsonl(path, Case)
    if not cases:
        raise ValueError(f"{path}: no cases")
    seen: set[str] = set()
    for c in cases:
        if c.id in seen:
            raise ValueError(f"{path}: case id '{c.id}' appears twice")
        seen.add(c.id)
    return cases


def resolve_cases(cases: Path, split: str = "test") -> Path:
    """A cases JSONL file as given, or the `split` file of a `shicheng curate` output folder."""
    cases = Path(cases)
    if cases.is_dir():
        for candidate in (cases / "cases" / f"{split}.jsonl", cases / f"{split}.jsonl"):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"{cases}: a folder without cases/{split}.jsonl; pass the cases JSONL file "
                                "or the output folder of `shicheng curate`")
    if not cases.is_file():
        raise FileNotFoundError(f"cases file not found: {cases}")
    return cases


def resolve_train_cases(train_cases: Path | None, cases_path: Path) -> Path:
    """The training cases as given, else the curated split's train.jsonl beside the cases file."""
    if train_cases is not None:
        if not Path(train_cases).is_file():
            raise FileNotFoundError(f"training cases file not found: {train_cases}")
        return Path(train_cases)
    sibling = cases_path.parent / "train.jsonl"
    if sibling.is_file() and sibling.resolve() != cases_path.resolve():
        return sibling
    raise FileNotFoundError(f"no training cases: pass --train-cases (no train.jsonl beside {cases_path})")


def load_masters_from(path: Path) -> dict[str, Master]:
    """Masters from a masters.json (a model directory's), or a folder of one-master JSON or YAML files
    (what `shicheng curate` writes under masters/); an id given twice is an error."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"masters file or folder not found: {path}")
    if path.is_file() or (path / "masters.json").is_file():
        return load_masters(path)
    return load_master_files(path, (".json", *MASTER_SUFFIXES))


def find_masters(model: str | None, cases_path: Path, masters_file: Path | None = None) -> dict[str, Master]:
    """The masters' profiles: `masters_file`, else the model directory's masters.json, else the masters/
    folder of the curated output the cases come from; {} when there is none."""
    if masters_file is not None:
        return load_masters_from(masters_file)
    if model and not is_url(model) and (Path(model) / "masters.json").is_file():
        return load_masters(model)
    if model and is_gguf(model) and (inside := load_masters(model)):  # beside FILE.gguf, or in its metadata
        return inside
    for folder in (cases_path.parent.parent / "masters", cases_path.parent / "masters"):
        if folder.is_dir():
            return load_masters_from(folder)
    return {}


def read_predictions(paths: Sequence[Path]) -> tuple[list[dict], list[dict]]:
    """(answers, failures) from prediction files: rows with an `error` are failures, kept apart so that
    evaluation counts them instead of scoring an empty answer. Each row gets `file` and `line`."""
    answers, failures = [], []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"predictions file not found: {path}")
        with path.open(encoding="utf-8-sig") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise JsonlError(str(path), n, f"not valid JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(row, dict):
                    raise JsonlError(str(path), n, f"expected a JSON object, got {type(row).__name__}")
                missing = [k for k in (*KEY_FIELDS, "output") if k not in row]
                if missing:
                    raise JsonlError(str(path), n, f"missing field(s) {', '.join(missing)}")
                (failures if row.get("error") else answers).append({**row, "file": str(path), "line": n})
    return answers, failures


__all__ = ["DEFAULT_TASKS", "GOLD", "KEY_FIELDS", "RETRIEVAL", "PredictReport", "Query",
           "copied_rows", "decoding", "find_masters", "generate_rows", "load_masters_from", "parse_tasks", "plan_queries",
           "predict", "read_cases", "read_out", "read_predictions", "resolve_cases", "resolve_train_cases",
           "system_name"]
