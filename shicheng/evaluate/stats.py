"""Confidence intervals and paired tests over per-answer metric rows, resampling cases.

The unit of resampling is the case, not the answer: the visits, tasks and (in counterfactual mode)
masters of one case share a patient, so their scores are correlated, and treating them as independent
draws would make every interval too narrow. Each case contributes the mean of its rows; the estimate is
the mean over cases (each case weighs the same, whatever its number of rows). With one row per case this
is the plain mean.

Rows are dicts such as `metrics.answer_metrics` returns, plus `case_id`, `visit`, `master`, `task` and
`system`. A metric value of None (or NaN) means "not applicable" and is left out; its count is `n`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from numbers import Real
from typing import Literal

import numpy as np
from scipy import stats as sps

PAIR_KEYS: tuple[str, ...] = ("case_id", "visit", "master", "task")
GROUP_KEYS: tuple[str, ...] = ("system", "master", "task")
ID_KEYS = frozenset({"case_id", "visit", "master", "task", "system"})
_CHUNK = 1 << 22  # indices drawn per block, so that memory stays bounded whatever n_boot × cases is
_ZERO = 1e-12  # float noise (0.1 + 0.2 - 0.3) is no difference


@dataclass(frozen=True)
class Interval:
    mean: float | None
    ci_low: float | None  # None with fewer than two cases: one case has no sampling spread to show
    ci_high: float | None
    n: int  # rows with a value
    n_cases: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PairedResult:
    metric: str
    n_pairs: int  # keys present in both systems with a value in both
    n_clusters: int  # independent units the tests use (cases, or pairs with unit="pair")
    n_only_a: int  # keys with a value in A but none (or no row) in B: not compared, but counted
    n_only_b: int
    mean_a: float | None
    mean_b: float | None
    mean_diff: float | None  # A − B
    ci_low: float | None
    ci_high: float | None
    p_bootstrap: float | None
    p_wilcoxon: float | None
    wilcoxon_statistic: float | None
    effect_size: float | None  # matched-pairs rank-biserial correlation, > 0 when A scores higher

    def to_dict(self) -> dict:
        return asdict(self)


def _number(value, where: str) -> float | None:
    """A metric value as float; None/NaN are not applicable; text is an error naming where it was."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, Real):
        v = float(value)
        return None if math.isnan(v) else v
    raise ValueError(f"{where}: metric value {value!r} is not a number")


def cluster_means(values: Sequence, clusters: Sequence) -> tuple[np.ndarray, int]:
    """(mean per cluster in first-seen order, rows used), leaving out None/NaN values."""
    if len(values) != len(clusters):
        raise ValueError(f"{len(values)} values but {len(clusters)} case ids")
    sums: dict = {}
    n = 0
    for i, (v, c) in enumerate(zip(values, clusters, strict=True)):
        x = _number(v, f"value {i}")
        if x is None:
            continue
        s = sums.setdefault(c, [0.0, 0])
        s[0] += x
        s[1] += 1
        n += 1
    return np.array([s / k for s, k in sums.values()], dtype=float), n


def bootstrap_means(means: np.ndarray, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """Means of `n_boot` resamples (with replacement) of the per-case means."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    k = len(means)
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    step = max(1, _CHUNK // max(k, 1))
    for start in range(0, n_boot, step):
        stop = min(n_boot, start + step)
        out[start:stop] = means[rng.integers(0, k, size=(stop - start, k))].mean(axis=1)
    return out


def bootstrap_ci(values: Sequence, case_ids: Sequence | None = None, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> Interval:
    """Percentile-bootstrap CI of the mean, resampling cases (every row its own case when no ids)."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    means, n = cluster_means(values, list(range(len(values))) if case_ids is None else case_ids)
    if not len(means):
        return Interval(None, None, None, 0, 0)
    mean = float(means.mean())
    if len(means) < 2:
        return Interval(mean, None, None, n, 1)
    boot = bootstrap_means(means, n_boot, seed)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail])
    return Interval(mean, float(low), float(high), n, len(means))


