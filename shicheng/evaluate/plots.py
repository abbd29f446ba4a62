"""The report's figures as PNG bytes: matplotlib on the Agg canvas, with a CJK font so that master names,
rubric items and herbs render as characters rather than boxes.

No pyplot: each figure is a `matplotlib.figure.Figure` drawn on its own Agg canvas inside an
`rc_context`, so that making a report changes no global matplotlib state of the caller (a notebook's
backend, its fonts). The CJK font is looked up once among the installed fonts (Noto Sans CJK, Source
Han Sans, WenQuanYi, …; Debian: `apt-get install fonts-noto-cjk`); without one, `font_info()` carries a
warning that the report shows, since the labels will then be boxes.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import matplotlib
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Preferred families first; any other family with "CJK" in its name comes after them.
CJK_FAMILIES = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN", "Noto Sans CJK TC",
                "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Noto Serif CJK SC", "Source Han Serif SC",
                "AR PL UMing CN", "Droid Sans Fallback")
PROBE = "中医辨证处方附子"  # characters every label font must have
DPI = 110
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


@dataclass(frozen=True)
class FontInfo:
    family: str | None  # None: no CJK font found
    path: str | None
    warning: str | None


def _covers(path: str, text: str) -> bool:
    try:
        from matplotlib.ft2font import FT2Font

        font = FT2Font(path)
        return all(font.get_char_index(ord(ch)) for ch in text)
    except Exception:  # an unreadable font file is simply not a candidate
        return False


@lru_cache(maxsize=1)
def font_info() -> FontInfo:
    """The CJK font the figures use, found among matplotlib's installed fonts."""
    entries = font_manager.fontManager.ttflist
    by_name: dict[str, str] = {}
    for e in entries:
        by_name.setdefault(e.name, e.fname)
    candidates = [n for n in CJK_FAMILIES if n in by_name]
    candidates += sorted(n for n in by_name if ("CJK" in n or "Han Sans" in n or "WenQuanYi" in n)
                         and n not in candidates and "Mono" not in n)
    for name in candidates:
        if _covers(by_name[name], PROBE):
            return FontInfo(name, by_name[name], None)
    msg = ("No CJK font was found for the figures (install fonts-noto-cjk or another Noto Sans CJK, Source Han "
           "Sans or WenQuanYi font): Chinese labels in the images may show as boxes.")
    warnings.warn(msg, stacklevel=2)
    return FontInfo(None, None, msg)


def _rc() -> dict:
    info = font_info()
    family = [info.family, "DejaVu Sans"] if info.family else ["DejaVu Sans"]
    return {"font.family": "sans-serif", "font.sans-serif": family, "axes.unicode_minus": False,
            "font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False}


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _grid(n: int, ncols: int) -> tuple[int, int]:
    cols = max(1, min(ncols, n))
    return math.ceil(n / cols), cols


Interval = Mapping[str, float | None]  # {"mean", "ci_low", "ci_high"}


def interval_bars(panels: Sequence[tuple[str, Sequence[str], Sequence[Interval | None]]], ncols: int = 3) -> bytes:
    """Horizontal bars with 95 % CI whiskers: one panel per metric, one bar per system."""
    with matplotlib.rc_context(_rc()):
        rows, cols = _grid(len(panels), ncols)
        height = max(1.8, 0.32 * max(len(p[1]) for p in panels) + 0.9)
        fig = Figure(figsize=(3.6 * cols, height * rows), layout="constrained")
        fig.get_layout_engine().set(h_pad=0.12, w_pad=0.1)
        for n, (title, labels, values) in enumerate(panels):
            ax = fig.add_subplot(rows, cols, n + 1)
            ys = list(range(len(labels)))[::-1]
            for i, (y, v) in enumerate(zip(ys, values, strict=True)):
                mean = (v or {}).get("mean")
                if mean is None:
                    ax.text(0.01, y, "n/a", va="center", fontsize=8, color="#666")
                    continue
                lo, hi = v.get("ci_low"), v.get("ci_high")
                # Clamped: float noise can put a percentile a hair inside the mean, and matplotlib refuses
                # a negative whisker.
                err = [[max(0.0, mean - lo)], [max(0.0, hi - mean)]] if lo is not None and hi is not None else None
                ax.barh(y, mean, color=color(i), alpha=0.85, xerr=err, capsize=3, ecolor="#333", height=0.6)
            ax.set_yticks(ys, labels)
            ax.set_title(title)
            top = max([1.0] + [(v or {}).get("ci_high") or (v or {}).get("mean") or 0 for v in values])
            ax.set_xlim(0, top * 1.05)
            ax.grid(axis="x", alpha=0.3)
        return _png(fig)


def _wrap(text: str, width: int = 4) -> str:
    """A long CJK axis label on two lines (名医特色 / 理论应用), so that it stays clear of the next chart."""
    if len(text) <= width + 1 or " " in text:
        return text
    half = (len(text) + 1) // 2
    return f"{text[:half]}\n{text[half:]}"


def radar_grid(title: str, axes_labels: Sequence[str], charts: Sequence[tuple[str, Mapping[str, Sequence]]],
               systems: Sequence[str], ncols: int = 3) -> bytes:
    """One polar chart per master over the rubric items (values are shares of each item's maximum,
    None where not scored), a polygon per system, one legend for the figure."""
    k = len(axes_labels)
    angles = [2 * math.pi * i / k for i in range(k)]
    with matplotlib.rc_context(_rc()):
        rows, cols = _grid(len(charts), ncols)
        fig = Figure(figsize=(4.2 * cols, 3.6 * rows + 0.6), layout="constrained")
        fig.get_layout_engine().set(w_pad=0.2, h_pad=0.15)
        fig.suptitle(title, fontsize=12)
        handles = {}
        for n, (subtitle, series) in enumerate(charts):
            ax = fig.add_subplot(rows, cols, n + 1, projection="polar")
            ax.set_theta_offset(math.pi / 2)
            ax.set_theta_direction(-1)
            for i, system in enumerate(systems):
                values = series.get(system)
                if values is None:
                    continue
                # An unscored item is drawn at 0 so the polygon closes; the table shows it as "—".
                vals = [0.0 if v is None else float(v) for v in values]
                (line,) = ax.plot([*angles, angles[0]], [*vals, vals[0]], color=color(i), linewidth=1.6)
                ax.fill([*angles, angles[0]], [*vals, vals[0]], color=color(i), alpha=0.12)
                handles.setdefault(system, line)
            ax.set_xticks(angles, [_wrap(t) for t in axes_labels], fontsize=8)
            ax.set_ylim(0, 1)
            ax.set_yticks([0.25, 0.5, 0.75, 1.0], ["", "0.5", "", "1"], fontsize=7, color="#666")
            ax.set_title(subtitle, pad=14)
        if handles:
            fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                       ncols=min(len(handles), 6), frameon=False)
        return _png(fig)


