"""`shicheng` command line: one sub-command per step of the pipeline (DESIGN.md §3)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from shicheng.domain import DISCLAIMER, Patient

app = typer.Typer(
    help="师承 shicheng: curate a master physician's records, train one small model in five stages, serve and "
         "evaluate it. " + DISCLAIMER,
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
LEVEL_STYLE = {"error": "bold red", "warning": "yellow", "notice": "cyan"}


def _knowledge(units: Path | None):
    from shicheng.knowledge import KnowledgeError, load_knowledge

    try:
        return load_knowledge(units_file=units) if units else load_knowledge()
    except KnowledgeError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from e


@app.command("check-prescription")
def check_prescription(
    text: str = typer.Argument(None, help="Prescription text, e.g. '法半夏10黄连5黄芩10干姜6 炙甘草6'. Use - for stdin."),
    file: Path = typer.Option(None, "--file", "-f", exists=True, dir_okay=False,
                              help="Read the prescription (or a whole case record) from this UTF-8 file."),
    pregnant: bool = typer.Option(False, "--pregnant", help="The patient is pregnant: check 妊娠禁用/慎用."),
    sex: str = typer.Option("unknown", help="Patient sex: male, female or unknown."),
    age: float = typer.Option(None, help="Patient age in years."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    units: Path = typer.Option(None, "--units", exists=True, dir_okay=False,
                               help="YAML unit table overriding the default (1 钱 = 3 g, 1 两 = 30 g)."),
) -> None:
    """Parse a prescription into herbs, doses and grams, and report safety findings (十八反, 十九畏, pregnancy, dose),
    with the herbs that were not dose-checked and the names that were not recognised."""
    from shicheng.prescription import parse_prescription
    from shicheng.safety import safety_report

    if file is not None:
        text = file.read_text(encoding="utf-8-sig")
    elif text in (None, "-"):
        text = sys.stdin.read()
    if not text or not text.strip():
        console.print("[red]No prescription text: pass TEXT, --file F, or pipe it on stdin.[/red]")
        raise typer.Exit(2)
    kb = _knowledge(units)
    parsed = parse_prescription(text, kb)
    report = safety_report(parsed.prescription, Patient(sex=sex, age=age, pregnant=pregnant), kb, parsed.unparsed)
    if as_json:
        out = parsed.to_dict()
        out["findings"] = [f.model_dump(exclude_none=True) for f in report.findings]
        out["not_dose_checked"] = report.not_dose_checked
        out["unrecognised"] = report.unrecognised
        out["summary"] = report.summary()
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return
    table = Table(title=f"处方 {parsed.prescription.formula_name or ''}".strip(), show_lines=False)
    for col in ("written", "name", "base", "processing", "dose", "unit", "grams", "note"):
        table.add_column(col)
    for h in parsed.herbs:
        table.add_row(h.raw, h.name or "[red]?[/red]", h.base or "[red]unknown[/red]", h.processing or "",
                      f"{h.dose:g}" if h.dose is not None else "", h.unit or "",
                      f"{h.grams:g}" if h.grams is not None else "", h.note or "")
    console.print(table)
    if parsed.prescription.administration:
        console.print(f"用法: {parsed.prescription.administration}")
    if parsed.unparsed:
        console.print(f"[yellow]Could not read:[/yellow] {' | '.join(parsed.unparsed)}")
    for f in report.findings:
        console.print(f"[{LEVEL_STYLE[f.level]}]{f.level.upper():8}[/] {f.message}")
    complete = not (report.findings or report.not_dose_checked or report.unrecognised) and parsed.herbs
    # markup=False: the summary quotes the record's own text, which may hold [brackets].
    console.print(report.summary(), style="green" if complete else "yellow", markup=False)
    console.print(f"[dim]{DISCLAIMER}[/dim]")


@app.command("herb")
def herb(
    name: str = typer.Argument(..., help="A herb, alias, processed form, formula or merged name (简/繁)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show what the lexicon knows about a name: canonical herb, aliases, processing, safety rules, dose range."""
    kb = _knowledge(None)
    info = kb.describe(name)
    if info is None:
        console.print(f"[red]'{name}' is not in the lexicon[/red] (herbs, aliases, processed forms, formulas).")
        raise typer.Exit(1)
    if info["kind"] == "herb":
        # What a coated form brings with it (朱茯神 -> 朱砂), which the safety check also applies.
        info["components"] = list(kb.components.get(info["name"], ()))
    if as_json:
        print(json.dumps(info, ensure_ascii=False, indent=2))
        return
    table = Table(show_header=False, title=name)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in info.items():
        if isinstance(value, (list, dict)):
            value = json.dumps(value, ensure_ascii=False)
        table.add_row(key, "" if value is None else str(value))
    console.print(table)


