"""`shicheng serve` on the trained model: its GGUF answers the API as its model directory does, and the
answer it writes (a prescription with 甘草 + 海藻) comes back with the 十八反 finding on both.

The protocol tests of tests/serve/test_api.py (the OpenAI client, streaming, 4xx on bad input, the real
`run_server` command) run on the GGUF of the random-weight tiny model as well; these add what needs a
model that writes a prescription.
"""

from __future__ import annotations

import json

import httpx
import pytest
from openai import OpenAI

from shicheng.serve.launch import build_app
from tests.helpers.deploy import training_conversations
from tests.serve.support import PLANTED_ANSWER, LiveServer

pytestmark = pytest.mark.usefixtures("torch_one_thread")
CASE = {"sex": "female", "age": 34, "chief_complaint": "颈前肿大半年", "present_illness": "神疲乏力，纳差便溏",
        "tongue": "舌淡胖，苔白腻", "pulse": "脉濡滑", "max_tokens": 300}


@pytest.fixture(scope="module", params=["model-dir", "gguf"])
def server(request, trained_model_dir, trained_ggufs):
    model = trained_model_dir if request.param == "model-dir" else trained_ggufs["f16"]
    live = LiveServer(build_app(str(model), device="cpu")).start()  # masters from masters.json / the GGUF
    yield live
    live.stop()


def _errors(consultation: dict) -> list:
    return [(f["rule"], sorted(f["herbs"])) for f in consultation["findings"] if f["level"] == "error"]


def test_consult_finds_the_incompatible_pair(server):
    masters = httpx.get(f"{server.url}/v1/models").json()["data"]
    assert len(masters) == 6  # "shicheng" and one id per master of masters.json
    r = httpx.post(f"{server.url}/v1/consult", json={"master": masters[1]["id"], **CASE}, timeout=60)
    assert r.status_code == 200, r.text
    c = r.json()
    assert c["raw_text"] == PLANTED_ANSWER and c["missing"] == []
    assert c["sections"]["syndrome"] == "脾虚痰凝证。"
    assert _errors(c) == [("十八反", ["海藻", "甘草"])]


def test_consult_stream_and_chat(server):
    events = []
    with httpx.stream("POST", f"{server.url}/v1/consult/stream", json=CASE, timeout=60) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    result = parsed[-1]["consultation"]
    assert "".join(e["text"] for e in parsed[:-1]) == result["raw_text"]
    assert _errors(result) == [("十八反", ["海藻", "甘草"])]

    # a chat client that asks as the agent does (the server adds the generic system prompt) gets the answer too
    user = training_conversations()[0][1]
    client = OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=60)
    reply = client.chat.completions.create(model="shicheng", max_tokens=300, messages=[user])
    assert reply.choices[0].message.content.startswith(PLANTED_ANSWER)
    extra = reply.model_extra["shicheng"]
    assert any(f["rule"] == "十八反" for f in extra["safety"]["findings"])
    assert "安全核查" in reply.choices[0].message.content  # the notice after the answer
