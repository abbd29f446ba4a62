"""The reliability report: one self-contained HTML page (plots inlined as PNG) from results.json."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from jinja2 import Environment, FileSystemLoader, select_autoescape

from shicheng.domain import DISCLAIMER

HERE = Path(__file__).parent


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _ba_plot(judge: str, res: dict) -> str | None:
    ba = res.get("bland_altman") or {}
    per = res.get("bland_altman_per_master") or {}
    if ba.get("bias") is None or not per:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    masters = list(per)
    ys = [per[m]["bias"] for m in masters]
    lo = [per[m]["bias"] - (per[m]["bias_ci_low"] if per[m]["bias_ci_low"] is not None else per[m]["bias"]) for m in masters]
    hi = [(per[m]["bias_ci_high"] if per[m]["bias_ci_high"] is not None else per[m]["bias"]) - per[m]["bias"] for m in masters]
    right.errorbar(range(len(masters)), ys, yerr=[lo, hi], fmt="o", capsize=4)
    right.axhline(ba["bias"], color="grey", linestyle="--", label="overall bias")
    right.axhline(0, color="black", linewidth=0.6)
    right.set_xticks(range(len(masters)), masters, rotation=30, ha="right")
    right.set_ylabel("judge - physicians (0-100)")
    right.set_title(f"{judge}: bias per master (95% CI)")
    right.legend()
    for lim in ("loa_low", "loa_high"):
        if ba.get(lim) is not None:
            left.axhline(ba[lim], color="tab:red", linestyle=":")
    left.axhline(ba["bias"], color="grey", linestyle="--")
    sl = res.get("system_level") or {}
    left.set_title(f"{judge}: Bland-Altman limits, n={ba['n']}")
    left.set_ylabel("judge - physicians")
    left.set_xlabel("systems: physicians' mean (dots: judge - physicians per system)")
    if sl.get("systems"):
        left.scatter(sl["physicians"], [j - p for j, p in zip(sl["judge"], sl["physicians"], strict=True)])
    return _png(fig)


def _view_plot(cells: list[dict]) -> str | None:
    if not cells:
        return None
    masters = list(dict.fromkeys(c["master"] for c in cells))
    systems = list(dict.fromkeys(c["system"] for c in cells))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(masters) * max(1, len(systems)) / 2), 4))
    width = 0.8 / max(1, len(systems))
    for si, s in enumerate(systems):
        xs, ys, err_lo, err_hi = [], [], [], []
        for mi, m in enumerate(masters):
            cell = next((c for c in cells if c["master"] == m and c["system"] == s), None)
            if cell is None or cell["total"]["mean"] is None:
                continue
            t = cell["total"]
            xs.append(mi + si * width)
            ys.append(t["mean"])
            err_lo.append(t["mean"] - (t["ci_low"] if t["ci_low"] is not None else t["mean"]))
            err_hi.append((t["ci_high"] if t["ci_high"] is not None else t["mean"]) - t["mean"])
        ax.bar(xs, ys, width, yerr=[err_lo, err_hi], capsize=3, label=s)
    ax.set_xticks([i + width * (len(systems) - 1) / 2 for i in range(len(masters))], masters, rotation=20, ha="right")
    ax.set_ylabel("physicians' weighted total (0-100)")
    ax.set_ylim(0, 100)
    ax.legend()
    ax.set_title("Physicians' view: master x system (95% bootstrap CI)")
    return _png(fig)


def render_report(results: dict, path: Path) -> Path:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["j2"]))
    plots = {"view": _view_plot(results.get("physicians_view") or []),
             "judges": {j: _ba_plot(j, r) for j, r in (results.get("judges") or {}).items()}}
    html = env.get_template("reliability.html.j2").render(r=results, plots=plots, disclaimer=DISCLAIMER)
    path = Path(path)
    path.write_text(html, encoding="utf-8")
    return path


__all__ = ["render_report"]
