"""`shicheng check-prescription` and `shicheng herb`: the knowledge base and the safety check, by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from shicheng.domain import DISCLAIMER, Patient
from shicheng.knowledge import Knowledge, KnowledgeError, load_knowledge
from shicheng.prescription import ParsedPrescription, parse_prescription
from shicheng.safety import SafetyReport, safety_report

console = Console()
LEVEL_STYLE = {"error": "bold red", "warning": "yellow", "notice": "cyan"}


def _knowledge(units: Path | None) -> Knowledge:
    try:
        return load_knowledge(units_file=units) if units else load_knowledge()
    except KnowledgeError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from e


def check_prescription_cmd(
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
    if file is not None:
        text = file.read_text(encoding="utf-8-sig")
    elif text in (None, "-"):
        text = sys.stdin.read()
    if not text or not text.strip():
        console.print("[red]No prescription text: pass TEXT, --file F, or pipe it on stdin.[/red]")
        raise typer.Exit(2)
    kb = _knowledge(units)
    parsed = parse_prescription(text=text, kb=kb)
    report = safety_report(rx=parsed.prescription, patient=Patient(sex=sex, age=age, pregnant=pregnant), kb=kb,
                           unparsed=parsed.unparsed)
    if as_json:
        print(json.dumps(_report_json(parsed=parsed, report=report), ensure_ascii=False, indent=2))
    else:
        _print_report(parsed=parsed, report=report)


def _report_json(*, parsed: ParsedPrescription, report: SafetyReport) -> dict:
    out = parsed.to_dict()
    out["findings"] = [f.model_dump(exclude_none=True) for f in report.findings]
    out["not_dose_checked"] = report.not_dose_checked
    out["unrecognised"] = report.unrecognised
    out["summary"] = report.summary()
    return out


def _print_report(*, parsed: ParsedPrescription, report: SafetyReport) -> None:
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


def herb_cmd(
    name: str = typer.Argument(..., help="A herb, alias, processed form, formula or merged name (简/繁)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show what the lexicon knows about a name: canonical herb, aliases, processing, safety rules, dose range."""
    kb = _knowledge(None)
    info = kb.describe(word=name)
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