def metric_names(rows: Iterable[Mapping], exclude: Iterable[str] = ()) -> list[str]:
    """Keys whose values are numbers (or booleans) in the rows, in first-seen order; text keys are skipped,
    and a key holding text in one row and numbers in another is an error."""
    skip = ID_KEYS | set(exclude)
    numeric: dict[str, None] = {}
    textual: set[str] = set()
    for i, row in enumerate(rows):
        for key, value in row.items():
            if key in skip or value is None:
                continue
            if isinstance(value, (bool, Real, np.bool_)):
                numeric.setdefault(key)
            else:
                textual.add(key)
            if key in numeric and key in textual:
                raise ValueError(f"row {i}: key '{key}' holds numbers in some rows and {value!r} in others")
    return list(numeric)


def _case(row: Mapping, i: int, case_key: str):
    if row.get(case_key) is None:
        raise ValueError(f"row {i} has no '{case_key}'; cases are the unit of resampling")
    return row[case_key]


def aggregate(rows: Sequence[Mapping], metrics: Sequence[str] | None = None, by: Sequence[str] = GROUP_KEYS,
              n_boot: int = 2000, seed: int = 0, level: float = 0.95, case_key: str = "case_id") -> list[dict]:
    """Mean, n and bootstrap CI of every metric per group (system × master × task by default).

    One dict per group and metric: the `by` fields, `metric`, `mean`, `n`, `n_cases`, `ci_low`, `ci_high`.
    Groups are sorted; a metric with no value in a group is reported with n = 0 and mean None."""
    rows = list(rows)
    metrics = list(metrics) if metrics is not None else metric_names(rows, exclude=(*by, case_key))
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        _case(row, i, case_key)
        groups.setdefault(tuple(row.get(k) for k in by), []).append(i)
    out = []
    for key in sorted(groups, key=lambda g: tuple((v is None, str(v)) for v in g)):
        idx = groups[key]
        cases = [rows[i][case_key] for i in idx]
        for metric in metrics:
            values = [rows[i].get(metric) for i in idx]
            try:
                ci = bootstrap_ci(values, cases, n_boot=n_boot, seed=seed, level=level)
            except ValueError as e:
                raise ValueError(f"metric '{metric}' in group {dict(zip(by, key, strict=True))}: {e}") from None
            out.append({**dict(zip(by, key, strict=True)), "metric": metric, **ci.to_dict()})
    return out


def _index(rows: Sequence[Mapping], keys: Sequence[str], name: str) -> dict[tuple, Mapping]:
    table: dict[tuple, Mapping] = {}
    for i, row in enumerate(rows):
        key = tuple(row.get(k) for k in keys)
        if key in table:
            raise ValueError(f"system {name}: rows {list(table).index(key)} and {i} share the key "
                             f"{dict(zip(keys, key, strict=True))}; pairs need unique keys")
        table[key] = row
    return table


