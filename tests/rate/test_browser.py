"""The rating app in headless Chromium (Playwright driving Debian's /usr/bin/chromium): a coordinator
creates a study from `shicheng predict` files, two raters log in, each sees only their own items with no
system names, rates some (autosaved), loses the network, leaves, comes back to the same place; the
export holds exactly their ratings."""

from __future__ import annotations

import csv
import io
import os

import pytest
from playwright.sync_api import expect, sync_playwright
from sqlalchemy import select
from typer.testing import CliRunner

from shicheng.cli import app as cli
from shicheng.rate.db import Rating, Store
from tests.helpers.predict_data import HUANG, LI
from tests.rate.conftest import PASSWORD, SYSTEMS
from tests.serve.test_web import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                "(apt-get install -y chromium); CI installs it")


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _coordinator_creates_study(db: str, files) -> None:
    run = CliRunner().invoke
    assert run(cli, ["rate", "create-study", "--db", db, "--name", "pilot", "--cases", str(files["cases"]),
                     *[x for s in SYSTEMS for x in ("--predictions", str(files[s]))]]).exit_code == 0
    for login, lineage in (("wang", [LI, HUANG]), ("zhao", [LI])):
        assert run(cli, ["rate", "add-raters", "--db", db, "--study", "pilot", "--login", login,
                         *[x for m in lineage for x in ("--lineage", m)]]).exit_code == 0
    assert run(cli, ["rate", "assign", "--db", db, "--study", "pilot", "--k", "1", "--repeat-share", "0"]).exit_code == 0
    os.environ["TEST_COORD_PW"] = "coordinator-pw"
    assert run(cli, ["rate", "add-coordinator", "--db", db, "--login", "boss",
                     "--password-env", "TEST_COORD_PW"]).exit_code == 0
    # Passwords the test knows (issue-logins --passwords prints random ones).
    from shicheng.rate.auth import hash_password
    from shicheng.rate.db import Account

    with Store(db).session() as s:
        for acc in s.scalars(select(Account).where(Account.role == "rater")):
            acc.password_hash = hash_password(PASSWORD)


def _login(context, url, user, password=PASSWORD):
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/login")
    page.fill("#login", user)
    page.fill("#password", password)
    page.click("#login-submit")
    return page, errors


def _rate(page, levels: list[int]) -> None:
    for dim, level in zip(("similarity", "theory", "safety", "completeness", "fluency"), levels, strict=True):
        page.locator(f'fieldset[data-key="{dim}"] label.level').nth(level - 1).click()
        expect(page.locator("#save-status")).to_have_attribute("data-state", "saved")


def test_two_raters_rate_leave_and_come_back(browser, tmp_path, study_files, servers):
    db = str(tmp_path / "ratings.db")
    _coordinator_creates_study(db, study_files)
    server = servers(db)

    ctx = browser.new_context(locale="zh-CN", viewport={"width": 1024, "height": 1366})  # a tablet, upright
    page, errors = _login(ctx, server.url, "wang")
    expect(page).to_have_url(server.url + "/rate/1")
    expect(page.locator("#disclaimer")).to_be_visible()
    text = page.locator("main").inner_text()
    assert not any(s in text for s in SYSTEMS) and "答案" in text
    _rate(page, [5, 4, 5, 3, 4])
    expect(page.locator("#total-value")).to_have_text("87.5")
    page.fill("#comment", "方证相符")
    expect(page.locator("#save-status")).to_have_attribute("data-state", "saved")
    page.click("#next")
    expect(page).to_have_url(server.url + "/rate/2")
    _rate(page, [3, 3, 3, 3, 3])
    # The network drops: the change is not shown as saved, and is saved once the network is back.
    ctx.set_offline(True)
    page.locator('fieldset[data-key="fluency"] label.level').nth(4).click()
    expect(page.locator("#save-status")).to_have_attribute("data-state", "error")
    with Store(db).session() as s:
        assert sorted(r.levels["fluency"] for r in s.scalars(select(Rating))) == [3, 4]  # what was shown as saved
    ctx.set_offline(False)
    expect(page.locator("#save-status")).to_have_attribute("data-state", "saved", timeout=10_000)
    assert errors == []
    ctx.close()  # wang leaves

    ctx2 = browser.new_context(locale="zh-CN")
    page2, errors2 = _login(ctx2, server.url, "zhao")
    text = page2.locator("main").inner_text()
    assert not any(s in text for s in SYSTEMS) and "失眠" not in text  # zhao rates li-shouyang only
    _rate(page2, [2, 2, 2, 2, 2])
    assert errors2 == []
    ctx2.close()

    ctx3 = browser.new_context(locale="zh-CN")  # wang comes back on another device
    page3, _ = _login(ctx3, server.url, "wang")
    expect(page3).to_have_url(server.url + "/rate/3")
    page3.goto(server.url + "/rate/2")
    assert page3.locator('fieldset[data-key="fluency"] input[value="5"]').is_checked()
    ctx3.close()

    ctx4 = browser.new_context()
    admin, _ = _login(ctx4, server.url, "boss", "coordinator-pw")
    expect(admin).to_have_url(server.url + "/admin")
    resp = admin.request.get(server.url + "/admin/export/pilot.csv")
    assert resp.ok
    rows = list(csv.DictReader(io.StringIO(resp.text())))
    totals = sorted((r["rater"], float(r["score"]), r["comment"]) for r in rows if r["dimension"] == "total")
    # wang: 87.5, and 3,3,3,3 then fluency 5 offline: 25 + 10 + 5 + 5 + 10 = 55; zhao: all 2s = 25.
    assert totals == [("wang", 55.0, ""), ("wang", 87.5, "方证相符"), ("zhao", 25.0, "")]
    assert len(rows) == 3 * 6
    ctx4.close()
