"""`shicheng reliability` on a simulated study with a known judge bias for one master, and on bad input."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from shicheng.cli import app
from shicheng.rate.reliability import read_judge_scores, read_ratings, reliability
from tests.rate.sim import BIAS, BIASED_MASTER, MASTERS, simulate


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sim")
    ratings, results = simulate(folder)
    res = reliability(ratings=ratings, judge_scores=results, out=folder / "out", n_boot=300, seed=0)
    return ratings, results, res


def test_per_master_bland_altman_recovers_the_planted_bias(sim):
    _, _, res = sim
    judge = res.results["judges"]["sim-judge"]
    per = judge["bland_altman_per_master"]
    assert set(per) == set(MASTERS)
    biased = per[BIASED_MASTER]
    others = [per[m] for m in MASTERS if m != BIASED_MASTER]
    # The levels round the physicians' scores, which shifts every master alike; the planted bias is the
    # difference between m-b and the others, and the m-b CI excludes the others' bias.
    baseline = sum(o["bias"] for o in others) / len(others)
    assert biased["bias"] - baseline == pytest.approx(BIAS, abs=2.5)
    assert all(abs(o["bias"] - baseline) < 2.0 for o in others)
    assert biased["bias_ci_low"] > max(o["bias_ci_high"] for o in others)
    assert biased["relative_bias"] > 5 > max(abs(o["relative_bias"]) for o in others)
    # Overall bias sits between: a third of the answers carry the bias.
    assert judge["bland_altman"]["bias"] == pytest.approx(baseline + BIAS / 3, abs=1.5)


def test_trends_tracked_distinctions_weaker(sim):
    judge = sim[2].results["judges"]["sim-judge"]
    assert judge["system_level"]["systems"] == ["sys-1", "sys-2", "sys-3", "sys-4"]
    assert judge["system_level"]["kendall_tau_b"] == 1.0 and judge["system_level"]["spearman"] == 1.0
    gap = judge["trend_vs_distinction"]
    assert gap["within_master_item_spearman"] < gap["system_level_spearman"]
    assert gap["gap"] == pytest.approx(gap["system_level_spearman"] - gap["within_master_item_spearman"])
    assert judge["item_level"]["icc"]["ICC(2,1)"]["icc"] is not None


def test_failed_verdict_left_out_not_zero(sim):
    _, results, res = sim
    scores, left_out = read_judge_scores(results)
    assert left_out == {"sim-judge": 1} and res.results["counts"]["judge_verdicts_left_out"] == {"sim-judge": 1}
    assert ("m-a-case-0", 1, "full_chain", "sys-1") not in scores["sim-judge"]
    judge = res.results["judges"]["sim-judge"]
    assert judge["n_units"] == 119 and judge["n_physician_only"] == 1


def test_inter_rater_self_consistency_and_physicians_view(sim):
    r = sim[2].results
    total = r["inter_rater"]["total"]
    assert total["n_units"] == 120 and total["n_raters"] == 9
    assert total["design"] == "one-way (k=3)" and total["icc"]["ICC(1,1)"]["icc"] > 0.5
    assert total["alpha_interval"]["ci_low"] < total["alpha_interval"]["alpha"] < total["alpha_interval"]["ci_high"]
    assert r["inter_rater_per_master"]["m-a"]["design"] == "complete"  # m-a's three raters rated every m-a answer
    assert set(r["inter_rater_per_master"]["m-a"]["icc"]) >= {"ICC(1,1)", "ICC(2,1)", "ICC(3,k)"}
    assert r["self_consistency"]["pooled"]["n_pairs"] == r["counts"]["repeats"] > 0
    cells = {(c["master"], c["system"]): c for c in r["physicians_view"]}
    assert len(cells) == 12
    means = [cells[("m-a", s)]["total"]["mean"] for s in ("sys-1", "sys-2", "sys-3", "sys-4")]
    assert means == sorted(means)
    c = cells[("m-b", "sys-3")]
    assert c["similarity"]["ci_low"] <= c["similarity"]["mean"] <= c["similarity"]["ci_high"]
    html = sim[2].report_path.read_text(encoding="utf-8")
    assert "Bland-Altman" in html and "data:image/png;base64," in html and "m-b" in html


def test_cli_writes_results_and_report(sim, tmp_path):
    ratings, results, _ = sim
    res = CliRunner().invoke(app, ["reliability", "--ratings", str(ratings), "--judge-scores", str(results),
                                   "--out", str(tmp_path / "r"), "--n-boot", "50"])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "r" / "results.json").read_text(encoding="utf-8"))
    assert out["judges"]["sim-judge"]["bland_altman_per_master"][BIASED_MASTER]["relative_bias"] > 5
    assert (tmp_path / "r" / "report.html").is_file()


def test_bad_ratings_name_file_line_and_field(tmp_path, sim):
    ratings = sim[0]
    rows = list(csv.DictReader(ratings.open(encoding="utf-8")))
    rows[2]["score"] = "abc"
    bad = tmp_path / "bad.csv"
    with bad.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(ValueError, match=rf"{bad}:4: field 'score': 'abc' is not a number"):
        read_ratings(bad)
    rows[2]["score"], rows[2]["dimension"] = "10", "beauty"
    with bad.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(ValueError, match=r":4: field 'dimension': unknown 'beauty'"):
        read_ratings(bad)
    jl = tmp_path / "r.jsonl"
    jl.write_text('{"case_id": "a"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"r.jsonl:1: missing field\(s\) visit"):
        read_ratings(jl)
    res = CliRunner().invoke(app, ["reliability", "--ratings", str(bad), "--judge-scores", str(sim[1]),
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "field 'dimension'" in res.output


def test_bad_judge_results(tmp_path):
    p = tmp_path / "results.json"
    p.write_text(json.dumps({"judge": {"available": False, "verdicts": []}}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"no judge\.verdicts"):
        read_judge_scores(p)
    p.write_text(json.dumps({"judge": {"verdicts": [{"case_id": "c", "visit": 1, "task": "full_chain", "system": "s",
                                                     "judge": "j", "status": "scored", "total": None,
                                                     "max_total": 55}]}}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"judge.verdicts\[0\]: a scored verdict needs a numeric total"):
        read_judge_scores(p)
