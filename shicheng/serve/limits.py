"""What keeps the server standing under load and out of the patients' business.

`GenerationQueue`: generation is slow and a model holds one request at a time, so requests queue here,
running on a worker thread pool (the event loop keeps answering /health and rejecting overflow
meanwhile). At most `concurrency` run and `max_waiting` wait; the next one is refused at once with
`QueueFull`, which the app turns into 429 + Retry-After. A slot is given back only when its worker
thread has finished, so a client that hangs up mid-stream cannot let two generations share one model.

`unless_disconnected` runs a non-streamed request the way a stream runs: when its client hangs up, the
work is cancelled (a ticket still in line gives its place back; a running stream stops at its next
token), so an abandoned request neither holds a place nor keeps the model busy.

`BodySizeLimit`: a pure ASGI middleware that refuses bodies over the size limit with 413 before any
parsing. (The request log is shicheng.serve.logs, the error bodies shicheng.serve.errors.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from shicheng.serve.errors import error_body

T = TypeVar("T")
_END = object()


class QueueFull(Exception):
    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class GenerationQueue:
    """Admission control plus a worker pool; all bookkeeping happens on the event loop thread."""

    def __init__(self, concurrency: int = 1, max_waiting: int = 8):
        if concurrency < 1 or max_waiting < 0:
            raise ValueError(f"concurrency must be ≥ 1 and max_waiting ≥ 0 (got {concurrency}, {max_waiting})")
        self.concurrency = concurrency
        self.max_waiting = max_waiting
        self.admitted = 0  # running + waiting
        self.running = 0
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="shicheng-generate")
        self._semaphore: asyncio.Semaphore | None = None
        self._mean_seconds = 5.0  # running mean of one generation, for Retry-After

    @property
    def waiting(self) -> int:
        return self.admitted - self.running

    def stats(self) -> dict[str, int]:
        return {"running": self.running, "waiting": self.waiting, "concurrency": self.concurrency,
                "max_waiting": self.max_waiting}

    def admit(self) -> Ticket:
        """Take a place in line or raise QueueFull; the caller must run or `abandon()` the ticket."""
        limit = self.concurrency + self.max_waiting
        if self.admitted >= limit:
            retry = max(1, min(120, math.ceil(self._mean_seconds * (self.waiting + 1) / self.concurrency)))
            raise QueueFull(f"server busy: {self.running} generating and {self.waiting} waiting (limit "
                            f"{self.concurrency} + {self.max_waiting} queued); retry after {retry} s", retry)
        self.admitted += 1
        return Ticket(self)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _acquire(self) -> None:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.concurrency)
        await self._semaphore.acquire()
        self.running += 1

    def _release(self, acquired: bool, seconds: float | None) -> None:
        self.admitted -= 1
        if acquired:
            self.running -= 1
            self._semaphore.release()
        if seconds is not None:
            self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * seconds


class Ticket:
    """One admitted request: run it once (as a call or a stream), or abandon it."""

    def __init__(self, queue: GenerationQueue):
        self._queue = queue
        self._done = False
        self._acquired = False
        self.cancelled = threading.Event()  # set when the client went away; the worker stops reading

    def abandon(self) -> None:
        """Give the place back if the ticket never reached a worker (idempotent)."""
        if not self._done and not self._acquired:
            self._done = True
            self._queue._release(False, None)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Wait for a worker, run `fn` there and return its result (exceptions propagate)."""
        await self._start()
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        future = loop.run_in_executor(self._queue._executor, lambda: fn(*args, **kwargs))
        future.add_done_callback(lambda _f: self._finish(time.perf_counter() - started))
        return await asyncio.shield(future)

    async def stream(self, make_iter: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
        """Run `make_iter()` on a worker and yield its items here as they come.

        The worker stops reading when the consumer goes away (`cancelled`); the slot is freed when the
        worker returns, whichever side ends first.
        """
        await self._start()
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()
        started = time.perf_counter()

        def work() -> None:
            it = None
            try:
                it = make_iter()
                for item in it:
                    if self.cancelled.is_set():
                        break
                    loop.call_soon_threadsafe(items.put_nowait, item)
            except BaseException as e:
                loop.call_soon_threadsafe(items.put_nowait, _Failure(e))
            finally:
                if it is not None and hasattr(it, "close"):
                    it.close()  # a local generation stops now rather than at max_new_tokens
                loop.call_soon_threadsafe(items.put_nowait, _END)

        future = loop.run_in_executor(self._queue._executor, work)
        future.add_done_callback(lambda _f: self._finish(time.perf_counter() - started))
        try:
            while (item := await items.get()) is not _END:
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            self.cancelled.set()

    async def _start(self) -> None:
        if self._done or self._acquired:
            raise RuntimeError("a ticket runs once")
        try:
            await self._queue._acquire()
        except BaseException:
            self.abandon()  # cancelled while waiting in line
            raise
        self._acquired = True

    def _finish(self, seconds: float) -> None:
        if not self._done:
            self._done = True
            self._queue._release(True, seconds)


class ClientGone(Exception):
    """The client hung up before its answer was ready; the work was cancelled and its place given back."""


async def _until_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(work: Awaitable[T], receive) -> T:
    """Await `work` while watching the connection: if the client goes first, cancel `work` (a ticket waiting
    in line gives its place back; a running one stops its generation) and raise ClientGone."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnect(receive))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        watcher.cancel()
        raise
    if task in done:
        watcher.cancel()
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise ClientGone()


async def collect(ticket: Ticket, make_iter: Callable[[], Iterator[T]]) -> list[T]:
    """Every item of a ticket's stream: how a non-streamed request runs, so that it can be cancelled."""
    return [item async for item in ticket.stream(make_iter)]


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class BodySizeLimit:
    """ASGI middleware: a request body over `max_body_bytes` gets 413 before the app reads any of it."""

    def __init__(self, app, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            receive = await self._buffered(scope, receive, send)
            if receive is None:
                return
        await self.app(scope, receive, send)

    async def _buffered(self, scope, receive, send):
        """Read the whole body (it is small or refused) and hand the app a receive that replays it."""
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(send, int(declared))
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return _replay([message], receive)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                await self._too_large(send, size)
                return None
            if not message.get("more_body"):
                break
        return _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}], receive)

    async def _too_large(self, send, size: int) -> None:
        body = json.dumps(error_body(f"request body of {size} bytes exceeds the limit of {self.max_body_bytes} "
                                     "bytes; shorten the case text", code="request_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[dict], receive):
    pending = list(messages)

    async def replay():
        return pending.pop(0) if pending else await receive()

    return replay
