"""Teacher expansion (the paper's CoT step): a strong model writes the reasoning AROUND the master's answer.

For every visit that has the master's syndrome and prescription but no reasoning, a teacher model
behind any OpenAI-compatible endpoint writes the reasoning, etiology-pathogenesis, prescription
explanation, modifications and advice. The master's prescription is ground truth: a reply that adds
or drops a herb, or loses the master's syndrome, is retried and then rejected into the Ledger, and
the final Answer always carries the master's own syndrome, principle and prescription text verbatim.

Replies are cached on disk by sha256(model, prompt, temperature, attempt), one atomically written
JSON file each, so a rerun makes no calls for finished prompts and a killed run resumes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import openai
from pydantic import BaseModel, ConfigDict, Field
from rich.progress import Progress

from shicheng.curate.ledger import Ledger
from shicheng.domain import REQUIRED_OUTPUT_KEYS, SECTION_BY_KEY, Answer, Case, Master, Visit
from shicheng.prompts import describe_visit
from shicheng.records.prescriptions import UnreadablePrescription, read_prescription
from shicheng.template import parse_answer, render_answer
from shicheng.text import normalise_text

STEP = "teacher"


class TeacherConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="base URL of an OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1")
    model: str
    api_key_env: str = Field(default="OPENAI_API_KEY", description="environment variable holding the key")
    concurrency: int = Field(default=4, ge=1)
    max_retries: int = Field(default=2, ge=0, description="extra attempts after an invalid reply or failed call")
    timeout_s: float = Field(default=60, gt=0)
    temperature: float = Field(default=0.3, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    retry_backoff_s: float = Field(default=1.0, ge=0, description="wait before retrying a failed call, doubled")
    cache_dir: Path | None = None


@dataclass
class TeacherStats:
    calls: int = 0  # HTTP requests sent
    cache_hits: int = 0  # replies read from the cache instead
    retries: int = 0  # calls sent after a visit's first attempt (invalid reply or failed call)
    failures: int = 0  # visits whose calls kept failing
    invalid: int = 0  # visits whose replies stayed invalid
    expanded: int = 0  # visits that received an answer
    skipped: int = 0  # visits left alone: reasoning present, or no master syndrome/prescription
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class TeacherError(RuntimeError):
    """A configuration problem (bad key, unknown model or URL) that would fail every call: stop the run."""


TEACHER_SYSTEM = (
    "你是一位资深中医临床专家和中医教育者，负责把名老中医的真实医案整理成教学用的完整辨证论治分析。"
    "名医的辨证与处方是真实诊疗记录，是标准答案：你只能围绕它们补写推理与解释，绝不能更改、增加或删减处方中的任何药物，"
    "也不能改动辨证结论。"
)


def master_gold(visit: Visit) -> Answer | None:
    """The master's own answer when it has the syndrome and the prescription text; None otherwise."""
    answer = visit.answer or Answer()
    rx = answer.prescription or (visit.prescription.raw if visit.prescription else None)
    if not answer.syndrome or not rx:
        return None
    return answer.model_copy(update={"prescription": rx})


def needs_teacher(visit: Visit) -> bool:
    return master_gold(visit) is not None and not visit.answer.reasoning


