"""Generation backends: a local transformers model, a GGUF file through llama.cpp (a clinic laptop without a
GPU), or any OpenAI-compatible endpoint (vLLM to scale out; llama-server or Ollama serving a GGUF).

Which one answers is a setting (`make_backend(model, backend=...)`), not a code change: the agent, the
server, the benchmark export and the evaluation speak to `Backend` (base.py) only. A new kind of backend
subclasses it, implements its abstract methods, and gets a branch in `backend_class`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shicheng.agent.backends.base import (
    Backend,
    BackendUnavailable,
    GenerationKwargs,
    GenerationOptions,
    GenerationResult,
    PromptTooLong,
    TextStream,
    UnsupportedOption,
    check_prompt_fits,
)
from shicheng.agent.backends.llamacpp import LlamaCppBackend
from shicheng.agent.backends.openai import OpenAIBackend
from shicheng.agent.backends.transformers import LOCAL_EXTRA, TransformersBackend, require_local_packages
from shicheng.deploy.metadata import DeployUnavailable, is_gguf, masters_text
from shicheng.domain import Master, validation_message

BACKENDS = ("auto", "transformers", "llamacpp", "openai")


def is_url(model: str | Path) -> bool:
    return str(model).startswith(("http://", "https://"))


def backend_class(model: str | Path, backend: str = "auto") -> type[Backend]:
    """The kind of backend `make_backend` builds for `model` (a directory, a .gguf file or an endpoint URL),
    without building it: cheap, so a caller can check every system's options before loading any weights."""
    model = str(model)
    if backend == "auto":
        backend = "openai" if is_url(model) else "llamacpp" if is_gguf(model) else "transformers"
    if backend == "transformers":
        if is_url(model):
            raise ValueError(f"{model}: a URL needs --backend openai (transformers loads a local directory)")
        if is_gguf(model):
            raise ValueError(f"{model}: a .gguf file needs --backend llamacpp (transformers loads a model directory)")
        return TransformersBackend
    if backend == "llamacpp":
        if not is_gguf(model):
            raise ValueError(f"{model}: the llamacpp backend loads a .gguf file (write one with `shicheng export`)")
        return LlamaCppBackend
    if backend == "openai":
        if not is_url(model):
            raise ValueError(f"{model}: the openai backend needs an endpoint URL such as http://127.0.0.1:8000/v1")
        return OpenAIBackend
    raise ValueError(f"unknown backend {backend!r}: use {', '.join(BACKENDS)}")


def make_backend(model: str | Path, *, backend: str = "auto", **kw: Any) -> Backend:
    """`model` is a model directory, a .gguf file or an endpoint URL; `backend` is auto, transformers, llamacpp
    or openai (auto: a URL -> openai, a .gguf file -> llamacpp, a directory -> transformers).

    Keywords: all take `defaults` (GenerationOptions); transformers takes `device`, `dtype`; llamacpp takes
    `n_ctx`, `n_threads`; openai takes `model_name` (the served model id, default "shicheng"), `api_key_env`,
    `timeout_s`, `concurrency`.
    """
    kind = backend_class(model, backend)
    model = str(model)
    if kind is TransformersBackend:
        if not Path(model).is_dir():
            raise FileNotFoundError(f"model directory not found: {model}")
        require_local_packages()
        return TransformersBackend(model, **{k: v for k, v in kw.items() if k in ("device", "dtype", "defaults")})
    if kind is LlamaCppBackend:
        # `device` is not passed on: llama-cpp-python is built for the CPU here (a clinic laptop has no GPU)
        return LlamaCppBackend(model, **{k: v for k, v in kw.items() if k in ("n_ctx", "n_threads", "defaults")})
    return OpenAIBackend(model, kw.get("model_name") or "shicheng",
                         **{k: v for k, v in kw.items() if k in ("api_key_env", "timeout_s", "concurrency", "defaults")})


def load_masters(model_dir: str | Path) -> dict[str, Master]:
    """The masters a trained model knows (a list of Master objects); {} if absent. From a model directory's
    masters.json, a masters.json file, or for a .gguf file the FILE.masters.json beside it, else the copy in
    its metadata (shicheng.deploy.metadata)."""
    if is_url(str(model_dir)):
        return {}
    if is_gguf(model_dir):
        if not Path(model_dir).is_file():
            return {}
        try:
            found = masters_text(model_dir)
        except DeployUnavailable as e:
            raise BackendUnavailable(str(e)) from e
        return {} if found is None else parse_masters(found[0], found[1])
    path = Path(model_dir) / "masters.json" if Path(model_dir).is_dir() else Path(model_dir)
    if not path.is_file():
        return {}
    return parse_masters(path.read_text(encoding="utf-8-sig"), str(path))


def parse_masters(text: str, source: str) -> dict[str, Master]:
    """Masters from the JSON text of a masters.json; errors name `source` and the master's index."""
    from pydantic import ValidationError

    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{source}: not valid JSON ({e.msg} at line {e.lineno})") from e
    if not isinstance(data, list):
        raise ValueError(f"{source}: expected a JSON list of masters, got {type(data).__name__}")
    masters: dict[str, Master] = {}
    for i, item in enumerate(data):
        try:
            master = Master.model_validate(item)
        except ValidationError as e:
            raise ValueError(f"{source}: master [{i}]: {validation_message(e)}") from e
        if master.id in masters:
            raise ValueError(f"{source}: master [{i}]: id {master.id!r} appears twice")
        masters[master.id] = master
    return masters


__all__ = ["BACKENDS", "LOCAL_EXTRA", "Backend", "BackendUnavailable", "GenerationKwargs", "GenerationOptions",
           "GenerationResult", "LlamaCppBackend", "OpenAIBackend", "PromptTooLong", "TextStream",
           "TransformersBackend", "UnsupportedOption", "backend_class", "check_prompt_fits", "is_gguf", "is_url",
           "load_masters", "make_backend", "parse_masters", "require_local_packages"]
