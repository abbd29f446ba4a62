"""Section-guided decoding: the answer writes the sections its task asks for, each once, in the canonical order.

A small model knows what a section says long before it reliably writes every heading: the CPU demo's model
drops, repeats and reorders headings in most full-chain answers. This is the structured-output idea of
vLLM's guided decoding and of Outlines, narrowed to our answer template (`shicheng.template.render_answer`):
- before `<output>`: no heading is started (headings belong inside the output part) and the answer does not
  end; `</think>` is followed by `\\n<output>\\n` and the first heading;
- inside `<output>`: a line that starts with `#` can only become the next expected heading (`## 辨证` …),
  and only after the previous section has some text; the part cannot close (no `<`, no end of text) until
  every expected heading has its text, and the answer does not end before `</output>`; after the last heading
  no further heading starts; a blank line (which the template writes only before a heading) ends a section;
- the answer fits `max_new_tokens`: when the tokens left only just fit a short text under every heading
  still to come, the current line (and character) is finished and the next heading follows;
- after `</output>` the answer ends;
- the words of every section are the model's own: the guide only masks tokens, it never writes text.
A grammar engine (xgrammar, which the local judge uses for JSON) could hold the headings as a grammar, but not
the budget rule, which depends on the tokens left; the rules are few, so they are written out here.

`SectionGuide` works on bytes, so that one guide serves any byte-level BPE (a Hugging Face tokenizer: `token_bytes`;
llama.cpp: its own detokenizer). `TorchSectionGuide` is the transformers LogitsProcessor;
`SectionGuide.mask_row` serves numpy scores (llama.cpp).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shicheng.domain import SECTION_BY_KEY

OUTPUT_OPEN, OUTPUT_CLOSE, THINK_CLOSE = b"<output>", b"</output>", b"</think>"
_OPENING = b"\n" + OUTPUT_OPEN + b"\n"  # what follows </think>, as render_answer writes it
_RISKY = (b"#", b"<", b"\n")  # bytes a forced text may not run on with
_NEWLINE_HASH = re.compile(rb"\n[ \t]*#")
# New tokens kept for each heading still to come (the heading and a short text): enough for `## 辨证` and a
# syndrome name in the demo's and Qwen2.5's vocabularies.
RESERVE = 24


def heading_lines(sections: Iterable[str]) -> list[bytes]:
    """The heading line of each section key, as render_answer writes it (`## 辨证\\n`)."""
    unknown = [k for k in sections if k not in SECTION_BY_KEY or k == "reasoning"]
    if unknown:
        raise ValueError(f"guided sections: unknown output section(s) {unknown}; known: "
                         f"{[k for k in SECTION_BY_KEY if k != 'reasoning']}")
    return [f"## {SECTION_BY_KEY[k].zh}\n".encode() for k in sections]


def token_bytes(tokenizer) -> list[bytes]:
    """The bytes each token id stands for, from a Hugging Face byte-level BPE tokenizer (Qwen2's and the demo's).

    Added tokens (`<think>`, the lexicon terms of an extended tokenizer) are their own text; special tokens
    (`<|im_end|>`) are empty: they write nothing into the answer."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    decoder = {c: b for b, c in bytes_to_unicode().items()}
    added = {i: t for i, t in tokenizer.added_tokens_decoder.items()}
    size = max(len(tokenizer), max(added, default=-1) + 1)
    pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
    table: list[bytes] = []
    for i, piece in enumerate(pieces):
        if i in added:
            table.append(b"" if added[i].special else added[i].content.encode())
        elif piece is None:
            table.append(b"")
        elif all(c in decoder for c in piece):
            table.append(bytes(decoder[c] for c in piece))
        else:  # not byte-level (a sentencepiece vocabulary): its decoded text
            table.append(tokenizer.decode([i]).encode())
    return table


@dataclass(frozen=True)
class Step:
    """What the next token may be: any ("free"), one of `ids` ("only"), or anything but `ids` ("block")."""

    kind: str
    ids: tuple[int, ...] = ()


FREE = Step("free")


