"""Creating a study from `shicheng predict` files, the balanced lineage-aware assignment, and the coordinator
commands end to end."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from typer.testing import CliRunner

from shicheng.cli import app
from shicheng.rate.assign import plan_assignment, queue_with_repeats
from shicheng.rate.db import Item, Store
from shicheng.rate.study import add_rater, create_study
from tests.helpers.predict_data import HUANG, LI
from tests.rate.conftest import SYSTEMS


def test_study_items_are_the_predicted_answers(study_files, tmp_path):
    store = Store(tmp_path / "r.db")
    out = create_study(store, "s", cases=study_files["cases"], predictions=[study_files[s] for s in SYSTEMS])
    assert out["items"] == 6 and out["systems"] == ["gold", "retrieval"] and out["masters"] == [HUANG, LI]
    with store.session() as s:
        items = s.query(Item).all()
        # Letters per (case, visit): the two systems get A and B, in a seeded shuffle.
        by_case = Counter()
        for it in items:
            by_case[(it.case_id, it.visit, it.label)] += 1
        assert set(by_case.values()) == {1} and {it.label for it in items} == {"A", "B"}
    with pytest.raises(ValueError, match="already exists"):
        create_study(store, "s", cases=study_files["cases"], predictions=[study_files["gold"]])
    with pytest.raises(ValueError, match=r"master\(s\) nobody have no item"):
        add_rater(store, "s", login="x", lineage=["nobody"])


def test_bad_prediction_line_is_named(study_files, tmp_path):
    bad = tmp_path / "bad.jsonl"
    line = json.loads(study_files["gold"].read_text(encoding="utf-8").splitlines()[0])
    bad.write_text(json.dumps({**line, "case_id": "nope"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{bad}:1: field 'case_id': case 'nope'"):
        create_study(Store(tmp_path / "r.db"), "s", cases=study_files["cases"], predictions=[bad])
    failed = tmp_path / "failed.jsonl"
    failed.write_text(json.dumps({**line, "output": "", "error": "timeout"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="1 failed generations"):
        create_study(Store(tmp_path / "r2.db"), "s", cases=study_files["cases"], predictions=[failed])


def test_plan_is_balanced_lineage_bound_and_seeded():
    items = [(i, "a" if i < 40 else "b") for i in range(60)]
    raters = {1: ["a"], 2: ["a"], 3: ["a", "b"], 4: ["b"], 5: ["b"], 6: ["a"]}
    plan = plan_assignment(items, raters, k=2, seed=3)
    assert plan == plan_assignment(items, raters, k=2, seed=3)
    master = dict(items)
    per_item = Counter(i for got in plan.values() for i in got)
    assert set(per_item.values()) == {2}
    for rid, got in plan.items():
        assert all(master[i] in raters[rid] for i in got)
        assert len(set(got)) == len(got)
    loads = {r: len(v) for r, v in plan.items()}
    # 120 slots over 6 raters: any two raters who could swap an item differ by one at most.
    for a in raters:
        for b in raters:
            if set(raters[a]) & set(raters[b]):
                assert abs(loads[a] - loads[b]) <= 1, loads
    assert max(loads.values()) - min(loads.values()) <= 2, loads
    with pytest.raises(ValueError, match="master 'b' has 3"):
        plan_assignment(items, raters, k=4, seed=0)


def test_repeats_come_back_later_and_hidden():
    q = queue_with_repeats(list(range(30)), 0.1, random.Random(0))
    repeats = [i for i, rep in q if rep]
    assert len(repeats) == 3 and len(q) == 33
    for item in repeats:
        first, again = q.index((item, False)), q.index((item, True))
        assert again - first > 30 // 3


def test_coordinator_commands(study_files, tmp_path):
    db = str(tmp_path / "cli.db")
    run = CliRunner().invoke
    res = run(app, ["rate", "create-study", "--db", db, "--name", "p", "--cases", str(study_files["cases"]),
                    "--predictions", str(study_files["gold"]), "--predictions", str(study_files["retrieval"])])
    assert res.exit_code == 0, res.output
    raters = tmp_path / "raters.csv"
    raters.write_text(f"login,lineage,credential,name\nwang,{LI};{HUANG},主任医师,王医生\nzhao,{LI},主治医师,赵医生\n",
                      encoding="utf-8")
    assert run(app, ["rate", "add-raters", "--db", db, "--study", "p", "--file", str(raters)]).exit_code == 0
    res = run(app, ["rate", "assign", "--db", db, "--study", "p", "--k", "1", "--repeat-share", "0"])
    assert res.exit_code == 0 and json.loads(res.output)["raters"] == {"wang": {"items": 3, "repeats": 0},
                                                                      "zhao": {"items": 3, "repeats": 0}}
    res = run(app, ["rate", "issue-logins", "--db", db, "--study", "p", "--base-url", "http://h:1"])
    links = json.loads(res.output)
    assert [x["login"] for x in links] == ["wang", "zhao"] and links[0]["url"].startswith("http://h:1/link/")
    res = run(app, ["rate", "progress", "--db", db, "--study", "p", "--json"])
    assert [r["assigned"] for r in json.loads(res.output)] == [3, 3]
    res = run(app, ["rate", "export", "--db", db, "--study", "p", "--out", str(tmp_path / "e.csv")])
    assert res.exit_code == 0 and (tmp_path / "e.csv").read_text(encoding="utf-8").startswith("study,item,")
    bad = tmp_path / "bad.csv"
    bad.write_text(f"login,lineage\nli,{LI}\n,{LI}\n", encoding="utf-8")
    res = run(app, ["rate", "add-raters", "--db", db, "--study", "p", "--file", str(bad)])
    assert res.exit_code == 2 and f"{bad}:3: a rater needs a login" in res.output
    res = run(app, ["rate", "assign", "--db", db, "--study", "nope", "--k", "1"])
    assert res.exit_code == 2 and "no study named 'nope'" in res.output
