"""The API against real clients: the official `openai` package and httpx, over loopback HTTP."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import httpx
import openai
import pytest
from openai import OpenAI

from shicheng.demo import load_demo_masters
from shicheng.prompts import system_prompt
from shicheng.serve.launch import ServeError, build_app
from tests.serve.support import API_KEY, PLANTED_ANSWER, LiveServer

# Tiny-model generations on one thread: a second OpenMP thread spin-waits on this small shared machine.
pytestmark = pytest.mark.usefixtures("torch_one_thread")

CASE_FIELDS = {"sex": "female", "age": 34, "chief_complaint": "颈前肿大半年", "present_illness": "神疲乏力，纳差便溏",
               "tongue": "舌淡胖，苔白腻", "pulse": "脉濡滑"}


@pytest.fixture(scope="module")
def tiny_server(live_server, served_tiny):
    """The tiny model served from its directory and from its GGUF: every test that uses it runs on both."""
    backend, masters, _ = served_tiny
    return live_server(backend, masters, api_key=API_KEY)


@pytest.fixture(scope="module")
def planted_server(live_server, planted_backend):
    return live_server(planted_backend, load_demo_masters())


def client_for(server, key: str | None = API_KEY) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key=key or "none", max_retries=0, timeout=30)


def post(server, path: str, body=None, key: str | None = None, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=30, **kw)


def error_message(response: httpx.Response) -> str:
    return response.json()["error"]["message"]


# ---- OpenAI protocol ----------------------------------------------------------------------------------

def test_models_lists_one_id_per_master(tiny_server, served_tiny):
    masters = served_tiny[1]
    ids = [m.id for m in client_for(tiny_server).models.list().data]
    assert ids == ["shicheng", *(f"shicheng-{mid}" for mid in sorted(masters))]
    assert len(masters) == 5


def test_chat_completion_adds_the_master_system_prompt(tiny_server, served_tiny):
    backend, masters, _ = served_tiny
    master = masters[sorted(masters)[0]]
    user = {"role": "user", "content": "患者胃脘冷痛三年，舌淡脉沉，请辨证。"}
    reply = client_for(tiny_server).chat.completions.create(
        model=f"shicheng-{master.id}", messages=[user], max_tokens=8)
    assert reply.object == "chat.completion"
    assert reply.model == f"shicheng-{master.id}"
    assert isinstance(reply.choices[0].message.content, str)
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert 1 <= reply.usage.completion_tokens <= 8
    # The prompt the model saw is our master system prompt + the user turn, exactly as in training.
    expected = backend.count_prompt_tokens([{"role": "system", "content": system_prompt(master)}, user])
    assert reply.usage.prompt_tokens == expected
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streaming_matches_non_streaming(tiny_server):
    client = client_for(tiny_server)
    request = {"model": "shicheng", "messages": [{"role": "user", "content": "失眠多梦，请处方。"}],
               "max_tokens": 12, "temperature": 0}
    whole = client.chat.completions.create(**request).choices[0].message.content
    chunks = list(client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole  # greedy decoding: the deltas add up to the same answer
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    assert chunks[-1].usage is not None and 1 <= chunks[-1].usage.completion_tokens <= 12


def test_master_prompt_is_added_or_merged_with_the_clients_and_the_response_says_which(planted_server,
                                                                                       planted_upstream):
    """The master prompt is never dropped: added when the client sends no system turn, put first with the
    client's own system text after it when it sends one, kept when the client sends one of ours."""
    master = load_demo_masters()[sorted(load_demo_masters())[1]]
    client = client_for(planted_server, key=None)
    reply = client.chat.completions.create(model=f"shicheng-{master.id}", messages=[{"role": "user", "content": "问"}])
    sent = planted_upstream.requests[-1]["messages"]
    assert sent == [{"role": "system", "content": system_prompt(master)}, {"role": "user", "content": "问"}]
    assert reply.model_extra["shicheng"]["system_prompt"] == "added"

    reply = client.chat.completions.create(model=f"shicheng-{master.id}", messages=[
        {"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "问"}])
    sent = planted_upstream.requests[-1]["messages"]
    assert sent[0] == {"role": "system", "content": f"{system_prompt(master)}\n\nYou are a helpful assistant."}
    assert reply.model_extra["shicheng"]["system_prompt"] == "merged"

    reply = client.chat.completions.create(model="shicheng", messages=[{"role": "developer", "content": "自定义"},
                                                                        {"role": "user", "content": "问"}])
    assert planted_upstream.requests[-1]["messages"][0] == {"role": "system",
                                                           "content": f"{system_prompt(None)}\n\n自定义"}
    assert reply.model_extra["shicheng"]["system_prompt"] == "merged"

    # An agent in front of this server already sends our prompt: it is not doubled.
    reply = client.chat.completions.create(model="shicheng", messages=[
        {"role": "system", "content": system_prompt(master)}, {"role": "user", "content": "问"}])
    assert planted_upstream.requests[-1]["messages"][0] == {"role": "system", "content": system_prompt(master)}
    assert reply.model_extra["shicheng"]["system_prompt"] == "kept"


# ---- consultations ------------------------------------------------------------------------------------

def test_consult_flags_the_planted_incompatible_pair(planted_server):
    master_id = sorted(load_demo_masters())[0]
    r = post(planted_server, "/v1/consult", {"master": master_id, **CASE_FIELDS})
    assert r.status_code == 200, r.text
    c = r.json()
    assert c["master_id"] == master_id and c["task"] == "full_chain"
    assert c["sections"]["syndrome"] == "脾虚痰凝证。"
    assert c["missing"] == []
    assert {h["base"] for h in c["prescription"]["herbs"]} >= {"甘草", "海藻"}
    errors = [f for f in c["findings"] if f["level"] == "error"]
    assert [(f["rule"], sorted(f["herbs"])) for f in errors] == [("十八反", ["海藻", "甘草"])]
    assert c["raw_text"] == PLANTED_ANSWER
    assert "not medical advice" in c["disclaimer"]


def test_consult_stream_sends_deltas_then_the_result(planted_server):
    events = []
    with httpx.stream("POST", f"{planted_server.url}/v1/consult/stream", timeout=30,
                      json={"master": sorted(load_demo_masters())[0], "text": "颈前肿大，乏力便溏，舌淡脉滑。"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    assert {e["type"] for e in parsed[:-1]} == {"delta"} and len(parsed) > 2
    result = parsed[-1]
    assert result["type"] == "result"
    assert "".join(e["text"] for e in parsed[:-1]) == result["consultation"]["raw_text"] == PLANTED_ANSWER
    assert any(f["rule"] == "十八反" for f in result["consultation"]["findings"])


def test_consult_follow_up_reports_changes(planted_server, planted_upstream):
    r = post(planted_server, "/v1/consult", {**CASE_FIELDS, "previous_prescription": "党参15g 白术12g 茯苓15g 陈皮10g"})
    assert r.status_code == 200, r.text
    c = r.json()
    assert c["visit_index"] == 1
    assert "上次处方：党参15g" in planted_upstream.requests[-1]["messages"][1]["content"]
    assert set(c["changes"]["added"]) >= {"海藻", "甘草"} and c["changes"]["removed"] == ["陈皮"]


def test_consult_on_the_tiny_model(tiny_server):
    r = post(tiny_server, "/v1/consult", {"master": "shicheng-" + sorted(load_demo_masters())[2], "pregnant": True,
                                          "task": "syndrome", **CASE_FIELDS, "max_tokens": 16}, key=API_KEY)
    assert r.status_code == 200, r.text
    c = r.json()
    assert c["task"] == "syndrome"
    # Random weights write noise: the syndrome is either found or reported missing, never both.
    assert ("syndrome" in c["sections"]) != ("syndrome" in c["missing"])
    assert 1 <= c["completion_tokens"] <= 16 and c["prompt_tokens"] > 20


# ---- auth and bad requests ----------------------------------------------------------------------------

def test_auth(tiny_server):
    with pytest.raises(openai.AuthenticationError) as err:
        client_for(tiny_server, key="wrong").models.list()
    assert "incorrect API key" in str(err.value)
    r = httpx.get(f"{tiny_server.url}/v1/models")
    assert r.status_code == 401 and "missing API key" in error_message(r)
    assert r.headers["www-authenticate"] == "Bearer"
    assert post(tiny_server, "/v1/consult", {"text": "胃痛"}).status_code == 401
    r = httpx.get(f"{tiny_server.url}/v1/models", headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200
    assert httpx.get(f"{tiny_server.url}/health").json()["status"] == "ok"  # health needs no key


@pytest.mark.parametrize(("path", "body", "status", "words"), [
    ("/v1/chat/completions", {"model": "shicheng-nobody", "messages": [{"role": "user", "content": "x"}]}, 404,
     ["unknown model 'shicheng-nobody'", "shicheng-"]),
    ("/v1/consult", {"master": "nobody", "text": "胃痛"}, 404, ["unknown master 'nobody'", "known masters"]),
    ("/v1/consult", {"master": None, "sex": "male"}, 422, ["empty case"]),
    ("/v1/consult", {"text": "   "}, 422, ["empty case"]),
    ("/v1/consult", {"text": "胃" * 400_000}, 413, ["exceeds the limit"]),
    ("/v1/chat/completions", {"model": "shicheng", "messages": "hello"}, 422, ["messages"]),
    ("/v1/chat/completions", {"model": "shicheng", "messages": [{"role": "user", "content": "x"}],
                              "max_tokens": "lots"}, 422, ["max_tokens"]),
    ("/v1/chat/completions", {"model": "shicheng", "messages": [{"role": "user", "content": "x"}],
                              "temperature": 9}, 422, ["temperature"]),
    ("/v1/chat/completions", {"model": "shicheng", "messages": [{"role": "assistant", "content": "x"}]}, 422,
     ["user turn"]),
    ("/v1/consult", {"text": "胃痛", "age": "old"}, 422, ["age"]),
    ("/v1/consult", {"text": "胃痛", "pregnant": "maybe"}, 422, ["pregnant"]),
    ("/v1/consult", {"chief_complain": "胃痛"}, 422, ["chief_complain", "Extra inputs"]),
    ("/v1/consult", {"text": "胃痛", "task": "surgery"}, 422, ["task"]),
    ("/v1/consult", {"text": "胃痛", "task": "modification"}, 422, ["modification task needs a follow-up"]),
    ("/v1/consult", {"case": {"id": "c1", "visits": []}}, 422, ["case.visits"]),
])
def test_bad_requests_get_4xx_with_a_message(tiny_server, path, body, status, words):
    r = post(tiny_server, path, body, key=API_KEY)
    assert r.status_code == status, r.text
    message = error_message(r)
    for word in words:
        assert word in message
    assert "胃胃胃" not in r.text  # the input is never echoed back


def test_body_that_is_not_json(tiny_server):
    r = httpx.post(f"{tiny_server.url}/v1/chat/completions", content=b"{not json",
                   headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    assert r.status_code == 422 and "JSON" in error_message(r)


# ---- logs ---------------------------------------------------------------------------------------------

def _wait_for(caplog, text: str) -> str:
    deadline = time.monotonic() + 5
    while text not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.02)  # the request line is logged after the response has gone out
    return caplog.text


@pytest.mark.parametrize("log_patient_text", [False, True])
def test_patient_text_is_logged_only_when_asked(live_server, planted_backend, caplog, log_patient_text):
    server = live_server(planted_backend, log_patient_text=log_patient_text)
    caplog.set_level(logging.INFO, logger="shicheng.serve")
    marker = "患者自述左胁隐痛七年余"
    assert post(server, "/v1/consult", {"present_illness": marker}).status_code == 200
    logged = _wait_for(caplog, "POST /v1/consult 200")
    assert "POST /v1/consult 200" in logged and "completion_tokens=" in logged
    assert (marker in logged) is log_patient_text


# ---- configuration and the real command ---------------------------------------------------------------

def test_build_app_refuses_an_unset_key_variable(tiny_model_dir, monkeypatch):
    monkeypatch.delenv("SHICHENG_TEST_KEY", raising=False)
    with pytest.raises(ServeError, match="SHICHENG_TEST_KEY"):
        build_app(str(tiny_model_dir), api_key_env="SHICHENG_TEST_KEY")
    with pytest.raises(ServeError, match="not found"):
        build_app(str(tiny_model_dir / "nowhere"))


def test_build_app_for_an_endpoint_with_a_masters_folder(planted_upstream, tmp_path):
    """The scale-out path: the server in front of a vLLM-style endpoint, masters from their YAML files."""
    from shicheng.demo import masters_dir

    app = build_app(planted_upstream.url, backend_model="shicheng-upstream", masters=masters_dir(), max_queue=1)
    server = LiveServer(app).start()
    try:
        client = client_for(server, key=None)
        assert len(client.models.list().data) == 1 + len(load_demo_masters())
        reply = client.chat.completions.create(model="shicheng-" + sorted(load_demo_masters())[0],
                                               messages=[{"role": "user", "content": "问"}])
        assert reply.choices[0].message.content.startswith(PLANTED_ANSWER)  # then the safety notice
        assert planted_upstream.requests[-1]["model"] == "shicheng-upstream"
    finally:
        server.stop()
    with pytest.raises(ServeError, match=r"no masters\.json and no master YAML"):
        build_app(planted_upstream.url, masters=tmp_path)


def test_serve_command_runs_uvicorn(served_tiny, tmp_path):
    """`run_server` in its own process (the model directory, then its .gguf file): listens, needs the key,
    answers, and logs no patient text."""
    import socket

    model_path = served_tiny[2]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = ("from shicheng.serve.launch import run_server; "
            f"run_server({str(model_path)!r}, port={port}, api_key_env='SHICHENG_TEST_KEY', max_queue=2)")
    log_file = tmp_path / "serve.log"
    env = {**os.environ, "SHICHENG_TEST_KEY": "k-1"}
    with log_file.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log_file.read_text()
            time.sleep(0.2)
        marker = "口苦咽干目眩二十日"
        r = httpx.post(f"{url}/v1/consult", json={"chief_complaint": marker, "max_tokens": 4},
                       headers={"Authorization": "Bearer k-1"}, timeout=30)
        assert r.status_code == 200, r.text
        assert httpx.get(f"{url}/v1/models").status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    log = log_file.read_text()
    assert "POST /v1/consult 200" in log and "GET /v1/models 401" in log
    assert marker not in log
