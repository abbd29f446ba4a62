"""report.html from results.json: one self-contained file a researcher can open, mail or publish.

Self-contained means: the figures are PNG images embedded as base64 data URIs, the CSS is inline, no
script runs and nothing is fetched (a Content-Security-Policy in the page forbids it, so a stray
external reference would show as a console error in the browser test rather than load silently).
Every section is always present; one without data (no judge was run, no training cases for the style
model) says so in plain words, so that a reader never wonders whether it was forgotten.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from shicheng.domain import DISCLAIMER
from shicheng.evaluate import plots
from shicheng.metrics import SAFETY_LEVELS, SAFETY_RULES

TEMPLATES = Path(__file__).with_name("templates")
# Metric labels (zh / en) and how the report shows them; the order is the leaderboard's.
LABELS: dict[str, tuple[str, str]] = {
    "herb_f1": ("药物F1", "herb F1"), "herb_precision": ("药物精确率", "herb precision"),
    "herb_recall": ("药物召回率", "herb recall"), "herb_points": ("药物匹配分(/9)", "herb points of 9"),
    "completeness": ("完整性", "completeness"), "composition_point": ("配伍分(/1)", "composition point"),
    "syndrome_char_f1": ("辨证字F1", "syndrome char F1"), "syndrome_exact": ("辨证一致", "syndrome exact"),
    "principle_char_f1": ("治法字F1", "principle char F1"), "principle_exact": ("治法一致", "principle exact"),
    "dose_mae_g": ("剂量误差(g)", "dose MAE g"), "dose_rel_error": ("剂量相对误差", "dose rel. error"),
    "followup_added_f1": ("复诊加药F1", "follow-up added F1"),
    "followup_removed_f1": ("复诊减药F1", "follow-up removed F1"),
    "style_match": ("风格归属准确", "style attribution"), "signature_recall": ("特色药召回", "signature herbs"),
    "safety_error": ("安全错误/答", "safety errors"), "safety_warning": ("安全警告/答", "safety warnings"),
    "judge_share": ("评委得分率", "judge score share"), "judge_total": ("评委总分", "judge total"),
}
BAR_METRICS = ("herb_f1", "completeness", "syndrome_char_f1", "principle_char_f1", "style_match", "judge_share")
PAIRED_SHOWN = ("herb_f1", "completeness", "syndrome_char_f1", "style_match", "judge_share")
MAX_HERB_ROWS = 20  # judge-vs-code disagreements listed; the rest are in results.json


def label(metric: str) -> str:
    if metric.startswith(("judge_share:", "judge_total:")):
        kind, judge = metric.split(":", 1)
        return f"{LABELS[kind][0]} · {judge}"
    zh, en = LABELS.get(metric, (metric, metric))
    return f"{zh} / {en}"


def num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def ci(interval: Mapping | None, digits: int = 3) -> str:
    if not interval or interval.get("ci_low") is None:
        return ""
    return f"[{num(interval['ci_low'], digits)}, {num(interval['ci_high'], digits)}]"


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _has(interval: Mapping | None) -> bool:
    return bool(interval) and interval.get("n", 0) > 0


def _master_name(results: Mapping, master: str | None) -> str:
    return (results.get("masters") or {}).get(master, master) if master else "—"


def _leaderboard(results: Mapping) -> dict[str, Any]:
    board = results["leaderboard"]
    systems = results["systems"]
    shown = [m for m in board["metrics"]
             if any(_has(board["systems"][s]["metrics"].get(m)) for s in systems)]
    # Metrics as rows, systems as columns: a run has a handful of systems and some twenty metrics.
    table = [{"metric": label(m), "cells": [board["systems"][s]["metrics"].get(m) for s in systems]} for m in shown]
    sizes = {s: (board["systems"][s]["n_answers"], board["systems"][s]["n_cases"]) for s in systems}
    panels = [(label(m), systems, [board["systems"][s]["metrics"].get(m) for s in systems])
              for m in BAR_METRICS if m in shown]
    image = _data_uri(plots.interval_bars(panels)) if panels else None
    empty = [label(m) for m in board["metrics"] if m not in shown]
    return {"systems": systems, "sizes": sizes, "rows": table, "image": image, "empty": empty}


def _judge(results: Mapping) -> dict[str, Any]:
    judge = results["judge"]
    if not judge["available"]:
        return {"available": False}
    systems = results["systems"]
    items = judge["radar"]["items"]
    radars = []
    for name in judge["judges"]:
        charts = [c for c in judge["radar"]["charts"] if c["judge"] == name]
        if not charts:
            radars.append({"judge": name, "image": None})
            continue
        series = [(_master_name(results, c["master"]),
                   {s: [v.get(it["key"]) for it in items] for s, v in c["series"].items()}) for c in charts]
        png = plots.radar_grid(f"评委 {name}：各名医评分雷达图（各项得分率）", [it["zh"] for it in items], series,
                               systems)
        radars.append({"judge": name, "image": _data_uri(png)})
    totals = []
    for name in judge["judges"]:
        cells = [t for t in judge["totals"] if t["judge"] == name]
        masters = list(dict.fromkeys(t["master"] for t in cells))
        values = {(_master_name(results, t["master"]), t["system"]): t.get("total") for t in cells}
        image = None
        if any(v and v.get("mean") is not None for v in values.values()):
            image = _data_uri(plots.grouped_bars(f"评委 {name}：各名医 × 系统总分", [_master_name(results, m)
                                                 for m in masters], systems, values, "总分 total"))
        by_cell = {(t["master"], t["system"]): t for t in cells}
        rows = [{"master": _master_name(results, m), "cells": [by_cell.get((m, s)) for s in systems]} for m in masters]
        totals.append({"judge": name, "image": image, "rows": rows, "systems": systems})
    herb = judge["herb_counts"]
    disagree = [r for r in herb["rows"] if not r["agree"]]
    return {"available": True, "judges": judge["judges"], "summary": judge["summary"], "unscored": judge["unscored"],
            "radars": radars, "totals": totals, "agreement": judge["agreement"],
            "agreement_items": [{"zh": it["zh"], **judge["agreement_items"][it["key"]]} for it in items
                                if it["key"] in judge["agreement_items"]],
            "herb_summary": herb["summary"], "herb_disagree": disagree[:MAX_HERB_ROWS],
            "herb_disagree_more": max(0, len(disagree) - MAX_HERB_ROWS)}


def _matrix_image(results: Mapping, title: str, m: Mapping) -> str:
    rows = [_master_name(results, r) for r in m["rows"]]
    cols = [_master_name(results, c) if c in (results.get("masters") or {}) else c for c in m["columns"]]
    return _data_uri(plots.heatmap(title, m["matrix"], rows, cols, "归属名医 attributed to", "要求名医 asked as"))


def _style(results: Mapping) -> dict[str, Any]:
    style = results.get("style")
    if not style:
        why = [w for w in results.get("warnings", []) if "style" in w.lower()]
        return {"available": False, "reason": " ".join(why) or "no style model was fitted."}
    masters = style["masters"]
    systems = [s for s in results["systems"] if s in style["systems"]]
    attribution, switch = [], []
    for s in systems:
        f = style["systems"][s]
        a = f["attribution"]
        attribution.append({"system": s, "accuracy": a["accuracy"], "n": a["n"], "unattributed": a["n_unattributed"],
                            "image": _matrix_image(results, f"{s}：风格归属混淆矩阵", a) if a["n"] else None})
        c = f.get("counterfactual")
        if c:
            switch.append({"system": s, "switch_rate": c["switch_rate"], "stay_rate": c["stay_rate"],
                           "n_switch": c["n_switch"], "accuracy": c["accuracy"],
                           "image": _matrix_image(results, f"{s}：反事实切换矩阵", c)})
    js = [{"system": s, "cells": [(style["systems"][s].get("herb_js") or {}).get(m) for m in masters],
           "counter": [(style["systems"][s].get("herb_js_counterfactual") or {}).get(m) for m in masters]}
          for s in systems]
    sig = [{"system": s, "cells": [(style["systems"][s].get("signature_recall") or {}).get(m) for m in masters]}
           for s in systems]
    return {"available": True, "masters": [_master_name(results, m) for m in masters], "attribution": attribution,
            "switch": switch, "js": js, "signature_recall": sig,
            "signature_herbs": {_master_name(results, m): h for m, h in (style.get("signature_herbs") or {}).items()},
            "unparseable": {s: style["systems"][s]["n_unparseable"] for s in systems},
            "without_master": style.get("n_without_master", 0)}


def _paired(results: Mapping) -> list[dict]:
    out: dict[tuple, dict] = {}
    for p in results["paired"]:
        entry = out.setdefault((p["system_a"], p["system_b"]), {"a": p["system_a"], "b": p["system_b"], "rows": [],
                                                                "note": p.get("note")})
        if "metric" in p and (p["metric"] in PAIRED_SHOWN or p["metric"].startswith("judge_share")):
            entry["rows"].append({**p, "label": label(p["metric"])})
    return list(out.values())


def _groups(results: Mapping) -> dict[str, Any]:
    metrics = list(dict.fromkeys(g["metric"] for g in results["by_group"]))
    cells: dict[tuple, dict] = {}
    for g in results["by_group"]:
        key = (g["system"], g["master"], g["task"])
        cells.setdefault(key, {"system": g["system"], "master": _master_name(results, g["master"]), "task": g["task"],
                               "cells": {}})["cells"][g["metric"]] = g
    return {"metrics": metrics, "labels": [label(m) for m in metrics], "rows": list(cells.values())}


def _safety(results: Mapping) -> dict[str, Any]:
    return {"levels": list(SAFETY_LEVELS), "rules": list(SAFETY_RULES), "rows": results["safety"]}


def _worst(results: Mapping) -> list[dict]:
    return [{**w, "master_name": _master_name(results, w["master"])} for w in results["worst"]]


def render_report(results: Mapping, out_dir: str | Path, *, title: str | None = None) -> Path:
    """Write `out_dir/report.html` from a `build_results` dict (or a results.json read back)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    font = plots.font_info()
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=num, ci=ci)
    html = env.get_template("report.html.j2").render(
        title=title or "师承模型评测报告 · Shicheng evaluation report", disclaimer=DISCLAIMER, r=results,
        font_warning=font.warning, font=font.family, leaderboard=_leaderboard(results), judge=_judge(results),
        style=_style(results), safety=_safety(results), paired=_paired(results), groups=_groups(results),
        worst=_worst(results), master_name=lambda m: _master_name(results, m))
    path = out / "report.html"
    path.write_text(html, encoding="utf-8")
    return path


__all__ = ["LABELS", "ci", "label", "num", "render_report"]
