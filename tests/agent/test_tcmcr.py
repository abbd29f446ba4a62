"""TCMClinicalReason-Bench export: exact submission schema, missing-section report, resume, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shicheng.agent import OpenAIBackend, TransformersBackend
from shicheng.agent.tcmcr import BenchInputError, bench_messages, export_tcmcr, read_bench_input
from shicheng.cli import app as shicheng_app
from shicheng.prompts import GENERIC_SYSTEM

pytestmark = pytest.mark.usefixtures("torch_one_thread")

INPUT = Path(__file__).parent / "fixtures" / "TCMCR-Reasoning.json"
SEVEN = ["思维链", "病因病机分析", "证候诊断", "治法", "处方", "方解", "症状变化与中药加减"]
FULL = """<think>寒凝气滞，不通则痛。</think>
<output>
## 病因病机
寒邪内客。
## 辨证
寒凝证。
## 治则治法
温经散寒。
## 处方
小建中汤：桂枝10g 白芍20g 炙甘草6g 生姜3片 大枣5枚 饴糖30g
## 方解
桂枝温阳为君。
## 随症加减
痛甚加延胡索10g。
## 医嘱
注意保暖。
</output>"""
# The insomnia case (tcmcr-002) gets an answer without 方解 and 随症加减.
SHORT = FULL.split("## 方解")[0] + "</output>"


def reply(messages: list[dict]) -> str:
    return SHORT if "入睡困难" in messages[-1]["content"] else FULL


def test_export_writes_the_exact_submission_format_and_reports_missing_parts(openai_server, tmp_path):
    server = openai_server(reply)
    out = tmp_path / "sub" / "answers.json"
    report = export_tcmcr(OpenAIBackend(server.url, "m"), INPUT, out, batch_size=3, progress=False)
    submission = json.loads(out.read_text(encoding="utf-8"))
    ids = [item["id"] for item in json.loads(INPUT.read_text(encoding="utf-8"))]
    assert [row["id"] for row in submission] == ids
    for row in submission:
        assert list(row) == ["id", "output"]
        assert list(row["output"]) == SEVEN
        assert all(isinstance(v, str) for v in row["output"].values())
    first = submission[0]["output"]
    assert first["思维链"] == "寒凝气滞，不通则痛。" and first["证候诊断"] == "寒凝证。"
    assert first["处方"].startswith("小建中汤") and first["症状变化与中药加减"] == "痛甚加延胡索10g。"
    assert report.incomplete == [{"id": "tcmcr-002", "missing": ["方解", "症状变化与中药加减"]}]
    assert (report.total, report.answered, report.resumed) == (6, 6, 0)
    saved = json.loads(out.with_name("answers.json.report.json").read_text(encoding="utf-8"))
    assert saved["incomplete"] == report.incomplete and saved["total"] == 6
    assert server.calls == 6
    # Requests of one batch run concurrently, so find case 1's by its text.
    sent = next(r["messages"] for r in server.requests if "胃脘隐痛" in r["messages"][1]["content"])
    assert sent == bench_messages(read_bench_input(INPUT)[0])
    assert sent[0]["content"] == GENERIC_SYSTEM
    assert sent[1]["content"].startswith("请根据以下病例信息") and "【任务】全流程诊疗" in sent[1]["content"]

    again = export_tcmcr(OpenAIBackend(server.url, "m"), INPUT, out, batch_size=3, progress=False)
    assert server.calls == 6  # every id was answered already: no new request
    assert (again.answered, again.resumed) == (0, 6) and again.incomplete == report.incomplete
    assert json.loads(out.read_text(encoding="utf-8")) == submission


def test_an_interrupted_export_resumes_where_it_stopped(openai_server, tmp_path):
    server = openai_server(reply)
    done = tmp_path / "done.json"
    export_tcmcr(OpenAIBackend(server.url, "m"), INPUT, done, batch_size=6, progress=False)
    lines = Path(f"{done}.partial.jsonl").read_text(encoding="utf-8").splitlines()
    out = tmp_path / "resumed.json"
    # Two answers written, the third cut off mid-line by the interruption.
    Path(f"{out}.partial.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:30], encoding="utf-8")
    before = server.calls
    report = export_tcmcr(OpenAIBackend(server.url, "m"), INPUT, out, batch_size=2, progress=False)
    assert server.calls - before == 4
    assert (report.answered, report.resumed) == (4, 2)
    assert json.loads(out.read_text(encoding="utf-8")) == json.loads(done.read_text(encoding="utf-8"))
    export_tcmcr(OpenAIBackend(server.url, "m"), INPUT, out, batch_size=2, resume=False, progress=False)
    assert server.calls - before == 10  # --no-resume answers everything again


def test_export_batches_on_the_local_model(tiny_model_dir, tmp_path):
    backend = TransformersBackend(tiny_model_dir, device="cpu")
    calls = []
    original = backend.generate_batch

    def counting(messages_list, **gen):
        calls.append(len(messages_list))
        return original(messages_list, **gen)

    backend.generate_batch = counting
    out = tmp_path / "local.json"
    report = export_tcmcr(backend, INPUT, out, batch_size=4, max_new_tokens=8, progress=False)
    assert calls == [4, 2]
    submission = json.loads(out.read_text(encoding="utf-8"))
    assert len(submission) == 6 and all(list(row["output"]) == SEVEN for row in submission)
    assert len(report.incomplete) == 6  # random weights write no sections
    assert report.completion_tokens > 0


def test_bad_input_names_the_file_item_and_field(tmp_path):
    bad = tmp_path / "in.json"
    bad.write_text(json.dumps([{"id": "a", "instruction": "x", "input": "y"}, {"id": "b", "instruction": "x"}]),
                   encoding="utf-8")
    with pytest.raises(BenchInputError, match=r"in\.json: item \[1\]: field 'input' is missing"):
        read_bench_input(bad)
    bad.write_text(json.dumps([{"id": "a", "instruction": "x", "input": "y"}] * 2), encoding="utf-8")
    with pytest.raises(BenchInputError, match=r"item \[1\]: id 'a' appears twice"):
        read_bench_input(bad)
    bad.write_text('{"id": "a"}', encoding="utf-8")
    with pytest.raises(BenchInputError, match="expected a JSON list"):
        read_bench_input(bad)
    bad.write_text("[\n{", encoding="utf-8")
    with pytest.raises(BenchInputError, match=r"in\.json:2: not valid JSON"):
        read_bench_input(bad)


def test_tcmcr_command_prints_the_missing_parts(openai_server, tmp_path):
    server = openai_server(reply)
    source = tmp_path / "TCMCR-Reasoning.json"
    shutil.copy(INPUT, source)
    out = tmp_path / "answers.json"
    result = CliRunner().invoke(shicheng_app, ["tcmcr", "--model", server.url, "--model-name", "m",
                                              "--input", str(source), "--out", str(out), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "1 answer(s) lacked a section" in result.output and "tcmcr-002: 方解, 症状变化与中药加减" in result.output
    assert len(json.loads(out.read_text(encoding="utf-8"))) == 6
    broken = tmp_path / "broken.json"
    broken.write_text("[{}]", encoding="utf-8")
    failed = CliRunner().invoke(shicheng_app, ["tcmcr", "--model", server.url, "--input", str(broken),
                                              "--out", str(tmp_path / "x.json")])
    assert failed.exit_code == 2 and "field 'id' is missing" in failed.output
