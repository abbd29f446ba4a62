"""`evaluate` end to end on tiny predictions: gold, the retrieval baseline and a hand-written system with a
failed generation, without a judge and with a loopback judge (a rerun makes zero calls); and the
`shicheng predict` / `shicheng evaluate` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shicheng.evaluate.pipeline import evaluate
from shicheng.evaluate.predict import predict
from shicheng.template import render_answer
from tests.helpers import predict_data as data
from tests.helpers.judge_server import JudgeServer, schema_of, verdict_reply


@pytest.fixture()
def files(tmp_path) -> dict[str, Path]:
    """Three prediction files for the hand-made cases: gold, retrieval, and "hand" (one answer per visit,
    the test-sleep visit a failed generation)."""
    test_path, train_path = data.write_cases(tmp_path / "data" / "cases", masters=True)
    gold, retrieval, hand = tmp_path / "gold.jsonl", tmp_path / "retrieval.jsonl", tmp_path / "hand.jsonl"
    predict("gold", cases=test_path, out=gold, progress=False)
    predict("retrieval", cases=test_path, out=retrieval, progress=False)
    cold = data.held_out_cases()[0].visits[0].answer
    rows = [
        {"case_id": "test-cold", "visit": 1, "master": data.LI, "case_master": data.LI, "task": "full_chain",
         "system": "hand", "output": render_answer(cold.model_copy(update={"prescription": "附子10g 干姜10g"})),
         "tokens": 40, "seconds": 0.5},
        {"case_id": "test-cold", "visit": 2, "master": data.LI, "case_master": data.LI, "task": "full_chain",
         "system": "hand", "output": "辨证：脾胃虚寒。", "tokens": 8, "seconds": 0.1},
        {"case_id": "test-sleep", "visit": 1, "master": data.HUANG, "case_master": data.HUANG,
         "task": "full_chain", "system": "hand", "output": "", "tokens": 0, "seconds": 30.0,
         "error": "APITimeoutError: Request timed out."},
    ]
    hand.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return {"test": test_path, "train": train_path, "gold": gold, "retrieval": retrieval, "hand": hand}


def test_evaluate_writes_results_and_report_and_counts_a_failed_generation(files, tmp_path):
    out = tmp_path / "eval"
    result = evaluate([files["gold"], files["retrieval"], files["hand"]], files["test"], out=out, n_boot=200,
                      progress=False)
    assert result.results_path == out / "results.json" and result.report_path == out / "report.html"
    results = json.loads(result.results_path.read_text(encoding="utf-8"))
    assert results["systems"] == ["gold", "retrieval", "hand"]
    # The failed row is neither judged nor scored: 3 + 3 + 2 answers, and the failure listed and counted.
    assert result.answers == results["counts"]["predictions"] == 8 and result.failed == 1
    assert results["counts"]["generation_failed"] == 1
    assert results["counts"]["generation_failed_per_system"] == {"hand": 1}
    [failure] = results["generation_failures"]
    assert (failure["case_id"], failure["system"], failure["line"]) == ("test-sleep", "hand", 3)
    assert "APITimeoutError" in failure["error"]
    assert any("failed to generate" in w for w in results["warnings"])
    assert not any(a["system"] == "hand" and a["case_id"] == "test-sleep" for a in results["answers"])
    # Gold is the ceiling: its herbs match themselves. train.jsonl beside test.jsonl fitted the style model.
    board = results["leaderboard"]["systems"]
    assert board["gold"]["metrics"]["herb_f1"]["mean"] == pytest.approx(1.0)
    assert board["retrieval"]["metrics"]["herb_f1"]["mean"] < 1.0
    assert results["style"] is not None
    html = result.report_path.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") or html.lstrip().lower().startswith("<!doctype html>")
    assert "failed to generate" in html and "retrieval" in html


def test_evaluate_with_a_loopback_judge_then_a_rerun_makes_no_call(files, tmp_path):
    out = tmp_path / "eval"
    with JudgeServer(lambda messages, body: verdict_reply(schema_of(body), share=0.5), model="judge-x") as server:
        first = evaluate([files["gold"], files["hand"]], files["test"], out=out, n_boot=100, progress=False,
                         judges=[(server.url, "judge-x")])
        calls = server.calls
        assert calls > 0 and first.verdicts == 5  # 3 gold + 2 hand answers, one judge
        again = evaluate([files["gold"], files["hand"]], files["test"], out=out, n_boot=100, progress=False,
                         judges=[(server.url, "judge-x")])
        assert server.calls == calls and again.verdicts == 5
    results = json.loads(again.results_path.read_text(encoding="utf-8"))
    assert results["judge"] and (out / "judge-cache").is_dir()


def test_evaluate_errors_name_what_is_wrong(files, tmp_path):
    with pytest.raises(FileNotFoundError, match="predictions file not found"):
        evaluate([tmp_path / "none.jsonl"], files["test"], out=tmp_path / "e", progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"case_id": "test-cold", "visit": 1}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: missing field\(s\) master, task, system, output"):
        evaluate([bad], files["test"], out=tmp_path / "e", progress=False)
    bare, _ = data.write_cases(tmp_path / "bare" / "cases")  # no masters/ folder beside it
    with pytest.raises(ValueError, match="none was found for huang-peizhong, li-shouyang: pass --masters-file"):
        evaluate([files["gold"]], bare, out=tmp_path / "e", progress=False, judges=[("http://127.0.0.1:9/v1", "j")])
    with pytest.raises(ValueError, match="needs its model id"):
        evaluate([files["gold"]], files["test"], out=tmp_path / "e", progress=False, judges=[("http://x/v1", None)])


runner = CliRunner()


def invoke(args: list[str]):
    from shicheng.cli import app

    return runner.invoke(app, args)


def test_cli_predict_and_evaluate(files, tmp_path):
    pred = tmp_path / "cli-gold.jsonl"
    res = invoke(["predict", "--model", "gold", "--cases", str(files["test"]), "--out", str(pred),
                              "--tasks", "full_chain,prescription", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert len(pred.read_text(encoding="utf-8").splitlines()) == 6
    out = tmp_path / "cli-eval"
    res = invoke(["evaluate", "--predictions", str(pred), "--predictions", str(files["hand"]),
                              "--cases", str(files["test"]), "--out", str(out), "--n-boot", "100", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (out / "results.json").is_file() and (out / "report.html").is_file()
    assert "report.html" in res.output


def test_cli_errors_exit_2_with_one_clear_line(files, tmp_path):
    res = invoke(["predict", "--model", "gold", "--cases", str(tmp_path / "missing.jsonl"),
                              "--out", str(tmp_path / "p.jsonl")])
    assert res.exit_code == 2 and "missing.jsonl" in res.output
    res = invoke(["predict", "--model", "retrieval", "--cases", str(files["test"]), "--masters",
                              "nobody", "--out", str(tmp_path / "p.jsonl")])
    assert res.exit_code == 2 and "unknown master id 'nobody'" in res.output and data.LI in res.output
    res = invoke(["evaluate", "--predictions", str(files["gold"]), "--cases", str(files["test"]),
                              "--judge", "http://127.0.0.1:9/v1", "--out", str(tmp_path / "e")])
    assert res.exit_code == 2 and "--judge-model" in res.output


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_cli_help(command):
    res = invoke([command, "--help"])
    assert res.exit_code == 0 and "--cases" in res.output and "--out" in res.output
