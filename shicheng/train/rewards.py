"""GRPO rewards computed by our own code: format, base-herb F1, syndrome agreement, safety, master style.

Every reward has TRL's signature `reward(prompts, completions, **kwargs) -> list[float | None]`. TRL passes
the dataset columns as kwargs, one value per completion; stage-5 rows carry `gold` (Answer dict),
`gold_herbs` (base herbs), `patient` (Patient dict), `master_id` and `task`. Completions may be strings or
chat messages (`[{"role": "assistant", "content": …}]`). Scores lie in [0, 1]. A reward that does not
apply to a row — herb F1 when the task asks for no prescription, syndrome when the gold has none, style
without a master — returns None, which TRL reads as "not applicable" (NaN, left out of its weighted sum).

Scales:
- format: 0.4 × tag checks (<think> opened, closed and non-empty, <output> opened and closed; 1/5 each)
  + 0.5 × share of the task's required sections found (template.parse_answer) + 0.1 if there is an
  <output> part, nothing trails `</output>` and no section repeats.
- herb_f1: F1 between the base herbs of the completion's 处方 section (prescription.parse_prescription,
  aliases and processed forms counted as their base herb) and the gold base herbs.
- syndrome: character-bigram F1 between the completion's 辨证 and the gold's (see `syndrome_units`).
- safety: 1 − 0.6 per error (十八反/十九畏 pair; 妊娠禁用 herb for a pregnant patient) − 0.1 per warning
  (妊娠慎用; daily dose outside the pharmacopoeia range), floored at 0. One incompatible pair → 0.4.
- master_style: probability that the answer comes from the requested master (MasterStyleModel).

A reward never raises on what a model writes: GRPO samples text that ends anywhere, and one exception would
stop the run. When the answer or prescription parser fails on a completion, the failure is logged (once per
distinct text) and the completion is scored as unreadable: an unparsed answer has no sections (format and
syndrome score what is left, herb F1 0), and a 处方 section the parser cannot read has no herbs (herb F1 0,
no style herbs) and scores safety 0, because a prescription that cannot be checked cannot be called safe.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from shicheng.domain import REQUIRED_OUTPUT_KEYS, SECTION_BY_KEY, Answer, Case, Patient, Prescription, Task
from shicheng.prescription import parse_prescription
from shicheng.safety import check_safety
from shicheng.template import ParsedAnswer, parse_answer

log = logging.getLogger(__name__)
RewardFn = Callable[..., list]
SAFETY_ERROR_PENALTY = 0.6
SAFETY_WARNING_PENALTY = 0.1
DEFAULT_WEIGHTS: dict[str, float] = {"format": 0.15, "herb_f1": 0.3, "syndrome": 0.2, "safety": 0.15,
                                     "master_style": 0.2}

_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]+")
# Words that frame a syndrome rather than name it: 主证：脾胃虚寒证；兼证：气滞 ≈ 脾胃虚寒 气滞.
_SYNDROME_FRAME = re.compile(r"证候诊断|辨证|主证|兼证|兼夹|兼有|证型|证候|中医诊断|诊断")


def completion_text(completion) -> str:
    """The assistant text of a completion: a string, or chat messages whose content is text or text parts."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        content = completion.get("content", "")
        if isinstance(content, list):
            return "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
        return "" if content is None else str(content)
    messages = list(completion)
    assistant = [m for m in messages if isinstance(m, Mapping) and m.get("role", "assistant") == "assistant"]
    return "\n".join(completion_text(m) for m in (assistant or messages))


def _column(kwargs: Mapping, name: str, n: int) -> list:
    values = kwargs.get(name)
    if values is None:
        return [None] * n
    values = list(values)
    if len(values) != n:
        raise ValueError(f"reward column '{name}' has {len(values)} values for {n} completions")
    return values


def _answer(value) -> Answer | None:
    if value is None or isinstance(value, Answer):
        return value
    if isinstance(value, str):
        value = json.loads(value)
    return Answer(**{k: v for k, v in dict(value).items() if v is not None})


