"""`shicheng demo-data` and `shicheng curate`: raw materials, then the five stage datasets and their card."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def demo_data_cmd(
    out: Path = typer.Option(Path("runs/demo/materials"), "--out", "-o", help="Folder for the raw demo materials."),
    seed: int = typer.Option(0, help="Random seed: the same seed writes byte-identical files."),
    n_cases: int = typer.Option(1600, "--n-cases", help="Number of cases to generate (the demo model "
                                 "needs about 1,500 to learn the masters; 10 at least)."),
) -> None:
    """Write the embedded demo corpus (five FICTIONAL masters, synthetic cases) as raw materials."""
    from shicheng.demo import generate_demo

    counts = generate_demo(out_dir=out, seed=seed, n_cases=n_cases)
    table = Table(title=f"demo materials -> {out}")
    table.add_column("item")
    table.add_column("count", justify="right")
    for k, v in counts.items():
        table.add_row(str(k), str(v))
    console.print(table)
    console.print("[dim]Synthetic demonstration data, fictional masters — not medical advice.[/dim]")


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
    from shicheng.curate.teacher import TeacherConfig

    teacher = None
    if teacher_url:
        if not teacher_model:
            console.print("[red]--teacher-model is required with --teacher-url[/red]")
            raise typer.Exit(2)
        teacher = TeacherConfig(url=teacher_url, model=teacher_model, api_key_env=teacher_key_env,
                                concurrency=teacher_concurrency, cache_dir=str(out / "teacher-cache"))
    result = curate(materials=materials, out_dir=out, mapping=mapping, masters_dir=masters, teacher=teacher,
                    seed=seed)
    table = Table(title=f"curation -> {out}  ({result.seconds:.1f} s)")
    for col in ("stage", "train", "validation", "test"):
        table.add_column(col, justify="right" if col != "stage" else "left")
    for stage, splits in result.card["stages"].items():
        table.add_row(stage, *(str(splits.get(s, {}).get("rows", "-")) for s in ("train", "validation", "test")))
    console.print(table)
    steps = result.card["curation"]["steps"]
    console.print("  ".join(f"{s}: in {c['inputs']} kept {c['kept']} rejected {c['rejected']}" for s, c in steps.items()))
    console.print(f"cases per split: {result.cases}; rejects: {out / 'rejects.jsonl'}; card: {out / 'README.md'}")
