"""The server as a hospital network would meet it: keys before bodies, no CDN, frames refused, hung-up
clients cancelled, prompts longer than the model refused, public addresses refused without a key."""

from __future__ import annotations

import re
import time

import httpx
import pytest
from typer.testing import CliRunner

from shicheng.agent import OpenAIBackend
from shicheng.cli import app as shicheng_app
from shicheng.prompts import system_prompt
from shicheng.serve.launch import ServeError, build_app
from tests.serve.support import API_KEY, SlowStreamUpstream, post_and_hang_up_later

pytestmark = pytest.mark.usefixtures("torch_one_thread")
USER = {"role": "user", "content": "胃脘冷痛，请辨证。"}


@pytest.fixture(scope="module")
def keyed(live_server, tiny_backend, tiny_masters):
    return live_server(tiny_backend, tiny_masters, api_key=API_KEY)


@pytest.fixture(scope="module")
def open_server(live_server, tiny_backend, tiny_masters):
    return live_server(tiny_backend, tiny_masters)


def auth() -> dict:
    return {"Authorization": f"Bearer {API_KEY}"}


# ---- authentication before the body -------------------------------------------------------------------

def test_broken_json_without_a_key_gets_401_not_422(keyed):
    for path in ("/v1/chat/completions", "/v1/consult", "/v1/consult/stream"):
        r = httpx.post(f"{keyed.url}{path}", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 401, (path, r.text)
        assert "missing API key" in r.json()["error"]["message"]
        wrong = httpx.post(f"{keyed.url}{path}", content=b"{not json",
                           headers={"Content-Type": "application/json", "Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "incorrect API key" in wrong.json()["error"]["message"]
    with_key = httpx.post(f"{keyed.url}/v1/chat/completions", content=b"{not json",
                          headers={"Content-Type": "application/json", **auth()})
    assert with_key.status_code == 422 and "JSON" in with_key.json()["error"]["message"]


@pytest.mark.parametrize(("content_type", "body"), [
    ("application/x-www-form-urlencoded", b"text=%E8%83%83%E7%97%9B"),
    ("text/plain; charset=utf-8", "胃痛".encode()),
    ("multipart/form-data; boundary=x", b"--x\r\n\r\n--x--"),
])
def test_a_body_that_is_not_json_is_told_the_content_type_expected(keyed, content_type, body):
    r = httpx.post(f"{keyed.url}/v1/consult", content=body, headers={"Content-Type": content_type, **auth()})
    assert r.status_code == 415, r.text
    message = r.json()["error"]["message"]
    assert "Content-Type: application/json" in message and content_type.split(";")[0] in message


# ---- offline docs, frames, the template -----------------------------------------------------------------

def test_docs_are_served_offline_and_the_openapi_declares_bearer(open_server):
    page = httpx.get(f"{open_server.url}/docs")
    assert page.status_code == 200
    # Nothing from another host: every src/href is a path on this server.
    for url in re.findall(r"""(?:src|href)=["']([^"']+)""", page.text):
        assert url.startswith("/"), url
    assert "cdn" not in page.text.lower()
    for asset in re.findall(r"""(?:src|href)=["'](/static/[^"']+)""", page.text):
        assert httpx.get(f"{open_server.url}{asset}").status_code == 200
    spec = httpx.get(f"{open_server.url}/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert any(s["type"] == "http" and s["scheme"].lower() == "bearer" for s in schemes.values())
    assert spec["paths"]["/v1/chat/completions"]["post"]["security"]
    assert "/health" in spec["paths"] and "security" not in spec["paths"]["/health"]["get"]
    assert httpx.get(f"{open_server.url}/redoc").status_code == 404


def test_frames_are_refused_everywhere(keyed):
    for path, headers in (("/", {}), ("/docs", {}), ("/health", {}), ("/v1/models", auth()), ("/v1/models", {}),
                          ("/static/app.js", {}), ("/nowhere", {})):
        r = httpx.get(f"{keyed.url}{path}", headers=headers)
        assert r.headers["x-frame-options"] == "DENY", path
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
        assert r.headers["x-content-type-options"] == "nosniff"


def test_the_raw_template_is_never_served(open_server):
    r = httpx.get(f"{open_server.url}/static/index.html")
    assert r.status_code in (301, 302, 307, 308) and r.headers["location"] == "/"
    followed = httpx.get(f"{open_server.url}/static/index.html", follow_redirects=True)
    assert followed.status_code == 200 and "{{" not in followed.text and "not medical advice" in followed.text


# ---- context length -------------------------------------------------------------------------------------

def test_a_prompt_longer_than_the_context_gets_400_with_the_numbers(open_server, tiny_backend):
    limit = tiny_backend.context_length
    long_text = "胃脘冷痛，喜温喜按，" * 1200
    messages = [{"role": "user", "content": long_text}]
    tokens = tiny_backend.count_prompt_tokens([{"role": "system", "content": "x"}, *messages])
    assert tokens > limit  # the case really is longer than the model's context
    r = httpx.post(f"{open_server.url}/v1/chat/completions", json={"model": "shicheng", "messages": messages},
                   timeout=30)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded"
    numbers = [int(n) for n in re.findall(r"\d+", error["message"])]
    assert limit in numbers and any(n > limit for n in numbers)
    r = httpx.post(f"{open_server.url}/v1/consult", json={"text": long_text[:19_000]}, timeout=30)
    assert r.status_code == 400 and str(limit) in r.json()["error"]["message"]


def test_max_tokens_past_the_context_is_refused_and_the_default_is_shortened(open_server, tiny_backend):
    limit = tiny_backend.context_length
    n = 100
    while True:  # a case that fits the context alone, but not with the default 1024 new tokens
        user = {"role": "user", "content": "胃脘冷痛，喜温喜按，" * n}
        prompt = tiny_backend.count_prompt_tokens([{"role": "system", "content": system_prompt(None)}, user])
        if prompt > limit - 400:
            break
        n += 10
    assert prompt + 1024 > limit > prompt
    asked = httpx.post(f"{open_server.url}/v1/chat/completions", timeout=60,
                       json={"model": "shicheng", "messages": [user], "max_tokens": limit})
    assert asked.status_code == 400 and "ask for at most" in asked.json()["error"]["message"]
    default = httpx.post(f"{open_server.url}/v1/chat/completions", timeout=120,
                         json={"model": "shicheng", "messages": [user], "temperature": 0})
    assert default.status_code == 200, default.text
    usage = default.json()["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] <= limit


# ---- abandoned requests -----------------------------------------------------------------------------------

def _queue(server) -> dict:
    return httpx.get(f"{server.url}/health", timeout=5).json()["queue"]


def _until(predicate, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/consult"])
def test_a_non_streamed_request_whose_client_hangs_up_is_cancelled(live_server, path):
    """A running generation stops, and a request waiting in line gives its place back, when their clients
    close the connection; the upstream never sees the one that was waiting."""
    body = ({"model": "shicheng", "messages": [USER]} if path.endswith("completions")
            else {"text": "胃脘冷痛三年，舌淡脉沉。"})
    with SlowStreamUpstream(chunks=200, delay=0.05) as upstream:  # 10 s if nobody stops it
        server = live_server(OpenAIBackend(upstream.url, "slow", timeout_s=30), max_queue=2)
        running = post_and_hang_up_later(server.port, path, body)
        assert upstream.started.wait(5)
        waiting = post_and_hang_up_later(server.port, path, body)
        assert _until(lambda: _queue(server)["waiting"] == 1)
        started = time.monotonic()
        waiting.close()
        assert _until(lambda: _queue(server)["waiting"] == 0, 2), _queue(server)
        running.close()
        assert upstream.ended.wait(3) and upstream.aborted.is_set()
        assert _until(lambda: _queue(server)["running"] == 0, 2), _queue(server)
        assert time.monotonic() - started < 4  # far sooner than the 10 s the answer would take
        assert upstream.sent[0] < upstream.chunks and upstream.calls == 1
        # The server still answers afterwards.
        upstream.chunks = 2
        r = httpx.post(f"{server.url}{path}", json=body, timeout=30)
        assert r.status_code == 200, r.text


# ---- public addresses and missing packages -------------------------------------------------------------

def test_a_public_address_without_a_key_is_refused_unless_insecure(tiny_model_dir, monkeypatch):
    with pytest.raises(ServeError, match=r"--host 0\.0\.0\.0 .*--api-key-env.*--insecure"):
        build_app(str(tiny_model_dir), host="0.0.0.0")
    assert build_app(str(tiny_model_dir), host="0.0.0.0", insecure=True) is not None
    monkeypatch.setenv("SHICHENG_TEST_KEY", "k")
    assert build_app(str(tiny_model_dir), host="0.0.0.0", api_key_env="SHICHENG_TEST_KEY") is not None
    result = CliRunner().invoke(shicheng_app, ["serve", "--model", str(tiny_model_dir), "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "--insecure" in result.output


def test_serving_a_local_model_without_torch_says_which_extra(tiny_model_dir, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "torch", None)  # as if torch were not installed
    expected = "serving a local model needs torch and transformers: pip install 'shicheng[local]'"
    with pytest.raises(ServeError) as err:
        build_app(str(tiny_model_dir))
    assert str(err.value) == expected
    result = CliRunner().invoke(shicheng_app, ["serve", "--model", str(tiny_model_dir)])
    assert result.exit_code == 2 and result.output.strip() == expected
    consult = CliRunner().invoke(shicheng_app, ["consult", "--model", str(tiny_model_dir), "--text", "胃痛"])
    assert consult.exit_code == 2 and expected in consult.output and "Traceback" not in consult.output
