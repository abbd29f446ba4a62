"""`shicheng export`: a trained stage model as a GGUF file for llama.cpp, Ollama and LM Studio (no GPU needed)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

console = Console(stderr=True)


def export_cmd(
    model: Path = typer.Option(..., "--model", file_okay=False,
                               help="Stage model directory (output of `shicheng train`, e.g. "
                                    "runs/demo/model/stage-5-master-grpo)."),
    fmt: str = typer.Option("gguf", "--format", help="Output format; gguf is the only one."),
    quant: list[str] = typer.Option(["f16"], "--quant",
                                    help="f16, bf16, f32, q8_0, q6_k, q5_k_m, q4_k_m or q4_0; repeat it (or give "
                                         "a comma list) for several files, written beside --out as STEM-QUANT.gguf. "
                                         "q4_k_m is the clinic-laptop size (~1 GB for 1.5B)."),
    out: Path = typer.Option(..., "--out", dir_okay=False, help="GGUF file to write (FILE.gguf); the masters "
                             "are copied beside it as FILE.masters.json."),
    ollama: bool = typer.Option(False, "--ollama", help="Also write FILE.Modelfile for `ollama create`."),
    threads: int = typer.Option(0, "--threads", min=0, help="Quantiser threads (0: all CPUs)."),
    as_json: bool = typer.Option(False, "--json", help="Print the written files as JSON on stdout."),
) -> None:
    """Export a stage model to GGUF (Qwen2 weights, the extended TCM tokenizer, our chat template, decoding
    defaults and masters inside), quantised by llama.cpp. Then: shicheng consult/serve --model FILE.gguf."""
    from shicheng.deploy.export import export_model
    from shicheng.deploy.metadata import DeployUnavailable

    if fmt.lower() != "gguf":
        console.print(Text(f"error: --format {fmt!r}: only gguf is supported", style="red"))
        raise typer.Exit(2)
    quants = [q for value in quant for q in value.split(",") if q.strip()]
    try:
        result = export_model(model, out, quants=quants, ollama=ollama, threads=threads, console=console)
    except DeployUnavailable as e:
        console.print(Text(f"error: {e}", style="red"), soft_wrap=True)
        raise typer.Exit(2) from e
    except (FileNotFoundError, ValueError) as e:  # ExportError is a ValueError; both name the file or option
        console.print(Text(f"error: {e}", style="red"), soft_wrap=True)
        raise typer.Exit(2) from e
    except RuntimeError as e:  # llama.cpp's quantiser failed
        console.print(Text(f"error: {e}", style="red"), soft_wrap=True)
        raise typer.Exit(1) from e
    if as_json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return
    for q, path in result.files.items():
        console.print(f"{q}: {path}")
    for path in result.masters + result.modelfiles:
        console.print(f"  {path}")
    first = next(iter(result.files.values()))
    console.print(f"done in {result.seconds:.1f} s. Run it: shicheng consult --model {first} --text \"…\"   or   "
                  f"shicheng serve --model {first}")
