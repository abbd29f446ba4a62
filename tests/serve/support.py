"""Helpers shared by the server tests: a uvicorn server in a thread, the planted answer, the test key."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

API_KEY = "test-key-123"

PLANTED_ANSWER = """<think>
脾气虚弱，运化失司，痰湿内生，结于颈前。
</think>
<output>
## 病因病机
脾虚失运，痰湿凝结。

## 辨证
脾虚痰凝证。

## 治则治法
健脾化痰，软坚散结。

## 处方
海藻10g 甘草6g 党参15g 白术12g 茯苓15g 浙贝母10g

## 方解
党参、白术、茯苓健脾，海藻、浙贝母化痰软坚，甘草调和。

## 随症加减
痰多者加陈皮10g。

## 医嘱
清淡饮食，调畅情志。
</output>"""


class LiveServer:
    """uvicorn serving `app` on 127.0.0.1:<free port> until stopped."""

    def __init__(self, app):
        self.app = app
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", backlog=256)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]},
                                        name="uvicorn-test", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


class SlowStreamUpstream:
    """An OpenAI-compatible endpoint that streams its answer slowly (one chunk per `delay` seconds), and
    records how many requests reached it and whether the client went away before the end of a stream."""

    def __init__(self, chunks: int = 100, delay: float = 0.05, piece: str = "脾"):
        import json as _json
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        owner = self
        self.chunks, self.delay, self.piece = chunks, delay, piece
        self.calls = 0
        self.sent: list[int] = []  # chunks written per request, when it ended
        self.started = threading.Event()
        self.ended = threading.Event()
        self.aborted = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.calls += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                owner.started.set()
                sent = 0
                try:
                    for _ in range(owner.chunks):
                        chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "slow",
                                 "choices": [{"index": 0, "delta": {"content": owner.piece}, "finish_reason": None}]}
                        self.wfile.write(f"data: {_json.dumps(chunk, ensure_ascii=False)}\n\n".encode())
                        self.wfile.flush()
                        sent += 1
                        time.sleep(owner.delay)
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except OSError:  # the client (our server) hung up: the generation was cancelled
                    owner.aborted.set()
                finally:
                    owner.sent.append(sent)
                    owner.ended.set()

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                pass

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> SlowStreamUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def post_and_hang_up_later(port: int, path: str, body: dict):
    """A real client on a raw socket: sends a JSON POST and returns the socket, for the test to close."""
    import json as _json

    data = _json.dumps(body, ensure_ascii=False).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock
