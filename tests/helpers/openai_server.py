"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests of the teacher, the judge and the agent.

The replies come from a Python callable given by the test: it receives the request's `messages` and
returns the reply text, raises `HTTPError(status, message)` for a chosen status, raises anything else
for an HTTP 500, or sleeps to make the client time out. The server counts and keeps every request.

The stdlib ThreadingHTTPServer rather than uvicorn: each request runs in its own daemon thread, so a
reply that sleeps past the client's timeout blocks nothing else and cannot hold up shutdown.

    with OpenAIServer(lambda messages: "hello") as server:
        client = OpenAI(base_url=server.url, api_key="test")

or, as a pytest fixture factory (register with `pytest_plugins = ("tests.helpers.openai_server",)`
in tests/conftest.py, or wrap `OpenAIServerFactory` in a local fixture):

    def test_x(openai_server):
        server = openai_server(lambda messages: "hello")
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

Reply = Callable[[list[dict[str, Any]]], str]


class HTTPError(Exception):
    """Raise from a reply callable to answer with this HTTP status and an OpenAI-style error body."""

    def __init__(self, status: int, message: str = "error"):
        super().__init__(message)
        self.status = status
        self.message = message


class OpenAIServer:
    """POST /v1/chat/completions and GET /v1/models on a random free port of 127.0.0.1."""

    def __init__(self, reply: Reply, model: str = "teacher-test"):
        self.reply = reply
        self.model = model
        self.requests: list[dict[str, Any]] = []  # request bodies, in arrival order
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.requests)

    @property
    def url(self) -> str:
        """Base URL for the openai client (ends in /v1)."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        return self._httpd.base_url

    def start(self) -> OpenAIServer:
        handler = type("Handler", (_Handler,), {"owner": self})
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="openai-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    @property
    def base_url(self) -> str:
        """Base URL for the openai client (ends in /v1)."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def handle_error(self, request, client_address) -> None:
        # A client that timed out has closed its socket; the late write failing is expected, not news.
        pass


class _Handler(BaseHTTPRequestHandler):
    owner: OpenAIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            self._json(404, _error("not found"))
            return
        self._json(200, {"object": "list", "data": [{"id": self.owner.model, "object": "model", "created": 0,
                                                     "owned_by": "test"}]})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._json(404, _error("not found"))
            return
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._json(400, _error("body is not JSON"))
            return
        self.owner._record(body)
        try:
            text = self.owner.reply(body.get("messages") or [])
        except HTTPError as e:
            self._json(e.status, _error(e.message))
            return
        except Exception as e:
            self._json(500, _error(f"{type(e).__name__}: {e}"))
            return
        model = body.get("model") or self.owner.model
        if body.get("stream"):
            self._stream(model, text)
        else:
            self._json(200, _completion(model, text, body.get("messages") or []))

    def _json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, model: str, text: str) -> None:
        # Server-sent events without a length: the connection closes to end the stream.
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        created = int(time.time())
        pieces = [text[i:i + 16] for i in range(0, len(text), 16)] or [""]
        for i, piece in enumerate(pieces):
            delta = {"content": piece, **({"role": "assistant"} if i == 0 else {})}
            chunk = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())
        last = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        self.wfile.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())
        self.wfile.flush()


def _error(message: str) -> dict:
    return {"error": {"message": message, "type": "test_error", "code": None}}


def _completion(model: str, text: str, messages: list[dict]) -> dict:
    # Character counts stand in for tokens: enough for clients that read `usage`.
    prompt_chars = sum(len(str(m.get("content") or "")) for m in messages)
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_chars, "completion_tokens": len(text),
                  "total_tokens": prompt_chars + len(text)},
    }


class OpenAIServerFactory:
    """Starts servers on demand and stops them all on exit (what the `openai_server` fixture yields)."""

    def __init__(self) -> None:
        self.servers: list[OpenAIServer] = []

    def __call__(self, reply: Reply, model: str = "teacher-test") -> OpenAIServer:
        server = OpenAIServer(reply, model=model).start()
        self.servers.append(server)
        return server

    def __enter__(self) -> OpenAIServerFactory:
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def openai_server() -> Iterator[OpenAIServerFactory]:
    with OpenAIServerFactory() as factory:
        yield factory
