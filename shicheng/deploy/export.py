"""`shicheng export`: a stage model directory -> GGUF files (one per quantisation), the masters beside each,
and optionally an Ollama Modelfile.

One quantisation writes exactly `--out`; several write `STEM-QUANT.gguf` beside it. Quantised files are made
from a float file (f16, or bf16 for a bf16 model), which is the requested float file when there is one and
a temporary file otherwise. Everything is checked (the model directory, the quantisation names, the out
path) before the first byte is written.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shicheng.deploy.gguf_export import (
    DEFAULT_N_CTX,
    FLOAT_TYPES,
    ExportError,
    generation_defaults,
    read_model,
    source_float_type,
    write_gguf,
)
from shicheng.deploy.metadata import beside_masters_path
from shicheng.deploy.ollama import write_modelfile
from shicheng.deploy.quantize import check_quant, quantize
from shicheng.prompts import system_prompt


@dataclass
class ExportResult:
    files: dict[str, Path]  # quantisation -> GGUF file
    masters: list[Path] = field(default_factory=list)
    modelfiles: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"files": {q: str(p) for q, p in self.files.items()}, "masters": [str(p) for p in self.masters],
                "modelfiles": [str(p) for p in self.modelfiles], "seconds": round(self.seconds, 1)}


def output_paths(out: str | Path, quants: list[str]) -> dict[str, Path]:
    out = Path(out)
    if out.suffix.lower() != ".gguf":
        raise ExportError(f"--out {out}: the file name must end in .gguf")
    if len(quants) == 1:
        return {quants[0]: out}
    return {q: out.with_name(f"{out.stem}-{q}.gguf") for q in quants}


def _write_float(model_dir: Path, dst: Path, float_type: str, console: Console | None) -> Path:
    if console is None:
        return write_gguf(model_dir, dst, float_type)
    with Progress(TextColumn(f"writing {dst.name} ({float_type})"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[name]}"), TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("tensors", total=None, name="")
        path = write_gguf(model_dir, dst, float_type,
                          progress=lambda i, n, name: bar.update(task, completed=i, total=n, name=name))
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return path


def export_model(model_dir: str | Path, out: str | Path, quants: list[str] | tuple[str, ...] = ("f16",),
                 ollama: bool = False, threads: int = 0, console: Console | None = None) -> ExportResult:
    """Export `model_dir` to GGUF at `out` in each of `quants`; see the module docstring for the file names."""
    started = time.perf_counter()
    chosen = list(dict.fromkeys(check_quant(q) for q in quants))
    if not chosen:
        raise ExportError("give at least one --quant")
    model_dir = Path(model_dir)
    info = read_model(model_dir)  # fails here, before anything is written, on a directory we cannot convert
    paths = output_paths(out, chosen)
    result = ExportResult(files={})
    for quant in (q for q in chosen if q in FLOAT_TYPES):
        result.files[quant] = _write_float(model_dir, paths[quant], quant, console)
    wanted = [q for q in chosen if q not in FLOAT_TYPES]
    if wanted:
        base_type = source_float_type(info.config)
        base = next((result.files[t] for t in (base_type, "f16", "bf16", "f32") if t in result.files), None)
        temporary = base is None
        if temporary:
            base = _write_float(model_dir, paths[wanted[0]].with_name(f".{paths[wanted[0]].stem}.{base_type}.gguf"),
                                base_type, console)
        try:
            for quant in wanted:
                t = time.perf_counter()
                if console:
                    console.print(f"quantising to {quant} with llama.cpp …")
                result.files[quant] = quantize(base, paths[quant], quant, threads=threads)
                if console:
                    size = paths[quant].stat().st_size / 1e6
                    console.print(f"wrote {paths[quant]} ({size:.1f} MB, {time.perf_counter() - t:.1f} s)")
        finally:
            if temporary:
                base.unlink(missing_ok=True)
    result.files = {q: result.files[q] for q in chosen}  # in the order asked for
    masters = model_dir / "masters.json"
    defaults = generation_defaults(model_dir)
    n_ctx = min(DEFAULT_N_CTX, info.config.get("max_position_embeddings") or DEFAULT_N_CTX)
    for path in result.files.values():
        if masters.is_file():
            result.masters.append(Path(shutil.copyfile(masters, beside_masters_path(path))))
        if ollama:
            result.modelfiles.append(write_modelfile(path, defaults, n_ctx, system=system_prompt(None)))
    result.seconds = time.perf_counter() - started
    return result


__all__ = ["ExportResult", "export_model", "output_paths"]
