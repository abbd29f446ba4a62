"""`shicheng consult`, `shicheng masters` and `shicheng tcmcr`: ask a trained model (a model directory or an
OpenAI-compatible endpoint) the way a master would be asked.

They print a readable page with rich (or JSON) and end with status 2 and one line that names what was
wrong on bad input, status 1 when the endpoint fails (cli.errors).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from shicheng.cli.errors import clear_errors
from shicheng.domain import Case, Master, Task

if TYPE_CHECKING:
    from shicheng.records import PatientFact

# The agent (and with it the openai client, ~1 s to import) is imported by the commands that use it, so
# that `shicheng herb` or `shicheng --help` start at once.


def _task(task: str) -> Task:
    from shicheng.agent import ConsultError

    try:
        return Task(task)
    except ValueError:
        raise ConsultError(f"unknown task {task!r}; tasks: {', '.join(t.value for t in Task)}") from None


def _masters(*, model: str, masters_file: Path | None) -> dict[str, Master]:
    """The masters of a model directory or a masters.json; a path that does not exist is an error."""
    from shicheng.agent import ConsultError, is_url, load_masters

    if masters_file is not None:
        if not Path(masters_file).is_file():
            raise ConsultError(f"{masters_file}: masters file not found")
        return load_masters(model_dir=masters_file)
    if not is_url(model) and not Path(model).exists():
        raise ConsultError(f"{model}: model {'file' if model.lower().endswith('.gguf') else 'directory'} not found")
    return load_masters(model_dir=model)


def _visit_option(visit: int | None, n: int, case_id: str) -> int:
    """--visit is 1-based; the error says so in the same terms."""
    from shicheng.agent import ConsultError

    if visit is None:
        return -1
    if not 1 <= visit <= n:
        raise ConsultError(f"case {case_id}: no visit {visit} (--visit is 1-based; the case has {n} visit(s))")
    return visit - 1


def _case_to_answer(*, case: Path | None, text: str | None, case_id: str | None, visit: int | None,
                    task: Task, sex: str | None, age: float | None, pregnant: bool | None,
                    previous_prescription: str | None) -> tuple[Case, int, list[PatientFact]]:
    """(the case, the 0-based visit to answer, the patient facts) from --case or --text and the overrides."""
    from shicheng.agent import read_case_file, read_text_case, with_previous_prescription
    from shicheng.agent.consult import visit_position

    if case is not None:
        the_case, facts = read_case_file(path=case, case_id=case_id, sex=sex, age=age, pregnant=pregnant)
        visit_index = _visit_option(visit, len(the_case.visits), the_case.id)
        if previous_prescription:
            the_case, visit_index = with_previous_prescription(case=the_case, visit_index=visit_index,
                                                               prescription=previous_prescription)
    else:
        the_case, visit_index, facts = read_text_case(text=text or "", sex=sex, age=age, pregnant=pregnant,
                                                      previous_prescription=previous_prescription)
        if visit is not None:
            visit_index = _visit_option(visit, len(the_case.visits), the_case.id)
    return the_case, visit_position(case=the_case, visit_index=visit_index, task=task), facts


def consult_cmd(
    model: str = typer.Option(..., "--model", help="Model directory, a .gguf file (`shicheng export`), or an "
                              "OpenAI-compatible endpoint URL (vLLM, llama-server, Ollama)."),
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
    backend: str = typer.Option("auto", "--backend", help="auto, transformers, llamacpp or openai."),
    max_new_tokens: int = typer.Option(1024, "--max-new-tokens", min=1),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0),
    case_id: str = typer.Option(None, "--case-id", help="Which case of a multi-case file."),
    visit: int = typer.Option(None, "--visit", min=1, help="Visit to answer, 1-based (default: the last)."),
    model_name: str = typer.Option(None, "--model-name", help="Served model id for an endpoint URL."),
    masters_file: Path = typer.Option(None, "--masters", dir_okay=False,
                                      help="masters.json to use (default: the model directory's)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 …"),
    guide: bool = typer.Option(None, "--guide/--no-guide", help="Section-guided decoding: the answer writes the "
                               "task's sections in order (default: what the model was trained with)."),
) -> None:
    """Answer a case in a master's voice; the prescription is safety-checked and findings shown."""
    from shicheng.agent import ConsultError, consult, is_url, make_backend, resolve_master
    from shicheng.cli.render import render_consultation

    console = Console()
    with clear_errors(console):
        if (case is None) == (text is None):
            raise ConsultError("give exactly one of --case FILE or --text \"…\"")
        chosen_task = _task(task)
        masters = _masters(model=model, masters_file=masters_file)
        if master and not masters and is_url(model):
            raise ConsultError(f"{model} is an endpoint: give the masters it knows with --masters masters.json")
        chosen_master = resolve_master(masters=masters, master_id=master)
        the_case, visit_index, facts = _case_to_answer(
            case=case, text=text, case_id=case_id, visit=visit, task=chosen_task, sex=sex, age=age,
            pregnant=pregnant, previous_prescription=previous_prescription)
        engine = make_backend(model=model, backend=backend, model_name=model_name, device=device)
        result = consult(backend=engine, case=the_case, master=chosen_master, task=chosen_task,
                         visit_index=visit_index, facts=facts, guide=guide, max_new_tokens=max_new_tokens,
                         temperature=temperature)
    if as_json:
        print(json.dumps(result.model_dump(mode="json"), ensure_ascii=False, indent=2))
    else:
        render_consultation(result, chosen_master, console)