class GuideVocab:
    """What the guide needs to know of one vocabulary, built once per model (a pass over Qwen2.5's 151,643 tokens
    takes about a second), with the answers to the questions a step asks again and again, cached."""

    def __init__(self, table: Sequence[bytes]):
        self.table = list(table)

        # The only tokens a rule can concern, so that a step checks a few hundred and not every token (a token
        # may be in several groups):
        def having(test) -> tuple[int, ...]:
            return tuple(i for i, b in enumerate(self.table) if b and test(b))

        self.tags = having(lambda b: b"<" in b)
        self.heading_after_newline = having(lambda b: _NEWLINE_HASH.search(b) is not None)
        self.heading_first = having(lambda b: b.lstrip(b" \t").startswith(b"#"))
        self.blank_makers = having(lambda b: b"\n\n" in b)
        self.newline_first = having(lambda b: b.startswith(b"\n"))
        self.continuations = having(lambda b: 0x80 <= b[0] < 0xC0)
        ordered = sorted((b, i) for i, b in enumerate(self.table) if b)
        self._sorted = [b for b, _ in ordered]
        self._sorted_ids = [i for _, i in ordered]
        self._by_bytes: dict[bytes, list[int]] = {}
        for b, i in ordered:
            self._by_bytes.setdefault(b, []).append(i)
        # step answers by state: a verdict depends on a few facts of the text, not on the whole text
        self.cache: dict[tuple, tuple[int, ...]] = {}

    def __len__(self) -> int:
        return len(self.table)

    def writing(self, pending: bytes) -> tuple[int, ...]:
        """The tokens that write the start of `pending`, or all of it and then text on the same line without
        `#` or `<`."""
        key = ("force", pending)
        if key not in self.cache:
            ids = [i for k in range(1, len(pending) + 1) for i in self._by_bytes.get(pending[:k], ())]
            lo = bisect.bisect_left(self._sorted, pending)
            for j in range(lo, len(self._sorted)):
                b = self._sorted[j]
                if not b.startswith(pending):
                    break
                rest = b[len(pending):]
                if rest and not any(r in rest for r in _RISKY):
                    ids.append(self._sorted_ids[j])
            self.cache[key] = tuple(sorted(set(ids)))
        return self.cache[key]

    def closers(self, begun: bytes) -> tuple[int, ...]:
        """The tokens that would complete `</output>` after `begun` (a proper prefix of it, or nothing)."""
        key = ("close", begun)
        if key not in self.cache:
            self.cache[key] = tuple(i for i, b in enumerate(self.table) if b and OUTPUT_CLOSE in begun + b)
        return self.cache[key]


