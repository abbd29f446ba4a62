"""`shicheng evaluate`: prediction files -> judge verdicts (optional) -> results.json and report.html.

    evaluate([Path("runs/demo/eval/stage-5.jsonl"), Path("runs/demo/eval/gold.jsonl")],
             Path("runs/demo/data/cases/test.jsonl"), judges=[("http://127.0.0.1:8001/v1", "deepseek-chat")],
             out=Path("runs/demo/eval"))

Prediction rows whose answer failed (`error`, written by `shicheng predict`) are neither judged nor
scored: an empty answer scored 0 would count a timeout as a wrong prescription. They are listed in
results.json under `generation_failures`, counted in `counts.generation_failed`, and named in a warning
the report shows.

A judge is an OpenAI-compatible URL with its model id, or a local model directory (constrained
decoding, judge_local.py). Verdicts are cached under OUT/judge-cache, keyed by rubric version, judge and
prompt, so a rerun makes no call and a killed run resumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from shicheng.agent.backends import is_url
from shicheng.domain import Case, Master
from shicheng.evaluate.judge_backends import JudgeBackend, OpenAIJudge
from shicheng.evaluate.predict import find_masters, read_cases, read_predictions, resolve_cases
from shicheng.evaluate.rubric import load_rubric

FAILURE_FIELDS = ("file", "line", "case_id", "visit", "master", "task", "system", "error")


@dataclass
class EvaluateResult:
    results_path: Path
    report_path: Path
    systems: list[str]
    answers: int
    failed: int
    verdicts: int
    warnings: list[str] = field(default_factory=list)


def make_judges(judges: Sequence[tuple[str, str | None]], *, api_key_env: str = "OPENAI_API_KEY",
                timeout_s: float = 120.0, device: str = "auto") -> list[JudgeBackend]:
    """(URL, model id) pairs become OpenAIJudge; (model directory, None) a local constrained-decoding judge."""
    out: list[JudgeBackend] = []
    for where, model in judges:
        if is_url(where):
            if not model:
                raise ValueError(f"judge {where}: an endpoint URL needs its model id (--judge-model)")
            out.append(OpenAIJudge(where, model, api_key_env=api_key_env, timeout_s=timeout_s))
        else:
            if not Path(where, "config.json").is_file():
                raise FileNotFoundError(f"judge {where}: neither an http(s) URL nor a model directory")
            from shicheng.evaluate.judge_local import TransformersJudge

            out.append(TransformersJudge(where, name=model or None, device=device))
    return out


def _train_cases(train_cases: Path | None, cases_path: Path, console: Console) -> list[Case] | None:
    if train_cases is not None:
        return read_cases(train_cases)
    sibling = cases_path.parent / "train.jsonl"
    if sibling.is_file() and sibling.resolve() != cases_path.resolve():
        console.print(f"training cases (style model, signature herbs): {sibling}", soft_wrap=True, markup=False)
        return read_cases(sibling)
    return None


def evaluate(predictions: Sequence[Path], cases: Path, *, out: Path, train_cases: Path | None = None,
             judges: Sequence[tuple[str, str | None]] | Sequence[JudgeBackend] = (), rubric: Path | None = None,
             pairs: Sequence[tuple[str, str]] | None = None, n_boot: int = 2000, seed: int = 0,
             concurrency: int = 4, progress: bool = True, split: str = "test",
             masters_file: Path | None = None, judge_key_env: str = "OPENAI_API_KEY", scoring: str = "hybrid",
             mode: str = "auto", console: Console | None = None) -> EvaluateResult:
    """Score every prediction file against `cases` and write OUT/results.json and OUT/report.html.

    `train_cases` (default: train.jsonl beside the cases file) fits the style model and the signature
    herbs; without it those parts are left out with a warning. `judges` are (URL, model) pairs, local
    model directories as (path, None), or ready JudgeBackend objects; none runs no judge."""
    from shicheng.evaluate.judge import judge_predictions
    from shicheng.evaluate.report import render_report
    from shicheng.evaluate.results import build_results, write_results

    console = console or Console(stderr=True)
    if not predictions:
        raise ValueError("evaluate needs at least one predictions file")
    if scoring not in ("hybrid", "judge") or mode not in ("auto", "reference", "reference_free"):
        raise ValueError(f"scoring must be hybrid or judge (got {scoring!r}); mode auto, reference or "
                         f"reference_free (got {mode!r})")
    cases_path = resolve_cases(cases, split)
    case_map = {c.id: c for c in read_cases(cases_path)}
    train = _train_cases(train_cases, cases_path, console)
    answers, failures = read_predictions(predictions)
    if not answers:
        raise ValueError(f"no answer to evaluate in {', '.join(map(str, predictions))}"
                         + (f" ({len(failures)} failed generations only)" if failures else ""))
    masters: dict[str, Master] = find_masters(None, cases_path, masters_file)
    the_rubric = load_rubric(rubric)
    backends = [j for j in judges if isinstance(j, JudgeBackend)]
    backends += make_judges([j for j in judges if not isinstance(j, JudgeBackend)], api_key_env=judge_key_env)
    unknown = sorted({r["master"] for r in answers if r.get("master")} - set(masters))
    if backends and unknown:
        raise ValueError(f"the judge is shown each master's profile, and none was found for {', '.join(unknown)}: "
                         f"pass --masters-file (a masters.json, or the masters/ folder `shicheng curate` writes)")
    verdicts = []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        if backends:
            verdicts = judge_predictions(answers, case_map, backends, the_rubric, masters=masters,
                                         cache_dir=out / "judge-cache", concurrency=concurrency, scoring=scoring,
                                         mode=mode, progress=progress)
    finally:
        for b in backends:
            b.close()
    files = {f"predictions_{i + 1}": p for i, p in enumerate(predictions)} | {"cases": cases_path}
    results = build_results(answers, case_map, train_cases=train, verdicts=verdicts, rubric=the_rubric,
                            pairs=pairs, n_boot=n_boot, seed=seed, masters=masters, input_files=files)
    add_failures(results, failures)
    results_path = write_results(results, out)
    report_path = render_report(results, out)
    console.print(f"results: {results_path}\nreport:  {report_path}", soft_wrap=True, markup=False)
    return EvaluateResult(results_path=results_path, report_path=report_path, systems=list(results["systems"]),
                          answers=len(answers), failed=len(failures), verdicts=len(verdicts),
                          warnings=list(results.get("warnings", [])))


def add_failures(results: dict, failures: Sequence[dict]) -> None:
    """Failed generations into results.json: listed, counted per system, and named in a warning."""
    per_system: dict[str, int] = {}
    for f in failures:
        per_system[str(f.get("system"))] = per_system.get(str(f.get("system")), 0) + 1
    results["generation_failures"] = [{k: f.get(k) for k in FAILURE_FIELDS} for f in failures]
    counts = results.setdefault("counts", {})
    counts["generation_failed"] = len(failures)
    counts["generation_failed_per_system"] = per_system
    if failures:
        parts = ", ".join(f"{s}: {n}" for s, n in sorted(per_system.items()))
        results.setdefault("warnings", []).append(
            f"{len(failures)} answer(s) failed to generate and are left out of every score, not counted as 0 "
            f"({parts}); rerun `shicheng predict` on the same file to retry them.")


__all__ = ["EvaluateResult", "add_failures", "evaluate", "make_judges"]
