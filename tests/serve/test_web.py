"""The clinician page in a real headless Chromium (Playwright driving Debian's /usr/bin/chromium).

The server answers through the loopback fake OpenAI endpoint with the planted consultation, whose
prescription holds 甘草 + 海藻: the page must show the sections, the prescription table and the
十八反 finding at the top, in red, with the disclaimer always visible.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from shicheng.demo import load_demo_masters
from tests.serve.support import API_KEY, PLANTED_ANSWER

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                "(apt-get install -y chromium); CI installs it")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def fill_case(page) -> None:
    page.select_option("#sex", "female")
    page.fill("#age", "34")
    page.fill("#chief_complaint", "颈前肿大半年")
    page.fill("#present_illness", "神疲乏力，纳差便溏")
    page.fill("#tongue", "舌淡胖，苔白腻")
    page.fill("#pulse", "脉濡滑")


def test_consultation_on_the_page(live_server, planted_backend, planted_upstream, page):
    masters = load_demo_masters()
    master = masters[sorted(masters)[1]]
    server = live_server(planted_backend, masters)
    page.goto(server.url)
    disclaimer = page.locator("#disclaimer")
    assert disclaimer.is_visible() and "not medical advice" in disclaimer.inner_text()
    expect(page.locator("#api-key-row")).to_be_hidden()  # this server has no key

    expect(page.locator("#master option")).to_have_count(6)
    page.select_option("#master", master.id)
    fill_case(page)
    page.check("#pregnant")
    page.click("#submit")

    finding = page.locator(".finding.level-error", has_text="十八反")
    finding.wait_for(timeout=15_000)
    assert "甘草" in finding.inner_text() and "海藻" in finding.inner_text()
    assert finding.evaluate("e => getComputedStyle(e).color") == "rgb(179, 38, 30)"  # red
    expect(page.locator("#status")).to_have_text("done")

    titles = page.locator(".answer-section h3").all_inner_texts()
    assert [t.split()[0] for t in titles] == ["思维过程", "病因病机", "辨证", "治则治法", "处方", "方解", "随症加减",
                                              "医嘱"]
    assert page.locator('.answer-section[data-key="syndrome"] .body').inner_text() == "脾虚痰凝证。"
    # Findings sit above the answer's sections.
    assert page.locator("#findings").bounding_box()["y"] < page.locator(".answer-section").first.bounding_box()["y"]

    herbs = page.locator("#rx-table tbody tr td:first-child").all_inner_texts()
    assert herbs == ["海藻", "甘草", "党参", "白术", "茯苓", "浙贝母"]
    assert disclaimer.is_visible()

    sent = planted_upstream.requests[-1]["messages"]
    assert master.name in sent[0]["content"]  # the chosen master's system prompt
    assert "女，34岁，妊娠期" in sent[1]["content"] and "颈前肿大半年" in sent[1]["content"]


def test_follow_up_and_api_key_on_the_page(live_server, planted_backend, page):
    server = live_server(planted_backend, api_key=API_KEY)
    page.goto(server.url)
    key_row = page.locator("#api-key-row")
    key_row.wait_for(state="visible")
    assert "API key" in page.locator("#form-error").inner_text()
    page.fill("#api_key", API_KEY)
    page.dispatch_event("#api_key", "change")
    expect(page.locator("#master option")).to_have_count(6)

    fill_case(page)
    page.click("#followup summary")
    page.fill("#previous_prescription", "党参15g 白术12g 茯苓15g 陈皮10g")
    assert page.input_value("#task") == "modification"  # a follow-up asks for the modification task
    page.select_option("#task", "full_chain")
    page.click("#submit")
    page.locator("#changes").wait_for(state="visible", timeout=15_000)
    assert "陈皮" in page.locator("#changes-removed").inner_text()
    assert "海藻" in page.locator("#changes-added").inner_text()

    # A bad request shows the server's message instead of failing silently.
    for field in ("#chief_complaint", "#present_illness", "#tongue", "#pulse", "#previous_prescription"):
        page.fill(field, "")
    page.click("#submit")
    error = page.locator("#form-error")
    error.wait_for(state="visible")
    assert "empty case" in error.inner_text()


def test_partial_answers_render_section_by_section(live_server, planted_backend, page):
    """The page's reading of a half-streamed answer: the sections so far, the open one growing."""
    server = live_server(planted_backend)
    page.goto(server.url)
    cut = PLANTED_ANSWER.index("健脾化痰")
    live = page.evaluate("raw => liveSections(raw)", PLANTED_ANSWER[:cut + 2])
    assert list(live) == ["reasoning", "etiology_pathogenesis", "syndrome", "treatment_principle"]
    assert live["syndrome"].strip() == "脾虚痰凝证。" and live["treatment_principle"].strip() == "健脾"
    page.evaluate("raw => renderLive(raw)", PLANTED_ANSWER[:cut + 2])
    growing = page.locator('.answer-section.live[data-key="treatment_principle"] .body')
    assert growing.inner_text() == "健脾"
    # Headings the parser accepts in other spellings are recognised too (shared from shicheng.template).
    other = page.evaluate("raw => liveSections(raw)", "**证候诊断：**\n肝郁脾虚\n【处方】\n柴胡10g")
    assert other == {"syndrome": "肝郁脾虚\n", "prescription": "柴胡10g\n"}


