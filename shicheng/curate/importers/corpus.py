"""Books, lectures and notes (txt, md, docx, pdf) -> clean paragraphs for continued pre-training.

Markdown is read with markdown-it-py (its tokens give the text without marks), docx with python-docx,
pdf text layers with pypdf. What is left is specific to Chinese print: page numbers and running
headers repeated on every page are removed, lines broken inside a paragraph are joined without a
space (Chinese has none), and a paragraph ends at a blank line, an indented line, or a line much
shorter than the page width. Paragraphs shorter than `min_chars` (headings, captions) are rejected as
"too short"; every kept paragraph is {"text", "source": "file:para N"}.
"""

from __future__ import annotations

import re
import unicodedata
import zipfile
from pathlib import Path

from shicheng.curate.importers.result import STEP, ImportResult
from shicheng.curate.ledger import Ledger
from shicheng.records.tidy import join_text
from shicheng.text import NotTextError, read_text

MIN_CHARS = 20
_TERMINAL = tuple("。！？!?；;…”』」）)")
_PAGE_NUMBER = re.compile(r"^\s*(?:第\s*[0-9一二三四五六七八九十百]+\s*页(?:\s*[/／共]\s*\d+\s*页?)?"
                          r"|[-—–·•\s]*\d{1,4}[-—–·•\s]*|\d+\s*/\s*\d+|page\s*\d+(?:\s*of\s*\d+)?)\s*$",
                          re.IGNORECASE)
_CJK = r"\u3000-\u303f\u3400-\u9fff\uf900-\ufaff\uff00-\uffef"
_SPACE_IN_CJK = re.compile(rf"(?<=[{_CJK}])[ \t]+(?=[{_CJK}])")
_FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.DOTALL)


def clean_paragraph(text: str) -> str:
    """Collapse whitespace; drop the spaces PDF extraction and OCR leave between Chinese characters."""
    text = re.sub(r"[ \t\u00a0]+", " ", text.replace("\u3000", " ")).strip()
    return _SPACE_IN_CJK.sub("", text)


