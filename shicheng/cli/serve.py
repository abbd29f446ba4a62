"""`shicheng serve`: the OpenAI-compatible API, /v1/consult and the clinician page for one model."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()


def serve_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Trained model directory (output of `shicheng train`), "
                              "a .gguf file (output of `shicheng export`, answered by llama.cpp on the CPU), "
                              "or the URL of an OpenAI-compatible endpoint such as vLLM, llama-server or Ollama "
                              "(with --backend-model)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on. Any address but loopback "
                             "needs --api-key-env (or --insecure)."),
    insecure: bool = typer.Option(False, "--insecure", help="Allow a non-loopback --host without an API key "
                                  "(anyone who reaches the address can use the model)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    api_key_env: str = typer.Option(None, "--api-key-env", help="Environment variable holding the API key that "
                                    "clients must send as 'Authorization: Bearer <key>'."),
    backend: str = typer.Option("auto", "--backend", help="auto (directory -> transformers, .gguf -> llamacpp, "
                                "URL -> openai), transformers, llamacpp or openai."),
    masters: Path = typer.Option(None, "--masters", exists=True, help="masters.json or a folder of master YAML "
                                 "files (default: masters.json in the model directory; for a .gguf, "
                                 "FILE.masters.json beside it or the copy inside it)."),
    backend_model: str = typer.Option(None, "--backend-model", help="Model name at the endpoint (openai backend)."),
    backend_key_env: str = typer.Option("OPENAI_API_KEY", "--backend-key-env",
                                        help="Environment variable with the endpoint's key (openai backend)."),
    max_queue: int = typer.Option(8, "--max-queue", min=0, help="Requests that may wait for the model; "
                                  "more are refused with 429 and Retry-After."),
    concurrency: int = typer.Option(1, "--concurrency", min=1, help="Generations at once; raise it only for a "
                                    "batching endpoint such as vLLM."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (transformers backend)."),
    log_patient_text: bool = typer.Option(False, "--log-patient-text", help="Also log case and answer texts "
                                          "(default: method, path, status, latency and token counts only)."),
    chat_safety_notice: bool = typer.Option(True, "--chat-safety-notice/--no-chat-safety-notice",
                                            help="Append a short safety notice to chat answers that hold a "
                                                 "prescription (a request can turn it off: safety_notice=false)."),
) -> None:
    """Serve a model: OpenAI-compatible /v1/chat/completions (one model id per master), /v1/consult, and the
    clinician web page at /."""
    # Imported here: the server needs the `serve` extra (fastapi, uvicorn), which the other commands do not.
    from shicheng.serve.launch import ServeError, run_server

    try:
        run_server(model=model, host=host, port=port, api_key_env=api_key_env, backend=backend, max_queue=max_queue,
                   log_patient_text=log_patient_text, masters=masters, backend_model=backend_model,
                   backend_key_env=backend_key_env, concurrency=concurrency, device=device,
                   insecure=insecure, chat_safety_notice=chat_safety_notice)
    except ServeError as e:
        console.print(str(e), style="red", markup=False, soft_wrap=True)  # "[local]" is not rich markup
        raise typer.Exit(2) from e
