"""The rating app on a real uvicorn server on loopback: blinding, isolation between raters, CSRF,
expiring sessions, one-time links, the audit log, and a restart in the middle of a study."""

from __future__ import annotations

import re
import time

import httpx
import pytest
from sqlalchemy import select

from shicheng.rate.app import create_app
from shicheng.rate.assign import issue_logins
from shicheng.rate.db import Account, Assignment, Audit, Rating, Store
from shicheng.rate.export import export_rows
from tests.helpers.predict_data import HUANG, LI
from tests.rate.conftest import LEVELS, SYSTEMS, login, make_study
from tests.serve.support import LiveServer

RATERS = {"wang": [LI, HUANG], "zhao": [LI]}


@pytest.fixture
def study(tmp_path, study_files):
    store = Store(tmp_path / "ratings.db")
    make_study(store, study_files, RATERS, k=1)
    return store


def _forbidden_words(study_files) -> list[str]:
    # System names and the predictions files' names: none may reach a rater.
    return [*SYSTEMS, *(study_files[s].name for s in SYSTEMS)]


def test_raters_see_only_their_items_and_no_system_names(study, study_files, servers):
    server = servers(study)
    seen = {}
    for user in RATERS:
        client, csrf = login(server.url, user)
        total = int(re.search(r'max="(\d+)"', client.get("/rate/1").text).group(1))
        pages = [client.get(f"/rate/{n}") for n in range(1, total + 1)]
        assert all(p.status_code == 200 for p in pages)
        for p in pages:
            for word in _forbidden_words(study_files):
                assert word not in p.text, (user, word)
            assert "/link/" not in p.text
        assert client.get(f"/rate/{total + 1}").status_code == 404
        assert client.get("/admin").status_code == 403
        assert client.get("/admin/export/pilot.csv").status_code == 403
        api = client.post("/api/rate/1", json={"levels": LEVELS}, headers={"X-CSRF-Token": csrf})
        assert api.status_code == 200 and not any(w in api.text for w in SYSTEMS)
        assert client.post(f"/api/rate/{total + 1}", json={"levels": LEVELS},
                           headers={"X-CSRF-Token": csrf}).status_code == 404
        seen[user] = ([p.text for p in pages], total)
    # zhao (li-shouyang only) never sees a huang-peizhong case; wang and zhao got 3 answers each (k=1).
    assert seen["wang"][1] == seen["zhao"][1] == 3
    assert not any("失眠多梦" in text for text in seen["zhao"][0])
    with study.session() as s:
        by_rater = {}
        for _rating, a, acc in s.execute(select(Rating, Assignment, Account)
                                        .join(Assignment, Rating.assignment_id == Assignment.id)
                                        .join(Account, Assignment.rater_id == Account.id)):
            by_rater.setdefault(acc.login, []).append(a.position)
        assert by_rater == {"wang": [1], "zhao": [1]}  # each save landed in the saver's own queue


def test_csrf_is_required(study, servers):
    server = servers(study)
    client, csrf = login(server.url, "wang")
    assert client.post("/api/rate/1", json={"levels": LEVELS}).status_code == 403
    assert client.post("/api/rate/1", json={"levels": LEVELS}, headers={"X-CSRF-Token": "forged"}).status_code == 403
    form = {f"level_{k}": str(v) for k, v in LEVELS.items()}
    assert client.post("/rate/1", data=form, follow_redirects=False).status_code == 403
    assert client.post("/rate/1", data={**form, "csrf": csrf}, follow_redirects=False).status_code == 303
    assert client.post("/logout", data={}).status_code == 403
    # The login form needs the token that came with its own cookie.
    fresh = httpx.Client(base_url=server.url)
    fresh.get("/login")
    assert fresh.post("/login", data={"login": "wang", "password": "secret-pw-1", "csrf": "x"}).status_code == 403
    with study.session() as s:
        assert [r.version for r in s.scalars(select(Rating))] == [1]  # only the form post with the token saved


