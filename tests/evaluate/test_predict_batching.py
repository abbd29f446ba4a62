"""`predict` against an endpoint that batches concurrent requests as vLLM does (tests/helpers/batching_server.py):
every answer comes back on the row of the request that asked for it, requests overlap up to `concurrency` and
never beyond, and concurrency above one gives the server batches above one."""

from __future__ import annotations

import hashlib
import json

import pytest

from shicheng.demo import load_demo_masters
from shicheng.domain import Task
from shicheng.evaluate.predict import predict
from shicheng.prompts import prompt_messages
from tests.helpers import predict_data as data
from tests.helpers.batching_server import BatchingServer

MASTERS = load_demo_masters()


def answer_for(messages: list[dict]) -> str:
    """A reply that only this request's messages produce: a swapped reply is a wrong answer."""
    digest = hashlib.sha256(json.dumps(messages, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:16]
    return f"<think>{digest}</think><output>## 辨证\n{digest}</output>"


@pytest.mark.parametrize("concurrency", [1, 4])
def test_predict_answers_match_their_requests_and_batches_follow_concurrency(tmp_path, tiny_model_dir, concurrency):
    cases_path = data.write_cases(tmp_path / "cases")[0]
    out = tmp_path / "api.jsonl"
    with BatchingServer(answer_for, model="vllm-like", step_s=0.05) as server:
        report = predict(server.url, model_name="vllm-like", cases=cases_path, out=out, all_masters=True,
                         concurrency=concurrency, batch_size=8, progress=False, timeout_s=30,
                         masters_file=tiny_model_dir / "masters.json")
        sizes, most = list(server.batch_sizes), server.max_in_flight
        sent = len(server.requests)
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert report.failed == 0 and report.total == len(rows) == sent == sum(sizes) == 15
    cases = {c.id: c for c in data.held_out_cases()}
    for r in rows:
        messages = prompt_messages(cases[r["case_id"]], r["visit"] - 1, Task(r["task"]), MASTERS[r["master"]])
        assert r["output"] == answer_for(messages), (r["case_id"], r["visit"], r["master"])
    assert len({r["output"] for r in rows}) == 15  # 15 different requests, 15 different answers
    assert most <= concurrency and max(sizes) <= concurrency
    if concurrency == 1:
        assert sizes == [1] * 15
    else:
        assert most == concurrency  # the bound is reached: requests do overlap
        assert max(sizes) > 1 and len(sizes) < 15  # the server batched them
