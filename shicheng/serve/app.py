"""The HTTP server: an OpenAI-compatible chat API, a structured consultation API and the clinician page.

One app serves one backend (a local model or an OpenAI-compatible endpoint) and the masters that model
was trained on. Each master is a model id (`shicheng-<master id>`), so any OpenAI client picks a master
by picking a model; `shicheng` alone answers without one. A client that sends only a user turn is asked
with our master system prompt (shicheng.prompts), the way the model was trained.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shicheng.agent import Backend, ConsultError
from shicheng.agent.consult import visit_position
from shicheng.domain import Case, Master
from shicheng.prompts import system_prompt
from shicheng.serve.cases import build_case
from shicheng.serve.limits import GenerationQueue, QueueFull, RequestGuard, Ticket, error_body
from shicheng.serve.page import render_index
from shicheng.serve.schemas import ChatRequest, ConsultRequest

log = logging.getLogger("shicheng.serve")
STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MAX_TOKENS = 1024
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = headers or {}


def create_app(backend: Backend, masters: dict[str, Master], api_key: str | None = None, max_queue: int = 8,
               max_body_bytes: int = 64_000, log_patient_text: bool = False, model_name: str = "shicheng",
               concurrency: int = 1) -> FastAPI:
    """The app for one backend. `concurrency` > 1 only makes sense for an endpoint that batches (vLLM)."""
    queue = GenerationQueue(concurrency=concurrency, max_waiting=max_queue)
    models = Models(model_name, masters)
    index_html = render_index(model_name)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        queue.shutdown()

    app = FastAPI(title="shicheng", summary="师承 clinical agents: OpenAI-compatible API and clinician page",
                  lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.queue = queue
    app.add_middleware(RequestGuard, max_body_bytes=max_body_bytes)
    _add_error_handlers(app)

    async def authorize(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if not header:
            raise ApiError(401, "missing API key: send the header 'Authorization: Bearer <key>'",
                           code="missing_api_key", headers={"WWW-Authenticate": "Bearer"})
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), api_key.encode()):
            raise ApiError(401, "incorrect API key", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    def note_patient_text(request: Request, what: str, payload) -> None:
        if log_patient_text:
            log.info("%s %s: %s", request.url.path, what, json.dumps(payload, ensure_ascii=False, default=str))

    def note_tokens(request: Request, prompt_tokens: int | None, completion_tokens: int | None) -> None:
        request.state.prompt_tokens = prompt_tokens
        request.state.completion_tokens = completion_tokens

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(index_html, headers={
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "backend": getattr(backend, "name", type(backend).__name__),
                "masters": sorted(masters), "queue": queue.stats()}

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def list_models() -> dict:
        return {"object": "list", "data": models.listing()}

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)])
    async def chat_completions(body: ChatRequest, request: Request):
        master = models.resolve(body.model)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in body.messages]
        if not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": system_prompt(master)})
        gen = {"max_new_tokens": body.max_tokens or body.max_completion_tokens or DEFAULT_MAX_TOKENS,
               "temperature": body.temperature, "top_p": body.top_p}
        note_patient_text(request, "messages", messages)
        ticket = _admit(queue)
        reply_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            usage = bool(body.stream_options and body.stream_options.include_usage)
            events = _chat_stream(ticket, backend, messages, gen, body.model, reply_id, created, usage,
                                  request, note_tokens, note_patient_text)
            return _SlotStreamingResponse(ticket, events)
        try:
            result = await ticket.call(backend.generate, messages, **gen)
        except Exception as e:
            raise _generation_failed(e) from e
        note_tokens(request, result.prompt_tokens, result.completion_tokens)
        note_patient_text(request, "answer", result.text)
        finish = "length" if result.completion_tokens >= gen["max_new_tokens"] else "stop"
        return {"id": reply_id, "object": "chat.completion", "created": created, "model": body.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                             "finish_reason": finish}],
                "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                          "total_tokens": result.prompt_tokens + result.completion_tokens}}

    @app.post("/v1/consult", dependencies=[Depends(authorize)])
    async def consult_endpoint(body: ConsultRequest, request: Request) -> dict:
        from shicheng.agent import consult

        master = models.resolve_master(body.master)
        case, visit_index = _case_for(body)
        note_patient_text(request, "case", case.model_dump(mode="json", exclude_none=True))
        ticket = _admit(queue)
        try:
            result = await ticket.call(consult, backend, case, master, body.task, visit_index=visit_index,
                                       max_new_tokens=body.max_tokens, temperature=body.temperature,
                                       top_p=body.top_p)
        except Exception as e:
            raise _generation_failed(e) from e
        note_tokens(request, result.prompt_tokens, result.completion_tokens)
        note_patient_text(request, "answer", result.raw_text)
        return result.model_dump(mode="json")

    @app.post("/v1/consult/stream", dependencies=[Depends(authorize)])
    async def consult_stream_endpoint(body: ConsultRequest, request: Request):
        """Server-sent events: {"type": "delta", "text"} …, then {"type": "result", "consultation"}."""
        from shicheng.agent import consult_stream

        master = models.resolve_master(body.master)
        case, visit_index = _case_for(body)
        note_patient_text(request, "case", case.model_dump(mode="json", exclude_none=True))
        # consult_stream checks the case now and generates only when iterated (on the worker).
        generator = _checked(consult_stream, backend, case, master, body.task, visit_index=visit_index,
                             max_new_tokens=body.max_tokens, temperature=body.temperature, top_p=body.top_p)
        ticket = _admit(queue)

        def make_events():
            return generator

        async def events() -> AsyncIterator[str]:
            try:
                async for event in ticket.stream(make_events):
                    if event.get("type") == "result":
                        result = event["consultation"]
                        result = result if isinstance(result, dict) else result.model_dump(mode="json")
                        event = {"type": "result", "consultation": result}
                        note_tokens(request, result.get("prompt_tokens"), result.get("completion_tokens"))
                        note_patient_text(request, "answer", result.get("raw_text"))
                    yield _sse(event)
            except Exception as e:
                log.error("consultation stream failed: %s", type(e).__name__)
                yield _sse({"type": "error", "message": f"generation failed: {type(e).__name__}: {e}"})
            yield "data: [DONE]\n\n"

        return _SlotStreamingResponse(ticket, events())

    return app


class Models:
    """Model ids <-> masters: `<name>` has no master, `<name>-<master id>` has that master."""

    def __init__(self, name: str, masters: dict[str, Master]):
        self.name, self.masters = name, masters
        self.created = int(time.time())

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


def _case_for(body: ConsultRequest) -> tuple[Case, int]:
    case, visit_index = _checked(build_case, body)
    _checked(visit_position, case, visit_index, body.task)
    return case, visit_index


def _checked(fn, *args, **kwargs):
    """Call fn; a case the agent cannot answer is the client's mistake: 422 with the agent's message."""
    try:
        return fn(*args, **kwargs)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'case'}: {x['msg']}" for x in e.errors())
        raise ApiError(422, f"invalid case: {problems}", code="invalid_case") from e
    except ConsultError as e:
        raise ApiError(422, str(e), code="invalid_case") from e


def _admit(queue: GenerationQueue) -> Ticket:
    try:
        return queue.admit()
    except QueueFull as e:
        raise ApiError(429, str(e), type_="server_busy", code="queue_full",
                       headers={"Retry-After": str(e.retry_after)}) from e


def _generation_failed(e: Exception) -> ApiError:
    # The exception type only: a message could quote the prompt, and the log stays free of patient text.
    log.error("generation failed: %s", type(e).__name__)
    return ApiError(502, f"generation failed: {type(e).__name__}: {e}", type_="backend_error",
                    code="generation_failed")


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _chat_stream(ticket: Ticket, backend: Backend, messages: list[dict], gen: dict, model: str,
                       reply_id: str, created: int, include_usage: bool, request: Request, note_tokens,
                       note_patient_text) -> AsyncIterator[str]:
    """OpenAI `chat.completion.chunk` events: the role, the text deltas, the finish reason, [usage], [DONE]."""
    holder: dict = {}

    def make_stream():
        holder["stream"] = backend.stream(messages, **gen)
        return holder["stream"]

    def chunk(delta: dict, finish: str | None = None) -> str:
        return _sse({"id": reply_id, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    yield chunk({"role": "assistant", "content": ""})
    try:
        async for piece in ticket.stream(make_stream):
            yield chunk({"content": piece})
    except Exception as e:
        log.error("chat stream failed: %s", type(e).__name__)
        err = error_body(f"generation failed: {type(e).__name__}: {e}", "backend_error", "generation_failed")
        yield _sse(err)
        yield "data: [DONE]\n\n"
        return
    result = getattr(holder.get("stream"), "result", None)
    finish = "stop"
    if result is not None:
        note_tokens(request, result.prompt_tokens, result.completion_tokens)
        note_patient_text(request, "answer", result.text)
        finish = "length" if result.completion_tokens >= gen["max_new_tokens"] else "stop"
    yield chunk({}, finish)
    if include_usage and result is not None:
        yield _sse({"id": reply_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [], "usage": {"prompt_tokens": result.prompt_tokens,
                                             "completion_tokens": result.completion_tokens,
                                             "total_tokens": result.prompt_tokens + result.completion_tokens}})
    yield "data: [DONE]\n\n"


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


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(error_body(e.message, e.type, e.code, e.param), status_code=e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, e: RequestValidationError) -> JSONResponse:
        # Field and reason only; pydantic's `input` would echo the (patient) text back.
        problems, first = [], None
        for err in e.errors():
            if err["type"] == "json_invalid":
                position = err["loc"][1] if len(err["loc"]) > 1 else "?"
                problems.append(f"body is not valid JSON at character {position} "
                                f"({(err.get('ctx') or {}).get('error', 'decode error')})")
                continue
            loc = ".".join(str(p) for p in err["loc"] if p != "body") or "body"
            first = first or loc
            problems.append(f"{loc}: {err['msg']}")
        return JSONResponse(error_body("invalid request: " + "; ".join(problems), param=first,
                                       code="invalid_request"), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        message = str(e.detail)
        if e.status_code in (404, 405):
            message = f"{message}: {request.method} {request.url.path}"
        return JSONResponse(error_body(message, code=str(e.status_code)), status_code=e.status_code,
                            headers=getattr(e, "headers", None))