def test_invalid_levels_are_refused_with_the_field(study, servers):
    server = servers(study)
    client, csrf = login(server.url, "wang")
    resp = client.post("/api/rate/1", json={"levels": {"similarity": 9}}, headers={"X-CSRF-Token": csrf})
    assert resp.status_code == 422 and "similarity: level 9 is not one of [1, 2, 3, 4, 5]" in resp.json()["message"]
    resp = client.post("/api/rate/1", json={"levels": {"beauty": 3}}, headers={"X-CSRF-Token": csrf})
    assert resp.status_code == 422 and "beauty" in resp.json()["message"]


def test_sessions_expire(study, study_files):
    server = LiveServer(create_app(study, session_ttl_s=1.0)).start()
    try:
        client, csrf = login(server.url, "wang")
        assert client.post("/api/rate/1", json={"levels": LEVELS}, headers={"X-CSRF-Token": csrf}).status_code == 200
        time.sleep(1.5)
        resp = client.post("/api/rate/1", json={"levels": LEVELS}, headers={"X-CSRF-Token": csrf})
        assert resp.status_code == 401 and resp.json()["error"] == "expired"
        page = client.get("/rate/1")
        assert page.url.path == "/login" and "登录已过期" in page.text
    finally:
        server.stop()


def test_one_time_link_works_once(study, servers):
    server = servers(study)
    links = {x["login"]: x["url"] for x in issue_logins(study, "pilot", base_url=server.url)}
    client = httpx.Client(follow_redirects=True)
    resp = client.get(links["zhao"])
    assert resp.status_code == 200 and resp.url.path == "/rate/1"
    again = httpx.Client(follow_redirects=True).get(links["zhao"])
    assert again.status_code == 403 and "登录链接无效" in again.text
    assert httpx.get(links["wang"][:-3] + "abc").status_code == 403  # tampered signature
    with study.session() as s:
        actions = [a.action for a in s.scalars(select(Audit).order_by(Audit.id))]
    assert actions.count("issue_link") == 2 and "link_refused" in actions


def test_english_and_audit_of_changes(study, servers):
    server = servers(study)
    client, csrf = login(server.url, "wang")
    page = client.get("/rate/1?lang=en")
    assert "Similarity to the master&#39;s style" in page.text and "Save and next" in page.text
    assert "Similarity to the master" in client.get("/rate/2").text  # the choice is kept in a cookie
    client.post("/api/rate/1", json={"levels": LEVELS, "comment": "方证相符"}, headers={"X-CSRF-Token": csrf})
    client.post("/api/rate/1", json={"levels": {**LEVELS, "safety": 2}, "comment": "方证相符"},
                headers={"X-CSRF-Token": csrf})
    with study.session() as s:
        rates = [a for a in s.scalars(select(Audit).where(Audit.action == "rate").order_by(Audit.id))]
    assert [a.actor for a in rates] == ["wang", "wang"]
    assert rates[1].detail["changes"] == {"levels": [LEVELS, {**LEVELS, "safety": 2}]}


def test_restart_mid_study_loses_nothing(tmp_path, study_files):
    db = tmp_path / "ratings.db"
    store = Store(db)
    make_study(store, study_files, RATERS, k=1)
    server = LiveServer(create_app(db)).start()
    client, csrf = login(server.url, "zhao")
    for pos in (1, 2):
        assert client.post(f"/api/rate/{pos}", json={"levels": LEVELS, "comment": f"第{pos}题", "seconds": 30},
                           headers={"X-CSRF-Token": csrf}).status_code == 200
    server.stop()
    store.close()
    server = LiveServer(create_app(db)).start()  # a new process would see the same: everything is in the file
    try:
        client, _ = login(server.url, "zhao")
        assert client.get("/rate").url.path == "/rate/3"  # resumes at the first unrated item
        page = client.get("/rate/2").text
        assert "第2题" in page and re.search(r'name="level_similarity" value="5"\s+checked', page)
        with Store(db).session() as s:
            rows = [r for r in export_rows(s, "pilot") if r["dimension"] == "total"]
        assert sorted((r["rater"], r["comment"], r["score"], r["seconds"]) for r in rows) == [
            ("zhao", "第1题", 87.5, 30.0), ("zhao", "第2题", 87.5, 30.0)]
    finally:
        server.stop()
