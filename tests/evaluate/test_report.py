"""report.html in a real headless Chromium (Playwright driving Debian's /usr/bin/chromium): no console
error, every image decoded, nothing fetched from elsewhere, no script, every section present, and the
sections without data saying so. The figures' CJK labels must find a font (no missing-glyph warning).

The full report is also saved as /tmp/report.png for a person to look at."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import pytest

from shicheng.evaluate import plots
from shicheng.evaluate.report import render_report
from shicheng.evaluate.results import build_results, write_results
from tests.helpers import report_data as d

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                    "(apt-get install -y chromium); CI installs it")
SECTIONS = ["leaderboard", "judge", "style", "safety", "paired", "groups", "worst"]
SCREENSHOT = Path("/tmp/report.png")


def results(**kw) -> dict:
    options = {"train_cases": d.train_cases(), "masters": d.masters(), "n_boot": 300, "seed": 1} | kw
    return build_results(d.predictions(), d.cases(), **options)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> Path:
    """Both judges, the style model, counterfactual rows; rendered from results.json read back."""
    out = tmp_path_factory.mktemp("report")
    verdicts = d.judged(d.predictions(), out / "judge-cache")
    path = write_results(results(verdicts=verdicts), out)
    return render_report(json.loads(path.read_text(encoding="utf-8")), out)


@pytest.fixture(scope="module")
def bare_report(tmp_path_factory) -> Path:
    """No judge and no training cases: the judge and style sections must say so."""
    return render_report(results(train_cases=None), tmp_path_factory.mktemp("bare"))


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser, path: Path):
    # JavaScript off: the report must need none (the image check below runs as a Playwright evaluation,
    # which a context without JavaScript still allows).
    context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900}, java_script_enabled=False)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else problems.append(f"fetch {r.url}"))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return context, page, problems


def images(page) -> list[dict]:
    return [{"alt": img.get_attribute("alt"), "complete": img.evaluate("i => i.complete"),
             "width": img.evaluate("i => i.naturalWidth")} for img in page.locator("img").all()]


@needs_chromium
def test_full_report_renders_with_no_errors_and_every_image(browser, full_report):
    context, page, problems = open_page(browser, full_report)
    try:
        shown = images(page)
        # leaderboard bars, a radar grid and a totals chart per judge, 3 attribution matrices, 1 switch matrix
        assert len(shown) == 1 + 2 + 2 + 3 + 1
        assert all(i["complete"] and i["width"] > 100 for i in shown), shown
        for key in SECTIONS:
            assert page.locator(f"h2#{key}").is_visible()
        notice = page.locator("header.notice").inner_text()
        assert "研究用途" in notice and "not medical advice" in notice
        assert page.locator("header.notice").bounding_box()["y"] == 0  # at the very top
        board = page.locator("#leaderboard + p + div table")
        assert board.locator("th").all_inner_texts()[1:] == ["gold", "stage-5", "baseline"]
        herb_row = board.locator("tr", has_text="herb F1").first.inner_text()
        assert "0.792" in herb_row  # stage-5's hand-computed mean herb F1 (19/24)
        judge = page.locator("h2#judge ~ table").first.inner_text()
        assert "deepseek-chat" in judge and "gpt-4o" in judge
        assert "upstream overloaded" in page.content()  # the unscored verdict's reason is shown
        worst = page.locator(".answer", has_text="stage-5").filter(has_text="t-su-2 · 第1诊").first.inner_text()
        assert "咳嗽，咽痒" in worst and "桑叶10g 薄荷6g" in worst and "杏仁9g" in worst  # case, answer, gold
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    finally:
        context.close()
    assert problems == []


@needs_chromium
def test_sections_without_data_say_so(browser, bare_report):
    context, page, problems = open_page(browser, bare_report)
    try:
        text = page.locator("main").inner_text()
        assert "No LLM judge was run" in text and "未运行 LLM 评委" in text
        assert "No style fidelity" in text and "No training cases were given" in text
        for key in SECTIONS:
            assert page.locator(f"h2#{key}").is_visible()
        assert len(images(page)) == 1 and all(i["complete"] and i["width"] > 100 for i in images(page))
    finally:
        context.close()
    assert problems == []


def test_the_report_is_self_contained(full_report):
    html = full_report.read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html)
    assert refs and all(r.startswith(("data:image/png;base64,", "#")) for r in refs), \
        [r[:40] for r in refs if not r.startswith(("data:", "#"))]
    assert "url(" not in html and "@import" not in html


def test_figures_find_a_cjk_font_and_render_chinese_without_missing_glyphs():
    info = plots.font_info()
    if info.family is None:
        pytest.skip("no CJK font installed (apt-get install fonts-noto-cjk)")
    assert plots._covers(info.path, "李守阳苏清源病因病机辨证治则治法处方名医特色理论应用")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph … missing from font(s)" for a box
        png = plots.heatmap("风格归属混淆矩阵", [[3, 1], [0, 2]], ["李守阳", "苏清源"], ["李守阳", "苏清源"],
                            "归属名医", "要求名医")
        plots.radar_grid("评委：雷达图", ["病因病机", "辨证", "治则治法", "处方", "名医特色理论应用"],
                         [("李守阳", {"stage-5": [0.5, 0.6, None, 0.9, 0.4]})], ["stage-5"])
    assert png.startswith(b"\x89PNG")


def test_without_a_cjk_font_the_report_says_labels_may_be_boxes(monkeypatch, tmp_path):
    from matplotlib import font_manager

    latin = [f for f in font_manager.fontManager.ttflist if "CJK" not in f.name and "Han" not in f.name
             and "WenQuanYi" not in f.name]
    monkeypatch.setattr(font_manager.fontManager, "ttflist", latin)
    plots.font_info.cache_clear()
    try:
        with pytest.warns(UserWarning, match="No CJK font"):
            info = plots.font_info()
        assert info.family is None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the missing glyphs are the point here
            html = render_report(results(train_cases=None), tmp_path).read_text(encoding="utf-8")
        assert "may show as boxes" in html
    finally:
        plots.font_info.cache_clear()


def test_failed_generations_and_warnings_are_named_in_the_report(tmp_path):
    found = results(train_cases=None)
    found["counts"] |= {"generation_failed": 2, "generation_failed_per_system": {"stage-5": 2}}
    html = render_report(found, tmp_path).read_text(encoding="utf-8")
    assert "2 generation(s) failed" in html and "stage-5 2" in html
    assert "No training cases were given" in html
