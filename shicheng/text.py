"""Text as it reaches shicheng: bytes in whatever encoding a hospital saved them in, and one normaliser.

Ground floor: curation, the agent and the server read a clinician's file with `read_text`, and
compare or store text after `normalise_text`, so the same words are the same string everywhere.

Encodings, in the order tried: a byte-order mark (UTF-8, UTF-16), then strict UTF-8, then strict
GB18030 (the superset of GBK/GB2312 that Windows in Chinese locales writes), and only then
charset-normalizer's guess. Strict decoders first because for Chinese records they are right far more
often than a statistical guess, which can mistake short GBK text for Big5 or a Latin code page.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import opencc
from charset_normalizer import from_bytes

# ---- one normaliser -----------------------------------------------------------------------------------------

# Full-width digits and letters become ASCII; Chinese full-width punctuation (，。：) stays, as a reader writes it.
_FULLWIDTH = {c: c - 0xFEE0 for c in (*range(0xFF10, 0xFF1A), *range(0xFF21, 0xFF3B), *range(0xFF41, 0xFF5B))}
_FULLWIDTH.update({0x3000: 0x20, 0xFF05: ord("%"), 0xFF0B: ord("+"), 0xFF0D: ord("-"), 0xFF0E: ord(".")})
_SURROGATE = re.compile(r"[\ud800-\udfff]")

Fold = Literal["alnum", "nfkc"]


@cache
def _t2s() -> opencc.OpenCC:
    """The one t2s converter: building it reads OpenCC's dictionaries, so once per process."""
    return opencc.OpenCC("t2s")


def normalise_text(text: str | None, *, fold: Fold | None = "alnum", simplified: bool = True) -> str:
    """The one text normaliser: full-width forms folded, then traditional characters made simplified.

    fold="alnum" (the default, for text that is stored and shown): full-width digits, letters, space and
      ％＋－． become ASCII; Chinese punctuation (，。：；) is kept.
    fold="nfkc" (for comparing and looking up): Unicode NFKC, which also folds ，：（） to ,:().
    fold=None: no width folding.
    simplified: traditional -> simplified characters (OpenCC t2s), since the lexicon, the record reader
      and the model all know simplified text.
    A lone surrogate (left by a broken decode upstream) becomes U+FFFD: OpenCC cannot encode it.
    """
    text = text or ""
    if fold == "alnum":
        text = text.translate(_FULLWIDTH)
    elif fold == "nfkc":
        text = unicodedata.normalize("NFKC", text)
    elif fold is not None:
        raise ValueError(f"unknown fold {fold!r}: use 'alnum', 'nfkc' or None")
    if simplified and text:
        text = _t2s().convert(_SURROGATE.sub("\ufffd", text))
    return text


# ---- encodings ----------------------------------------------------------------------------------------------

# Bytes that never occur in text: NUL and most C0 controls (tab, newlines, form feed and ESC excepted).
_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 12, 13, 27))
_SNIFF = 8192


class NotTextError(ValueError):
    """The file is binary or in no encoding we can read; the message is the reject reason."""


@dataclass(frozen=True)
class DecodedText:
    text: str
    encoding: str


def normalise_newlines(text: str) -> str:
    """CRLF and lone CR (old Mac exports) -> LF, the same lines Python's universal-newline reading sees."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _looks_binary(data: bytes) -> bool:
    sample = data[:_SNIFF]
    if b"\x00" in sample:
        return True
    controls = sum(sample.count(bytes([b])) for b in _CONTROL_BYTES)
    return controls > max(2, len(sample) // 100)


def decode_bytes(data: bytes, source: str = "<bytes>") -> DecodedText:
    """Bytes of a text file -> text with LF line endings; NotTextError names the source when it is not text."""
    for bom, name in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                      (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            try:
                return DecodedText(normalise_newlines(data.decode(name)), name)
            except UnicodeDecodeError as e:
                raise NotTextError(f"binary or corrupt file: {source} starts with a {name} mark but "
                                   f"byte {e.start} is not {name}") from e
    if _looks_binary(data):
        raise NotTextError(f"binary file: {source} contains NUL or control bytes")
    for name in ("utf-8", "gb18030"):
        try:
            return DecodedText(normalise_newlines(data.decode(name)), name)
        except UnicodeDecodeError:
            continue
    best = from_bytes(data).best()
    if best is None:
        raise NotTextError(f"undecodable file: {source} is not UTF-8, GB18030 or any encoding detected")
    return DecodedText(normalise_newlines(str(best)), best.encoding)


def read_text(path: str | Path, encoding: str | None = None) -> DecodedText:
    """Read a file as text; `encoding` forces one (a mapping's `encoding:`), otherwise it is detected."""
    path = Path(path)
    data = path.read_bytes()
    if encoding:
        try:
            return DecodedText(normalise_newlines(data.decode(encoding)), encoding)
        except UnicodeDecodeError as e:
            raise NotTextError(f"{path}: not {encoding} at byte {e.start}") from e
        except LookupError as e:
            raise NotTextError(f"{path}: unknown encoding {encoding!r}") from e
    return decode_bytes(data, str(path))


__all__ = ["DecodedText", "Fold", "NotTextError", "decode_bytes", "normalise_newlines", "normalise_text",
           "read_text"]
