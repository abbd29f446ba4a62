"""API errors in the OpenAI shape, and the handlers that turn exceptions into them without echoing input."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from openai import BadRequestError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shicheng.serve.logs import log


def error_body(message: str, type_: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict:
    """The OpenAI error object, so that OpenAI clients show our message."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = headers or {}


def generation_failed(e: Exception) -> ApiError:
    """A failed generation: 400 when the endpoint refused the request as too long or malformed (its message
    says why), else 502. The log gets the exception type only: a message could quote the prompt."""
    log.error("generation failed: %s", type(e).__name__)
    if isinstance(e, BadRequestError):
        return ApiError(400, f"the model endpoint refused the request: {getattr(e, 'message', e)}",
                        code="upstream_bad_request")
    return ApiError(502, f"generation failed: {type(e).__name__}: {e}", type_="backend_error",
                    code="generation_failed")


def add_error_handlers(app: FastAPI) -> None:
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


__all__ = ["ApiError", "add_error_handlers", "error_body", "generation_failed"]
