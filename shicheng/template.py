"""Render an Answer as `<think>…</think><output>…</output>` text, and read such text back, tolerantly.

Model output is messy: sections go missing or come in another order, headings arrive in English or
with markdown marks, `</think>` is forgotten, garbage trails the answer. `parse_answer` accepts any
string, never raises, and reports what it found, so that rewards, judges and the clinician page can
all rely on it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Literal

from shicheng.domain import OUTPUT_KEYS, REQUIRED_OUTPUT_KEYS, SECTION_BY_KEY, SECTION_KEYS, Answer
from shicheng.text import normalise_text

# Heading spellings we accept per section, besides the canonical zh/en headings.
HEADING_ALIASES: dict[str, tuple[str, ...]] = {
    "reasoning": ("思维链", "思维过程", "推理过程", "思路", "reasoning", "chain of thought", "thinking"),
    "etiology_pathogenesis": ("病因病机分析", "病因病机", "病因", "病机", "病机分析", "etiology and pathogenesis",
                              "etiology & pathogenesis", "etiology", "pathogenesis"),
    "syndrome": ("辨证(证候诊断)", "辨证（证候诊断）", "证候诊断", "辨证", "证型", "证候", "中医诊断", "诊断",
                 "syndrome differentiation", "syndrome diagnosis", "syndrome", "diagnosis"),
    "treatment_principle": ("治则治法", "治法治则", "治则", "治法", "treatment principle and method",
                            "treatment principles", "treatment principle", "treatment method", "treatment"),
    "prescription": ("处方", "方药", "处方用药", "方剂", "prescription", "formula"),
    "prescription_explanation": ("方解", "处方解析", "方义", "prescription explanation", "formula explanation",
                                 "explanation"),
    "master_theory": ("名医特色理论应用", "名医特色理论", "名医理论应用", "特色理论应用", "学术思想应用",
                      "master's theory applied", "master's theory", "master theory", "masters theory"),
    "modifications": ("随症加减", "随证加减", "症状变化与中药加减", "症状变化与方药加减", "加减", "加减化裁",
                      "modifications", "modification", "symptom evolution and modifications"),
    "advice": ("医嘱", "调护", "医嘱与调护", "advice", "clinical advice", "doctor's advice", "precautions"),
}

# TCMClinicalReason-Bench submission keys -> our section keys.
BENCH_KEYS: dict[str, str] = {
    "思维链": "reasoning",
    "病因病机分析": "etiology_pathogenesis",
    "证候诊断": "syndrome",
    "治法": "treatment_principle",
    "处方": "prescription",
    "方解": "prescription_explanation",
    "症状变化与中药加减": "modifications",
}


def _heading_lookup() -> dict[str, str]:
    table: dict[str, str] = {}
    for key, names in HEADING_ALIASES.items():
        spec = SECTION_BY_KEY[key]
        for name in (spec.zh, spec.en, *names):
            table.setdefault(_norm_heading(name), key)
    return table


def _norm_heading(text: str) -> str:
    text = normalise_text(text, fold="nfkc", simplified=False).lower()
    return re.sub(r"[\s_*#]+", " ", text).strip()


_HEADINGS = _heading_lookup()
_SPELLINGS = {*_HEADINGS, *(n for names in HEADING_ALIASES.values() for n in names),
              *(s.zh for s in SECTION_BY_KEY.values()), *(s.en for s in SECTION_BY_KEY.values())}
# Longest names first so that "病因病机分析" wins over "病因".
_HEADING_ALT = "|".join(re.escape(h) for h in sorted(_SPELLINGS, key=len, reverse=True))
# A heading: optional markdown marks / numbering / brackets, a known heading, closing marks, a colon.
# `_is_heading` then rejects matches that are only the first word of an ordinary sentence.
_HEADING_RE = re.compile(
    r"^[ \t]*(?P<marks>(?:#{1,6}[ \t]*)?(?:\*\*|__)?[ \t]*(?:[(\[【〔]?[0-9一二三四五六七八九十]{1,2}[)\].、．\]】〕]?[ \t]*)?"
    r"(?:\*\*|__)?[ \t]*[【\[〔]?)"
    r"(?P<name>" + _HEADING_ALT + r")"
    r"(?P<close>[】\]〕]?[ \t]*(?:\*\*|__)?)[ \t]*"
    r"(?P<sep>[:：]?)(?:[ \t]*(?:\*\*|__))?[ \t]*(?P<eol>$)?",
    re.IGNORECASE | re.MULTILINE,
)
_THINK_OPEN = re.compile(r"<\s*think\s*>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"<\s*/\s*think\s*>", re.IGNORECASE)
_OUTPUT_OPEN = re.compile(r"<\s*output\s*>", re.IGNORECASE)
_OUTPUT_CLOSE = re.compile(r"<\s*/\s*output\s*>", re.IGNORECASE)


@dataclass
class ParsedAnswer:
    """What the parser read from a text, and how well-formed the text was."""

    answer: Answer
    found: list[str]
    has_think: bool = False
    think_closed: bool = False
    has_output: bool = False
    output_closed: bool = False
    trailing: str = ""
    duplicates: list[str] = field(default_factory=list)

    def missing(self, keys: tuple[str, ...] | list[str] = REQUIRED_OUTPUT_KEYS) -> list[str]:
        return [k for k in keys if k not in self.found]

    @property
    def well_formed(self) -> bool:
        """Both tag pairs present and closed, and every required section found."""
        return (self.has_think and self.think_closed and self.has_output and self.output_closed
                and not self.missing())


def render_answer(answer: Answer, lang: Literal["zh", "en"] = "zh", sections: tuple[str, ...] | None = None,
                  think: bool = True) -> str:
    """Render the answer; `sections` limits the output part (in canonical order), `think` adds reasoning."""
    wanted = [k for k in OUTPUT_KEYS if (sections is None or k in sections) and getattr(answer, k)]
    parts = []
    if think:
        parts.append(f"<think>\n{(answer.reasoning or '').strip()}\n</think>")
    body = "\n\n".join(f"## {_title(k, lang)}\n{getattr(answer, k).strip()}" for k in wanted)
    parts.append(f"<output>\n{body}\n</output>")
    return "\n".join(parts)


def _title(key: str, lang: str) -> str:
    spec = SECTION_BY_KEY[key]
    return spec.zh if lang == "zh" else spec.en


def _split_tags(text: str) -> tuple[str, str, dict[str, bool], str]:
    """Return (reasoning, body, flags, trailing) from the raw text using the think/output tags."""
    flags = {"has_think": False, "think_closed": False, "has_output": False, "output_closed": False}
    reasoning, rest = "", text
    m_open = _THINK_OPEN.search(text)
    if m_open:
        flags["has_think"] = True
        after = text[m_open.end():]
        m_close = _THINK_CLOSE.search(after)
        if m_close:
            flags["think_closed"] = True
            reasoning, rest = after[: m_close.start()], after[m_close.end():]
        else:
            # No </think>: reasoning runs until <output> or the first section heading.
            cut = _OUTPUT_OPEN.search(after)
            if cut is None:
                cut = next((h for h in _HEADING_RE.finditer(after)
                            if _is_heading(h) and _HEADINGS[_norm_heading(h["name"])] != "reasoning"), None)
            pos = cut.start() if cut else len(after)
            reasoning, rest = after[:pos], after[pos:]
    elif m_close := _THINK_CLOSE.search(text):
        # A chat template may have put <think> into the prompt: everything before </think> is reasoning.
        flags["has_think"] = flags["think_closed"] = True
        reasoning, rest = text[: m_close.start()], text[m_close.end():]
    trailing = ""
    m_out = _OUTPUT_OPEN.search(rest)
    if m_out:
        flags["has_output"] = True
        rest = rest[m_out.end():]
    m_end = _OUTPUT_CLOSE.search(rest)
    if m_end:
        flags["output_closed"] = flags["has_output"]
        rest, trailing = rest[: m_end.start()], rest[m_end.end():]
    return reasoning, rest, flags, trailing.strip()


def parse_answer(text: str) -> ParsedAnswer:
    """Read sections back from model or teacher text. Never raises; reports what it found."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    reasoning, body, flags, trailing = _split_tags(text)
    sections: dict[str, str] = {}
    duplicates: list[str] = []
    heads = [m for m in _HEADING_RE.finditer(body) if _is_heading(m)]
    for i, m in enumerate(heads):
        key = _HEADINGS.get(_norm_heading(m["name"]))
        if key is None:
            continue
        end = heads[i + 1].start() if i + 1 < len(heads) else len(body)
        content = _clean(body[m.end():end])
        if key in sections:
            duplicates.append(key)
            continue
        if content:
            sections[key] = content
    if reasoning.strip() and "reasoning" not in sections:
        sections["reasoning"] = _clean(reasoning)
    answer = Answer(**{k: v for k, v in sections.items() if v})
    found = [k for k in SECTION_KEYS if getattr(answer, k)]
    return ParsedAnswer(answer=answer, found=found, trailing=trailing, duplicates=duplicates, **flags)


