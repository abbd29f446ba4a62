"""The real Qwen2.5 vocabulary, offline: one loader for the dataset card and the training tokenizer.

The 151,643 BPE ranks of Qwen2/2.5 ship as `resources/qwen.tiktoken` inside the `dashscope` package, the
only pip-installable copy that needs no hub download. dashscope is a cloud SDK the package otherwise never
uses, so it is an optional extra (`pip install 'shicheng[qwen-vocab]'`, included by `dev`); without it the
card reports characters only and says why, and the Qwen tokenizer raises `VocabUnavailable`.
"""

from __future__ import annotations

import base64
import functools
from pathlib import Path

INSTALL_HINT = "pip install 'shicheng[qwen-vocab]'"
# Qwen2's pre-tokenizer split: single digits, letter runs with one leading non-letter, punctuation runs.
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN25_BPE_SIZE = 151643


class VocabUnavailable(RuntimeError):
    """The Qwen vocabulary file (or tiktoken, which reads it) is not installed; the message says what to install."""


def qwen_tiktoken_path() -> Path:
    """The Qwen BPE ranks inside the `dashscope` package (151,643 lines: base64 token, rank)."""
    try:
        import dashscope
    except ImportError as e:
        raise VocabUnavailable(f"the Qwen2.5 vocabulary is read from the 'dashscope' package: {INSTALL_HINT}") from e
    path = Path(dashscope.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise VocabUnavailable(f"{path}: missing from the installed dashscope package; reinstall it: {INSTALL_HINT}")
    return path


@functools.lru_cache(maxsize=1)
def qwen_ranks() -> dict[bytes, int]:
    """token bytes -> rank, read once; raises VocabUnavailable or ValueError (a damaged file, with its line)."""
    path = qwen_tiktoken_path()
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(path.read_text(encoding="ascii").splitlines(), start=1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except ValueError as e:
            raise ValueError(f"{path}:{number}: not a 'base64-token rank' line") from e
    if len(ranks) != QWEN25_BPE_SIZE:
        raise ValueError(f"{path}: holds {len(ranks)} ranks, expected {QWEN25_BPE_SIZE}")
    return ranks


@functools.lru_cache(maxsize=1)
def qwen_encoding():
    """The Qwen2.5 base vocabulary as a tiktoken Encoding (no special tokens): exact token counts of the base model."""
    try:
        import tiktoken
    except ImportError as e:
        raise VocabUnavailable(f"counting Qwen tokens needs tiktoken: {INSTALL_HINT}") from e
    return tiktoken.Encoding("qwen2.5", pat_str=QWEN2_PATTERN, mergeable_ranks=qwen_ranks(), special_tokens={})