def _task(value) -> Task | None:
    return None if value in (None, "") else Task(value)


def required_sections(task: Task | str | None) -> tuple[str, ...]:
    """Output sections a task must answer (all required ones for the full chain or an unknown task)."""
    task = _task(task)
    if task is None:
        return REQUIRED_OUTPUT_KEYS
    keys = tuple(k for k in task.sections if k != "reasoning" and not SECTION_BY_KEY[k].optional)
    return keys or REQUIRED_OUTPUT_KEYS


def _snippet(text: str) -> str:
    return repr(text[:60] + ("…" if len(text) > 60 else ""))


@functools.lru_cache(maxsize=4096)
def _parsed(text: str) -> ParsedAnswer:
    # GRPO scores each completion with several rewards; parse it once (and log a failure once).
    try:
        return parse_answer(text)
    except Exception as e:  # a parser bug must cost this completion its score, not the training run
        log.warning("reward: answer parser failed (%s: %s) on %s; scored as an unreadable answer",
                    type(e).__name__, e, _snippet(text))
        return ParsedAnswer(answer=Answer(), found=[])


@functools.lru_cache(maxsize=4096)
def _read_prescription(section: str) -> Prescription | None:
    """The parsed 处方 section; None when the parser fails on it (logged once per distinct text)."""
    try:
        return parse_prescription(section).prescription
    except Exception as e:  # see _parsed
        log.warning("reward: prescription parser failed (%s: %s) on %s; scored as an unreadable prescription",
                    type(e).__name__, e, _snippet(section))
        return None


def _prescription_bases(section: str) -> tuple[str, ...]:
    rx = _read_prescription(section)
    return () if rx is None else tuple(dict.fromkeys(rx.base_herbs()))


def format_score(text: str, task: Task | str | None = None) -> float:
    p = _parsed(text)
    tags = (p.has_think + p.think_closed + bool(p.answer.reasoning) + p.has_output + p.output_closed) / 5
    required = required_sections(task)
    found = sum(k in p.found for k in required) / len(required)
    clean = 1.0 if p.has_output and not (p.trailing or p.duplicates) else 0.0
    return round(0.4 * tags + 0.5 * found + 0.1 * clean, 6)


def _f1(hit: float, predicted: float, gold: float) -> float:
    return 2 * hit / (predicted + gold) if hit else 0.0  # = 2PR / (P + R)


def herb_f1(predicted: Iterable[str], gold: Iterable[str]) -> float:
    """F1 of two sets of base herbs; 0 when either is empty."""
    pred, ref = set(predicted), set(gold)
    return _f1(len(pred & ref), len(pred), len(ref))


def completion_herbs(text: str) -> list[str]:
    """Base herbs of the completion's 处方 section (empty when it has none)."""
    section = _parsed(text).answer.prescription
    return list(_prescription_bases(section)) if section else []


def syndrome_units(text: str) -> Counter:
    """Character bigrams of a syndrome statement, one multiset, never across clause boundaries.

    Why bigrams and not terms: syndrome names are compositional (脾肾阳虚，寒凝中焦) and written with
    many paraphrases (脾肾阳虚证 / 脾阳肾阳俱虚); without a syndrome dictionary a word segmenter splits them
    unpredictably, while shared bigrams (脾肾, 阳虚, 寒凝) carry the agreement — the Chinese ROUGE-2 idea.
    Normalisation: NFKC; framing words (辨证, 主证, 兼证, 证型 …) removed; a clause-final 证/型 dropped;
    punctuation splits clauses. A one-character clause counts as itself.
    """
    text = _SYNDROME_FRAME.sub(" ", unicodedata.normalize("NFKC", text or ""))
    units: Counter = Counter()
    for run in _CJK_RUN.findall(text):
        run = re.sub(r"(证|型)$", "", run) if len(run) > 2 else run
        if len(run) == 1:
            units[run] += 1
        units.update(run[i:i + 2] for i in range(len(run) - 1))
    return units


