"""The embedded demo corpus: five FICTIONAL masters, a syndrome table, and a generator of raw materials.

Everything here is synthetic demonstration data (合成演示数据), not medical advice. `make demo` runs it
through the same importers as real materials: `generate_demo(out_dir)` writes plain-text records, a CSV
with its column mapping, and treatises.
"""

from __future__ import annotations

from pathlib import Path

from shicheng.domain import Master, load_master_files

DEMO_DIR = Path(__file__).parent


def masters_dir() -> Path:
    """The folder of the demo masters' YAML files (one file per fictional master)."""
    return DEMO_DIR / "masters"


def load_demo_masters() -> dict[str, Master]:
    """The five fictional demo masters by id."""
    return load_master_files(masters_dir())


def generate_demo(out_dir: str | Path, seed: int = 0, n_cases: int | None = None) -> dict:
    """Write the demo raw materials into out_dir; returns counts (see generator.generate_demo)."""
    from shicheng.demo.generator import DEFAULT_CASES
    from shicheng.demo.generator import generate_demo as _generate

    return _generate(out_dir, seed=seed, n_cases=n_cases or DEFAULT_CASES)


__all__ = ["DEMO_DIR", "generate_demo", "load_demo_masters", "masters_dir"]
