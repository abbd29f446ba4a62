"""Generation backends: a local transformers model, or any OpenAI-compatible endpoint (vLLM to scale out).

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
from shicheng.agent.backends.openai import OpenAIBackend
from shicheng.agent.backends.transformers import LOCAL_EXTRA, TransformersBackend, require_local_packages
from shicheng.domain import Master, validation_message


def is_url(model: str | Path) -> bool:
    return str(model).startswith(("http://", "https://"))


def backend_class(model: str | Path, backend: str = "auto") -> type[Backend]:
    """The kind of backend `make_backend` builds for `model` (a directory or an endpoint URL), without
    building it: cheap, so a caller can check every system's options before loading any weights."""
    model = str(model)
    if backend == "auto":
        backend = "openai" if is_url(model) else "transformers"
    if backend == "transformers":
        if is_url(model):
            raise ValueError(f"{model}: a URL needs --backend openai (transformers loads a local directory)")
        return TransformersBackend
    if backend == "openai":
        if not is_url(model):
            raise ValueError(f"{model}: the openai backend needs an endpoint URL such as http://127.0.0.1:8000/v1")
        return OpenAIBackend
    raise ValueError(f"unknown backend {backend!r}: use auto, transformers or openai")


def make_backend(model: str | Path, *, backend: str = "auto", **kw: Any) -> Backend:
    """`model` is a model directory or an endpoint URL; `backend` is auto, transformers or openai.

    Keywords: both take `defaults` (GenerationOptions); transformers takes `device`, `dtype`; openai takes
    `model_name` (the served model id, default "shicheng"), `api_key_env`, `timeout_s`, `concurrency`.
    """
    kind = backend_class(model, backend)
    model = str(model)
    if kind is TransformersBackend:
        if not Path(model).is_dir():
            raise FileNotFoundError(f"model directory not found: {model}")
        require_local_packages()
        return TransformersBackend(model, **{k: v for k, v in kw.items() if k in ("device", "dtype", "defaults")})
    return OpenAIBackend(model, kw.get("model_name") or "shicheng",
                         **{k: v for k, v in kw.items() if k in ("api_key_env", "timeout_s", "concurrency", "defaults")})


def load_masters(model_dir: str | Path) -> dict[str, Master]:
    """The masters a trained model knows, from its masters.json (a list of Master objects); {} if absent."""
    from pydantic import ValidationError

    if is_url(str(model_dir)):
        return {}
    path = Path(model_dir) / "masters.json" if Path(model_dir).is_dir() else Path(model_dir)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of masters, got {type(data).__name__}")
    masters: dict[str, Master] = {}
    for i, item in enumerate(data):
        try:
            master = Master.model_validate(item)
        except ValidationError as e:
            raise ValueError(f"{path}: master [{i}]: {validation_message(e)}") from e
        if master.id in masters:
            raise ValueError(f"{path}: master [{i}]: id {master.id!r} appears twice")
        masters[master.id] = master
    return masters


__all__ = ["LOCAL_EXTRA", "Backend", "BackendUnavailable", "GenerationKwargs", "GenerationOptions",
           "GenerationResult", "OpenAIBackend", "PromptTooLong", "TextStream", "TransformersBackend",
           "UnsupportedOption", "backend_class", "check_prompt_fits", "is_url", "load_masters", "make_backend",
           "require_local_packages"]