class SectionGuide:
    """The rules for one vocabulary and one list of expected headings; `step(generated)` says what may follow."""

    def __init__(self, vocab: GuideVocab | Sequence[bytes], end_ids: Iterable[int], sections: Sequence[str]):
        self.vocab = vocab if isinstance(vocab, GuideVocab) else GuideVocab(vocab)
        self.table = self.vocab.table
        self.lines = heading_lines(sections)
        if not self.lines:
            raise ValueError("guided sections: no section to guide")
        self.end_ids = tuple(sorted(set(end_ids)))
        self._key = (tuple(self.lines), self.end_ids)

    # --- the rules -------------------------------------------------------------------------------------------
    def step(self, generated: bytes, left: int | None = None) -> Step:
        """`left`: the new tokens still allowed (None: no limit). When they would not fit a short text under
        every heading still to come (RESERVE each), the current line is ended and the next heading written."""
        at = generated.find(OUTPUT_OPEN)
        if at < 0:
            return self._think_step(generated, left)
        body = generated[at + len(OUTPUT_OPEN):]
        if OUTPUT_CLOSE in body:
            return Step("only", self.end_ids)  # nothing trails the answer
        if body in (b"", b"\n"):
            return self._force((b"" if body else b"\n") + self.lines[0])
        lines = body.split(b"\n")
        current = lines[-1]
        done = sum(1 for ln in lines[:-1] if _is_heading(ln))
        if _is_heading(current) and done < len(self.lines):
            expected = self.lines[done]
            return self._force(expected[len(current):]) if expected.startswith(current) else FREE
        tag = current.find(b"<")
        if tag >= 0 and OUTPUT_CLOSE.startswith(current[tag:]):  # `</output>` begun: finish it
            return self._force(OUTPUT_CLOSE[len(current) - tag:])
        if body.endswith(b"\n\n"):  # a blank line ends a section: the next heading, or the end of the part
            return self._force(self.lines[done] if done < len(self.lines) else OUTPUT_CLOSE)
        has_text = any(ln.strip() for ln in _after_last_heading(lines[:-1])) or bool(current.strip())
        if has_text and left is not None and left <= RESERVE * (len(self.lines) - done + 1):
            if _partial_char(body):
                return self._finish_char()
            following = self.lines[done] if done < len(self.lines) else OUTPUT_CLOSE
            return self._force(_line_end(body) + following)
        # Past a line's first non-blank byte (not `#`: that is a heading, handled above), its text no longer matters.
        line = current if not current.strip() else b"x"
        key = ("body", self._key, line, done, has_text)
        if key not in self.vocab.cache:
            v = self.vocab
            open_headings = done < len(self.lines)
            candidates = (() if open_headings else v.tags) + v.heading_after_newline + v.blank_makers \
                + (v.heading_first if not current.strip() else ()) + (v.newline_first if not current else ())
            blocked = {i for i in candidates if not self._fits_body(line, done, has_text, self.table[i])}
            if open_headings:  # no tag inside the part before its last section: `</output>` closes it
                blocked.update(v.tags)
            self.vocab.cache[key] = tuple(sorted(blocked)) + self.end_ids  # the part ends with `</output>`
        return Step("block", self.vocab.cache[key])

    def _think_step(self, generated: bytes, left: int | None) -> Step:
        """Before `<output>`: no heading and no end. `</think>` leads into the output part, and so do a blank
        line (the reasoning never holds one) and a budget that only just fits the headings."""
        closed = generated.rfind(THINK_CLOSE)
        if closed >= 0 and _OPENING.startswith(tail := generated[closed + len(THINK_CLOSE):]):
            return self._force(_OPENING[len(tail):] + self.lines[0])
        opening = (THINK_CLOSE + _OPENING) if b"<think>" in generated and closed < 0 else _OPENING[1:]
        if generated.endswith(b"\n\n"):
            return self._force(opening + self.lines[0])
        if left is not None and left <= RESERVE * (len(self.lines) + 1):
            if _partial_char(generated):
                return self._finish_char()
            return self._force(_line_end(generated) + opening + self.lines[0])
        current = generated.rsplit(b"\n", 1)[-1]
        line = current if not current.strip() else b"x"  # as in the output part: only a blank line start matters
        # `</output>` has no place in the reasoning, in one token or completing what the text has begun
        begun = next((OUTPUT_CLOSE[:k] for k in range(len(OUTPUT_CLOSE) - 1, 0, -1)
                      if generated.endswith(OUTPUT_CLOSE[:k])), b"")
        key = ("think", self.end_ids, line, begun)
        if key not in self.vocab.cache:
            v = self.vocab
            candidates = v.heading_after_newline + (v.heading_first if not line.strip() else ())
            blocked = {i for i in candidates if any(_is_heading(seg) for seg in (line + self.table[i]).split(b"\n"))}
            self.vocab.cache[key] = self.end_ids + tuple(sorted(blocked.union(v.closers(begun))))
        return Step("block", self.vocab.cache[key])

    def _fits_body(self, current: bytes, done: int, has_text: bool, piece: bytes) -> bool:
        """Whether `piece`, written after the current line of the output part, keeps to the rules."""
        segments = (current + piece).split(b"\n")
        blank = False  # the line before was empty: only a heading (or the end of the part) may follow
        for n, seg in enumerate(segments):
            last = n == len(segments) - 1
            if _is_heading(seg):
                if done >= len(self.lines) or not has_text:
                    return False
                expected = self.lines[done]
                if not (expected.startswith(seg) if last else expected == seg + b"\n"):
                    return False
                if not last:
                    done, has_text = done + 1, False
                blank = False
            elif not seg.strip():
                if not last:
                    if not has_text:
                        return False  # no blank line before the section has its text
                    blank = True
            else:
                at = seg.find(b"<")
                before = seg[:at] if at >= 0 else seg
                if blank and before.strip():
                    return False
                has_text = has_text or bool(before.strip())
                if at >= 0:  # only `</output>`, and only after every heading has its text
                    tag = seg[at:]
                    if done < len(self.lines) or not has_text or not (
                            OUTPUT_CLOSE.startswith(tag) or tag.startswith(OUTPUT_CLOSE)):
                        return False
        return True

    def _finish_char(self) -> Step:
        """Only tokens that go on with the character begun (UTF-8 continuation bytes first): a forced line end
        waits for it."""
        return Step("only", self.vocab.continuations) if self.vocab.continuations else FREE

    def _force(self, pending: bytes) -> Step:
        ids = self.vocab.writing(pending)
        return Step("only", ids) if ids else FREE

    # --- numpy scores (llama.cpp) --------------------------------------------------------------------------------
    def mask_row(self, generated: bytes, scores, left: int | None = None) -> None:
        """Apply the step to one row of scores in place (a numpy or torch vector)."""
        apply_step(self.step(generated, left), scores)


