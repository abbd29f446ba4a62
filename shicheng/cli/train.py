"""`shicheng train`: the five-stage curriculum from a recipe YAML."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()


def train_cmd(
    config: Path = typer.Option(..., "--config", "-c", exists=True, dir_okay=False, help="Training recipe YAML."),
    stages: str = typer.Option(None, "--stages", help="Run only these stages, e.g. 3-5 or 2 (earlier ones must be done)."),
    resume: bool = typer.Option(True, "--resume/--no-resume",
                                help="Resume a stage killed mid-way from its last checkpoint (default) or restart it."),
) -> None:
    """Train the five-stage curriculum; finished stages are skipped, killed ones resume."""
    from shicheng.train.runner import train

    try:
        train(config=config, stages=stages, resume=resume)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from e
