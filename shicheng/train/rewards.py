"""GRPO rewards: TRL adapters over shicheng.metrics (format, base-herb F1, syndrome agreement, safety,
master style), their weights and the combined reward.

Every reward has TRL's signature `reward(prompts, completions, **kwargs) -> list[float | None]`. TRL passes
the dataset columns as kwargs, one value per completion; stage-5 rows carry `gold` (Answer dict),
`gold_herbs` (base herbs), `patient` (Patient dict), `master_id` and `task`. Completions may be strings or
chat messages (`[{"role": "assistant", "content": …}]`). Scores lie in [0, 1]. A reward that does not
apply to a row — herb F1 when the task asks for no prescription, syndrome when the gold has none, style
without a master — returns None, which TRL reads as "not applicable" (NaN, left out of its weighted sum).

Scales (the metrics say how each is computed):
- format: metrics.format_score for the row's task;
- herb_f1: metrics.herb_f1 of metrics.completion_herbs (the known base herbs of the 处方 section) against
  the gold base herbs;
- syndrome: metrics.syndrome_f1, character-bigram F1 of the 辨证 sections;
- safety: metrics.safety_score (one incompatible pair → 0.4);
- master_style: probability that the answer comes from the requested master (metrics.MasterStyleModel).

A reward never raises on what a model writes: GRPO samples text that ends anywhere, and one exception would
stop the run. The metrics' readers log a parser failure once per distinct text and score the completion
as unreadable: an unparsed answer has no sections (format and syndrome score what is left, herb F1 0), and
a 处方 section the parser cannot read has no herbs (herb F1 0, no style herbs) and scores safety 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from shicheng.metrics import (
    MasterStyleModel,
    as_answer,
    asks_for,
    completion_herbs,
    format_score,
    herb_f1,
    read_answer,
    safety_score,
    section_herbs,
    syndrome_f1,
)

RewardFn = Callable[..., list]
DEFAULT_WEIGHTS: dict[str, float] = {"format": 0.15, "herb_f1": 0.3, "syndrome": 0.2, "safety": 0.15,
                                     "master_style": 0.2}


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


def format_reward(prompts, completions, **kwargs) -> list[float]:
    tasks = _column(kwargs, "task", len(completions))
    return [format_score(completion_text(c), t) for c, t in zip(completions, tasks, strict=True)]


def herb_f1_reward(prompts, completions, **kwargs) -> list[float | None]:
    n = len(completions)
    out: list[float | None] = []
    for c, herbs, gold, task in zip(completions, _column(kwargs, "gold_herbs", n), _column(kwargs, "gold", n),
                                    _column(kwargs, "task", n), strict=True):
        if herbs is None and (answer := as_answer(gold)) is not None and answer.prescription:
            herbs = section_herbs(answer.prescription)
        if not herbs or not asks_for(task, "prescription"):
            out.append(None)
            continue
        out.append(herb_f1(completion_herbs(completion_text(c)), herbs))
    return out


def syndrome_reward(prompts, completions, **kwargs) -> list[float | None]:
    n = len(completions)
    out: list[float | None] = []
    for c, gold, task in zip(completions, _column(kwargs, "gold", n), _column(kwargs, "task", n), strict=True):
        answer = as_answer(gold)
        if answer is None or not answer.syndrome or not asks_for(task, "syndrome"):
            out.append(None)
            continue
        out.append(syndrome_f1(read_answer(completion_text(c)).answer.syndrome or "", answer.syndrome))
    return out


def safety_reward(prompts, completions, **kwargs) -> list[float]:
    patients = _column(kwargs, "patient", len(completions))
    return [safety_score(completion_text(c), p) for c, p in zip(completions, patients, strict=True)]


def master_style_reward(model: MasterStyleModel) -> RewardFn:
    """A TRL reward: P(requested master | completion); None when the row names no master the model knows."""

    def master_style(prompts, completions, **kwargs) -> list[float | None]:
        masters = _column(kwargs, "master_id", len(completions))
        return [model.score(completion_text(c), m) if m in model.counts else None
                for c, m in zip(completions, masters, strict=True)]

    master_style.__name__ = "master_style_reward"  # TRL logs rewards/<name>, like the other rewards

    return master_style


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