def teacher_messages(case: Case, visit_index: int, master: Master | None, feedback: str | None = None
                     ) -> list[dict[str, str]]:
    """The teacher's prompt for one visit; `feedback` says what was wrong with the previous reply."""
    visit = case.visits[visit_index]
    gold = master_gold(visit)
    if gold is None:
        raise ValueError(f"case {case.id} visit {visit_index + 1}: no master syndrome and prescription to expand")
    who = f"{master.name}（{master.school}）" if master else "一位名老中医"
    parts = [f"以下是{who}的一则真实医案。"]
    if master and master.academic_thoughts:
        parts.append(f"【{master.name}的学术思想】\n{master.academic_thoughts.strip()}")
    if case.disease:
        parts.append(f"【病名】{case.disease}")
    if visit_index > 0:
        prev = case.visits[visit_index - 1]
        prev_gold = master_gold(prev)
        if prev_gold is not None:
            parts.append(f"【上次就诊】辨证：{prev_gold.syndrome}\n处方：{prev_gold.prescription}")
    label = visit.label or ("初诊" if visit.index == 1 else f"第{visit.index}诊")
    parts.append(f"【本次就诊（{label}）】\n{describe_visit(case, visit)}")
    given = [f"辨证：{gold.syndrome}", f"治则治法：{gold.treatment_principle or '（原案未载，请据辨证拟定）'}",
             f"处方：{gold.prescription}"]
    for key in ("etiology_pathogenesis", "prescription_explanation", "modifications", "advice"):
        if getattr(gold, key):
            given.append(f"{SECTION_BY_KEY[key].zh}：{getattr(gold, key)}")
    if visit.commentary:
        given.append(f"按语：{visit.commentary}")
    parts.append("【名医原案（标准答案，须原样保留）】\n" + "\n".join(given))
    rules = [
        "在<think>中逐步推理：从主诉、现病史、舌象、脉象等四诊信息出发，分析病因病机，推出上述辨证，"
        "再说明治法及选方用药的理由。",
        "病因病机：说明病因、病位、病性及病势演变。",
        "辨证、治则治法、处方三节必须与名医原案逐字一致；处方中的药物一味不增、一味不减。",
        "方解：按君臣佐使逐味说明处方中的每一味药。",
        "随症加减：给出2～4条兼症变化时的加减建议（这是今后的调整建议，不改变本次处方）。",
        *(["名医特色理论应用：说明本案如何体现该名医的学术思想。"] if master else []),
        "医嘱：饮食宜忌、起居调护、复诊安排等。",
        "严格按下列格式输出，不要输出格式以外的任何内容。",
    ]
    parts.append("【要求】\n" + "\n".join(f"{i}. {rule}" for i, rule in enumerate(rules, start=1)))
    layout = Answer(
        reasoning="（逐步推理……）", etiology_pathogenesis="（……）", syndrome=gold.syndrome,
        treatment_principle=gold.treatment_principle or "（……）", prescription=gold.prescription,
        prescription_explanation="（……）", master_theory="（……）" if master else None,
        modifications="（……）", advice="（……）")
    parts.append(render_answer(layout))
    if feedback:
        parts.append(f"【注意】上一次的回答不合格：{_in_chinese(feedback)}。请改正后重新完整作答，辨证与处方务必与原案一致。")
    return [{"role": "system", "content": TEACHER_SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


# The ledger's reasons are English; the teacher is told the same thing in the prompt's language.
_REASON_ZH = (("prescription changed", "处方药物被改动"), ("missing sections", "缺少小节"),
              ("syndrome changed", "辨证被改动"), ("must keep", "须保留"), ("got", "实际为"),
              ("added ", "多出 "), ("dropped ", "缺少 "), ("empty reply", "回复为空"),
              ("prescription unreadable", "处方无法解析"), ("prescription parser failed", "处方解析失败"), ("辨证 ", "辨证"), (": ", "："),
              ("; ", "；"))


def _in_chinese(reason: str) -> str:
    for en, zh in _REASON_ZH:
        reason = reason.replace(en, zh)
    return reason


_SYNDROME_SPLIT = re.compile(r"[，,、；;。.\s/|]+|兼夹|兼|伴|夹|并")


def _norm(text: str) -> str:
    text = normalise_text(text, fold="nfkc")
    return re.sub(r"[\W_]+", "", text)


def syndrome_kept(master_syndrome: str, reply_syndrome: str) -> bool:
    """The master's syndrome, or every one of its terms, appears in the reply (punctuation ignored)."""
    gold, got = _norm(master_syndrome), _norm(reply_syndrome)
    if gold and gold in got:
        return True
    terms = [_norm(t) for t in _SYNDROME_SPLIT.split(master_syndrome or "")]
    terms = [t for t in terms if t]
    return bool(terms) and all(t in got for t in terms)


def herb_set(prescription_text: str) -> set[str]:
    """Base herbs of a prescription; a herb the lexicon does not know counts by its written name.
    Raises UnreadablePrescription when the parser fails on the text."""
    return {h.base or h.raw for h in read_prescription(prescription_text).herbs}


def check_reply(text: str, gold: Answer) -> tuple[Answer | None, str | None]:
    """(the teacher's answer, None) if the reply keeps the master's answer, else (None, the reason)."""
    parsed = parse_answer(text or "")
    missing = [k for k in ("reasoning", *REQUIRED_OUTPUT_KEYS) if not getattr(parsed.answer, k)]
    if missing:
        return None, "missing sections: " + "、".join(SECTION_BY_KEY[k].zh for k in missing)
    if not syndrome_kept(gold.syndrome, parsed.answer.syndrome):
        return None, f"syndrome changed: 辨证 must keep '{gold.syndrome}', got '{parsed.answer.syndrome[:80]}'"
    want = herb_set(gold.prescription)  # checked readable before any call (_Teacher.expand_visit)
    try:
        got = herb_set(parsed.answer.prescription)
    except UnreadablePrescription as e:
        return None, f"prescription unreadable: {e}"
    if want != got:
        diff = []
        if got - want:
            diff.append("added " + "、".join(sorted(got - want)))
        if want - got:
            diff.append("dropped " + "、".join(sorted(want - got)))
        return None, "prescription changed: " + "; ".join(diff)
    return parsed.answer, None


def restore_ground_truth(teacher: Answer, gold: Answer) -> Answer:
    """The teacher's writing, with every section the master wrote (syndrome, principle, prescription …) restored."""
    data = teacher.model_dump()
    data.update({k: v for k, v in gold.model_dump().items() if v})
    return Answer(**data)



class ReplyCache:
    """One JSON file per prompt; written to a temporary name, then renamed, so a kill never leaves half a file."""

    def __init__(self, directory: Path | None):
        self.directory = Path(directory) if directory else None
        if self.directory:
            self.directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(model: str, messages: list[dict], temperature: float, attempt: int) -> str:
        blob = json.dumps([model, messages, temperature, attempt], ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        if self.directory is None:
            return None
        path = self._path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None  # not asked yet, or a damaged file: ask again and overwrite it
        return entry if isinstance(entry, dict) and isinstance(entry.get("response"), dict) else None

    def put(self, key: str, entry: dict) -> None:
        if self.directory is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entry, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, path)


_FATAL = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)


@dataclass
class _Outcome:
    answer: Answer | None = None
    kind: str = ""  # "invalid" | "failed"
    reason: str = ""
    last_reply: str | None = None
    attempts: list[str] = field(default_factory=list)


class _Teacher:
    def __init__(self, config: TeacherConfig, client: openai.AsyncOpenAI, stats: TeacherStats):
        self.config, self.client, self.stats = config, client, stats
        self.cache = ReplyCache(config.cache_dir)
        self.gate = asyncio.Semaphore(config.concurrency)

    async def _call(self, messages: list[dict]) -> dict:
        extra = {"max_tokens": self.config.max_tokens} if self.config.max_tokens else {}
        async with self.gate:
            self.stats.calls += 1
            completion = await self.client.chat.completions.create(
                model=self.config.model, messages=messages, temperature=self.config.temperature, **extra)
        if completion.usage:
            self.stats.prompt_tokens += completion.usage.prompt_tokens or 0
            self.stats.completion_tokens += completion.usage.completion_tokens or 0
        return completion.model_dump(mode="json")

    async def expand_visit(self, case: Case, index: int, master: Master | None) -> _Outcome:
        gold = master_gold(case.visits[index])
        out = _Outcome()
        try:
            herb_set(gold.prescription)
        except UnreadablePrescription as e:
            # No reply could be checked against this prescription: fail the visit without calling the teacher.
            out.kind, out.reason = "failed", f"master's prescription unreadable: {e}"
            return out
        feedback, invalid = None, 0
        for attempt in range(self.config.max_retries + 1):
            messages = teacher_messages(case, index, master, feedback)
            # The key counts invalid replies only, so a rerun walks the same keys the first run wrote.
            key = ReplyCache.key(self.config.model, messages, self.config.temperature, invalid)
            entry = self.cache.get(key)
            if entry is not None:
                self.stats.cache_hits += 1
            else:
                if attempt:
                    self.stats.retries += 1
                if out.kind == "failed" and self.config.retry_backoff_s:
                    await asyncio.sleep(self.config.retry_backoff_s * 2 ** (attempt - 1))
                try:
                    response = await self._call(messages)
                except _FATAL as e:
                    raise TeacherError(f"teacher at {self.config.url} (model {self.config.model}) refused the "
                                       f"request: {type(e).__name__}: {e}") from e
                except openai.OpenAIError as e:
                    out.kind, out.reason = "failed", f"{type(e).__name__}: {str(e)[:200]}"
                    out.attempts.append(out.reason)
                    continue
                entry = {"model": self.config.model, "attempt": invalid, "temperature": self.config.temperature,
                         "case_id": case.id, "visit": index + 1, "response": response}
            text = _reply_text(entry["response"])
            answer, reason = check_reply(text, gold) if text else (None, "empty reply")
            if "valid" not in entry:
                entry.update(valid=answer is not None, reason=reason)
                self.cache.put(key, entry)
            if answer is not None:
                out.answer, out.kind, out.reason = restore_ground_truth(answer, gold), "", ""
                return out
            out.kind, out.reason, out.last_reply = "invalid", reason, text
            out.attempts.append(reason)
            feedback, invalid = reason, invalid + 1
        return out


def _reply_text(response: dict) -> str:
    choices = response.get("choices") or []
    message = (choices[0].get("message") or {}) if choices else {}
    return message.get("content") or ""


def _visit_name(visit: Visit, index: int) -> str:
    return f"visit {index + 1}" + (f" ({visit.label})" if visit.label else "")


async def expand_cases_async(cases: list[Case], masters: dict[str, Master], config: TeacherConfig,
                             ledger: Ledger, stats: TeacherStats | None = None, progress: bool = True
                             ) -> list[Case]:
    """Async form of `expand_cases`, for callers that already run an event loop."""
    stats = stats if stats is not None else TeacherStats()
    ledger.seen(STEP, len(cases))
    jobs = [(ci, vi) for ci, case in enumerate(cases) for vi, visit in enumerate(case.visits)
            if needs_teacher(visit)]
    stats.skipped += sum(len(c.visits) for c in cases) - len(jobs)
    # Local servers (vLLM, llama.cpp) take any key; the client insists on one, so a placeholder stands in.
    api_key = os.environ.get(config.api_key_env) or "not-needed"
    results: dict[tuple[int, int], _Outcome] = {}
    async with openai.AsyncOpenAI(base_url=config.url, api_key=api_key, timeout=config.timeout_s,
                                  max_retries=0) as client:
        teacher = _Teacher(config, client, stats)
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task("teacher", total=len(jobs))

            async def run(ci: int, vi: int) -> None:
                case = cases[ci]
                results[ci, vi] = await teacher.expand_visit(case, vi, masters.get(case.master_id or ""))
                bar.advance(task)

            pending = [asyncio.ensure_future(run(ci, vi)) for ci, vi in jobs]
            try:
                await asyncio.gather(*pending)
            finally:
                for p in pending:
                    p.cancel()
    return _assemble(cases, results, ledger, stats)


def _assemble(cases: list[Case], results: dict[tuple[int, int], _Outcome], ledger: Ledger,
              stats: TeacherStats) -> list[Case]:
    kept: list[Case] = []
    for ci, case in enumerate(cases):
        visits, problems, last_reply = list(case.visits), [], None
        for vi, visit in enumerate(case.visits):
            out = results.get((ci, vi))
            if out is None:
                continue
            if out.answer is not None:
                stats.expanded += 1
                visits[vi] = visit.model_copy(update={"answer": out.answer})
                continue
            if out.kind == "failed":
                stats.failures += 1
            else:
                stats.invalid += 1
            last_reply = out.last_reply or last_reply
            tries = f" after {len(out.attempts)} attempt(s)" if out.attempts else ""
            problems.append((out.kind, f"{_visit_name(visit, vi)}{tries}: {out.reason}"))
        if not problems:
            kept.append(case.model_copy(update={"visits": visits}))
            ledger.keep(STEP)
            continue
        head = "teacher call failed" if problems[0][0] == "failed" else "teacher reply invalid"
        record = {"case": case.model_dump(mode="json", exclude_none=True)}
        if last_reply:
            record["last_reply"] = last_reply[:4000]
        ledger.reject(STEP, case.source or case.id, f"{head}: " + "; ".join(p for _, p in problems), record)
    return kept


def expand_cases(cases: list[Case], masters: dict[str, Master], config: TeacherConfig, ledger: Ledger,
                 stats: TeacherStats | None = None, progress: bool = True) -> list[Case]:
    """Fill the answers of visits that have the master's syndrome and prescription but no reasoning.

    Returns the kept cases in input order; a case with any visit that stays invalid or whose calls
    keep failing is rejected whole into `ledger` (step "teacher") with the reason. Pass `stats` to
    read the counts (calls, cache hits, retries, failures) afterwards.
    """
    return asyncio.run(expand_cases_async(cases, masters, config, ledger, stats, progress))


__all__ = ["TEACHER_SYSTEM", "ReplyCache", "TeacherConfig", "TeacherError", "TeacherStats", "check_reply",
           "expand_cases", "expand_cases_async", "herb_set", "master_gold", "needs_teacher",
           "restore_ground_truth", "syndrome_kept", "teacher_messages"]