# ---- the text clinicians paste, and the layout -----------------------------------------------------------

SELECT_FITS = """sel => {
  const ctx = document.createElement("canvas").getContext("2d");
  ctx.font = getComputedStyle(sel).font;
  const style = getComputedStyle(sel);
  const room = sel.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight) - 16;
  return [...sel.options].map(o => [o.text, Math.ceil(ctx.measureText(o.text).width) <= room]);
}"""


def test_patient_facts_and_what_was_not_checked_are_on_the_page(live_server, planted_backend, page):
    server = live_server(planted_backend)
    page.goto(server.url)
    expect(page.locator("#master option")).to_have_count(6)
    page.fill("#text", "患者女，30岁，妊娠12周。颈前肿大半年，乏力便溏。")
    page.click("#submit")
    expect(page.locator("#status")).to_have_text("done", timeout=15_000)
    facts = page.locator("#patient-facts .fact")
    expect(facts).to_have_count(3)
    pregnancy = page.locator('#patient-facts .fact[data-field="pregnant"]')
    assert "妊娠12周" in pregnancy.inner_text() and pregnancy.get_attribute("data-source") == "text"
    coverage = page.locator("#safety-coverage")
    assert coverage.is_visible()
    assert "Not dose-checked" in coverage.inner_text() and "Not recognised" in coverage.inner_text()


def test_no_findings_is_never_said_alone(live_server, openai_server, page):
    from shicheng.agent import OpenAIBackend

    upstream = openai_server(lambda messages: "<output>\n## 处方\n茯苓15g 陈皮\n</output>")
    server = live_server(OpenAIBackend(upstream.url, "m"))
    page.goto(server.url)
    page.fill("#chief_complaint", "咳嗽三日")
    page.click("#submit")
    expect(page.locator("#status")).to_have_text("done", timeout=15_000)
    assert page.locator("#no-findings").is_visible()
    coverage = page.locator("#safety-coverage")
    assert coverage.is_visible() and "陈皮" in coverage.inner_text()


@pytest.mark.parametrize(("width", "height"), [(768, 1024), (1280, 800)])
def test_labels_fit_and_the_key_field_is_in_sight(browser, live_server, planted_backend, tmp_path, width, height):
    """At tablet and desktop width: no select's label is cut, and when a key is needed its field is on
    screen without scrolling (screenshots are written for a person to look at)."""
    masters_server = live_server(planted_backend)
    keyed = live_server(planted_backend, api_key=API_KEY)
    context = browser.new_context(viewport={"width": width, "height": height}, locale="zh-CN")
    try:
        page = context.new_page()
        page.goto(masters_server.url)
        expect(page.locator("#master option")).to_have_count(6)
        page.screenshot(path=str(tmp_path / f"form-{width}.png"))
        for select in ("#sex", "#master", "#task"):
            cut = [text for text, fits in page.eval_on_selector(select, SELECT_FITS) if not fits]
            assert cut == [], f"{select} labels cut at {width}px: {cut}"
        page.goto(keyed.url)
        key = page.locator("#api_key")
        key.wait_for(state="visible")
        expect(key).to_be_in_viewport()
        expect(key).to_be_focused()
        page.screenshot(path=str(tmp_path / f"key-{width}.png"))
    finally:
        context.close()
