"""Serving: an OpenAI-compatible API, a structured consultation API and a clinician web page (FastAPI).

`create_app(backend, masters, api_key=...)` builds the app for one backend; `run_server(...)` (in
shicheng.serve.launch) loads a model directory or endpoint and runs it under uvicorn.
"""

from shicheng.serve.app import create_app
from shicheng.serve.limits import GenerationQueue, QueueFull

__all__ = ["GenerationQueue", "QueueFull", "create_app"]
