"""Start a server: load a model directory or a GGUF file (or point at an OpenAI-compatible endpoint) and serve it.

`build_app` does everything but listen, so the configuration checks are testable without a port;
`run_server` (what `shicheng serve` calls) builds the app and runs it under uvicorn.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import uvicorn

from shicheng.agent import BackendUnavailable, is_url, load_masters, make_backend
from shicheng.agent.backends import is_gguf
from shicheng.domain import Master, load_master_files
from shicheng.serve.app import create_app
from shicheng.serve.logs import log, log_to_stderr


class ServeError(ValueError):
    """A configuration the server refuses to start with; the message says what to change."""


def load_masters_from(path: str | Path) -> dict[str, Master]:
    """Masters from a model directory or masters.json file (the agent's reader), or a folder of master YAMLs."""
    path = Path(path)
    if not path.exists():
        raise ServeError(f"{path}: masters file or folder not found")
    if path.is_dir() and not (path / "masters.json").is_file():
        masters = load_master_files(path)
        if not masters:
            raise ServeError(f"{path}: no masters.json and no master YAML files")
        return masters
    return load_masters(path)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_app(model: str, *, api_key_env: str | None = None, backend: str = "auto", max_queue: int = 8,
              log_patient_text: bool = False, masters: str | Path | None = None, backend_model: str | None = None,
              backend_key_env: str = "OPENAI_API_KEY", concurrency: int = 1, device: str = "auto",
              max_body_bytes: int = 64_000, host: str = "127.0.0.1", insecure: bool = False,
              chat_safety_notice: bool = True):
    """The configured app for `model` (a model directory, a .gguf file or an http(s) endpoint URL).

    A non-loopback `host` needs an API key, or `insecure` said out loud: `serve --help` promises that the
    server stays on loopback unless a key is set."""
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env, "").strip()
        if not api_key:
            raise ServeError(f"--api-key-env {api_key_env}: the environment variable is not set or empty; "
                             "export the key in it, or leave the option out to serve without a key")
    elif not _is_loopback(host):
        if not insecure:
            raise ServeError(f"--host {host} is not a loopback address and no API key is set: anyone who can "
                             "reach it could use the model. Set --api-key-env VAR (clients send 'Authorization: "
                             "Bearer <key>'), or add --insecure to serve it without a key anyway")
        log.warning("serving on %s without an API key (--insecure): anyone who can reach this address can use "
                    "the model", host)
    if max_queue < 0 or concurrency < 1:
        raise ServeError(f"--max-queue must be ≥ 0 and --concurrency ≥ 1 (got {max_queue}, {concurrency})")
    try:
        if masters is not None:
            known = load_masters_from(masters)
        elif is_url(model):
            known = {}
            log.warning("%s: an endpoint has no masters.json; pass --masters to serve the masters", model)
        else:
            # a model directory's masters.json; a .gguf file's beside copy or metadata (agent.load_masters)
            known = load_masters_from(model) if Path(model).is_dir() or (is_gguf(model) and Path(model).is_file()) \
                else {}
    except ValueError as e:  # a bad masters.json or master YAML: the message names the file
        raise ServeError(str(e)) from e
    try:
        engine = make_backend(model, backend=backend, model_name=backend_model, api_key_env=backend_key_env,
                              device=device)
    except (FileNotFoundError, ValueError, BackendUnavailable) as e:
        raise ServeError(str(e)) from e
    return create_app(engine, known, api_key=api_key, max_queue=max_queue, max_body_bytes=max_body_bytes,
                      log_patient_text=log_patient_text, concurrency=concurrency,
                      chat_safety_notice=chat_safety_notice)


def run_server(model: str, *, host: str = "127.0.0.1", port: int = 8000, api_key_env: str | None = None,
               backend: str = "auto", max_queue: int = 8, log_patient_text: bool = False,
               masters: str | Path | None = None, backend_model: str | None = None,
               backend_key_env: str = "OPENAI_API_KEY", concurrency: int = 1, device: str = "auto",
               insecure: bool = False, chat_safety_notice: bool = True) -> None:
    """Build the app and run it under uvicorn until interrupted; raises ServeError for a bad configuration."""
    log_to_stderr()
    app = build_app(model=model, api_key_env=api_key_env, backend=backend, max_queue=max_queue,
                    log_patient_text=log_patient_text, masters=masters, backend_model=backend_model,
                    backend_key_env=backend_key_env, concurrency=concurrency, device=device, host=host,
                    insecure=insecure, chat_safety_notice=chat_safety_notice)
    if log_patient_text:
        log.warning("--log-patient-text: request and answer texts go to the log; keep it out of production")
    # Our own request log (shicheng.serve) replaces uvicorn's access log: same facts plus token counts.
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="info")


__all__ = ["ServeError", "build_app", "load_masters_from", "run_server"]
