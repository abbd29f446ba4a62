"""`shicheng predict`, `shicheng evaluate` and `shicheng compare-stages`: answer held-out cases with a system,
score the answers (metrics, optional judges, results.json and report.html), and compare stage models."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from shicheng.cli.errors import clear_errors

console = Console()


def _systems(values: list[str]) -> list[str]:
    """Each --model is a model directory or .gguf file that exists, or an http(s) endpoint URL."""
    for value in values:
        gguf = value.lower().endswith(".gguf") and Path(value).is_file()
        if not value.startswith(("http://", "https://")) and not Path(value).is_dir() and not gguf:
            raise typer.BadParameter(f"{value}: not a model directory, a .gguf file or an http(s) endpoint URL")
    return values


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def compare_stages_cmd(
    data: Path = typer.Option(..., "--data", exists=True, file_okay=False, help="Output folder of `shicheng curate`."),
    model: list[str] = typer.Option(..., "--model", callback=_systems,
                                    help="Stage model dir, or an OpenAI-compatible endpoint URL (repeat)."),
    split: str = typer.Option("test", help="Which split of stage5_rl to answer."),
    limit: int = typer.Option(None, help="Answer only the first N prompts."),
    max_new_tokens: int = typer.Option(768, "--max-new-tokens"),
    repetition_penalty: float = typer.Option(1.15, "--repetition-penalty", help="Same decoding for every model."),
    no_repeat_ngram: int = typer.Option(8, "--no-repeat-ngram", help="Block repeated n-grams of this many tokens "
                                        "(0 with an endpoint in the comparison: endpoints cannot)."),
    backend: str = typer.Option("auto", "--backend", help="auto, transformers, llamacpp or openai."),
    model_name: str = typer.Option(None, "--model-name", help="Served model id for an endpoint URL."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 … (model directories)."),
    out: Path = typer.Option(None, "--out", help="Write the JSON here as well."),
) -> None:
    """Base-herb F1, syndrome, format, safety and master attribution of stage models on held-out prompts."""
    from shicheng.evaluate.compare import SCORES, compare_stages

    with clear_errors(console):
        result = compare_stages(data_dir=data, systems=model, split=split, limit=limit,
                                max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty,
                                no_repeat_ngram_size=no_repeat_ngram, backend=backend, model_name=model_name,
                                device=device)
    text = json.dumps(result, ensure_ascii=False, indent=2)
    if out:
        out.write_text(text, encoding="utf-8")
    table = Table(title=f"stage comparison on {split} ({result['gold_answers']['n']} prompts)")
    for col in ("model", "herb F1", "syndrome F1", "format", "safety", "master attribution"):
        table.add_column(col)
    for name, r in [("gold answers", result["gold_answers"]), *result["models"].items()]:
        table.add_row(name if "://" in name else Path(name).name, *(_cell(r[k]) for k in SCORES))
    console.print(table)


def _split_list(values: list[str] | None) -> list[str]:
    """Repeated or comma-separated values (`--tasks a,b --tasks c`) as one list."""
    return [v.strip() for value in values or () for v in value.split(",") if v.strip()]


def predict_cmd(
    model: str = typer.Option(..., "--model", help="Model directory, OpenAI-compatible endpoint URL (with "
                              "--model-name), `retrieval` (nearest training case) or `gold` (the gold answers)."),
    cases: Path = typer.Option(..., "--cases", help="Cases JSONL, or the output folder of `shicheng curate`."),
    out: Path = typer.Option(..., "--out", dir_okay=False, help="Predictions JSONL to append to (resumable)."),
    model_name: str = typer.Option(None, "--model-name", help="Served model id for an endpoint URL."),
    tasks: list[str] = typer.Option(None, "--tasks", help="Tasks to ask, comma-separated (default: full_chain)."),
    masters: list[str] = typer.Option(None, "--masters", help="Only these master ids, comma-separated."),
    all_masters: bool = typer.Option(False, "--all-masters", help="Counterfactual: ask every case as every master."),
    system: str = typer.Option(None, "--system", help="Name of the system in the rows (default: from --model)."),
    split: str = typer.Option("test", help="Which split of a `shicheng curate` folder."),
    train_cases: Path = typer.Option(None, "--train-cases", help="Training cases for `retrieval` "
                                     "(default: train.jsonl beside the cases)."),
    masters_file: Path = typer.Option(None, "--masters-file", help="masters.json or a folder of master YAMLs."),
    limit: int = typer.Option(None, "--limit", min=1, help="Answer only the first N cases."),
    per_master: int = typer.Option(None, "--per-master", min=1, help="Answer only the first N cases of each "
                                   "master (and N without one): a cheap sample that covers every style."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="Requests at once to an endpoint."),
    max_new_tokens: int = typer.Option(None, "--max-new-tokens", min=1),
    temperature: float = typer.Option(None, "--temperature", min=0.0),
    top_p: float = typer.Option(None, "--top-p", min=0.0, max=1.0),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 … (model directories)."),
    guide: bool = typer.Option(None, "--guide/--no-guide", help="Section-guided decoding: each answer writes its "
                               "task's sections in order (default: what the model was trained with)."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="Env variable with the endpoint's key."),
    timeout_s: float = typer.Option(300.0, "--timeout", help="Seconds per endpoint request."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Keep the answers already in OUT."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Answer held-out cases with one system, one JSONL line per answer, as training asked."""
    from shicheng.evaluate.predict import predict

    err = Console(stderr=True)
    with clear_errors(err):
        report = predict(model=model, cases=cases, out=out, model_name=model_name, tasks=_split_list(tasks),
                         masters=_split_list(masters) or None, all_masters=all_masters, system=system,
                         batch_size=batch_size, concurrency=concurrency, max_new_tokens=max_new_tokens,
                         temperature=temperature, top_p=top_p, resume=resume, progress=progress, split=split,
                         train_cases=train_cases, masters_file=masters_file, limit=limit, per_master=per_master,
                         device=device, guide=guide, api_key_env=api_key_env, timeout_s=timeout_s,
                         console=err)
    console.print(f"{report.system}: {report.total} answers in {report.out} ({report.generated} new, "
                  f"{report.resumed} kept, {report.failed} failed) in {report.seconds:.1f} s", soft_wrap=True,
                  markup=False)


