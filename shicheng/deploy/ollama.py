"""An Ollama Modelfile for an exported GGUF (`shicheng export … --ollama`), so that `ollama create` serves it
with our prompt format and decoding defaults.

Ollama does not run the GGUF's Jinja chat template; it needs a Go template. Ours is ChatML without Qwen's
default system prompt (shicheng.train.tokenizer.CHAT_TEMPLATE): every turn is
`<|im_start|>{role}\\n{content}<|im_end|>\\n`, and the prompt ends with `<|im_start|>assistant\\n`. The
template below writes exactly that (tests/deploy/test_ollama.py renders both and compares). Our agent
sends the master's system prompt itself; a client that sends none gets the generic one (SYSTEM).

Ollama has no n-gram blocking: a model trained with `no_repeat_ngram_size` gets only its repetition
penalty there (`shicheng consult --model FILE.gguf` applies both).
"""

from __future__ import annotations

import json
from pathlib import Path

# One turn per message, then the assistant's header: the Go-template form of our ChatML template.
GO_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
    "{{ .Content }}<|im_end|>\n"
    "{{ end }}<|im_start|>assistant\n"
)
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


def _quoted(text: str) -> str:
    """A Modelfile string: triple quotes unless the text holds them (then a JSON-escaped one-liner)."""
    return f'"""{text}"""' if '"""' not in text else json.dumps(text, ensure_ascii=False)


def modelfile_text(gguf_name: str, defaults: dict, num_ctx: int, system: str | None = None) -> str:
    """The Modelfile for the GGUF `gguf_name` (a file name beside the Modelfile)."""
    lines = [
        "# Ollama Modelfile written by `shicheng export --ollama`.",
        f"#   ollama create shicheng -f {Path(gguf_name).stem}.Modelfile   then   ollama run shicheng",
        "#   (or through Ollama's OpenAI API: shicheng consult --model http://127.0.0.1:11434/v1 --model-name shicheng)",
        "# Research software for clinicians and researchers, never a substitute for a physician.",
        f"FROM ./{gguf_name}",
        f"TEMPLATE {_quoted(GO_TEMPLATE)}",
    ]
    if system:
        lines.append(f"SYSTEM {_quoted(system)}")
    lines += [f'PARAMETER stop "{token}"' for token in STOP_TOKENS]
    lines.append("PARAMETER temperature 0")  # our default decoding is greedy
    if "repetition_penalty" in defaults:
        lines.append(f"PARAMETER repeat_penalty {defaults['repetition_penalty']}")
        lines.append("PARAMETER repeat_last_n -1")  # -1: the whole context, as transformers penalises
    lines.append(f"PARAMETER num_ctx {num_ctx}")
    return "\n".join(lines) + "\n"


def write_modelfile(gguf_path: str | Path, defaults: dict, num_ctx: int, system: str | None = None) -> Path:
    """FILE.gguf -> FILE.Modelfile beside it; returns the path."""
    gguf_path = Path(gguf_path)
    out = gguf_path.with_name(gguf_path.stem + ".Modelfile")
    out.write_text(modelfile_text(gguf_path.name, defaults, num_ctx, system), encoding="utf-8")
    return out


__all__ = ["GO_TEMPLATE", "STOP_TOKENS", "modelfile_text", "write_modelfile"]
