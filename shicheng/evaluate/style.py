"""Style fidelity: does asking for master X give an answer in X's style?

Three views, all deterministic:
- attribution: a style model fitted on the training split (metrics.MasterStyleModel) names the master an
  answer most resembles; accuracy and the confusion matrix (rows: master asked for, columns: master
  attributed), for normal predictions and for the counterfactual mode (every case asked as every master);
- herb distribution: per master, the Jensen–Shannon divergence (base 2, in [0, 1]) between the herbs of
  the gold answers and those of the generated answers;
- signature herbs: per master, the herbs most over-represented in that master's training prescriptions
  versus the other masters' (z-scored smoothed log-odds ratio), and how many of them an answer uses.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from shicheng.domain import Case, Task
from shicheng.metrics import HerbsLike, MasterStyleModel, base_herbs, confusion_matrix

# Tasks whose answers carry style features (herbs, or syndrome/principle/pathogenesis/theory terms).
STYLE_TASKS = frozenset(t.value for t in Task if set(t.sections) & {
    "syndrome", "treatment_principle", "etiology_pathogenesis", "master_theory", "prescription"})


def attribute(text: str, model: MasterStyleModel) -> str | None:
    """The master the style model attributes the answer to (MasterStyleModel.attribute); None when no
    feature of it is known."""
    return model.attribute(text)


def attribution_matrix(pairs: Iterable[tuple[str, str]], model: MasterStyleModel) -> dict:
    """Accuracy and confusion matrix of (master asked for, answer text) pairs.

    `rows` are the masters asked for (the model's masters, then any others), `columns` the model's masters
    plus UNATTRIBUTED; `matrix[i][j]` counts answers asked as rows[i] attributed to columns[j]. An
    unattributed answer is a miss. `per_master` is the row accuracy (None for a master never asked)."""
    return confusion_matrix([(asked, model.attribute(text)) for asked, text in pairs], model.masters)


def switch_matrix(triples: Iterable[tuple[str, str, str]], model: MasterStyleModel) -> dict:
    """Counterfactual mode: (master asked for, the case's own master, answer text) triples.

    The attribution matrix over all of them, plus, over answers asked as another master than the
    case's own: `switch_rate` (attributed to the master asked for) and `stay_rate` (attributed to the
    case's own master: the model ignored the request)."""
    return _switch([(asked, own, attribute(text, model)) for asked, own, text in triples], model)


def _switch(attributed: list[tuple[str, str, str | None]], model: MasterStyleModel) -> dict:
    result = confusion_matrix([(asked, who) for asked, _, who in attributed], model.masters)
    moved = [(asked, own, who) for asked, own, who in attributed if asked != own]
    n = len(moved)
    return result | {"n_switch": n,
                     "switch_rate": sum(who == asked for asked, _, who in moved) / n if n else None,
                     "stay_rate": sum(who == own for _, own, who in moved) / n if n else None}


def herb_distribution(prescriptions: Iterable[HerbsLike]) -> dict[str, float]:
    """Share of each base herb among all herb uses; an answer counts each base herb once."""
    counts: Counter = Counter()
    for rx in prescriptions:
        counts.update(set(base_herbs(rx)))
    total = sum(counts.values())
    return {h: c / total for h, c in sorted(counts.items())} if total else {}


def js_divergence(p: Mapping[str, float], q: Mapping[str, float]) -> float | None:
    """Jensen–Shannon divergence in bits (0 identical, 1 disjoint); None when either side is empty.
    Inputs need not be normalised; negative weights are an error."""
    if any(v < 0 for v in (*p.values(), *q.values())):
        raise ValueError("distributions must not hold negative weights")
    sp, sq = sum(p.values()), sum(q.values())
    if not sp or not sq:
        return None
    keys = set(p) | set(q)
    pn = {k: p.get(k, 0.0) / sp for k in keys}
    qn = {k: q.get(k, 0.0) / sq for k in keys}
    mid = {k: (pn[k] + qn[k]) / 2 for k in keys}

    def kl(a: dict[str, float]) -> float:
        return sum(v * math.log2(v / mid[k]) for k, v in a.items() if v > 0)

    return min(1.0, max(0.0, (kl(pn) + kl(qn)) / 2))


def herb_js_by_master(gold: Mapping[str, Iterable[HerbsLike]], generated: Mapping[str, Iterable[HerbsLike]]
                      ) -> dict[str, float | None]:
    """Per master (those in `gold`), JS divergence between gold and generated herb distributions."""
    return {m: js_divergence(herb_distribution(gold[m]), herb_distribution(generated.get(m, ())))
            for m in sorted(gold)}


def signature_herb_scores(examples: Iterable[tuple[str, HerbsLike]], top_k: int = 8, alpha: float = 0.5
                          ) -> dict[str, list[tuple[str, float]]]:
    """Per master, the top-k herbs by z-scored log-odds ratio of appearing in that master's prescriptions
    versus the other masters' (add-`alpha` smoothing; only over-represented herbs, score > 0).

    Why z-scores: the raw log-odds ratio favours a herb seen once in a small master's records; dividing
    by its standard error ranks herbs the master uses often and the others rarely."""
    if top_k < 1 or alpha <= 0:
        raise ValueError(f"top_k must be ≥ 1 and alpha > 0, got top_k={top_k}, alpha={alpha}")
    docs: dict[str, Counter] = {}
    sizes: Counter = Counter()
    for master, rx in examples:
        herbs = set(base_herbs(rx))
        if not master or not herbs:
            continue
        docs.setdefault(master, Counter()).update(herbs)
        sizes[master] += 1
    if len(docs) < 2:
        raise ValueError(f"signature herbs need prescriptions of at least two masters, got {sorted(docs)}")
    all_counts: Counter = sum(docs.values(), Counter())
    n_all = sum(sizes.values())
    out = {}
    for master in sorted(docs):
        n_m, n_o = sizes[master], n_all - sizes[master]
        scored = []
        for herb, y_m in docs[master].items():
            y_o = all_counts[herb] - y_m
            a, b, c, d = y_m + alpha, n_m - y_m + alpha, y_o + alpha, n_o - y_o + alpha
            z = (math.log(a / b) - math.log(c / d)) / math.sqrt(1 / a + 1 / b + 1 / c + 1 / d)
            if z > 0:
                scored.append((herb, z))
        out[master] = sorted(scored, key=lambda hz: (-hz[1], hz[0]))[:top_k]
    return out


def signature_herbs(examples: Iterable[tuple[str, HerbsLike]], top_k: int = 8, alpha: float = 0.5
                    ) -> dict[str, list[str]]:
    """Per master, its top-k signature herbs (see signature_herb_scores)."""
    return {m: [h for h, _ in hz] for m, hz in signature_herb_scores(examples, top_k, alpha).items()}


def case_prescriptions(cases: Iterable[Case]) -> list[tuple[str, HerbsLike]]:
    """(master, prescription) per visit of the cases that name a master: the structured prescription
    where the visit has one, else the answer's 处方 text."""
    out: list[tuple[str, HerbsLike]] = []
    for case in cases:
        if not case.master_id:
            continue
        for visit in case.visits:
            if visit.prescription and visit.prescription.herbs:
                out.append((case.master_id, visit.prescription))
            elif visit.answer and visit.answer.prescription:
                out.append((case.master_id, visit.answer.prescription))
    return out


def signature_recall(pred: HerbsLike, signature: Sequence[str]) -> float | None:
    """Share of the master's signature herbs that the answer prescribes; None without a signature."""
    sig = base_herbs(list(signature))
    if not sig:
        return None
    herbs = set(base_herbs(pred))
    return sum(h in herbs for h in sig) / len(sig)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def style_fidelity(predictions: Sequence[Mapping], model: MasterStyleModel, case_masters: Mapping[str, str],
                   gold_by_master: Mapping[str, Sequence[HerbsLike]] | None = None,
                   signatures: Mapping[str, Sequence[str]] | None = None,
                   tasks: Iterable[str] = STYLE_TASKS) -> dict[str, dict]:
    """Style fidelity per system from prediction rows (`system`, `case_id`, `master`, `task`, `output`).

    A row is normal when it asks for the case's own master (`case_masters[case_id]`), counterfactual
    otherwise. Per system: `attribution` (normal rows), `counterfactual` (switch_matrix over all rows of
    a system that has counterfactual rows, else None), `herb_js` and `signature_recall` per master, for
    normal and for counterfactual rows; only answers that prescribe count for herbs (`n_prescribing`).
    Answers whose text cannot be parsed are counted in `n_unparseable`, not scored."""
    wanted = {t.value if isinstance(t, Task) else t for t in tasks}
    by_system: dict[str, list[Mapping]] = {}
    for i, row in enumerate(predictions):
        case_id = row.get("case_id")
        if case_id not in case_masters:
            raise ValueError(f"prediction {i}: case '{case_id}' has no known master; pass it in case_masters")
        if row.get("task") in wanted:
            by_system.setdefault(str(row.get("system")), []).append(row)
    out = {}
    for system, rows in sorted(by_system.items()):
        attributed: list[tuple[str, str, str | None]] = []
        herbs: dict[str, dict[str, list[list[str]]]] = {"normal": {}, "counterfactual": {}}
        bad = 0
        for row in rows:
            asked, own, text = row.get("master"), case_masters[row["case_id"]], row.get("output") or ""
            try:
                who, bases = attribute(text, model), base_herbs(text)
            except Exception:  # a parser bug on one odd answer must not stop the report
                bad += 1
                continue
            attributed.append((asked, own, who))
            if bases:
                herbs["normal" if asked == own else "counterfactual"].setdefault(asked, []).append(bases)
        has_counter = any(asked != own for asked, own, _ in attributed)
        result: dict = {"n": len(rows), "n_unparseable": bad,
                        "attribution": confusion_matrix([(a, w) for a, o, w in attributed if a == o], model.masters),
                        "counterfactual": _switch(attributed, model) if has_counter else None}
        for mode, generated in herbs.items():
            suffix = "" if mode == "normal" else "_counterfactual"
            result[f"n_prescribing{suffix}"] = {m: len(v) for m, v in sorted(generated.items())}
            result[f"herb_js{suffix}"] = herb_js_by_master(gold_by_master, generated) if gold_by_master else None
            result[f"signature_recall{suffix}"] = (
                {m: _mean([r for rx in generated.get(m, []) if (r := signature_recall(rx, sig)) is not None])
                 for m, sig in sorted(signatures.items())} if signatures else None)
        out[system] = result
    return out
