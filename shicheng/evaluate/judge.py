"""The LLM judge: score predictions with the rubric, by one judge or a panel, cached, hybrid by default.

    verdicts = judge_predictions(rows, cases, [OpenAIJudge(url, "deepseek-chat"), OpenAIJudge(url2, "gpt-4o")],
                                 masters=masters, cache_dir="runs/eval/judge-cache")

One verdict per (prediction row, judge), in row order then judge order. A row is a prediction line
(`{case_id, visit, master, task, system, output, …}`, visit 1-based as `shicheng predict` writes it).
A row asked as another master than the case's own (counterfactual mode) is judged reference-free under
`mode="auto"`: the gold answer is the other master's, so it cannot say how the asked master would answer.

What is scored (rubrics/paper-55-v1.yaml): the rubric items the row's task asks for; in reference mode only those
the gold answer has (the maximum shrinks); the master's-theory item only when a master is named. An item
the model did not answer scores 0 and is listed in `missing`, whatever the judge said. "Answered" is
decided by our parser (`template.parse_answer`): the item's section has content. One leniency: when the
task asks for a single section and the output has no section heading at all, the whole output (after any
`<think>`) is that section, so that a remote model answering "辨证：…" in plain prose is still judged.

Hybrid scoring (the default): the criteria marked `computed_by: code` in the rubric — herb match
(matched / gold base herbs × 9, `metrics.herb_match`) and sound composition (`metrics.composition_point`)
— and completeness are computed by our code; judges count badly. Completeness by code is a decision:
it is a count of answered items over scored items × 5, and our parser already decides "answered" for
the zero rule, so judge and rule can never disagree about it. The judge is still asked for all of them,
and its numbers are kept beside ours (`judge_points`, `code_points`, `herbs_judge` vs `herbs_code`), so
its arithmetic errors are visible. `scoring="judge"` uses the judge's numbers throughout instead.

A judgement that fails (invalid after the validation retries, or the call failed after the transport
retries) is `status="unscored"` with the reason, never 0; `judge_panel.summarize` counts them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, computed_field
from rich.progress import Progress

from shicheng.domain import Case, Master
from shicheng.evaluate.judge_backends import JudgeBackend, JudgeOutcome
from shicheng.evaluate.judge_cache import VerdictCache, cache_key
from shicheng.evaluate.judge_plan import ModeChoice, Plan, counterfactual, plan_row, read_row
from shicheng.evaluate.rubric import Mode, Rubric, load_rubric

Scoring = Literal["hybrid", "judge"]
Status = Literal["scored", "unscored", "not_applicable"]


class CriterionScore(BaseModel):
    key: str
    zh: str
    max_points: float
    points: float | None  # what the total uses; None when unscored
    judge_points: float | None = None  # what the judge said (None: not asked, or no verdict)
    code_points: float | None = None  # what our code computed (None: not a code criterion, or not computable)
    source: Literal["judge", "code", "unanswered"] | None = None


class ItemScore(BaseModel):
    key: str
    zh: str
    max_points: float
    answered: bool
    points: float | None
    judge_points: float | None = None
    criteria: list[CriterionScore]


class Verdict(BaseModel):
    case_id: str
    visit: int
    master: str | None
    task: str
    system: str
    judge: str
    judge_identity: dict[str, Any]
    rubric_version: str
    mode: Mode | None
    scoring: Scoring
    counterfactual: bool = False  # asked as another master than the case's own
    status: Status
    reason: str | None = None  # why unscored / not applicable
    total: float | None = None
    max_total: float = 0.0
    judge_total: float | None = None  # the same sum with every number as the judge gave it
    completeness: CriterionScore | None = None
    items: list[ItemScore] = []
    missing: list[str] = []  # scored items the model did not answer (our parser)
    judge_missing: list[str] | None = None  # what the judge listed
    herbs_code: dict[str, Any] | None = None  # matched / missing / extra base herbs, counts, points
    herbs_judge: dict[str, int] | None = None  # {"matched", "gold"} as the judge counted
    rationale: str | None = None
    judge_called: bool = False  # False when the rule decides alone (nothing answered, nothing to score)
    cached: bool = False
    attempts: int = 0
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    errors: list[str] = []
    key: str | None = None  # the cache key

    @computed_field  # in results.json too
    @property
    def share(self) -> float | None:
        """total / max_total: comparable across answers whose maxima differ."""
        return self.total / self.max_total if self.total is not None and self.max_total else None


def _verdict(plan: Plan, rubric: Rubric, judge: JudgeBackend, scoring: Scoring, entry: dict | None,
             cached: bool) -> Verdict:
    row = plan.row
    base = dict(case_id=row["case_id"], visit=row["visit"], master=row["master"], task=row["task"].value,
                system=row["system"], judge=judge.name, judge_identity=judge.identity(),
                rubric_version=rubric.version, mode=plan.mode, scoring=scoring, max_total=rubric.max_total(plan.items),
                herbs_code=plan.herbs_code, cached=cached, counterfactual=plan.counterfactual)
    if plan.state == "not_applicable":
        return Verdict(**base, status="not_applicable", reason=plan.reason)
    reply = (entry or {}).get("verdict") if (entry or {}).get("status") == "ok" else None
    scored = plan.state == "rule" or reply is not None
    items, total, judge_total = [], 0.0, 0.0
    for it in plan.items:
        crits, item_points, item_judge = [], 0.0, 0.0
        for c in it.criteria_in(plan.mode):
            said = reply["scores"][it.key][c.key] if reply else None
            code = plan.code.get((it.key, c.key))
            if not plan.answered[it.key]:
                points, source = 0.0, "unanswered"
            elif scoring == "hybrid" and c.code is not None and code is not None:
                points, source = code, "code"
            else:
                points, source = said, "judge"
            crits.append(CriterionScore(key=c.key, zh=c.zh, max_points=c.points, points=points if scored else None,
                                        judge_points=said, code_points=code, source=source if scored else None))
            item_points += points or 0.0
            item_judge += said or 0.0
        items.append(ItemScore(key=it.key, zh=it.zh, max_points=it.points, answered=plan.answered[it.key],
                               points=item_points if scored else None, judge_points=item_judge if reply else None,
                               criteria=crits))
        total += item_points
        judge_total += item_judge
    n_answered = sum(plan.answered.values())
    code_c = rubric.completeness.points * n_answered / len(plan.items)
    said_c = reply["completeness"] if reply else None
    by_code = (scoring == "hybrid" and rubric.completeness.computed_by == "code") or said_c is None
    comp_points = code_c if by_code else said_c
    completeness = CriterionScore(key="completeness", zh=rubric.completeness.zh,
                                  max_points=rubric.completeness.points, points=comp_points if scored else None,
                                  judge_points=said_c, code_points=code_c,
                                  source=("code" if by_code else "judge") if scored else None)
    usage = {k: (entry or {}).get(k, 0) for k in ("attempts", "calls", "prompt_tokens", "completion_tokens")}
    extra = dict(completeness=completeness, items=items, missing=[k for k, a in plan.answered.items() if not a],
                 judge_called=entry is not None, key=(entry or {}).get("key"), errors=(entry or {}).get("errors", []),
                 cost=judge.cost(usage["prompt_tokens"], usage["completion_tokens"]) if entry else None, **usage)
    if not scored:
        return Verdict(**base, **extra, status="unscored", reason=entry.get("error") or "no verdict")
    return Verdict(**base, **extra, status="scored", total=round(total + comp_points, 6),
                   judge_total=round(judge_total + said_c, 6) if reply else None,
                   judge_missing=reply["missing"] if reply else None, herbs_judge=(reply or {}).get("herb_counts"),
                   rationale=reply["rationale"] if reply else None)


def _entry(key: str, plan: Plan, rubric: Rubric, judge: JudgeBackend, out: JudgeOutcome) -> dict:
    row = plan.row
    return {"key": key, "rubric_version": rubric.version, "judge": judge.identity(), "status": out.status,
            "verdict": out.verdict, "error": out.error, "errors": out.errors, "raw": (out.raw or "")[:4000],
            "attempts": out.attempts, "calls": out.calls, "prompt_tokens": out.prompt_tokens,
            "completion_tokens": out.completion_tokens, "seconds": round(out.seconds, 3),
            "case_id": row["case_id"], "visit": row["visit"], "task": row["task"].value, "system": row["system"]}


def _usable(entry: dict, plan: Plan, retry_failed: bool) -> bool:
    if entry.get("status") != "ok":
        return not retry_failed
    try:  # a hand-edited or damaged line must not become a verdict
        plan.request.validator.model_validate(entry.get("verdict"))
    except Exception:
        return False
    return True


def judge_predictions(rows: Sequence[Mapping | BaseModel], cases: Mapping[str, Case],
                      judges: Sequence[JudgeBackend], rubric: Rubric | None = None, *,
                      masters: Mapping[str, Master] | None = None, cache_dir=None, concurrency: int = 4,
                      scoring: Scoring = "hybrid", mode: ModeChoice = "auto", retry_failed: bool = False,
                      progress: bool = True) -> list[Verdict]:
    """Judge every row with every judge; verdicts in row order, then judge order.

    `cases` maps case id to Case; `masters` maps master id to Master (a row naming a master that is not
    there is an error). `mode`: "auto" judges against the gold answer where the visit has one for what
    the task asks, reference-free otherwise; "reference" marks rows without gold not_applicable;
    "reference_free" ignores gold answers. Bad rows raise ValueError naming the row before any call.
    """
    if scoring not in ("hybrid", "judge"):
        raise ValueError(f"scoring must be 'hybrid' or 'judge', got {scoring!r}")
    if mode not in ("auto", "reference", "reference_free"):
        raise ValueError(f"mode must be auto, reference or reference_free, got {mode!r}")
    if not judges:
        raise ValueError("judge_predictions needs at least one judge")
    names = [j.name for j in judges]
    if len(set(names)) != len(names):
        raise ValueError(f"judge names must differ within a panel: {names}")
    rubric = rubric or load_rubric()
    masters = masters or {}
    plans = []
    for i, raw in enumerate(rows):
        row = read_row(raw, i)
        case = cases.get(row["case_id"])
        if case is None:
            raise ValueError(f"prediction row {i}: case '{row['case_id']}' is not among the {len(cases)} cases given")
        if row["visit"] > len(case.visits):
            raise ValueError(f"prediction row {i}: case '{case.id}' has {len(case.visits)} visit(s), "
                             f"row asks for visit {row['visit']}")
        master = None
        if row["master"] is not None:
            master = masters.get(row["master"])
            if master is None:
                raise ValueError(f"prediction row {i}: master '{row['master']}' is not among the masters given "
                                 f"({', '.join(sorted(masters)) or 'none'})")
        plan = plan_row(row, case, master, rubric, mode)
        plan.counterfactual = counterfactual(row, case)
        plans.append(plan)
    cache = VerdictCache(cache_dir)
    table: list[list[Verdict | None]] = [[None] * len(judges) for _ in plans]
    for j, judge in enumerate(judges):
        identity = judge.identity()
        pending: dict[str, list[int]] = {}
        for r, plan in enumerate(plans):
            if plan.state != "call":
                table[r][j] = _verdict(plan, rubric, judge, scoring, None, cached=False)
                continue
            key = cache_key(rubric.version, identity, plan.request.messages, plan.request.schema)
            entry = cache.get(key)
            if entry is not None and _usable(entry, plan, retry_failed):
                table[r][j] = _verdict(plan, rubric, judge, scoring, entry, cached=True)
            else:
                pending.setdefault(key, []).append(r)
        keys = list(pending)
        requests = [plans[pending[k][0]].request for k in keys]
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task(f"judge {judge.name}", total=len(requests))
            for idx, outcome in judge.judge_many(requests, concurrency):
                key = keys[idx]
                entry = _entry(key, plans[pending[key][0]], rubric, judge, outcome)
                cache.put(entry)
                for n, r in enumerate(pending[key]):
                    # Rows sharing a prompt share one call: only the first carries its cost.
                    table[r][j] = _verdict(plans[r], rubric, judge, scoring, entry, cached=n > 0)
                bar.advance(task)
    return [v for per_row in table for v in per_row]


__all__ = ["CriterionScore", "ItemScore", "Verdict", "judge_predictions"]
