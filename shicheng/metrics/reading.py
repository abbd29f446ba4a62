"""Reading what a model wrote, for scoring: tolerant readers that never raise, the sections a task asks
for, completeness and the format score.

`read_answer` and `read_prescription` are cached (GRPO scores each completion with several rewards, and
an evaluation reads each answer for several metrics) and never raise on what a model writes: a parser
that fails is logged once per distinct text and the text is read as unreadable, an answer with no
sections or a 处方 section with no prescription (None).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping

from shicheng.domain import REQUIRED_OUTPUT_KEYS, SECTION_BY_KEY, Answer, Patient, Prescription, Task
from shicheng.prescription import parse_prescription
from shicheng.template import ParsedAnswer, parse_answer

log = logging.getLogger("shicheng.metrics")


def as_task(task: Task | str | None) -> Task | None:
    """A Task from its value; None (or "") is no task, which reads as the full chain."""
    if isinstance(task, Task):
        return task
    if not task:
        return None
    try:
        return Task(task)
    except ValueError:
        raise ValueError(f"unknown task '{task}'; known: {[t.value for t in Task]}") from None


def as_answer(value: Answer | Mapping | str | None) -> Answer | None:
    """An Answer from an Answer, an Answer dict (None values left out) or its JSON text."""
    if value is None or isinstance(value, Answer):
        return value
    if isinstance(value, str):
        value = json.loads(value)
    return Answer(**{k: v for k, v in dict(value).items() if v is not None})


def as_patient(value: Patient | Mapping | None) -> Patient | None:
    if value is None or isinstance(value, Patient):
        return value
    return Patient(**{k: v for k, v in dict(value).items() if v is not None})


def required_sections(task: Task | str | None) -> tuple[str, ...]:
    """Output sections a task must answer; the full chain (or no task) asks for every required one."""
    t = as_task(task)
    if t is None:
        return REQUIRED_OUTPUT_KEYS
    keys = tuple(k for k in t.sections if k != "reasoning" and not SECTION_BY_KEY[k].optional)
    return keys or REQUIRED_OUTPUT_KEYS


def asks_for(task: Task | str | None, key: str) -> bool:
    """Whether the task asks for section `key` (no task asks for everything)."""
    t = as_task(task)
    return t is None or key in t.sections


def completeness(answer: Answer, task: Task | str | None) -> tuple[float, list[str]]:
    """(share of the task's required sections present, the missing ones)."""
    required = required_sections(task)
    missing = [k for k in required if not getattr(answer, k)]
    return (len(required) - len(missing)) / len(required), missing


def overlap_f1(hit: float, predicted: float, gold: float) -> float:
    """F1 from the size of the overlap and of both sides (= 2PR / (P + R)); 0 without overlap."""
    return 2 * hit / (predicted + gold) if hit else 0.0


def _snippet(text: str) -> str:
    return repr(text[:60] + ("…" if len(text) > 60 else ""))


@functools.lru_cache(maxsize=4096)
def read_answer(text: str) -> ParsedAnswer:
    """parse_answer, cached; a parser failure reads as an answer with no sections."""
    try:
        return parse_answer(text)
    except Exception as e:  # a parser bug must cost this text its score, not the training or evaluation run
        log.warning("metrics: answer parser failed (%s: %s) on %s; scored as an unreadable answer",
                    type(e).__name__, e, _snippet(text))
        return ParsedAnswer(answer=Answer(), found=[])


@functools.lru_cache(maxsize=4096)
def read_prescription(section: str) -> Prescription | None:
    """The prescription of a 处方 section, cached; None when the parser fails on it."""
    try:
        return parse_prescription(section).prescription
    except Exception as e:  # see read_answer
        log.warning("metrics: prescription parser failed (%s: %s) on %s; scored as an unreadable prescription",
                    type(e).__name__, e, _snippet(section))
        return None


def format_score(text: str, task: Task | str | None = None) -> float:
    """0.4 × tag checks (<think> opened, closed and non-empty, <output> opened and closed; 1/5 each)
    + 0.5 × share of the task's required sections found + 0.1 if there is an <output> part, nothing
    trails `</output>` and no section repeats."""
    p = read_answer(text)
    tags = (p.has_think + p.think_closed + bool(p.answer.reasoning) + p.has_output + p.output_closed) / 5
    found, _ = completeness(p.answer, task)
    clean = 1.0 if p.has_output and not (p.trailing or p.duplicates) else 0.0
    return round(0.4 * tags + 0.5 * found + 0.1 * clean, 6)
