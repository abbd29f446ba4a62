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
