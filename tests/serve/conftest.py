"""The server under test runs for real: uvicorn on a free loopback port, in a thread of the test process.

Two backends: the tiny random-weight model (tests/conftest.py) for protocol and load tests, and an
OpenAIBackend pointed at the loopback fake OpenAI server that always answers a planted consultation
whose prescription holds 甘草 + 海藻 (十八反), for the tests that check what the answer contains. The
protocol tests of test_api.py run on the tiny model twice: as a model directory (transformers) and as its
GGUF export (llama.cpp; skipped, with the reason, without the deploy extra).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shicheng.agent import OpenAIBackend, TransformersBackend, load_masters
from shicheng.demo import load_demo_masters
from shicheng.serve import create_app
from tests.helpers.openai_server import OpenAIServer
from tests.serve.support import PLANTED_ANSWER, LiveServer


@pytest.fixture(scope="session")
def tiny_backend(tiny_model_dir) -> TransformersBackend:
    return TransformersBackend(tiny_model_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_masters(tiny_model_dir):
    return load_masters(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_gguf_backend(tiny_gguf):
    from shicheng.agent.backends.llamacpp import LlamaCppBackend

    return LlamaCppBackend(tiny_gguf, n_threads=1)


@pytest.fixture(scope="module", params=["model-dir", "gguf"])
def served_tiny(request):
    """(backend, masters, model path) of the tiny model as a model directory and as its GGUF file."""
    if request.param == "gguf":
        path = request.getfixturevalue("tiny_gguf")
        return request.getfixturevalue("tiny_gguf_backend"), load_masters(path), path
    return request.getfixturevalue("tiny_backend"), request.getfixturevalue("tiny_masters"), \
        request.getfixturevalue("tiny_model_dir")


@pytest.fixture(scope="session")
def planted_upstream() -> Iterator[OpenAIServer]:
    """The fake OpenAI endpoint standing in for a vLLM server whose model wrote the planted answer."""
    with OpenAIServer(lambda messages: PLANTED_ANSWER, model="shicheng-upstream") as server:
        yield server


@pytest.fixture(scope="session")
def planted_backend(planted_upstream) -> OpenAIBackend:
    return OpenAIBackend(planted_upstream.url, model="shicheng-upstream", timeout_s=30)


@pytest.fixture(scope="session")
def live_server():
    """Factory: start a server for create_app(**kwargs); all are stopped at the end of the session."""
    servers: list[LiveServer] = []

    def start(backend, masters=None, **kwargs) -> LiveServer:
        app = create_app(backend, load_demo_masters() if masters is None else masters, **kwargs)
        server = LiveServer(app).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
