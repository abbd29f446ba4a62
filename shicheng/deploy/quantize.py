"""Quantise a GGUF with llama.cpp's own quantiser (`llama_model_quantize`, through llama-cpp-python's ctypes API).

The k-quants (q4_k_m …) choose a type per tensor (q4_k_m keeps half of the attention-value and FFN-down
matrices at q6_k) and fall back to a legacy type for a tensor whose rows are not a multiple of 256 — the
tiny test models' — so only llama.cpp's implementation gives the files llama.cpp users expect. The source
must be a float GGUF (gguf_export writes F16 or BF16); metadata (tokenizer, chat template, our masters
and defaults) is copied by the quantiser as it is.

Sizes for the Qwen2.5-1.5B shape (1.54 B parameters; the 233 M-parameter embedding is tied): f16 ≈ 3.1 GB,
q8_0 ≈ 1.6 GB, q4_k_m ≈ 1.0 GB (the README's table has the measured files).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

from shicheng.deploy.gguf_export import FLOAT_TYPES
from shicheng.deploy.metadata import DEPLOY_EXTRA, DeployUnavailable, quiet_llama_logs

# Our names -> llama.cpp's LLAMA_FTYPE_* (llama.h). Float types are written by the exporter directly.
QUANT_FTYPES = {
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
}
QUANTS = (*FLOAT_TYPES, *QUANT_FTYPES)


class QuantizeError(RuntimeError):
    """llama.cpp refused to quantise a file; the message names the file and the type."""


def check_quant(name: str) -> str:
    """The quantisation name, lower-cased, or a ValueError listing the known ones."""
    quant = name.strip().lower()
    if quant not in QUANTS:
        raise ValueError(f"unknown --quant {name!r}; known: {', '.join(QUANTS)}")
    return quant


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:  # also raised when the shared library failed to build or load
        raise DeployUnavailable(f"{DEPLOY_EXTRA} ({e})") from e
    return llama_cpp


def quantize(src: str | Path, dst: str | Path, quant: str, threads: int = 0) -> Path:
    """Quantise the float GGUF `src` to `quant` (q8_0, q6_k, q5_k_m, q4_k_m, q4_0) at `dst`; threads 0 = all."""
    quant = check_quant(quant)
    if quant in FLOAT_TYPES:
        raise ValueError(f"{quant} is a float type: write it with the exporter, not the quantiser")
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"GGUF file not found: {src}")
    llama_cpp = _llama_cpp()
    quiet_llama_logs()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_FTYPES[quant])
    params.nthread = threads
    tmp = dst.with_name(dst.name + ".part")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise QuantizeError(f"llama.cpp could not quantise {src} to {quant} (status {rc})")
    tmp.replace(dst)
    return dst


__all__ = ["QUANTS", "QUANT_FTYPES", "QuantizeError", "check_quant", "quantize"]
