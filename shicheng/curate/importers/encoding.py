"""Read a text file whatever encoding a Chinese hospital or archive saved it in, or say it is not text.

Order of attempts: a byte-order mark (UTF-8, UTF-16), then strict UTF-8, then strict GB18030 (the
superset of GBK/GB2312 that Windows in Chinese locales writes), and only then charset-normalizer's guess.
Strict decoders first because for Chinese records they are right far more often than a statistical
guess, which can mistake short GBK text for Big5 or a Latin code page.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path

from charset_normalizer import from_bytes

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
