"""The HTTP server: an OpenAI-compatible chat API, a structured consultation API and the clinician page.

One app serves one backend (a local model or an OpenAI-compatible endpoint) and the masters that model
was trained on. Each master is a model id (`shicheng-<master id>`), so any OpenAI client picks a master
by picking a model; `shicheng` alone answers without one. Chat answers are asked with our master system
prompt and safety-checked (shicheng.serve.chat); consultations are the agent's (shicheng.agent).

Requests pass, outermost first: the request log (logs.RequestLog), the body-size limit
(limits.BodySizeLimit), then the API key and body-type check and the security headers
(security.ApiGuard), before FastAPI parses anything. A
non-streamed request whose client hangs up is cancelled like a stream: its place in the queue is given
back and a running generation stops. A prompt that does not fit the model's context gets 400.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Security
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from shicheng.agent import Backend, ConsultError
from shicheng.agent.backends import PromptTooLong, check_prompt_fits
from shicheng.agent.consult import consult_messages, consult_stream, visit_position
from shicheng.domain import Master, validation_message
from shicheng.prompts import system_prompt
from shicheng.serve.cases import build_case
from shicheng.serve.chat import ChatTurn, chat_messages
from shicheng.serve.errors import ApiError, add_error_handlers, generation_failed
from shicheng.serve.limits import (
    BodySizeLimit,
    ClientGone,
    GenerationQueue,
    QueueFull,
    Ticket,
    collect,
    unless_disconnected,
)
from shicheng.serve.logs import RequestLog
from shicheng.serve.page import render_index
from shicheng.serve.schemas import ChatRequest, ConsultRequest
from shicheng.serve.security import ApiGuard

log = logging.getLogger("shicheng.serve")
STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MAX_TOKENS = 1024
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Documents the scheme in the OpenAPI description; ApiGuard enforces it before the body is read.
BEARER = HTTPBearer(auto_error=False, description="the key named by `shicheng serve --api-key-env`")
CLIENT_CLOSED = 499  # the client closed the connection before the answer (nginx's status)


def create_app(backend: Backend, masters: dict[str, Master], api_key: str | None = None, max_queue: int = 8,
               max_body_bytes: int = 64_000, log_patient_text: bool = False, model_name: str = "shicheng",
               concurrency: int = 1, chat_safety_notice: bool = True) -> FastAPI:
    """The app for one backend. `concurrency` > 1 only makes sense for an endpoint that batches (vLLM).
    `chat_safety_notice` appends the safety notice to chat answers that hold a prescription."""
    queue = GenerationQueue(concurrency=concurrency, max_waiting=max_queue)
    models = Models(model_name, masters)
    index_html = render_index(model_name)
    docs_html = (STATIC_DIR / "docs.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        queue.shutdown()

    # Swagger UI and ReDoc load from a CDN: off, and /docs is our own offline page over /openapi.json.
    app = FastAPI(title="shicheng", summary="师承 clinical agents: OpenAI-compatible API and clinician page",
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.queue = queue
    app.add_middleware(ApiGuard, api_key=api_key)
    app.add_middleware(BodySizeLimit, max_body_bytes=max_body_bytes)
    app.add_middleware(RequestLog)
    add_error_handlers(app)
    auth = [Security(BEARER)]

    def note_patient_text(request: Request, what: str, payload) -> None:
        if log_patient_text:
            log.info("%s %s: %s", request.url.path, what, json.dumps(payload, ensure_ascii=False, default=str))

    def note_tokens(request: Request, prompt_tokens: int | None, completion_tokens: int | None) -> None:
        request.state.prompt_tokens = prompt_tokens
        request.state.completion_tokens = completion_tokens

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(index_html)

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(docs_html)

    @app.get("/static/index.html", include_in_schema=False)
    async def no_raw_template() -> RedirectResponse:
        return RedirectResponse("/", status_code=308)  # the file is a template; the page is at /

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "backend": backend.name,
                "masters": sorted(masters), "queue": queue.stats()}

    @app.get("/v1/models", dependencies=auth)
    async def list_models() -> dict:
        return {"object": "list", "data": models.listing()}

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(body: ChatRequest, request: Request):
        """OpenAI chat completions; the answer's safety check is in the extra field `shicheng`."""
        master = models.resolve(body.model)
        messages, system_mode = chat_messages(body, master, models.our_prompts)
        asked = body.max_tokens or body.max_completion_tokens
        max_new = _fit(backend, messages, asked, DEFAULT_MAX_TOKENS, "messages")
        notice = chat_safety_notice if body.safety_notice is None else body.safety_notice
        turn = ChatTurn(body, messages, system_mode, max_new, notice, f"chatcmpl-{uuid.uuid4().hex}",
                        int(time.time()))
        note_patient_text(request, "messages", messages)
        ticket = _admit(queue)

        def on_result(result, text: str) -> None:
            if result is not None:
                note_tokens(request, result.prompt_tokens, result.completion_tokens)
            note_patient_text(request, "answer", text)

        if body.stream:
            return _SlotStreamingResponse(ticket, turn.stream(ticket, backend, on_result))
        holder: dict = {}

        def make_stream():
            holder["stream"] = backend.stream(messages, **turn.gen)
            return holder["stream"]

        try:
            parts = await unless_disconnected(collect(ticket, make_stream), request.receive)
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED)
        except Exception as e:
            raise generation_failed(e) from e
        result = holder["stream"].result
        text = result.text if result is not None else "".join(parts)
        on_result(result, text)
        return turn.completion(text, result)

    @app.post("/v1/consult", dependencies=auth)
    async def consult_endpoint(body: ConsultRequest, request: Request):
        """A consultation; `safety` says which herbs were not dose-checked and which names not recognised."""
        master = models.resolve_master(body.master)
        events = _consult_events(body, master, request)
        ticket = _admit(queue)
        try:
            items = await unless_disconnected(collect(ticket, lambda: events), request.receive)
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED)
        except Exception as e:
            raise generation_failed(e) from e
        result = items[-1]["consultation"]
        note_tokens(request, result.get("prompt_tokens"), result.get("completion_tokens"))
        note_patient_text(request, "answer", result.get("raw_text"))
        return result

    @app.post("/v1/consult/stream", dependencies=auth)
    async def consult_stream_endpoint(body: ConsultRequest, request: Request):
        """Server-sent events: {"type": "delta", "text"} …, then {"type": "result", "consultation"}."""
        master = models.resolve_master(body.master)
        generator = _consult_events(body, master, request)
        ticket = _admit(queue)

        async def events() -> AsyncIterator[str]:
            try:
                async for event in ticket.stream(lambda: generator):
                    if event.get("type") == "result":
                        result = event["consultation"]
                        note_tokens(request, result.get("prompt_tokens"), result.get("completion_tokens"))
                        note_patient_text(request, "answer", result.get("raw_text"))
                    yield _sse(event)
            except Exception as e:
                log.error("consultation stream failed: %s", type(e).__name__)
                yield _sse({"type": "error", "message": f"generation failed: {type(e).__name__}: {e}"})
            yield "data: [DONE]\n\n"

        return _SlotStreamingResponse(ticket, events())

    def _consult_events(body: ConsultRequest, master: Master | None, request: Request):
        """The consultation's event generator; the case, visit and prompt length are checked now (4xx), the
        generation runs only when it is iterated (on the worker)."""
        case, visit_index, facts = _checked(build_case, body)
        note_patient_text(request, "case", case.model_dump(mode="json", exclude_none=True))
        visit_index = _checked(visit_position, case, visit_index, body.task)
        messages = consult_messages(case, master, body.task, visit_index)
        asked = body.max_tokens if "max_tokens" in body.model_fields_set else None
        max_new = _fit(backend, messages, asked, body.max_tokens, "text")
        return _checked(consult_stream, backend, case, master, body.task, visit_index=visit_index, facts=facts,
                        max_new_tokens=max_new, temperature=body.temperature, top_p=body.top_p)

    return app