def _is_heading(m: re.Match) -> bool:
    """A match is a heading if it ends its line, has a colon, or carries heading marks (#, **, 【】)."""
    return bool(m["sep"] or m["eol"] is not None or m["close"].strip() or re.search(r"[#*_【\[〔]", m["marks"]))


def _clean(text: str) -> str:
    lines = [ln.rstrip() for ln in text.strip().splitlines()]
    # Drop stray separators ("---") and leftover tags that the model sometimes emits between sections.
    lines = [ln for ln in lines if not re.fullmatch(r"\s*(-{3,}|\*{3,}|</?\s*(think|output)\s*>)\s*", ln)]
    return "\n".join(lines).strip()


def parse_bench_json(data: str | dict) -> ParsedAnswer:
    """Read the TCMClinicalReason-Bench seven-key JSON (a dict or its text) into an Answer."""
    obj = data
    if isinstance(data, str):
        try:
            obj = json.loads(_strip_code_fence(data))
        except (json.JSONDecodeError, ValueError):
            return parse_answer(data)
    if not isinstance(obj, dict):
        return parse_answer("" if obj is None else str(obj))
    sections = {}
    for zh, key in BENCH_KEYS.items():
        value = obj.get(zh)
        if value is None:
            continue
        if not isinstance(value, str):
            value = json.dumps(value, ensure_ascii=False)
        if value.strip():
            sections[key] = value.strip()
    answer = Answer(**sections)
    return ParsedAnswer(answer=answer, found=[k for k in SECTION_KEYS if getattr(answer, k)])


def to_bench_json(answer: Answer) -> dict[str, str]:
    """The seven-key layout of TCMClinicalReason-Bench submissions (empty string for a missing part)."""
    return {zh: getattr(answer, key) or "" for zh, key in BENCH_KEYS.items()}


def _strip_code_fence(text: str) -> str:
    m = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    return m.group(1) if m else text