@app.command("demo-data")
def demo_data(
    out: Path = typer.Option(Path("runs/demo/materials"), "--out", "-o", help="Folder for the raw demo materials."),
    seed: int = typer.Option(0, help="Random seed: the same seed writes byte-identical files."),
    n_cases: int = typer.Option(450, "--n-cases", help="Number of cases to generate (at least 400 for the demo)."),
) -> None:
    """Write the embedded demo corpus (five FICTIONAL masters, synthetic cases) as raw materials."""
    from shicheng.curate.demo.generator import generate_demo

    counts = generate_demo(out, seed=seed, n_cases=n_cases)
    table = Table(title=f"demo materials -> {out}")
    table.add_column("item")
    table.add_column("count", justify="right")
    for k, v in counts.items():
        table.add_row(str(k), str(v))
    console.print(table)
    console.print("[dim]Synthetic demonstration data, fictional masters — not medical advice.[/dim]")


@app.command("curate")
def curate_cmd(
    materials: list[Path] = typer.Argument(..., exists=True, help="Files or folders: JSONL cases, CSV/XLSX exports, "
                                           "text case records, books/lectures (txt, md, docx, pdf); masters/*.yaml."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for the stage datasets and the card."),
    mapping: Path = typer.Option(None, "--mapping", exists=True, dir_okay=False,
                                 help="YAML column mapping for CSV/XLSX (default: mapping.yaml beside the file)."),
    masters: Path = typer.Option(None, "--masters", exists=True, file_okay=False, help="Folder of master YAML files."),
    teacher_url: str = typer.Option(None, "--teacher-url", help="OpenAI-compatible base URL of the teacher model; "
                                    "without it the offline composer writes the reasoning sections."),
    teacher_model: str = typer.Option(None, "--teacher-model", help="Teacher model name at that endpoint."),
    teacher_key_env: str = typer.Option("OPENAI_API_KEY", "--teacher-key-env", help="Env variable holding the key."),
    teacher_concurrency: int = typer.Option(4, "--teacher-concurrency", min=1, help="Concurrent teacher calls."),
    seed: int = typer.Option(0, help="Seed for the split and the balancing."),
) -> None:
    """Curate raw materials into the five stage datasets with a dataset card and a rejects file."""
    from shicheng.curate.pipeline import curate

    teacher = None
    if teacher_url:
        from shicheng.curate.teacher import TeacherConfig

        if not teacher_model:
            console.print("[red]--teacher-model is required with --teacher-url[/red]")
            raise typer.Exit(2)
        teacher = TeacherConfig(url=teacher_url, model=teacher_model, api_key_env=teacher_key_env,
                                concurrency=teacher_concurrency, cache_dir=str(out / "teacher-cache"))
    result = curate(materials, out, mapping=mapping, masters_dir=masters, teacher=teacher, seed=seed)
    table = Table(title=f"curation -> {out}  ({result.seconds:.1f} s)")
    for col in ("stage", "train", "validation", "test"):
        table.add_column(col, justify="right" if col != "stage" else "left")
    for stage, splits in result.card["stages"].items():
        table.add_row(stage, *(str(splits.get(s, {}).get("rows", "-")) for s in ("train", "validation", "test")))
    console.print(table)
    steps = result.card["curation"]["steps"]
    console.print("  ".join(f"{s}: in {c['inputs']} kept {c['kept']} rejected {c['rejected']}" for s, c in steps.items()))
    console.print(f"cases per split: {result.cases}; rejects: {out / 'rejects.jsonl'}; card: {out / 'README.md'}")


@app.command("train")
def train_cmd(
    config: Path = typer.Option(..., "--config", "-c", exists=True, dir_okay=False, help="Training recipe YAML."),
    stages: str = typer.Option(None, "--stages", help="Run only these stages, e.g. 3-5 or 2 (earlier ones must be done)."),
    resume: bool = typer.Option(True, "--resume/--no-resume",
                                help="Resume a stage killed mid-way from its last checkpoint (default) or restart it."),
) -> None:
    """Train the five-stage curriculum; finished stages are skipped, killed ones resume."""
    from shicheng.train.runner import train

    try:
        train(config, stages=stages, resume=resume)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from e


@app.command("compare-stages")
def compare_stages_cmd(
    data: Path = typer.Option(..., "--data", exists=True, file_okay=False, help="Output folder of `shicheng curate`."),
    model: list[Path] = typer.Option(..., "--model", exists=True, file_okay=False, help="Stage model dir (repeat)."),
    split: str = typer.Option("test", help="Which split of stage5_rl to answer."),
    limit: int = typer.Option(None, help="Answer only the first N prompts."),
    max_new_tokens: int = typer.Option(768, "--max-new-tokens"),
    repetition_penalty: float = typer.Option(1.15, "--repetition-penalty", help="Same decoding for every model."),
    no_repeat_ngram: int = typer.Option(8, "--no-repeat-ngram", help="Block repeated n-grams of this many tokens."),
    out: Path = typer.Option(None, "--out", help="Write the JSON here as well."),
) -> None:
    """Base-herb F1, syndrome, format, safety and master attribution of stage models on held-out prompts."""
    from shicheng.train.compare import compare_stages

    result = compare_stages(data, model, split=split, limit=limit, max_new_tokens=max_new_tokens,
                            repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram)
    text = json.dumps(result, ensure_ascii=False, indent=2)
    if out:
        out.write_text(text, encoding="utf-8")
    table = Table(title=f"stage comparison on {split} ({result['gold_answers']['n']} prompts)")
    for col in ("model", "herb F1", "syndrome F1", "format", "safety", "master attribution"):
        table.add_column(col)
    for name, r in [("gold answers", result["gold_answers"]), *result["models"].items()]:
        table.add_row(Path(name).name, *(f"{r[k]:.3f}" for k in ("herb_f1", "syndrome_f1", "format", "safety",
                                                                  "master_attribution")))
    console.print(table)


bench_app = typer.Typer(help="Benchmark exports.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@app.command("consult")
def consult_cmd(
    model: str = typer.Option(..., "--model", help="Model directory, or an OpenAI-compatible endpoint URL."),
    master: str = typer.Option(None, "--master", help="Master id (see `shicheng masters`); omit for generic."),
    case: Path = typer.Option(None, "--case", dir_okay=False,
                              help="Case file: JSON Case, JSONL of Cases (with --case-id), or a text record."),
    text: str = typer.Option(None, "--text", help="Case as text: free text or 主诉：/舌象：/脉象： lines."),
    task: str = typer.Option("full_chain", "--task",
                             help="full_chain, etiology_pathogenesis, syndrome, treatment_principle, "
                                  "prescription, prescription_explanation, modification, advice."),
    pregnant: bool = typer.Option(None, "--pregnant/--not-pregnant",
                                  help="The patient is (or is not) pregnant; overrides what the case text says."),
    sex: str = typer.Option(None, "--sex", help="male or female (overrides the case)."),
    age: float = typer.Option(None, "--age", help="Age in years (overrides the case)."),
    previous_prescription: str = typer.Option(None, "--previous-prescription",
                                              help="Follow-up: the prescription the patient took, e.g. "
                                                   "'柴胡10g 白芍15g 甘草6g'."),
    as_json: bool = typer.Option(False, "--json", help="Print the Consultation as JSON."),
    backend: str = typer.Option("auto", "--backend", help="auto, transformers or openai."),
    max_new_tokens: int = typer.Option(1024, "--max-new-tokens", min=1),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0),
    case_id: str = typer.Option(None, "--case-id", help="Which case of a multi-case file."),
    visit: int = typer.Option(None, "--visit", min=1, help="Visit to answer, 1-based (default: the last)."),
    model_name: str = typer.Option(None, "--model-name", help="Served model id for an endpoint URL."),
    masters_file: Path = typer.Option(None, "--masters", dir_okay=False,
                                      help="masters.json to use (default: the model directory's)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 …"),
) -> None:
    """Answer a case in a master's voice; the prescription is safety-checked and findings shown."""
    from shicheng.agent.cli_commands import consult_command

    consult_command(model, master, case, text, task, pregnant, sex, age, as_json, backend, max_new_tokens,
                    temperature, case_id, visit, model_name, masters_file, device, previous_prescription)


@app.command("masters")
def masters_cmd(
    model: str = typer.Option(..., "--model", help="Model directory (reads its masters.json)."),
    masters_file: Path = typer.Option(None, "--masters", dir_okay=False, help="A masters.json instead."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the masters a trained model knows."""
    from shicheng.agent.cli_commands import masters_command

    masters_command(model, masters_file, as_json)


@bench_app.command("tcmcr")
def bench_tcmcr_cmd(
    model: str = typer.Option(..., "--model", help="Model directory, or an OpenAI-compatible endpoint URL."),
    input: Path = typer.Option(..., "--input", exists=True, dir_okay=False,
                               help="TCMClinicalReason-Bench input JSON (id, instruction, input)."),
    out: Path = typer.Option(..., "--out", dir_okay=False, help="Submission JSON to write."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Skip ids already in OUT.partial.jsonl."),
    backend: str = typer.Option("auto", "--backend", help="auto, transformers or openai."),
    model_name: str = typer.Option(None, "--model-name", help="Served model id for an endpoint URL."),
    max_new_tokens: int = typer.Option(2048, "--max-new-tokens", min=1),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Answer every TCMClinicalReason-Bench case and write its seven-key submission file."""
    from shicheng.agent.cli_commands import bench_tcmcr_command

    bench_tcmcr_command(model, input, out, batch_size, resume, backend, model_name, max_new_tokens, device)


@app.command("serve")
def serve_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Trained model directory (output of `shicheng train`), "
                              "or the URL of an OpenAI-compatible endpoint such as vLLM (with --backend-model)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on. Any address but loopback "
                             "needs --api-key-env (or --insecure)."),
    insecure: bool = typer.Option(False, "--insecure", help="Allow a non-loopback --host without an API key "
                                  "(anyone who reaches the address can use the model)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    api_key_env: str = typer.Option(None, "--api-key-env", help="Environment variable holding the API key that "
                                    "clients must send as 'Authorization: Bearer <key>'."),
    backend: str = typer.Option("auto", "--backend", help="auto (directory -> transformers, URL -> openai), "
                                "transformers or openai."),
    masters: Path = typer.Option(None, "--masters", exists=True, help="masters.json or a folder of master YAML "
                                 "files (default: masters.json in the model directory)."),
    backend_model: str = typer.Option(None, "--backend-model", help="Model name at the endpoint (openai backend)."),
    backend_key_env: str = typer.Option("OPENAI_API_KEY", "--backend-key-env",
                                        help="Environment variable with the endpoint's key (openai backend)."),
    max_queue: int = typer.Option(8, "--max-queue", min=0, help="Requests that may wait for the model; "
                                  "more are refused with 429 and Retry-After."),
    concurrency: int = typer.Option(1, "--concurrency", min=1, help="Generations at once; raise it only for a "
                                    "batching endpoint such as vLLM."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (transformers backend)."),
    log_patient_text: bool = typer.Option(False, "--log-patient-text", help="Also log case and answer texts "
                                          "(default: method, path, status, latency and token counts only)."),
    chat_safety_notice: bool = typer.Option(True, "--chat-safety-notice/--no-chat-safety-notice",
                                            help="Append a short safety notice to chat answers that hold a "
                                                 "prescription (a request can turn it off: safety_notice=false)."),
) -> None:
    """Serve a model: OpenAI-compatible /v1/chat/completions (one model id per master), /v1/consult, and the
    clinician web page at /."""
    from shicheng.serve.cli_command import ServeError, serve_command

    try:
        serve_command(model, host=host, port=port, api_key_env=api_key_env, backend=backend, max_queue=max_queue,
                      log_patient_text=log_patient_text, masters=masters, backend_model=backend_model,
                      backend_key_env=backend_key_env, concurrency=concurrency, device=device,
                      insecure=insecure, chat_safety_notice=chat_safety_notice)
    except ServeError as e:
        console.print(str(e), style="red", markup=False, soft_wrap=True)  # "[local]" is not rich markup
        raise typer.Exit(2) from e


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