def syndrome_f1(predicted: str, gold: str) -> float:
    pred, ref = syndrome_units(predicted), syndrome_units(gold)
    return _f1(sum((pred & ref).values()), sum(pred.values()), sum(ref.values()))


def safety_score(text: str, patient: Patient | Mapping | None = None) -> float:
    section = _parsed(text).answer.prescription
    if not section:
        return 1.0
    if patient is not None and not isinstance(patient, Patient):
        patient = Patient(**{k: v for k, v in dict(patient).items() if v is not None})
    rx = _read_prescription(section)
    if rx is None:
        return 0.0
    try:
        findings = check_safety(rx, patient)
    except Exception as e:  # see _parsed: unchecked is not safe
        log.warning("reward: safety check failed (%s: %s) on %s; scored 0", type(e).__name__, e, _snippet(section))
        return 0.0
    errors = sum(f.level == "error" for f in findings)
    warnings = sum(f.level == "warning" for f in findings)
    return max(0.0, 1.0 - SAFETY_ERROR_PENALTY * errors - SAFETY_WARNING_PENALTY * warnings)


def format_reward(prompts, completions, **kwargs) -> list[float]:
    tasks = _column(kwargs, "task", len(completions))
    return [format_score(completion_text(c), t) for c, t in zip(completions, tasks, strict=True)]


def _asks(task, key: str) -> bool:
    task = _task(task)
    return task is None or key in task.sections


def herb_f1_reward(prompts, completions, **kwargs) -> list[float | None]:
    n = len(completions)
    out: list[float | None] = []
    for c, herbs, gold, task in zip(completions, _column(kwargs, "gold_herbs", n), _column(kwargs, "gold", n),
                                    _column(kwargs, "task", n), strict=True):
        if herbs is None and (answer := _answer(gold)) is not None and answer.prescription:
            herbs = _prescription_bases(answer.prescription)
        if not herbs or not _asks(task, "prescription"):
            out.append(None)
            continue
        out.append(herb_f1(completion_herbs(completion_text(c)), herbs))
    return out


def syndrome_reward(prompts, completions, **kwargs) -> list[float | None]:
    n = len(completions)
    out: list[float | None] = []
    for c, gold, task in zip(completions, _column(kwargs, "gold", n), _column(kwargs, "task", n), strict=True):
        answer = _answer(gold)
        if answer is None or not answer.syndrome or not _asks(task, "syndrome"):
            out.append(None)
            continue
        out.append(syndrome_f1(_parsed(completion_text(c)).answer.syndrome or "", answer.syndrome))
    return out


def safety_reward(prompts, completions, **kwargs) -> list[float]:
    patients = _column(kwargs, "patient", len(completions))
    return [safety_score(completion_text(c), p) for c, p in zip(completions, patients, strict=True)]


STYLE_SECTIONS = ("syndrome", "treatment_principle", "etiology_pathogenesis", "master_theory")


def style_features(answer: Answer | str, herb_weight: float = 2.0) -> Counter:
    """Base herbs of the prescription (`herb:黄芪`) and character bigrams of the syndrome, principle,
    pathogenesis and master's-theory sections (`term:健脾`). Text without section headings is read whole."""
    if isinstance(answer, str):
        text = answer
        answer = _parsed(text).answer
        if not any(getattr(answer, k) for k in (*STYLE_SECTIONS, "prescription")):
            answer = Answer(prescription=text, syndrome=text)
    feats: Counter = Counter()
    if answer.prescription:
        for base in _prescription_bases(answer.prescription):
            feats[f"herb:{base}"] += herb_weight
    for key in STYLE_SECTIONS:
        for run in _CJK_RUN.findall(getattr(answer, key) or ""):
            feats.update(f"term:{run[i:i + 2]}" for i in range(len(run) - 1))
    return feats


