"""What every response and every API request passes before the app sees it.

`ApiGuard` is a pure ASGI middleware, outermost, so that it runs before FastAPI reads a body:
- the API key is checked first: a request without the key gets 401 whatever its body (broken JSON
  included), and an unauthenticated client learns nothing about the validation rules;
- a POST to the API with a body that is not JSON (a form, text/plain) gets 415 naming the
  Content-Type expected, instead of a validation error about a missing dictionary;
- every response carries headers that keep the clinician page out of other sites' frames
  (X-Frame-Options, CSP frame-ancestors), stop content sniffing and referrer leaks.
"""

from __future__ import annotations

import json
import secrets

from shicheng.serve.errors import error_body

API_PREFIX = "/v1/"
# 'self' only: the page, its script and style come from this server, so it works offline.
CSP = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
JSON_TYPES = ("application/json",)


class ApiGuard:
    """ASGI middleware: security headers on every response, API key and JSON body type on /v1/ requests."""

    def __init__(self, app, api_key: str | None):
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        if scope["path"].startswith(API_PREFIX):
            headers = {k.lower(): v for k, v in scope.get("headers") or []}
            refusal = self._authorize(headers.get(b"authorization", b"").decode("latin-1"))
            if refusal is None and scope["method"] in ("POST", "PUT", "PATCH"):
                refusal = self._content_type(headers.get(b"content-type", b"").decode("latin-1"))
            if refusal is not None:
                status, body, extra = refusal
                await _respond(send_with_headers, status, body, extra)
                return
        await self.app(scope, receive, send_with_headers)

    def _authorize(self, header: str):
        if self.api_key is None:
            return None
        scheme, _, given = header.partition(" ")
        challenge = [(b"www-authenticate", b"Bearer")]
        if not header:
            return 401, error_body("missing API key: send the header 'Authorization: Bearer <key>'",
                                   code="missing_api_key"), challenge
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), self.api_key.encode()):
            return 401, error_body("incorrect API key", code="invalid_api_key"), challenge
        return None

    @staticmethod
    def _content_type(header: str):
        # No Content-Type at all is read as JSON (FastAPI does the same); a declared other type is refused.
        media = header.split(";", 1)[0].strip().lower()
        if not media or media in JSON_TYPES or media.endswith("+json"):
            return None
        return 415, error_body(f"the request body must be JSON, sent with the header 'Content-Type: "
                               f"application/json' (got Content-Type '{media}')", code="unsupported_media_type",
                               param="Content-Type"), []


async def _respond(send, status: int, body: dict, headers: list[tuple[bytes, bytes]]) -> None:
    data = json.dumps(body, ensure_ascii=False).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


__all__ = ["CSP", "SECURITY_HEADERS", "ApiGuard"]