def rank_biserial(diffs: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation (R+ − R−)/(R+ + R−) over the non-zero differences;
    0 when every difference is zero."""
    d = diffs[np.abs(diffs) > _ZERO]
    if not len(d):
        return 0.0
    ranks = sps.rankdata(np.round(np.abs(d), 12))
    plus, minus = ranks[d > 0].sum(), ranks[d < 0].sum()
    return float((plus - minus) / (plus + minus))


def wilcoxon(diffs: np.ndarray) -> tuple[float, float]:
    """(statistic, two-sided p) of the signed-rank test on the non-zero differences; (0, 1) when none
    differ, since scipy refuses an all-zero sample and there is no evidence of a difference."""
    d = np.where(np.abs(diffs) > _ZERO, np.round(diffs, 12), 0.0)
    d = d[d != 0]
    if not len(d):
        return 0.0, 1.0
    res = sps.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return float(res.statistic), float(min(1.0, res.pvalue))


def bootstrap_p(boot: np.ndarray) -> float:
    """Two-sided p of "mean difference = 0" from bootstrap means: twice the smaller tail beyond 0, with
    the +1 correction so a finite resample never claims p = 0."""
    b = len(boot)
    below = (np.count_nonzero(boot <= _ZERO) + 1) / (b + 1)
    above = (np.count_nonzero(boot >= -_ZERO) + 1) / (b + 1)
    return float(min(1.0, 2 * min(below, above)))


def paired_compare(rows_a: Sequence[Mapping], rows_b: Sequence[Mapping], metric: str,
                   keys: Sequence[str] = PAIR_KEYS, unit: Literal["case", "pair"] = "case", n_boot: int = 2000,
                   seed: int = 0, level: float = 0.95, case_key: str = "case_id") -> PairedResult:
    """Compare system A with system B on the rows they share (same `keys`): paired bootstrap of the mean
    difference A − B (CI and two-sided p) and the Wilcoxon signed-rank test with its rank-biserial effect.

    unit="case" (default) averages the differences within a case first, so both tests see independent
    cases; unit="pair" treats every (case, visit, master, task) pair as independent."""
    if unit not in ("case", "pair"):
        raise ValueError(f"unit must be 'case' or 'pair', got {unit!r}")
    a, b = _index(rows_a, keys, "A"), _index(rows_b, keys, "B")
    diffs, va, vb, clusters = [], [], [], []
    only_a = only_b = 0
    for key in {**a, **b}:
        xa = _number(a[key].get(metric), f"A {key} '{metric}'") if key in a else None
        xb = _number(b[key].get(metric), f"B {key} '{metric}'") if key in b else None
        if xa is None or xb is None:
            only_a += xa is not None
            only_b += xb is not None
            continue
        va.append(xa)
        vb.append(xb)
        diffs.append(xa - xb)
        if unit == "case" and a[key].get(case_key) is None:
            raise ValueError(f"row {dict(zip(keys, key, strict=True))} has no '{case_key}'; cases are the "
                             "unit of resampling (or pass unit='pair')")
        clusters.append(a[key][case_key] if unit == "case" else key)
    empty = PairedResult(metric, 0, 0, only_a, only_b, *([None] * 9))
    if not diffs:
        return empty
    mean_a, _ = cluster_means(va, clusters)
    mean_b, _ = cluster_means(vb, clusters)
    d = mean_a - mean_b
    d = np.where(np.abs(d) > _ZERO, d, 0.0)
    stat, p_w = wilcoxon(d)
    low = high = p_boot = None
    if len(d) >= 2:
        boot = bootstrap_means(d, n_boot, seed)
        tail = (1 - level) / 2 * 100
        low, high = (float(x) for x in np.percentile(boot, [tail, 100 - tail]))
        p_boot = bootstrap_p(boot)
    return PairedResult(metric, len(diffs), len(d), only_a, only_b, float(mean_a.mean()), float(mean_b.mean()),
                        float(d.mean()), low, high, p_boot, p_w, stat, rank_biserial(d))


def compare_systems(rows: Sequence[Mapping], system_a: str, system_b: str, metrics: Sequence[str] | None = None,
                    **options) -> list[dict]:
    """paired_compare for every metric between two systems of one row list (rows carry `system`)."""
    rows_a = [r for r in rows if r.get("system") == system_a]
    rows_b = [r for r in rows if r.get("system") == system_b]
    for name, part in ((system_a, rows_a), (system_b, rows_b)):
        if not part:
            known = sorted({str(r.get("system")) for r in rows})
            raise ValueError(f"no rows for system '{name}'; systems present: {known}")
    metrics = list(metrics) if metrics is not None else metric_names([*rows_a, *rows_b], exclude=("case_id",))
    return [{"system_a": system_a, "system_b": system_b, **paired_compare(rows_a, rows_b, m, **options).to_dict()}
            for m in metrics]
