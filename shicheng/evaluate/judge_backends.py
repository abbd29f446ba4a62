"""Judge backends: one base class, an OpenAI-compatible endpoint, and (judge_local.py) a local model.

`JudgeBackend` declares everything a judge must do, so callers never probe with hasattr:
- `identity()`: what besides the prompt decides a verdict (model, decoding settings); part of the cache key;
- `complete(messages, schema)`: one reply text with its token counts, or `JudgeCallError`;
- `judge(request)` (shared): parse, validate with pydantic, and on invalid JSON or a schema violation ask
  again with the error appended, at most `max_attempts` replies;
- `judge_many(requests, concurrency)` (shared: a bounded thread pool; a local model overrides it to batch);
- `close()`.

Retries are split by cause. Transport failures (timeouts, connection errors, 408/409/429/5xx) are retried
by tenacity with exponential backoff inside `complete`; a reply that is not a valid verdict is retried by
`judge` with the validation error in the prompt. A request the endpoint refuses outright (401/403/404)
would fail every call, so it raises `JudgeConfigError` and stops the run instead of filling the cache
with failures.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Literal

import openai
import tenacity
from pydantic import BaseModel, ValidationError

from shicheng.domain import validation_message
from shicheng.evaluate.rubric import Rubric


class JudgeCallError(RuntimeError):
    """A call that failed after its transport retries; `calls` counts the HTTP requests (or generations) spent."""

    def __init__(self, message: str, calls: int = 1):
        super().__init__(message)
        self.calls = calls


class JudgeConfigError(RuntimeError):
    """The endpoint refuses every request (bad key, unknown model or URL): stop instead of recording failures."""


@dataclass
class RawReply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 1  # requests sent for this reply, transport retries included


@dataclass(frozen=True)
class JudgeRequest:
    """One judgement to make: the prompt, the schema to send or enforce, the model that validates a reply."""

    messages: list[dict[str, str]]
    schema: dict[str, Any]
    validator: type[BaseModel]
    rubric: Rubric  # gives the retry message, in the rubric's language


@dataclass
class JudgeOutcome:
    status: Literal["ok", "invalid", "failed"]
    verdict: dict | None = None  # the validated reply (model_dump) when ok
    error: str | None = None  # why not ok: the last validation error, or the transport failure
    raw: str | None = None  # the last reply text
    attempts: int = 0  # replies asked for (validation retries included)
    calls: int = 0  # requests actually sent (transport retries included)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)  # one line per failed attempt


_THINK = re.compile(r"^.*<\s*/\s*think\s*>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def json_part(text: str) -> str:
    """The JSON object in a reply: after any reasoning (`</think>`), inside a ```json fence if there is one,
    from the first `{` to the last `}`. Plain prompting gets such wrappings; a schema-bound reply is bare."""
    text = _THINK.sub("", text or "").strip()
    fence = _FENCE.search(text)
    if fence:
        text = fence.group(1).strip()
    start, end = text.find("{"), text.rfind("}")
    return text[start:end + 1] if start != -1 and end > start else text


def parse_verdict(text: str, validator: type[BaseModel]) -> tuple[dict | None, str | None]:
    """(validated verdict, None) or (None, what is wrong, in words a judge can act on)."""
    body = json_part(text)
    try:
        # strict=False: a raw newline inside a string is a formatting slip, not a wrong verdict.
        data = json.loads(body, strict=False)
    except json.JSONDecodeError as e:
        return None, f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})"
    try:
        return validator.model_validate(data).model_dump(mode="json"), None
    except ValidationError as e:
        return None, "schema violation: " + validation_message(e, whole="(root)", limit=8, where="{}")


class JudgeBackend(ABC):
    """The base every judge backend derives from; see the module docstring for the contract."""

    name: str
    max_attempts: int = 3
    price_in_per_m: float | None = None  # price per 1M prompt tokens, any currency; None: no cost reported
    price_out_per_m: float | None = None

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """JSON-able settings that decide the verdict besides the prompt (kind, model, temperature …)."""

    @abstractmethod
    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> RawReply:
        """One reply to `messages`, constrained by `schema` where the backend can; JudgeCallError on failure."""

    def close(self) -> None:  # noqa: B027 - a hook: most backends hold nothing to release
        """Release clients or models."""

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        if self.price_in_per_m is None and self.price_out_per_m is None:
            return None
        return (prompt_tokens * (self.price_in_per_m or 0.0) + completion_tokens * (self.price_out_per_m or 0.0)) / 1e6

    def judge(self, request: JudgeRequest, attempts: int | None = None) -> JudgeOutcome:
        """Ask until the reply validates, at most `attempts` (default `max_attempts`) replies; a call failure
        (after its transport retries) ends the attempts."""
        out = JudgeOutcome(status="failed")
        messages = list(request.messages)
        started = time.perf_counter()
        for _ in range(self.max_attempts if attempts is None else attempts):
            out.attempts += 1
            try:
                reply = self.complete(messages, request.schema)
            except JudgeCallError as e:
                out.calls += e.calls
                out.status, out.error = "failed", str(e)
                out.errors.append(out.error)
                break
            out.calls += reply.calls
            out.prompt_tokens += reply.prompt_tokens
            out.completion_tokens += reply.completion_tokens
            out.raw = reply.text
            verdict, error = parse_verdict(reply.text, request.validator)
            if verdict is not None:
                out.status, out.verdict, out.error = "ok", verdict, None
                break
            out.status, out.error = "invalid", error
            out.errors.append(error)
            messages = [*messages, {"role": "assistant", "content": reply.text},
                        request.rubric.retry_message(error)]
        out.seconds = time.perf_counter() - started
        return out

    def judge_many(self, requests: Sequence[JudgeRequest], concurrency: int = 4
                   ) -> Iterator[tuple[int, JudgeOutcome]]:
        """Yield (index, outcome) as judgements finish, at most `concurrency` in flight.

        Work is submitted as slots free up rather than all at once, so a stopped caller leaves no backlog of
        queued calls behind it."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        pending: dict[Future, int] = {}
        todo = iter(range(len(requests)))
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"judge-{self.name}") as pool:
            try:
                for i in todo:
                    pending[pool.submit(self.judge, requests[i])] = i
                    if len(pending) >= concurrency:
                        break
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        i = pending.pop(fut)
                        nxt = next(todo, None)
                        if nxt is not None:
                            pending[pool.submit(self.judge, requests[nxt])] = nxt
                        yield i, fut.result()
            finally:
                for fut in pending:
                    fut.cancel()


def _transient(exc: BaseException) -> bool:
    """Transport trouble worth another try: no answer, or the server says try later / it broke."""
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


_FATAL = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)


class OpenAIJudge(JudgeBackend):
    """Any OpenAI-compatible chat endpoint (a frontier API, vLLM, llama.cpp …) as a judge.

    response_format: "auto" sends the verdict schema as `{"type": "json_schema"}` and, the first time the
    server answers 400 to it, drops it for the rest of the run and asks again in plain words (the prompt
    always describes the format); "json_schema" always sends it; "none" never does. Either way the reply is
    parsed and validated. The openai client's own retries are off: tenacity does them, so that the
    backoff is ours to set (tests use milliseconds) and only transport errors are retried.
    """

    def __init__(self, url: str, model: str, *, name: str | None = None, api_key: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 120.0, transport_retries: int = 3,
                 backoff_s: float = 1.0, backoff_max_s: float = 30.0, temperature: float = 0.0,
                 max_tokens: int | None = 2048, response_format: Literal["auto", "json_schema", "none"] = "auto",
                 strict_schema: bool = True, max_attempts: int = 3, price_in_per_m: float | None = None,
                 price_out_per_m: float | None = None):
        if response_format not in ("auto", "json_schema", "none"):
            raise ValueError(f"response_format must be auto, json_schema or none, got {response_format!r}")
        if max_attempts < 1 or transport_retries < 0:
            raise ValueError("max_attempts must be at least 1 and transport_retries at least 0")
        self.url, self.model = url, model
        self.name = name or model
        self.temperature, self.max_tokens = temperature, max_tokens
        self.response_format, self.strict_schema = response_format, strict_schema
        self.max_attempts = max_attempts
        self.transport_retries, self.backoff_s, self.backoff_max_s = transport_retries, backoff_s, backoff_max_s
        self.price_in_per_m, self.price_out_per_m = price_in_per_m, price_out_per_m
        # Local servers (vLLM, llama.cpp) take any key; the client insists on one, so a placeholder stands in.
        key = api_key or os.environ.get(api_key_env) or "not-needed"
        self.client = openai.OpenAI(base_url=url, api_key=key, timeout=timeout_s, max_retries=0)
        self._schema_ok = response_format != "none"
        self._lock = threading.Lock()
        self.schema_rejected = False  # set when "auto" fell back to plain prompting

    def identity(self) -> dict[str, Any]:
        # The URL is left out: the same model behind another address gives the same verdicts.
        return {"kind": "openai", "model": self.model, "temperature": self.temperature,
                "max_tokens": self.max_tokens}

    def _create(self, messages: list[dict[str, str]], response_format: dict | None):
        extra: dict[str, Any] = {}
        if self.max_tokens:
            extra["max_tokens"] = self.max_tokens
        if response_format is not None:
            extra["response_format"] = response_format
        return self.client.chat.completions.create(model=self.model, messages=messages,
                                                   temperature=self.temperature, **extra)

    def _send(self, messages: list[dict[str, str]], response_format: dict | None, counter: list[int]):
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.transport_retries + 1),
            wait=tenacity.wait_exponential(multiplier=self.backoff_s, max=self.backoff_max_s),
            retry=tenacity.retry_if_exception(_transient), reraise=True)
        for attempt in retrying:
            with attempt:
                counter[0] += 1
                return self._create(messages, response_format)
        raise AssertionError("unreachable: tenacity either returns or reraises")

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> RawReply:
        counter = [0]
        try:
            if not self._schema_ok:
                completion = self._send(messages, None, counter)
            else:
                fmt = {"type": "json_schema",
                       "json_schema": {"name": "verdict", "schema": schema, "strict": self.strict_schema}}
                try:
                    completion = self._send(messages, fmt, counter)
                except openai.BadRequestError:
                    if self.response_format != "auto":
                        raise
                    # Blame response_format only when the same request without it goes through.
                    completion = self._send(messages, None, counter)
                    with self._lock:
                        self._schema_ok, self.schema_rejected = False, True
        except _FATAL as e:
            raise JudgeConfigError(f"judge {self.name} at {self.url} refused the request: "
                                   f"{type(e).__name__}: {str(e)[:300]}") from e
        except openai.OpenAIError as e:
            raise JudgeCallError(f"{type(e).__name__}: {str(e)[:300]}", calls=counter[0]) from e
        choices = completion.choices or []
        text = (choices[0].message.content or "") if choices else ""
        usage = completion.usage
        return RawReply(text=text, prompt_tokens=(usage.prompt_tokens or 0) if usage else 0,
                        completion_tokens=(usage.completion_tokens or 0) if usage else 0, calls=counter[0])

    def close(self) -> None:
        self.client.close()


__all__ = ["JudgeBackend", "JudgeCallError", "JudgeConfigError", "JudgeOutcome", "JudgeRequest", "OpenAIJudge",
           "RawReply", "json_part", "parse_verdict"]
