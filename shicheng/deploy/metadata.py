"""What a shicheng GGUF carries besides the weights, and how to read it back.

The exporter (gguf_export.py) writes these keys and the agent's llama.cpp backend reads them, so they
are named in one place. llama.cpp's own keys (`tokenizer.chat_template`, `general.sampling.*`) are used
where they exist, so that llama-server and Ollama read the same defaults we do; what llama.cpp has no
key for goes under `shicheng.*`:
- `shicheng.masters`: the stage model's masters.json, verbatim (a copy also goes beside the file as
  FILE.masters.json, the form a clinician can read and edit);
- `shicheng.generation`: our decoding defaults as JSON (`repetition_penalty`, `no_repeat_ngram_size`), the
  values `shicheng train` saved in the stage's generation_config.json;
- `shicheng.source`: the stage directory's name, and `shicheng.stage` its manifest's stage name, if any.

Reading a file's metadata needs llama-cpp-python (the deploy extra); the key names need nothing.
"""

from __future__ import annotations

import ctypes
import json
import logging
import re
from pathlib import Path

MASTERS_KEY = "shicheng.masters"
GENERATION_KEY = "shicheng.generation"
SOURCE_KEY = "shicheng.source"
STAGE_KEY = "shicheng.stage"
CHAT_TEMPLATE_KEY = "tokenizer.chat_template"
# The context llama.cpp runs an exported model with (its KV cache): prompt + answer of a consultation fit in it,
# and a 1.5B model's 32k training context would cost ~1 GB more memory. Also Ollama's num_ctx.
DEFAULT_N_CTX = 4096
DEPLOY_EXTRA = "GGUF export and the llama.cpp backend need the deploy extra: pip install 'shicheng[deploy]'"

# `{% generation %}…{% endgeneration %}` marks the assistant's tokens for TRL's assistant-only loss. It is a
# transformers extension of Jinja: plain jinja2 and llama-cpp-python's chat formatter reject it, so the GGUF
# gets the template without the markers (they render nothing, so the prompt text is identical).
_GENERATION_TAG = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")


class DeployUnavailable(RuntimeError):
    """The deploy extra (gguf, llama-cpp-python) is not installed; the message says how to install it."""


def is_gguf(model: str | Path) -> bool:
    return str(model).lower().endswith(".gguf")


def inference_chat_template(template: str) -> str:
    """The chat template without the training-only `{% generation %}` markers."""
    return _GENERATION_TAG.sub("", template)


def beside_masters_path(gguf_path: str | Path) -> Path:
    """FILE.gguf -> FILE.masters.json, the copy of the masters written beside the model."""
    path = Path(gguf_path)
    return path.with_name(path.name[: -len(".gguf")] + ".masters.json") if is_gguf(path) else \
        path.with_name(path.name + ".masters.json")


def quiet_llama_logs() -> None:
    """Silence llama.cpp's log lines (one per tensor and key it touches), which llama-cpp-python prints through
    its "llama-cpp-python" logger. Its table of ggml's log levels predates ggml's renumbering (WARN is now 3,
    which it reads as ERROR), so ERROR still prints every warning: only CRITICAL is quiet. Failures are not
    lost: llama.cpp's calls return an error code or NULL, and the callers turn those into messages."""
    logging.getLogger("llama-cpp-python").setLevel(logging.CRITICAL)


def read_gguf_fields(path: str | Path, keys: tuple[str, ...]) -> dict[str, str]:
    """The values of `keys` in a GGUF file's metadata, as llama.cpp reads them (strings; absent keys left out).

    Loads the vocabulary only (milliseconds), not the weights. Not the gguf package's GGUFReader: it builds a
    Python object for each of the 151,936 token strings of a Qwen vocabulary, which takes tens of seconds."""
    try:
        import llama_cpp
    except ImportError as e:  # not installed, or its shared library failed to build or load
        raise DeployUnavailable(f"{DEPLOY_EXTRA} ({e})") from e
    quiet_llama_logs()
    if not Path(path).is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise ValueError(f"{path}: llama.cpp cannot read it as a GGUF model")
    found: dict[str, str] = {}
    try:
        for key in keys:
            size = llama_cpp.llama_model_meta_val_str(model, key.encode(), None, 0)  # snprintf: the length
            if size < 0:
                continue
            buf = ctypes.create_string_buffer(size + 1)
            llama_cpp.llama_model_meta_val_str(model, key.encode(), buf, size + 1)
            found[key] = buf.value.decode("utf-8")
    finally:
        llama_cpp.llama_model_free(model)
    return found


def masters_text(gguf_path: str | Path) -> tuple[str, str] | None:
    """(JSON text of the masters, where it came from) for a GGUF: the beside file FILE.masters.json when
    there is one (a clinic may have edited it), else the `shicheng.masters` metadata; None when neither."""
    beside = beside_masters_path(gguf_path)
    if beside.is_file():
        return beside.read_text(encoding="utf-8-sig"), str(beside)
    text = read_gguf_fields(gguf_path, (MASTERS_KEY,)).get(MASTERS_KEY)
    if text is None:
        return None
    return text, f"{gguf_path} (metadata {MASTERS_KEY})"


def generation_defaults(metadata: dict[str, str]) -> dict:
    """Our decoding defaults from a GGUF's metadata (llama-cpp-python hands every value over as a string)."""
    text = metadata.get(GENERATION_KEY)
    if not text:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"metadata {GENERATION_KEY}: not valid JSON ({e.msg})") from e
    if not isinstance(data, dict):
        raise ValueError(f"metadata {GENERATION_KEY}: expected a JSON object, got {type(data).__name__}")
    return data


__all__ = ["CHAT_TEMPLATE_KEY", "DEFAULT_N_CTX", "DEPLOY_EXTRA", "GENERATION_KEY", "MASTERS_KEY", "SOURCE_KEY",
           "STAGE_KEY", "DeployUnavailable", "beside_masters_path", "generation_defaults", "inference_chat_template",
           "is_gguf", "masters_text", "quiet_llama_logs", "read_gguf_fields"]
