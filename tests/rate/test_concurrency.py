"""18 raters (the paper's panel) submitting at once lose no rating: real concurrent HTTP requests against a
live server, on SQLite and on a real PostgreSQL server (a throwaway cluster, see conftest.postgres_url)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from shicheng.rate.db import Rating, Store
from shicheng.rate.export import export_rows
from shicheng.rate.rubric import load_rubric
from tests.helpers.predict_data import HUANG, LI
from tests.rate.conftest import login, make_study

N_RATERS = 18


def _levels(rater: int, position: int) -> dict:
    # Different for every (rater, position), so that a rating landing in the wrong row would show.
    keys = load_rubric().keys
    return {k: 1 + (rater + position + i) % 5 for i, k in enumerate(keys)}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_eighteen_raters_at_once_lose_nothing(backend, request, tmp_path, study_files, servers):
    db = tmp_path / "ratings.db" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    store = Store(db)
    raters = {f"r{i:02d}": [LI, HUANG] for i in range(N_RATERS)}
    make_study(store, study_files, raters, k=N_RATERS)  # every rater rates all 6 answers
    server = servers(db)
    sessions = [login(server.url, name) for name in raters]
    jobs = [(i, pos) for i in range(N_RATERS) for pos in range(1, 7)]
    start = threading.Barrier(len(jobs))

    def submit(job):
        i, pos = job
        client, csrf = sessions[i]
        start.wait()  # all 108 requests leave together
        resp = client.post(f"/api/rate/{pos}", json={"levels": _levels(i, pos), "comment": f"r{i}-p{pos}",
                                                      "seconds": 10}, headers={"X-CSRF-Token": csrf})
        return resp.status_code, resp.json()

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(submit, jobs))
    assert [code for code, _ in results] == [200] * len(jobs), [r for r in results if r[0] != 200][:3]
    rubric = load_rubric()
    with store.session() as s:
        assert len(s.scalars(select(Rating)).all()) == len(jobs)
        rows = [r for r in export_rows(s, "pilot") if r["dimension"] == "total"]
    got = {r["comment"]: r["score"] for r in rows}
    assert got == {f"r{i}-p{pos}": rubric.total(_levels(i, pos)) for i, pos in jobs}
    for client, _ in sessions:
        client.close()
    store.close()
