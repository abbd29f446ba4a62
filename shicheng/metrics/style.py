"""Whose style is an answer in: the master style model, and master attribution.

The style model is fitted on the training cases' answers and used twice: as the GRPO reward
`master_style` (the probability that a completion comes from the requested master) and in evaluation
(does asking for master X give answers attributed to X).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from shicheng.domain import Answer, Case
from shicheng.metrics.herbs import section_herbs
from shicheng.metrics.reading import as_answer, read_answer
from shicheng.metrics.statements import CJK_RUN

STYLE_SECTIONS = ("syndrome", "treatment_principle", "etiology_pathogenesis", "master_theory")
SHARPNESS_GRID = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
UNATTRIBUTED = "(none)"  # column for answers with no feature the style model knows: nobody's style


def style_features(answer: Answer | str, herb_weight: float = 2.0) -> Counter:
    """Base herbs of the prescription (`herb:黄芪`) and character bigrams of the syndrome, principle,
    pathogenesis and master's-theory sections (`term:健脾`). Text without section headings is read whole."""
    if isinstance(answer, str):
        text = answer
        answer = read_answer(text).answer
        if not any(getattr(answer, k) for k in (*STYLE_SECTIONS, "prescription")):
            answer = Answer(prescription=text, syndrome=text)
    feats: Counter = Counter()
    for base in section_herbs(answer.prescription):
        feats[f"herb:{base}"] += herb_weight
    for key in STYLE_SECTIONS:
        for run in CJK_RUN.findall(getattr(answer, key) or ""):
            feats.update(f"term:{run[i:i + 2]}" for i in range(len(run) - 1))
    return feats


def _sum_counts(labelled: Iterable[tuple[str, Counter]]) -> dict[str, Counter]:
    counts: dict[str, Counter] = {}
    for master, feats in labelled:
        counts.setdefault(master, Counter()).update(feats)
    return counts


class MasterStyleModel:
    """How typical an answer's herbs and key terms are of each master versus the others.

    Multinomial naive Bayes with Laplace smoothing (`alpha`) over `style_features`, uniform prior over
    masters (we ask "whose style", not "whose cases are most numerous"). The log-likelihood is averaged
    per unit of feature weight and multiplied by `sharpness` before the softmax, so that a long answer does
    not saturate the probability at 0 or 1; the argmax is unchanged. `fit` picks the sharpness from
    SHARPNESS_GRID that maximises the held-out likelihood of the right master (two-fold cross-fitting), so
    the reward is a calibrated probability rather than a near-binary one.
    """

    def __init__(self, counts: Mapping[str, Mapping[str, float]], alpha: float = 1.0, sharpness: float = 4.0,
                 herb_weight: float = 2.0):
        if len(counts) < 2:
            raise ValueError(f"a style model needs at least two masters, got {sorted(counts)}")
        self.counts = {m: dict(c) for m, c in sorted(counts.items())}
        self.alpha, self.sharpness, self.herb_weight = alpha, sharpness, herb_weight
        self.vocab = {f for c in self.counts.values() for f in c}
        self._log_p: dict[str, dict[str, float]] = {}
        for master, c in self.counts.items():
            denom = sum(c.values()) + alpha * len(self.vocab)
            self._log_p[master] = {f: math.log((c.get(f, 0.0) + alpha) / denom) for f in self.vocab}

    @property
    def masters(self) -> list[str]:
        return list(self.counts)

    @classmethod
    def fit(cls, examples: Iterable[tuple[str, Answer | Mapping | str]], alpha: float = 1.0,
            sharpness: float | None = None, herb_weight: float = 2.0) -> MasterStyleModel:
        """Fit from (master_id, answer) pairs; the answer is an Answer, an Answer dict or answer text.
        Stage-5 rows (mappings) are passed on to `fit_rows`."""
        examples = list(examples)
        if examples and isinstance(examples[0], Mapping):
            return cls.fit_rows(examples, alpha=alpha, sharpness=sharpness, herb_weight=herb_weight)
        labelled = [(m, style_features(a if isinstance(a, str) else as_answer(a), herb_weight))
                    for m, a in examples if m]
        if sharpness is None:
            sharpness = cls._calibrate(labelled, alpha, herb_weight)
        return cls(_sum_counts(labelled), alpha=alpha, sharpness=sharpness, herb_weight=herb_weight)

    @classmethod
    def _calibrate(cls, labelled: list[tuple[str, Counter]], alpha: float, herb_weight: float) -> float:
        folds = (labelled[0::2], labelled[1::2])
        total, n = dict.fromkeys(SHARPNESS_GRID, 0.0), 0
        for train, held in (folds, folds[::-1]):
            counts = _sum_counts(train)
            if len(counts) < 2:
                return 4.0  # too few cases to cross-fit: a moderate default
            model = cls(counts, alpha=alpha, sharpness=1.0, herb_weight=herb_weight)
            for master, feats in held:
                if master not in counts:
                    continue
                base = model._feature_logits(feats)
                n += 1
                for s in SHARPNESS_GRID:
                    top = max(s * v for v in base.values())
                    log_z = top + math.log(sum(math.exp(s * v - top) for v in base.values()))
                    total[s] += s * base[master] - log_z
        return max(SHARPNESS_GRID, key=lambda s: (total[s], -s)) if n else 4.0

    @classmethod
    def fit_rows(cls, rows: Iterable[Mapping], **options) -> MasterStyleModel:
        """Fit from stage-5 rows (`master_id`, `gold`); one answer per case and visit, not per task."""
        seen: dict[tuple, tuple[str, Answer]] = {}
        for row in rows:
            answer = as_answer(row.get("gold"))
            if row.get("master_id") and answer is not None:
                seen.setdefault((row.get("case_id"), answer.model_dump_json()), (row["master_id"], answer))
        return cls.fit(seen.values(), **options)

    @classmethod
    def fit_cases(cls, cases: Iterable[Case], **options) -> MasterStyleModel:
        return cls.fit(((c.master_id, v.answer) for c in cases for v in c.visits if v.answer), **options)

    def _feature_logits(self, feats: Mapping[str, float]) -> dict[str, float]:
        known = {f: w for f, w in feats.items() if f in self.vocab}
        total = sum(known.values())
        if not total:
            return dict.fromkeys(self.masters, 0.0)
        return {m: self.sharpness * sum(w * self._log_p[m][f] for f, w in known.items()) / total
                for m in self.masters}

    def logits(self, answer: Answer | str) -> dict[str, float]:
        return self._feature_logits(style_features(answer, self.herb_weight))

    def probabilities(self, answer: Answer | str) -> dict[str, float]:
        logits = self.logits(answer)
        top = max(logits.values())
        exp = {m: math.exp(v - top) for m, v in logits.items()}
        z = sum(exp.values())
        return {m: v / z for m, v in exp.items()}

    def score(self, answer: Answer | str, master_id: str) -> float:
        """Probability that the answer comes from `master_id` (1/M when it has no known feature)."""
        if master_id not in self.counts:
            raise KeyError(f"unknown master '{master_id}'; the style model knows {self.masters}")
        return self.probabilities(answer)[master_id]

    def predict(self, answer: Answer | str) -> str:
        logits = self.logits(answer)
        return max(self.masters, key=logits.__getitem__)

    def attribute(self, answer: Answer | str) -> str | None:
        """The master the answer is attributed to; None when no feature of it is known (all logits equal),
        rather than whichever master happens to sort first."""
        logits = self.logits(answer)
        if len(set(logits.values())) == 1:
            return None
        return max(self.masters, key=logits.__getitem__)

    def save(self, path: str | Path) -> None:
        data = {"kind": "shicheng.master_style", "version": 1, "alpha": self.alpha, "sharpness": self.sharpness,
                "herb_weight": self.herb_weight, "counts": self.counts}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> MasterStyleModel:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("kind") != "shicheng.master_style":
            raise ValueError(f"{path}: not a master style model (kind={data.get('kind')!r})")
        return cls(data["counts"], alpha=data["alpha"], sharpness=data["sharpness"],
                   herb_weight=data["herb_weight"])


