"""The server's log: one logger, one metadata-only line per request, and where the lines go.

`RequestLog` is a pure ASGI middleware, outermost (pure so that it sees streamed responses to their
end). It writes method, path, status, latency and token counts, never the body: patient text reaches
the log only through the app's own `log_patient_text` switch. The handlers put the token counts in
`scope["state"]` (request.state), which the middleware creates.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("shicheng.serve")
TOKEN_KEYS = ("prompt_tokens", "completion_tokens")


class RequestLog:
    """ASGI middleware: one log line per HTTP request, written when its response has ended."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        scope.setdefault("state", {})
        status = {"code": 0}

        async def send_logged(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            state = scope["state"]
            tokens = "".join(f" {k}={state[k]}" for k in TOKEN_KEYS if k in state)
            log.info("%s %s %d %.3fs%s", scope["method"], scope["path"], status["code"],
                     time.perf_counter() - started, tokens)


def log_to_stderr() -> None:
    """Send the server's log to stderr at INFO (once: a second call adds no second handler)."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)


__all__ = ["RequestLog", "log", "log_to_stderr"]
