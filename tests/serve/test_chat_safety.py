"""Chat answers are safety-checked too: the findings in the `shicheng` field, a visible notice by default.

The upstream is the loopback fake OpenAI server answering what the README's example can return: a
plain reply with 制附子60g, no sections. The real server runs on loopback; the client is `openai`.
"""

from __future__ import annotations

import json

import httpx
import pytest
from openai import OpenAI

from shicheng.agent import OpenAIBackend
from tests.helpers.openai_server import OpenAIServer

PLAIN_REPLY = "此为寒湿痹阻证，治宜温阳散寒。方用：制附子60g 干姜10g 桂枝10g 炙甘草6g，水煎服。"
NO_RX_REPLY = "请补充舌象与脉象，以便辨证。"
PREGNANT_USER = "患者女，30岁，妊娠12周。关节冷痛三月，畏寒。请处方。"


@pytest.fixture(scope="module")
def upstream():
    replies = {"reply": PLAIN_REPLY}
    with OpenAIServer(lambda messages: replies["reply"], model="up") as server:
        server.replies = replies
        yield server


@pytest.fixture(scope="module")
def chat_server(live_server, upstream):
    return live_server(OpenAIBackend(upstream.url, "up", timeout_s=30))


def client(server) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=30)


def ask(server, content: str = "关节冷痛，请处方。", **kw):
    return client(server).chat.completions.create(model="shicheng", messages=[{"role": "user", "content": content}],
                                                  **kw)


def test_an_overdose_in_a_plain_reply_is_found_and_noticed(chat_server, upstream):
    upstream.replies["reply"] = PLAIN_REPLY
    reply = ask(chat_server)
    extra = reply.model_extra["shicheng"]
    dose = [f for f in extra["safety"]["findings"] if f["rule"] == "剂量"]
    assert dose and dose[0]["herbs"] == ["附子"] and "60" in dose[0]["message"]
    assert {h["base"] for h in extra["prescription"]["herbs"]} >= {"附子", "干姜", "桂枝", "甘草"}
    assert "safety finding" in extra["safety_summary"]
    text = reply.choices[0].message.content
    assert text.startswith(PLAIN_REPLY)
    notice = text[len(PLAIN_REPLY):]
    assert "安全核查" in notice and "附子" in notice and "not medical advice" in notice
    assert extra["safety_notice_appended"] is True


def test_the_notice_can_be_turned_off_per_request_and_the_field_stays(chat_server, upstream):
    upstream.replies["reply"] = PLAIN_REPLY
    reply = ask(chat_server, extra_body={"safety_notice": False})
    assert reply.choices[0].message.content == PLAIN_REPLY
    extra = reply.model_extra["shicheng"]
    assert extra["safety_notice_appended"] is False
    assert any(f["rule"] == "剂量" for f in extra["safety"]["findings"])


def test_the_server_option_turns_the_notice_off(live_server, upstream):
    upstream.replies["reply"] = PLAIN_REPLY
    server = live_server(OpenAIBackend(upstream.url, "up", timeout_s=30), chat_safety_notice=False)
    reply = ask(server)
    assert reply.choices[0].message.content == PLAIN_REPLY
    assert any(f["rule"] == "剂量" for f in reply.model_extra["shicheng"]["safety"]["findings"])
    # ... and a request may still ask for it.
    assert "安全核查" in ask(server, extra_body={"safety_notice": True}).choices[0].message.content


def test_the_patient_in_the_user_turn_is_used_by_the_check(chat_server, upstream):
    upstream.replies["reply"] = PLAIN_REPLY
    extra = ask(chat_server, PREGNANT_USER).model_extra["shicheng"]
    assert extra["patient"]["pregnant"] is True and extra["patient"]["age"] == 30
    assert [(f["field"], f["evidence"]) for f in extra["patient_facts"]] == [
        ("sex", "患者女"), ("age", "30岁"), ("pregnant", "妊娠12周")]
    rules = {(f["rule"], f["herbs"][0]) for f in extra["safety"]["findings"]}
    assert ("妊娠慎用", "附子") in rules and ("妊娠慎用", "桂枝") in rules


def test_a_reply_without_a_prescription_gets_no_notice(chat_server, upstream):
    upstream.replies["reply"] = NO_RX_REPLY
    reply = ask(chat_server)
    assert reply.choices[0].message.content == NO_RX_REPLY
    extra = reply.model_extra["shicheng"]
    assert extra["prescription"] is None and extra["safety"]["findings"] == []
    assert extra["safety_notice_appended"] is False


def test_streaming_sends_the_notice_and_the_check_in_the_last_chunks(chat_server, upstream):
    upstream.replies["reply"] = PLAIN_REPLY
    chunks = list(ask(chat_server, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith(PLAIN_REPLY) and "安全核查" in text[len(PLAIN_REPLY):]
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(final) == 1 and final[0].choices[0].finish_reason == "stop"
    extra = final[0].model_extra["shicheng"]
    assert any(f["rule"] == "剂量" and f["herbs"] == ["附子"] for f in extra["safety"]["findings"])
    # Off per request: the text is the model's alone, the check still comes.
    raw = []
    with httpx.stream("POST", f"{chat_server.url}/v1/chat/completions", timeout=30, json={
            "model": "shicheng", "stream": True, "safety_notice": False,
            "messages": [{"role": "user", "content": "请处方"}]}) as r:
        raw = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in raw if c.get("choices"))
    assert streamed == PLAIN_REPLY
    assert raw[-1]["shicheng"]["safety_notice_appended"] is False
    assert raw[-1]["shicheng"]["safety"]["findings"]


def test_a_check_that_fails_is_said_not_skipped(chat_server, upstream, monkeypatch):
    import shicheng.serve.chat as chat

    def broken(*args, **kwargs):
        raise IndexError("string index out of range")

    monkeypatch.setattr(chat, "check_reply", broken)  # the crash class of issue item 1, injected
    upstream.replies["reply"] = PLAIN_REPLY
    reply = ask(chat_server)
    assert "NOT checked" in reply.choices[0].message.content
    assert "IndexError" in reply.model_extra["shicheng"]["safety_error"]
