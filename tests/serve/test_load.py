"""Overload on loopback: the bounded queue refuses what it cannot hold (429) and the server stays up."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from shicheng.agent import OpenAIBackend
from tests.helpers.openai_server import OpenAIServer

# Tiny-model generations on one thread: a second OpenMP thread spin-waits on this small shared machine.
pytestmark = pytest.mark.usefixtures("torch_one_thread")

CHAT = {"messages": [{"role": "user", "content": "胃脘冷痛，舌淡脉沉，请辨证处方。"}], "max_tokens": 24}


async def _burst(url: str, n: int, models: tuple[str, ...] = ("shicheng",), stream_every: int = 0
                 ) -> list[httpx.Response]:
    """n chat requests at once, cycling through `models`; every `stream_every`-th one streams."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def one(i: int) -> httpx.Response:
            body = {**CHAT, "model": models[i % len(models)], "stream": bool(stream_every and i % stream_every == 0)}
            response = await client.post("/v1/chat/completions", json=body)
            await response.aread()
            return response

        return await asyncio.gather(*(one(i) for i in range(n)))


def _wait_idle(url: str) -> dict:
    deadline = time.monotonic() + 30
    while True:
        queue = httpx.get(f"{url}/health", timeout=10).json()["queue"]
        if (queue["running"] == 0 and queue["waiting"] == 0) or time.monotonic() > deadline:
            return queue
        time.sleep(0.05)


def test_64_concurrent_chats_on_the_tiny_model(live_server, tiny_backend, tiny_masters):
    server = live_server(tiny_backend, tiny_masters, max_queue=8)
    models = ("shicheng", *(f"shicheng-{mid}" for mid in tiny_masters))
    responses = asyncio.run(_burst(server.url, 64, models, stream_every=4))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) >= 9  # at least the one running and the eight queued
    for r in responses:
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
            assert "server busy" in r.json()["error"]["message"]
        elif r.headers["content-type"].startswith("text/event-stream"):
            assert r.text.rstrip().endswith("data: [DONE]")
        else:
            assert r.json()["object"] == "chat.completion"
    # Still alive and answering afterwards, with the queue drained.
    assert _wait_idle(server.url) == {"running": 0, "waiting": 0, "concurrency": 1, "max_waiting": 8}
    after = httpx.post(f"{server.url}/v1/chat/completions", json={**CHAT, "model": "shicheng"}, timeout=60)
    assert after.status_code == 200 and after.json()["usage"]["completion_tokens"] >= 1


def test_the_queue_bound_is_exact_and_abandoned_streams_free_their_place(live_server):
    """A slow upstream holds every request 0.8 s: with 1 running + 2 waiting, 3 of 8 pass and 5 get 429."""

    def slow(messages):
        time.sleep(0.8)
        return "<output>\n## 辨证\n脾虚证。\n</output>"

    with OpenAIServer(slow, model="slow") as upstream:
        server = live_server(OpenAIBackend(upstream.url, model="slow", timeout_s=30), max_queue=2)
        statuses = sorted(r.status_code for r in asyncio.run(_burst(server.url, 8)))
        assert statuses == [200] * 3 + [429] * 5
        assert _wait_idle(server.url)["running"] == 0

        # Clients that walk away from their streams: the places come back and the server answers again.
        for _ in range(3):
            with httpx.stream("POST", f"{server.url}/v1/chat/completions", timeout=30,
                              json={**CHAT, "model": "shicheng", "stream": True}) as r:
                assert r.status_code == 200
                next(r.iter_lines())
        queue = _wait_idle(server.url)
        assert queue["running"] == 0 and queue["waiting"] == 0
        ok = httpx.post(f"{server.url}/v1/chat/completions", json={**CHAT, "model": "shicheng"}, timeout=30)
        assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"].startswith("<output>")