SHARPNESS_GRID = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


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
        labelled = [(m, style_features(a if isinstance(a, str) else _answer(a), herb_weight))
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
            answer = _answer(row.get("gold"))
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


def master_style_reward(model: MasterStyleModel) -> RewardFn:
    """A TRL reward: P(requested master | completion); None when the row names no master the model knows."""

    def master_style(prompts, completions, **kwargs) -> list[float | None]:
        masters = _column(kwargs, "master_id", len(completions))
        return [model.score(completion_text(c), m) if m in model.counts else None
                for c, m in zip(completions, masters, strict=True)]

    master_style.__name__ = "master_style_reward"  # TRL logs rewards/<name>, like the other rewards

    return master_style


def attribution(texts_by_requested_master: Mapping[str, Sequence[str]], style_model: MasterStyleModel) -> dict:
    """How often "asking for master X" gives an answer the style model attributes to X (argmax)."""
    confusion: dict[str, dict[str, int]] = {}
    per_master: dict[str, float] = {}
    hits = total = 0
    for requested, texts in sorted(texts_by_requested_master.items()):
        row = confusion.setdefault(requested, {})
        for text in texts:
            predicted = style_model.predict(text)
            row[predicted] = row.get(predicted, 0) + 1
        n = len(texts)
        if n:
            per_master[requested] = row.get(requested, 0) / n
            hits += row.get(requested, 0)
            total += n
    return {"accuracy": hits / total if total else 0.0, "n": total, "per_master": per_master,
            "confusion": confusion}


REWARDS: dict[str, RewardFn] = {"format": format_reward, "herb_f1": herb_f1_reward, "syndrome": syndrome_reward,
                                "safety": safety_reward}


def reward_functions(weights: Mapping[str, float] | None = None, style_model: MasterStyleModel | None = None
                     ) -> tuple[list[RewardFn], list[float]]:
    """Named rewards as (functions, weights) for `GRPOTrainer(reward_funcs=…)` and `GRPOConfig(reward_weights=…)`;
    TRL logs each under its function name. `master_style` needs a style model."""
    chosen = dict(DEFAULT_WEIGHTS if weights is None else weights)
    if style_model is None:
        if weights is not None and chosen.get("master_style"):
            raise ValueError("reward 'master_style' needs a fitted MasterStyleModel")
        chosen.pop("master_style", None)
    unknown = sorted(set(chosen) - {*REWARDS, "master_style"})
    if unknown:
        raise ValueError(f"unknown rewards {unknown}; known: {[*REWARDS, 'master_style']}")
    funcs = [master_style_reward(style_model) if name == "master_style" else REWARDS[name] for name in chosen]
    return funcs, [float(w) for w in chosen.values()]


def combined_reward(weights: Mapping[str, float] | None = None, style_model: MasterStyleModel | None = None
                    ) -> RewardFn:
    """One TRL reward: the weighted mean of the applicable rewards (weights renormalised per row)."""
    funcs, ws = reward_functions(weights, style_model)

    def combined(prompts, completions, **kwargs) -> list[float]:
        columns = [f(prompts, completions, **kwargs) for f in funcs]
        out = []
        for row in zip(*columns, strict=True):
            pairs = [(w, r) for w, r in zip(ws, row, strict=True) if r is not None and w]
            norm = sum(w for w, _ in pairs)
            out.append(sum(w * r for w, r in pairs) / norm if norm else 0.0)
        return out

    return combined


def zero_spread_fraction(rewards: Sequence[float | None], group_size: int) -> float:
    """Share of GRPO groups (consecutive blocks of `group_size`) whose rewards are all equal: no signal."""
    if group_size < 1 or len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards do not split into groups of {group_size}")
    groups, flat = len(rewards) // group_size, 0
    for g in range(groups):
        vals = [r for r in rewards[g * group_size:(g + 1) * group_size] if r is not None and not math.isnan(r)]
        flat += not vals or max(vals) - min(vals) <= 1e-9
    return flat / groups if groups else 0.0