def _partial_char(text: bytes) -> bool:
    """Whether `text` ends inside a UTF-8 character (a byte-level token can hold part of one): nothing is
    forced there, or the character would be cut."""
    for back in range(1, min(4, len(text)) + 1):
        byte = text[-back]
        if byte < 0x80:
            return False
        if byte >= 0xC0:  # the lead byte: how many bytes its character takes
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return back < need
    return False


def _line_end(text: bytes) -> bytes:
    """What ends the current line: nothing at a line start, else a newline."""
    return b"" if not text or text.endswith(b"\n") else b"\n"


def _is_heading(line: bytes) -> bool:
    return line.lstrip().startswith(b"#")


def _after_last_heading(lines: list[bytes]) -> list[bytes]:
    for n in range(len(lines) - 1, -1, -1):
        if _is_heading(lines[n]):
            return lines[n + 1:]
    return lines


def apply_step(step: Step, scores) -> None:
    """Mask a score vector for `step`. When every allowed token was already masked by another processor (an
    n-gram block), the allowed ones are put back at 0 rather than leaving nothing to choose."""
    if step.kind == "free" or not step.ids:
        return
    ninf = float("-inf")
    ids = list(step.ids)
    if step.kind == "block":
        scores[ids] = ninf
        return
    kept = scores[ids].copy() if hasattr(scores, "copy") else scores[ids].clone()
    scores[:] = ninf
    if not (kept > ninf).any():
        kept[:] = 0.0
    scores[ids] = kept


class TorchSectionGuide:
    """A transformers LogitsProcessor: each row of a batch follows the guide from where its prompt ends."""

    def __init__(self, guide: SectionGuide, max_new_tokens: int | None = None):
        self.guide, self.max_new_tokens = guide, max_new_tokens
        self._prompt_len: int | None = None
        self._rows: list[bytearray] = []
        self._ended: list[bool] = []

    def __call__(self, input_ids, scores):
        if self._prompt_len is None:
            self._prompt_len = input_ids.shape[1]
            self._rows = [bytearray() for _ in range(input_ids.shape[0])]
            self._ended = [False] * input_ids.shape[0]
        elif input_ids.shape[1] > self._prompt_len:
            for r, token in enumerate(input_ids[:, -1].tolist()):
                if token in self.guide.end_ids:
                    self._ended[r] = True
                elif not self._ended[r]:
                    self._rows[r] += self.guide.table[token]
        left = None if self.max_new_tokens is None else self.max_new_tokens - (input_ids.shape[1] - self._prompt_len)
        for r in range(scores.shape[0]):
            if not self._ended[r]:
                apply_step(self.guide.step(bytes(self._rows[r]), left), scores[r])
        return scores


__all__ = ["FREE", "GuideVocab", "SectionGuide", "Step", "TorchSectionGuide", "apply_step", "heading_lines", "token_bytes"]