def _judges(judge: list[str], judge_model: list[str]) -> list[tuple[str, str | None]]:
    """--judge URL/DIR pairs with --judge-model in order: each URL takes the next model id."""
    models = iter(judge_model or ())
    return [(where, next(models, None) if where.startswith(("http://", "https://")) else None)
            for where in judge or ()]


def _pairs(values: list[str] | None) -> list[tuple[str, str]] | None:
    pairs = []
    for value in values or ():
        a, sep, b = value.partition(",")
        if not sep or not a.strip() or not b.strip():
            raise typer.BadParameter(f"{value!r}: a pair is two system names, 'A,B'", param_hint="--pair")
        pairs.append((a.strip(), b.strip()))
    return pairs or None


def evaluate_cmd(
    predictions: list[Path] = typer.Option(..., "--predictions", help="Predictions JSONL of `shicheng predict` "
                                           "(repeat for several systems)."),
    cases: Path = typer.Option(..., "--cases", help="Cases JSONL, or the output folder of `shicheng curate`."),
    out: Path = typer.Option(..., "--out", file_okay=False, help="Folder for results.json and report.html."),
    judge: list[str] = typer.Option(None, "--judge", help="Judge: an OpenAI-compatible URL (with --judge-model) "
                                    "or a local model directory (repeat for a panel)."),
    judge_model: list[str] = typer.Option(None, "--judge-model", help="Model id of each URL judge, in order."),
    judge_key_env: str = typer.Option("OPENAI_API_KEY", "--judge-key-env", help="Env variable with the judge's key."),
    rubric: Path = typer.Option(None, "--rubric", dir_okay=False, help="Rubric YAML (default: the paper's 55 points)."),
    scoring: str = typer.Option("hybrid", "--scoring", help="hybrid (code computes what it can) or judge."),
    mode: str = typer.Option("auto", "--mode", help="auto, reference or reference_free."),
    pair: list[str] = typer.Option(None, "--pair", help="Systems to compare head to head, 'A,B' (repeat)."),
    train_cases: Path = typer.Option(None, "--train-cases", help="Training cases for the style model "
                                     "(default: train.jsonl beside the cases)."),
    masters_file: Path = typer.Option(None, "--masters-file", help="masters.json or a folder of master YAMLs."),
    split: str = typer.Option("test", help="Which split of a `shicheng curate` folder."),
    n_boot: int = typer.Option(2000, "--n-boot", min=1, help="Bootstrap resamples for the confidence intervals."),
    seed: int = typer.Option(0, "--seed"),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="Judge requests at once."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Score prediction files (metrics, optional judges) and write results.json and report.html."""
    from shicheng.evaluate.pipeline import evaluate

    err = Console(stderr=True)
    with clear_errors(err):
        result = evaluate(predictions=predictions, cases=cases, out=out, train_cases=train_cases,
                          judges=_judges(judge, judge_model), rubric=rubric, pairs=_pairs(pair), n_boot=n_boot,
                          seed=seed, concurrency=concurrency, progress=progress, split=split,
                          masters_file=masters_file, judge_key_env=judge_key_env, scoring=scoring, mode=mode,
                          console=err)
    console.print(f"{result.answers} answers of {len(result.systems)} system(s), {result.verdicts} verdicts, "
                  f"{result.failed} failed generations; report: {result.report_path}", soft_wrap=True, markup=False)
    for warning in result.warnings:
        console.print(f"warning: {warning}", style="yellow", soft_wrap=True, markup=False)
