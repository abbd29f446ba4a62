"""The consultation as a terminal page (rich): sections under their Chinese headings, the prescription as
a table, safety findings by level, what changed since the last visit, and the disclaimer.

Everything the model or the clinician wrote goes through `Text`, never rich markup: an answer's own
[brackets] must print as written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from shicheng.domain import DISCLAIMER, SECTIONS, Master

if TYPE_CHECKING:
    from shicheng.agent import Consultation

LEVEL_STYLE = {"error": "bold white on red", "warning": "bold yellow", "notice": "cyan"}
LEVEL_ZH = {"error": "禁忌", "warning": "警示", "notice": "提示"}


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
        console.print(Text(c.sections[spec.key]))
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


__all__ = ["render_consultation"]
