"""The clinician page: static HTML/JS/CSS, plus the facts it must share with the server.

The disclaimer, the section titles, the heading spellings the parser accepts and the task names come
from shicheng.domain and shicheng.template, injected into index.html once at start-up, so the page never
keeps its own copy. The disclaimer is written into the HTML itself, so it shows even without script.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from shicheng.domain import DISCLAIMER, SECTIONS, Task
from shicheng.template import HEADING_ALIASES
from shicheng.text import normalise_text

STATIC_DIR = Path(__file__).parent / "static"


def heading_key(text: str) -> str:
    """How the page compares headings: NFKC, lower case, single spaces (app.js does the same)."""
    return re.sub(r"\s+", " ", normalise_text(text, fold="nfkc", simplified=False).lower()).strip()


def page_config(model_name: str) -> dict:
    headings: dict[str, str] = {}
    for spec in SECTIONS:
        for name in (spec.zh, spec.en, *HEADING_ALIASES.get(spec.key, ())):
            headings.setdefault(heading_key(name), spec.key)
    return {
        "modelName": model_name,
        "disclaimer": DISCLAIMER,
        "sections": [{"key": s.key, "zh": s.zh, "en": s.en} for s in SECTIONS],
        "headings": headings,
        "tasks": [{"value": t.value, "zh": t.zh} for t in Task],
    }


def render_index(model_name: str) -> str:
    template = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    # `<` escaped so that no string in the JSON can close the <script> element it sits in.
    config = json.dumps(page_config(model_name), ensure_ascii=False).replace("<", "\\u003c")
    return template.replace("{{CONFIG_JSON}}", config).replace("{{DISCLAIMER}}", html.escape(DISCLAIMER))