def grouped_bars(title: str, groups: Sequence[str], systems: Sequence[str],
                 values: Mapping[tuple[str, str], Interval], ylabel: str) -> bytes:
    """Bars per group (master) and system, with CI whiskers; a missing cell leaves a gap."""
    with matplotlib.rc_context(_rc()):
        width = 0.8 / max(1, len(systems))
        fig = Figure(figsize=(min(11.0, max(5.0, 1.5 + 0.32 * len(groups) * max(1, len(systems)))), 3.6),
                     layout="constrained")
        ax = fig.add_subplot()
        for i, system in enumerate(systems):
            xs, means, errs = [], [], [[], []]
            for g, group in enumerate(groups):
                v = values.get((group, system))
                if not v or v.get("mean") is None:
                    continue
                xs.append(g - 0.4 + width * (i + 0.5))
                means.append(v["mean"])
                lo, hi = v.get("ci_low"), v.get("ci_high")
                errs[0].append(max(0.0, v["mean"] - lo) if lo is not None else 0)
                errs[1].append(max(0.0, hi - v["mean"]) if hi is not None else 0)
            ax.bar(xs, means, width=width * 0.92, color=color(i), label=system, yerr=errs, capsize=2,
                   ecolor="#333")
        ax.set_xticks(range(len(groups)), list(groups))
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        fig.legend(loc="outside right upper", frameon=False)
        return _png(fig)


def heatmap(title: str, matrix: Sequence[Sequence[float]], rows: Sequence[str], columns: Sequence[str],
            xlabel: str, ylabel: str) -> bytes:
    """Counts in each cell; colour is the row share, so that a master asked for rarely still shows its
    pattern."""
    with matplotlib.rc_context(_rc()):
        fig = Figure(figsize=(1.0 + 0.9 * len(columns), 1.0 + 0.6 * len(rows)), layout="constrained")
        ax = fig.add_subplot()
        shares = [[c / sum(r) if sum(r) else 0.0 for c in r] for r in matrix]
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        for i, line in enumerate(matrix):
            for j, count in enumerate(line):
                ax.text(j, i, f"{count:g}", ha="center", va="center", fontsize=9,
                        color="white" if shares[i][j] > 0.6 else "#111")
        ax.set_xticks(range(len(columns)), list(columns), rotation=30, ha="right")
        ax.set_yticks(range(len(rows)), list(rows))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.spines[:].set_visible(False)
        return _png(fig)


__all__ = ["FontInfo", "color", "font_info", "grouped_bars", "heatmap", "interval_bars", "radar_grid"]