class Models:
    """Model ids <-> masters: `<name>` has no master, `<name>-<master id>` has that master."""

    def __init__(self, name: str, masters: dict[str, Master]):
        self.name, self.masters = name, masters
        self.created = int(time.time())
        # Our own system prompts: a client that sends one of them (an agent in front of us) is kept as is.
        self.our_prompts = {system_prompt(None).strip(), *(system_prompt(m).strip() for m in masters.values())}

    def ids(self) -> list[str]:
        return [self.name, *(f"{self.name}-{mid}" for mid in sorted(self.masters))]

    def listing(self) -> list[dict]:
        rows = [{"id": self.name, "object": "model", "created": self.created, "owned_by": "shicheng",
                 "master": None}]
        for mid in sorted(self.masters):
            m = self.masters[mid]
            rows.append({"id": f"{self.name}-{mid}", "object": "model", "created": self.created,
                         "owned_by": "shicheng", "master": {"id": m.id, "name": m.name, "school": m.school,
                                                             "fictional": m.fictional}})
        return rows

    def resolve(self, model: str) -> Master | None:
        if model == self.name:
            return None
        prefix = f"{self.name}-"
        mid = model[len(prefix):] if model.startswith(prefix) else model
        if mid in self.masters:
            return self.masters[mid]
        raise ApiError(404, f"unknown model '{model}'; known models: {', '.join(self.ids())}",
                       code="model_not_found", param="model")

    def resolve_master(self, master: str | None) -> Master | None:
        if not master:
            return None
        try:
            return self.resolve(master)
        except ApiError:
            known = ", ".join(sorted(self.masters)) or "(none: this model was trained without masters)"
            raise ApiError(404, f"unknown master '{master}'; known masters: {known}", code="master_not_found",
                           param="master") from None


def _fit(backend: Backend, messages: list[dict], asked: int | None, default: int, param: str) -> int:
    """max_new_tokens for a prompt: what the client asked for if it fits (else 400 with the prompt's length
    and the limit); without a request, the default, shortened to what is left of the context."""
    try:
        tokens = check_prompt_fits(backend, messages, asked)
    except PromptTooLong as e:
        raise ApiError(400, str(e), code="context_length_exceeded", param=param) from e
    if asked is not None:
        return asked
    limit = backend.context_length
    return default if tokens is None or not limit else min(default, limit - tokens)


def _checked(fn, *args, **kwargs):
    """Call fn; a case the agent cannot answer is the client's mistake: 422 with the agent's message."""
    try:
        return fn(*args, **kwargs)
    except ValidationError as e:
        raise ApiError(422, f"invalid case: {validation_message(e, whole='case', where='{}')}", code="invalid_case") from e
    except PromptTooLong as e:
        raise ApiError(400, str(e), code="context_length_exceeded") from e
    except ConsultError as e:
        raise ApiError(422, str(e), code="invalid_case") from e


def _admit(queue: GenerationQueue) -> Ticket:
    try:
        return queue.admit()
    except QueueFull as e:
        raise ApiError(429, str(e), type_="server_busy", code="queue_full",
                       headers={"Retry-After": str(e.retry_after)}) from e


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


class _SlotStreamingResponse(StreamingResponse):
    """A stream that gives its queue place back even when the client leaves before the body starts."""

    def __init__(self, ticket: Ticket, content):
        super().__init__(content, media_type="text/event-stream", headers=SSE_HEADERS)
        self.ticket = ticket

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.ticket.abandon()
