"""The agent's command-line entries: `shicheng consult`, `shicheng masters`, `shicheng bench tcmcr`.

Plain typed functions; shicheng/cli.py wires them to typer options. They print a readable page with
rich (or JSON) and exit with status 2 and a one-line reason on bad input.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import typer
from openai import OpenAIError
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from shicheng.agent.backends import BackendUnavailable, is_url, load_masters, make_backend
from shicheng.agent.bench import BenchInputError, export_tcmcr
from shicheng.agent.consult import (
    Consultation,
    ConsultError,
    consult,
    read_case_file,
    read_text_case,
    resolve_master,
    visit_position,
    with_previous_prescription,
)
from shicheng.domain import DISCLAIMER, SECTIONS, Master, Task

LEVEL_STYLE = {"error": "bold white on red", "warning": "bold yellow", "notice": "cyan"}
LEVEL_ZH = {"error": "禁忌", "warning": "警示", "notice": "提示"}


@contextmanager
def _clear_errors(console: Console):
    """Bad input ends the command with status 2 and one line that names what was wrong; an endpoint that
    fails ends it with status 1."""
    try:
        yield
    except (ConsultError, BenchInputError, FileNotFoundError, ValueError, BackendUnavailable) as e:
        console.print(Text(f"error: {e}", style="red"), soft_wrap=True)
        raise typer.Exit(2) from e
    except OpenAIError as e:  # the endpoint refused or could not be reached: not the user's input
        console.print(Text(f"endpoint error: {type(e).__name__}: {e}", style="red"), soft_wrap=True)
        raise typer.Exit(1) from e


def _task(task: str) -> Task:
    try:
        return Task(task)
    except ValueError:
        raise ConsultError(f"unknown task {task!r}; tasks: {', '.join(t.value for t in Task)}") from None


def consult_command(model: str, master: str | None = None, case: Path | None = None, text: str | None = None,
                    task: str = "full_chain", pregnant: bool | None = None, sex: str | None = None,
                    age: float | None = None, as_json: bool = False, backend: str = "auto",
                    max_new_tokens: int = 1024, temperature: float = 0.0, case_id: str | None = None,
                    visit: int | None = None, model_name: str | None = None, masters_file: Path | None = None,
                    device: str = "auto", previous_prescription: str | None = None) -> Consultation:
    """Ask the model for one visit of a case in a master's voice and print the answer with safety findings.

    `model` is a model directory or an OpenAI-compatible endpoint URL (then `model_name` is the served model
    and `masters_file` a masters.json). The case is `case` (JSON Case, JSONL of Cases with `case_id`, or a
    text case record) or `text` (free text, or text with 主诉：/舌象：/脉象： headings). `visit` is 1-based
    (default: the last visit). `master` None asks with the generic prompt. `sex`, `age` and `pregnant`
    override what the case says; `previous_prescription` makes the visit a follow-up of that prescription.
    """
    console = Console()
    with _clear_errors(console):
        if (case is None) == (text is None):
            raise ConsultError("give exactly one of --case FILE or --text \"…\"")
        chosen_task = _task(task)
        masters = _masters(model, masters_file)
        if master and not masters and is_url(model):
            raise ConsultError(f"{model} is an endpoint: give the masters it knows with --masters masters.json")
        chosen_master = resolve_master(masters, master)
        if case is not None:
            the_case, facts = read_case_file(case, case_id, sex=sex, age=age, pregnant=pregnant)
            visit_index = _visit_option(visit, len(the_case.visits), the_case.id)
            if previous_prescription:
                the_case, visit_index = with_previous_prescription(the_case, visit_index, previous_prescription)
        else:
            the_case, visit_index, facts = read_text_case(text or "", sex=sex, age=age, pregnant=pregnant,
                                                          previous_prescription=previous_prescription)
            if visit is not None:
                visit_index = _visit_option(visit, len(the_case.visits), the_case.id)
        visit_index = visit_position(the_case, visit_index, chosen_task)
        engine = make_backend(model, backend=backend, model_name=model_name, device=device)
        result = consult(engine, the_case, chosen_master, chosen_task, visit_index, facts=facts,
                         max_new_tokens=max_new_tokens, temperature=temperature)
    if as_json:
        print(json.dumps(result.model_dump(mode="json"), ensure_ascii=False, indent=2))
    else:
        render_consultation(result, chosen_master, console)
    return result


def _masters(model: str, masters_file: Path | None) -> dict[str, Master]:
    """The masters of a model directory or a masters.json; a path that does not exist is an error."""
    if masters_file is not None:
        if not Path(masters_file).is_file():
            raise ConsultError(f"{masters_file}: masters file not found")
        return load_masters(masters_file)
    if not is_url(model) and not Path(model).exists():
        raise ConsultError(f"{model}: model directory not found")
    return load_masters(model)


def _visit_option(visit: int | None, n: int, case_id: str) -> int:
    """--visit is 1-based; the error says so in the same terms."""
    if visit is None:
        return -1
    if not 1 <= visit <= n:
        raise ConsultError(f"case {case_id}: no visit {visit} (--visit is 1-based; the case has {n} visit(s))")
    return visit - 1


def render_consultation(c: Consultation, master: Master | None, console: Console) -> None:
    """The answer as a page: each section under its Chinese heading, the prescription as a table, safety
    findings by level (errors on red), what changed since the last visit, and the disclaimer."""
    who = f"{master.name}（{master.school}）" if master else "通用 (generic prompt)"
    console.print(Panel(Text(f"{who} · {c.task.zh} · 第{c.visit_index + 1}诊"), title="师承 shicheng 会诊"))
    errors = [f for f in c.findings if f.level == "error"]
    if errors:
        console.print(Text(f"⚠ 处方存在 {len(errors)} 项禁忌，见下方安全提示 (safety errors below)",
                           style=LEVEL_STYLE["error"]))
    for spec in SECTIONS:
        if spec.key not in c.sections:
            continue
        console.print(Text(f"\n【{spec.zh}】", style="bold green"))
        console.print(Text(c.sections[spec.key]))  # Text: the model's brackets are not rich markup
        if spec.key == "prescription" or (spec.key == "modifications" and "prescription" not in c.sections):
            _render_prescription(c, console)
    if c.prescription is not None and not any(k in c.sections for k in ("prescription", "modifications")):
        _render_prescription(c, console)
    if c.changes is not None:
        console.print(Text(f"\n加 added: {'、'.join(c.changes['added']) or '无'}    "
                           f"去 removed: {'、'.join(c.changes['removed']) or '无'}", style="bold"))
    _render_patient(c, console)
    _render_findings(c, console)
    if c.missing:
        names = "、".join(s.zh for s in SECTIONS if s.key in c.missing)
        console.print(Text(f"\n缺少小节 missing sections: {names}", style="yellow"))
    if not c.sections:
        console.print(Text("\n(the answer had no recognisable sections; raw text:)", style="yellow"))
        console.print(Text(c.raw_text))
    seconds = c.timings.get("seconds")
    console.print(Text(f"\ntokens: prompt {c.prompt_tokens}, completion {c.completion_tokens}; "
                       f"generation {seconds if seconds is not None else '?'} s", style="dim"))
    console.print(Panel(Text(DISCLAIMER), style="yellow"))


def _render_prescription(c: Consultation, console: Console) -> None:
    rx = c.prescription
    if rx is None or not rx.herbs:
        return
    table = Table(title=f"处方 {rx.formula_name or ''}".strip(), show_lines=False)
    for col in ("药名", "基原 base", "炮制", "剂量", "克 g", "备注"):
        table.add_column(col)
    flagged = {h for f in c.findings if f.level != "notice" for h in f.herbs}
    for h in rx.herbs:
        style = "red" if h.base in flagged else None
        table.add_row(h.name or h.raw, h.base or "?", h.processing or "",
                      f"{h.dose:g}{h.unit or ''}" if h.dose is not None else "",
                      f"{h.grams:g}" if h.grams is not None else "", h.note or "", style=style)
    console.print(table)
    if rx.administration:
        console.print(Text(f"用法: {rx.administration}"))
    if c.prescription_unparsed:
        console.print(Text(f"未能识别 not read: {' | '.join(c.prescription_unparsed)}", style="yellow"))


def _render_patient(c: Consultation, console: Console) -> None:
    """The patient facts the safety check used, each with where it came from (flag, header, text, case)."""
    if not c.patient_facts:
        console.print(Text("\n患者 patient (safety check): sex, age and pregnancy unknown — pregnancy rules "
                           "not applied; give --sex/--age/--pregnant if known", style="yellow"), soft_wrap=True)
        return
    facts = "；".join(f"{f.field} {f.describe()}" for f in c.patient_facts)
    console.print(Text(f"\n患者 patient (safety check): {facts}", style="bold"), soft_wrap=True)


def _render_findings(c: Consultation, console: Console) -> None:
    summary = c.safety_summary
    if not c.findings:
        if c.prescription is not None and c.prescription.herbs:
            console.print(Text(f"\n安全检查 safety: {summary}", style="green"), soft_wrap=True)
        return
    lines = [Text(f"{LEVEL_ZH[f.level]} {f.level.upper():8} [{f.rule}] {f.message}", style=LEVEL_STYLE[f.level])
             for f in c.findings]
    if summary:
        lines.append(Text(summary))
    console.print(Panel(Group(*lines), title="安全提示 Safety findings", border_style="red" if any(
        f.level == "error" for f in c.findings) else "yellow"))


def masters_command(model: str, masters_file: Path | None = None, as_json: bool = False) -> list[Master]:
    """List the masters a trained model knows (its masters.json)."""
    console = Console()
    with _clear_errors(console):
        masters = _masters(model, masters_file)
    if as_json:
        print(json.dumps([m.model_dump(mode="json") for m in masters.values()], ensure_ascii=False, indent=2))
        return list(masters.values())
    if not masters:
        console.print(Text(f"{masters_file or model}: no masters.json; the model answers with the generic prompt "
                           "(omit --master)", style="yellow"))
        return []
    table = Table(title=f"Masters known to {model}")
    table.add_column("id", no_wrap=True)
    for col in ("name", "school 流派", "specialties", "signature formulas"):
        table.add_column(col)
    for m in masters.values():
        table.add_row(m.id, m.name + (" (fictional)" if m.fictional else ""), m.school, "、".join(m.specialties),
                      "、".join(m.signature_formulas))
    console.print(table)
    return list(masters.values())


def bench_tcmcr_command(model: str, input: Path, out: Path, batch_size: int = 8, resume: bool = True,
                        backend: str = "auto", model_name: str | None = None, max_new_tokens: int = 2048,
                        device: str = "auto") -> dict:
    """Answer every case of a TCMClinicalReason-Bench input file and write its submission JSON (resumable)."""
    console = Console(stderr=True)
    with _clear_errors(console):
        engine = make_backend(model, backend=backend, model_name=model_name, device=device)
        report = export_tcmcr(engine, input, out, batch_size=batch_size, resume=resume,
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
    return report.to_dict()


__all__ = ["bench_tcmcr_command", "consult_command", "masters_command", "render_consultation"]