def _width(line: str) -> int:
    """Display width: a Chinese character takes the room of two Latin ones on a printed line."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in line.strip())


def _indented(line: str) -> bool:
    return line.startswith(("\u3000", "  ", "\t"))


def lines_to_paragraphs(lines: list[str], wrapped: bool | None = None) -> list[str]:
    """Join hard-wrapped lines into paragraphs. `wrapped=None` decides from the text: in a file with one
    paragraph per line nearly every long line ends a sentence; in a wrapped one most stop mid-sentence."""
    filled = [line for line in lines if line.strip()]
    if not filled:
        return []
    widths = sorted(_width(line) for line in filled)
    page_width = widths[int(0.8 * (len(widths) - 1))]
    if wrapped is None:
        # Headings also end without punctuation, but they are short: count only full-width open lines.
        cut = sum(_width(line) >= 0.8 * page_width and not line.rstrip().endswith(_TERMINAL) for line in filled)
        wrapped = len(filled) >= 3 and cut / len(filled) > 0.3
    paragraphs: list[str] = []
    current: str | None = None
    previous = ""
    for line in lines:
        if not line.strip():
            current, previous = _flush(paragraphs, current), ""
            continue
        ends_paragraph = not wrapped or _indented(line) or (
            previous and _width(previous) < 0.8 * page_width)
        if current is not None and ends_paragraph:
            current = _flush(paragraphs, current)
        current = join_text(current, line.strip())
        previous = line
    _flush(paragraphs, current)
    return paragraphs


def _flush(paragraphs: list[str], current: str | None) -> None:
    if current:
        paragraphs.append(current)


def strip_running_lines(pages: list[list[str]]) -> list[list[str]]:
    """Remove page numbers and the headers/footers that repeat (digits aside) on at least half the pages."""
    def edges(page: list[str]) -> list[int]:
        filled = [i for i, line in enumerate(page) if line.strip()]
        return sorted(set(filled[:2] + filled[-2:]))

    def key(line: str) -> str:
        return re.sub(r"\d+", "#", re.sub(r"\s+", "", line))

    counts: dict[str, int] = {}
    for page in pages:
        for k in {key(page[i]) for i in edges(page)}:
            counts[k] = counts.get(k, 0) + 1
    repeated = {k for k, n in counts.items() if len(pages) >= 3 and n >= max(3, len(pages) / 2)}
    cleaned = []
    for page in pages:
        drop = {i for i in edges(page) if _PAGE_NUMBER.match(page[i]) or key(page[i]) in repeated}
        cleaned.append([line for i, line in enumerate(page) if i not in drop])
    return cleaned


def text_paragraphs(text: str) -> list[str]:
    """Plain text; form feeds (pdftotext output) separate pages whose running lines are removed."""
    pages = [page.split("\n") for page in text.split("\f")]
    if len(pages) > 1:
        pages = strip_running_lines(pages)
    lines = [line for page in pages for line in page]
    return lines_to_paragraphs(lines)


def markdown_paragraphs(text: str) -> list[str]:
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(_FRONT_MATTER.sub("", text))
    paragraphs: list[str] = []
    row: list[str] | None = None
    for token in tokens:
        if token.type == "tr_open":
            row = []
        elif token.type == "tr_close" and row is not None:
            paragraphs.append("，".join(cell for cell in row if cell))
            row = None
        elif token.type == "inline":
            # Images, raw HTML and link targets carry no prose; soft breaks join without a space in Chinese.
            raw = "".join(child.content if child.type in ("text", "code_inline") else
                          "\n" if child.type in ("softbreak", "hardbreak") else "" for child in token.children or [])
            joined = None
            for piece in raw.split("\n"):
                joined = join_text(joined, piece)
            if row is not None:
                row.append(joined or "")
            elif joined:
                paragraphs.append(joined)
        elif token.type in ("fence", "code_block"):
            paragraphs.extend(lines_to_paragraphs(token.content.split("\n")))
        elif token.type == "html_block":
            paragraphs.extend(lines_to_paragraphs(re.sub(r"<[^>]+>", "", token.content).split("\n")))
    return paragraphs


def docx_paragraphs(path: Path) -> list[str]:
    import docx
    from docx.table import Table

    document = docx.Document(str(path))
    paragraphs = []
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            for table_row in block.rows:
                cells = list(dict.fromkeys(c.text.strip() for c in table_row.cells))  # merged cells repeat
                paragraphs.append("，".join(c for c in cells if c))
        else:
            paragraphs.append(block.text)
    return paragraphs


def pdf_paragraphs(path: Path) -> list[str]:
    """Raises NotTextError when the pdf has no text layer (a scan) or cannot be read."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            raise NotTextError("encrypted pdf: cannot read the text without a password")
        pages = [(page.extract_text() or "").replace("\r\n", "\n").replace("\r", "\n") for page in reader.pages]
    except (PyPdfError, ValueError, KeyError) as e:
        raise NotTextError(f"unreadable pdf: {e}") from e
    if not any(page.strip() for page in pages):
        raise NotTextError("no text layer: the pdf holds no extractable text (a scan? run OCR first)")
    lines = [line for page in strip_running_lines([p.split("\n") for p in pages]) for line in page]
    return lines_to_paragraphs(lines, wrapped=True)


def file_paragraphs(path: Path) -> list[str]:
    """Raw paragraphs of one file by its extension; NotTextError when the file cannot give text."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        return pdf_paragraphs(path)
    if suffix == ".docx":
        try:
            return docx_paragraphs(path)
        except (zipfile.BadZipFile, KeyError, ValueError) as e:
            raise NotTextError(f"unreadable docx: {e}") from e
    text = read_text(path).text.lstrip("\ufeff")
    return markdown_paragraphs(text) if suffix in (".md", ".markdown") else text_paragraphs(text)


def import_corpus(path: str | Path, ledger: Ledger, min_chars: int = MIN_CHARS, step: str = STEP,
                  name: str | None = None) -> ImportResult:
    """Paragraphs of one txt/md/docx/pdf file; each paragraph is one ledger input, kept or rejected.
    Sources read "`name`:para N" (`name` defaults to the path as given)."""
    path = Path(path)
    label = name or str(path)
    result = ImportResult()
    try:
        raw = file_paragraphs(path)
    except NotTextError as e:
        ledger.seen(step)
        ledger.reject(step, label, str(e).replace(str(path), label))
        return result
    paragraphs = [p for p in (clean_paragraph(r) for r in raw) if p]
    if not paragraphs:
        ledger.seen(step)
        ledger.reject(step, label, "empty file: no text")
        return result
    for number, text in enumerate(paragraphs, start=1):
        source = f"{label}:para {number}"
        ledger.seen(step)
        if len(text) < min_chars:
            ledger.reject(step, source, f"too short: {len(text)} characters < {min_chars}", text)
            continue
        ledger.keep(step)
        result.corpus.append({"text": text, "source": source})
    return result