def masters_cmd(
    model: str = typer.Option(..., "--model", help="Model directory (reads its masters.json) or a .gguf file "
                              "(FILE.masters.json beside it, else the copy inside it)."),
    masters_file: Path = typer.Option(None, "--masters", dir_okay=False, help="A masters.json instead."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the masters a trained model knows."""
    console = Console()
    with clear_errors(console):
        masters = _masters(model=model, masters_file=masters_file)
    if as_json:
        print(json.dumps([m.model_dump(mode="json") for m in masters.values()], ensure_ascii=False, indent=2))
        return
    if not masters:
        console.print(Text(f"{masters_file or model}: no masters.json; the model answers with the generic prompt "
                           "(omit --master)", style="yellow"))
        return
    table = Table(title=f"Masters known to {model}")
    table.add_column("id", no_wrap=True)
    for col in ("name", "school 流派", "specialties", "signature formulas"):
        table.add_column(col)
    for m in masters.values():
        table.add_row(m.id, m.name + (" (fictional)" if m.fictional else ""), m.school, "、".join(m.specialties),
                      "、".join(m.signature_formulas))
    console.print(table)


def tcmcr_cmd(
    model: str = typer.Option(..., "--model", help="Model directory, a .gguf file (`shicheng export`), or an "
                              "OpenAI-compatible endpoint URL (vLLM, llama-server, Ollama)."),
    input: Path = typer.Option(..., "--input", exists=True, dir_okay=False,
                               help="TCMClinicalReason-Bench input JSON (id, instruction, input)."),
    out: Path = typer.Option(..., "--out", dir_okay=False, help="Submission JSON to write."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Skip ids already in OUT.partial.jsonl."),
    backend: str = typer.Option("auto", "--backend", help="auto, transformers, llamacpp or openai."),
    model_name: str = typer.Option(None, "--model-name", help="Served model id for an endpoint URL."),
    max_new_tokens: int = typer.Option(2048, "--max-new-tokens", min=1),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Answer every TCMClinicalReason-Bench case and write its seven-key submission file."""
    from shicheng.agent import make_backend
    from shicheng.agent.tcmcr import export_tcmcr

    console = Console(stderr=True)
    with clear_errors(console):
        # An endpoint gets the batch as concurrent requests (vLLM batches them).
        engine = make_backend(model=model, backend=backend, model_name=model_name, device=device,
                              concurrency=batch_size)
        report = export_tcmcr(backend=engine, input_path=input, out_path=out, batch_size=batch_size, resume=resume,
                              max_new_tokens=max_new_tokens, console=console)
    console.print(f"wrote {report.total} answers to {report.out} ({report.answered} new, {report.resumed} resumed) "
                  f"in {report.seconds:.1f} s", soft_wrap=True)
    if report.incomplete:
        console.print(Text(f"{len(report.incomplete)} answer(s) lacked a section:", style="yellow"))
        for row in report.incomplete[:20]:
            console.print(Text(f"  {row['id']}: {', '.join(row['missing'])}", style="yellow"), soft_wrap=True)
        if len(report.incomplete) > 20:
            console.print(Text(f"  … {len(report.incomplete) - 20} more", style="yellow"))
    console.print(f"report: {report.out}.report.json", soft_wrap=True)
