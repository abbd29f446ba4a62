"""A loopback OpenAI-protocol server for judge tests: it sees whole request bodies and counts concurrency.

Built on `OpenAIServer` (tests/helpers/openai_server.py), unchanged: the base records each body, then
calls the reply callable with the messages, both in the request's own handler thread. This subclass keeps
the body in a thread-local between the two, so its reply callable receives `(messages, body)` and can
answer according to `response_format`. It also counts requests in flight and keeps the maximum, and can
refuse `response_format` with a 400 the way servers without structured output do.

    with JudgeServer(lambda messages, body: verdict_for(body)) as server:
        judge = OpenAIJudge(server.url, "judge-test")

`fill_schema(schema, …)` builds a reply valid under a verdict schema, so a test's reply function can
answer any request without knowing which rubric items it scores.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from tests.helpers.openai_server import HTTPError, OpenAIServer

BodyReply = Callable[[list[dict[str, Any]], dict[str, Any]], str]


class JudgeServer(OpenAIServer):
    def __init__(self, reply: BodyReply, model: str = "judge-test", reject_response_format: bool = False,
                 hold_s: float = 0.0):
        self.body_reply = reply
        self.reject_response_format = reject_response_format
        self.hold_s = hold_s  # every reply waits this long, so that concurrent requests overlap
        self.in_flight = 0
        self.max_in_flight = 0
        self.rejected = 0  # requests answered 400 for their response_format
        self._local = threading.local()
        self._count_lock = threading.Lock()
        super().__init__(self._dispatch, model=model)

    def _record(self, body: dict[str, Any]) -> None:
        super()._record(body)
        self._local.body = body

    def _dispatch(self, messages: list[dict[str, Any]]) -> str:
        body = self._local.body
        with self._count_lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.reject_response_format and body.get("response_format"):
                with self._count_lock:
                    self.rejected += 1
                raise HTTPError(400, "response_format is not supported by this server")
            if self.hold_s:
                time.sleep(self.hold_s)
            return self.body_reply(messages, body)
        finally:
            with self._count_lock:
                self.in_flight -= 1


def schema_of(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format") or {}
    return (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None


def fill_schema(schema: dict[str, Any], share: float = 0.5, overrides: dict[str, Any] | None = None,
                path: str = "") -> Any:
    """A value valid under `schema`: numbers at `share` of their maximum (rounded to 0.1), integers at
    their minimum, arrays empty, strings short. `overrides` maps dotted paths (`scores.syndrome.accuracy`,
    `herb_counts`) to values used as they are, valid or not (tests of schema violations need that)."""
    overrides = overrides or {}
    if path in overrides:
        return overrides[path]
    kind = schema.get("type")
    if kind == "object":
        return {k: fill_schema(v, share, overrides, f"{path}.{k}" if path else k)
                for k, v in schema["properties"].items()}
    if kind == "number":
        return round(schema["maximum"] * share, 1)
    if kind == "integer":
        return schema.get("minimum", 0)
    if kind == "array":
        return []
    if kind == "string":
        return "评分理由"
    raise ValueError(f"fill_schema: unsupported schema node {schema}")


def verdict_reply(schema: dict[str, Any], share: float = 0.5, **overrides: Any) -> str:
    """JSON text of `fill_schema`; keyword names use __ for dots (scores__syndrome__accuracy=7)."""
    return json.dumps(fill_schema(schema, share, {k.replace("__", "."): v for k, v in overrides.items()}),
                      ensure_ascii=False)
