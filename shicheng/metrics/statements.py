"""Agreement of syndrome (辨证) and principle (治法) statements, after one normalisation of their clauses.

Two measures over the same clauses: `statement_agreement` (exact clause-set match and character F1, for
evaluation) and `syndrome_f1` (character-bigram F1, the GRPO syndrome reward).
"""

from __future__ import annotations

import re
from collections import Counter

from shicheng.metrics.reading import overlap_f1
from shicheng.text import normalise_text

# Words that frame a statement rather than carry it: 主证：脾胃虚寒证；兼证：气滞 ≈ 脾胃虚寒 气滞.
_SYNDROME_FRAME = re.compile(r"证候诊断|中医诊断|辨证|主证|兼证|兼夹|兼有|证型|证候|诊断")
_PRINCIPLE_FRAME = re.compile(r"治则治法|治法治则|治疗原则|治则|治法|治以|治宜|治当|法当|法宜|拟以|拟用")
CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]+")


def statement_clauses(text: str | None, kind: str = "syndrome", simplified: bool = True) -> list[str]:
    """Clauses of a syndrome or principle statement after normalisation: NFKC, traditional -> simplified
    (unless `simplified` is False), framing words removed, punctuation and spaces split clauses, a
    clause-final 证/型 dropped."""
    frame = {"syndrome": _SYNDROME_FRAME, "principle": _PRINCIPLE_FRAME}[kind]
    text = normalise_text(text, fold="nfkc", simplified=simplified)
    out = []
    for run in CJK_RUN.findall(frame.sub(" ", text)):
        out.append(re.sub(r"[证型]$", "", run) if len(run) > 2 else run)
    return out


def statement_agreement(pred: str | None, gold: str | None, kind: str = "syndrome"
                        ) -> tuple[bool | None, float | None]:
    """(normalised exact match, character-level F1) of two statements; (None, None) without a gold one.
    Exact match compares the sets of normalised clauses, so 脾虚，湿盛 equals 湿盛证、脾虚."""
    g = statement_clauses(gold, kind)
    if not g:
        return None, None
    p = statement_clauses(pred, kind)
    gc, pc = Counter("".join(g)), Counter("".join(p))
    return set(p) == set(g), overlap_f1(sum((gc & pc).values()), sum(pc.values()), sum(gc.values()))


def syndrome_units(text: str) -> Counter:
    """Character bigrams of a syndrome statement's clauses, one multiset, never across clause boundaries;
    a one-character clause counts as itself.

    Why bigrams and not terms: syndrome names are compositional (脾肾阳虚，寒凝中焦) and written with
    many paraphrases (脾肾阳虚证 / 脾阳肾阳俱虚); without a syndrome dictionary a word segmenter splits them
    unpredictably, while shared bigrams (脾肾, 阳虚, 寒凝) carry the agreement — the Chinese ROUGE-2 idea.
    Traditional characters are kept as written: the reward has always compared them so, and a trained
    run's rewards must not shift under it.
    """
    units: Counter = Counter()
    for clause in statement_clauses(text, "syndrome", simplified=False):
        if len(clause) == 1:
            units[clause] += 1
        units.update(clause[i:i + 2] for i in range(len(clause) - 1))
    return units


def syndrome_f1(predicted: str, gold: str) -> float:
    """Bigram F1 of two syndrome statements (see `syndrome_units`)."""
    pred, ref = syndrome_units(predicted), syndrome_units(gold)
    return overlap_f1(sum((pred & ref).values()), sum(pred.values()), sum(ref.values()))