def confusion_matrix(attributed: Iterable[tuple[str, str | None]], masters: Sequence[str]) -> dict:
    """Accuracy and confusion matrix of (master asked for, master attributed or None) pairs.

    `rows` are the masters asked for (`masters`, then any others), `columns` `masters` plus UNATTRIBUTED;
    `matrix[i][j]` counts answers asked as rows[i] attributed to columns[j]. An unattributed answer is a
    miss. `per_master` is the row accuracy (None for a master never asked); `accuracy` is None for no pair."""
    attributed = list(attributed)
    columns = [*masters, UNATTRIBUTED]
    rows = [*masters, *sorted({r for r, _ in attributed} - set(masters))]
    counts = Counter((r, UNATTRIBUTED if who is None else who) for r, who in attributed)
    matrix = [[counts[(r, c)] for c in columns] for r in rows]
    per_master = {r: counts[(r, r)] / sum(line) if sum(line) else None
                  for r, line in zip(rows, matrix, strict=True)}
    n = len(attributed)
    hits = sum(counts[(r, r)] for r in rows)
    return {"accuracy": hits / n if n else None, "n": n, "n_unattributed": sum(line[-1] for line in matrix),
            "rows": rows, "columns": columns, "matrix": matrix, "per_master": per_master}


def attribution(texts_by_requested_master: Mapping[str, Sequence[str]], style_model: MasterStyleModel) -> dict:
    """How often "asking for master X" gives an answer the style model attributes to X: confusion_matrix,
    plus `confusion` as {asked: {attributed: count}} (non-zero cells only)."""
    pairs = [(asked, style_model.attribute(text)) for asked, texts in sorted(texts_by_requested_master.items())
             for text in texts]
    result = confusion_matrix(pairs, style_model.masters)
    result["confusion"] = {r: {c: k for c, k in zip(result["columns"], line, strict=True) if k}
                           for r, line in zip(result["rows"], result["matrix"], strict=True) if sum(line)}
    return result
