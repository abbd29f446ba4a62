"""A loopback OpenAI-compatible server that answers in batches, the way vLLM's engine does.

Handler threads (one per connection, ThreadingHTTPServer) only queue their request and wait. One engine thread
takes every request waiting when it is free (after `gather_s` for stragglers, at most `max_batch`), "runs" the
batch for `step_s` (a decoding step costs about the same for one sequence or several), answers each request
with `reply(messages)`, and records the batch size. So concurrent clients get batches larger than one, and a
reply sent to the wrong request shows up as a wrong answer.

    with BatchingServer(lambda messages: messages[-1]["content"][::-1]) as server:
        ...  # server.url, server.batch_sizes, server.max_in_flight, server.requests
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.helpers.openai_server import _completion, _error, _Server

Reply = Callable[[list[dict[str, Any]]], str]


class _Pending:
    def __init__(self, body: dict[str, Any]):
        self.body = body
        self.done = threading.Event()
        self.text: str | None = None
        self.failure: str | None = None


class BatchingServer:
    """POST /v1/chat/completions on a random free port of 127.0.0.1, answered in batches."""

    def __init__(self, reply: Reply, model: str = "batched", step_s: float = 0.05, gather_s: float = 0.01,
                 max_batch: int = 64):
        self.reply, self.model = reply, model
        self.step_s, self.gather_s, self.max_batch = step_s, gather_s, max_batch
        self.requests: list[dict[str, Any]] = []  # bodies, in arrival order
        self.batch_sizes: list[int] = []  # one entry per engine step
        self.max_in_flight = 0  # most requests received and not yet answered, at any moment
        self._waiting: list[_Pending] = []
        self._in_flight = 0
        self._cond = threading.Condition()
        self._stop = False
        self._httpd: _Server | None = None
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return self._httpd.base_url

    def start(self) -> BatchingServer:
        handler = type("Handler", (_Handler,), {"owner": self})
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._threads = [threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                          daemon=True, name="batching-http"),
                         threading.Thread(target=self._engine, daemon=True, name="batching-engine")]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> BatchingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def submit(self, body: dict[str, Any]) -> _Pending:
        item = _Pending(body)
        with self._cond:
            self.requests.append(body)
            self._waiting.append(item)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            self._cond.notify_all()
        return item

    def _engine(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
            time.sleep(self.gather_s)  # requests sent together arrive a little apart
            with self._cond:
                batch, self._waiting = self._waiting[:self.max_batch], self._waiting[self.max_batch:]
                self.batch_sizes.append(len(batch))
            time.sleep(self.step_s)  # one forward pass for the whole batch
            for item in batch:
                try:
                    item.text = self.reply(item.body.get("messages") or [])
                except Exception as e:
                    item.failure = f"{type(e).__name__}: {e}"
            with self._cond:
                self._in_flight -= len(batch)
            for item in batch:
                item.done.set()


class _Handler(BaseHTTPRequestHandler):
    owner: BatchingServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._json(404, _error("not found"))
            return
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._json(400, _error("body is not JSON"))
            return
        if body.get("stream"):
            self._json(400, _error("this test server does not stream"))
            return
        item = self.owner.submit(body)
        item.done.wait()
        if item.failure is not None:
            self._json(500, _error(item.failure))
            return
        self._json(200, _completion(body.get("model") or self.owner.model, item.text or "",
                                    body.get("messages") or []))

    def _json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
