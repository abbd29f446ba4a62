"""Generation backends: a local transformers model, or any OpenAI-compatible endpoint (vLLM to scale out).

Which one answers is a setting (`make_backend(model, backend=...)`), not a code change: the agent, the
server and the benchmark export speak to the `Backend` protocol only.

Streaming from transformers uses our own streamer rather than `TextIteratorStreamer`: it re-decodes the
tokens generated so far and emits the new suffix once it ends on a whole character, so the deltas always
concatenate to exactly the text `generate` returns (TextIteratorStreamer's word heuristics re-decode
windows and can split a multi-byte character differently from a full decode).
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from shicheng.domain import Master

_DONE = object()
LOCAL_EXTRA = "serving a local model needs torch and transformers: pip install 'shicheng[local]'"


class BackendUnavailable(RuntimeError):
    """A backend whose packages are not installed; the message says which extra to install."""


class PromptTooLong(ValueError):
    """A prompt (plus the tokens asked for) that does not fit the model's context."""

    def __init__(self, prompt_tokens: int, max_new_tokens: int | None, limit: int):
        self.prompt_tokens, self.max_new_tokens, self.limit = prompt_tokens, max_new_tokens, limit
        if prompt_tokens >= limit:
            message = (f"the prompt is {prompt_tokens} tokens, longer than the model's context of {limit} tokens; "
                       "shorten the case text")
        else:
            message = (f"the prompt is {prompt_tokens} tokens and {max_new_tokens} new tokens were asked for: "
                       f"{prompt_tokens + (max_new_tokens or 0)} exceed the model's context of {limit} tokens; "
                       f"ask for at most {limit - prompt_tokens} new tokens or shorten the case text")
        super().__init__(message)


def check_prompt_fits(backend, messages: list[dict], max_new_tokens: int | None) -> int | None:
    """Raise PromptTooLong when a backend that knows its context would run past it; returns the prompt's
    token count (None when the backend cannot tell: an endpoint checks for itself)."""
    limit = getattr(backend, "context_length", None)
    count = getattr(backend, "count_prompt_tokens", None)
    if not limit or count is None:
        return None
    tokens = count(messages)
    if tokens >= limit or (max_new_tokens is not None and tokens + max_new_tokens > limit):
        raise PromptTooLong(tokens, max_new_tokens, limit)
    return tokens


@dataclass
class GenerationResult:
    text: str
    prompt_tokens: int
    completion_tokens: int  # 0 when an endpoint reports no usage
    seconds: float
    first_token_s: float | None  # None when the backend cannot tell (a non-streaming HTTP reply)


class TextStream:
    """An iterator of text deltas; `result` holds the whole GenerationResult once the stream is exhausted."""

    def __init__(self, run: Callable[[TextStream], Iterator[str]]):
        self.result: GenerationResult | None = None
        self._it = run(self)

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        return next(self._it)

    def close(self) -> None:
        """Stop early: a local generation is told to stop and its lock released."""
        self._it.close()


@runtime_checkable
class Backend(Protocol):
    name: str

    def generate(self, messages: list[dict], *, max_new_tokens: int = 1024, temperature: float = 0.0,
                 top_p: float = 1.0) -> GenerationResult: ...

    def stream(self, messages: list[dict], *, max_new_tokens: int = 1024, temperature: float = 0.0,
               top_p: float = 1.0) -> Iterator[str]: ...


def _pick_device(device: str):
    import torch

    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _pick_dtype(dtype: str, device):
    import torch

    if dtype == "auto":
        # bf16 halves the bytes read per token on a GPU; on CPU float32 is the fast path.
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, {', '.join(table)}")
    return table[dtype]


class _Streamer:
    """A `generate` streamer (the BaseStreamer interface): times the first new token, keeps the new ids, and
    with `decode=True` queues text deltas that concatenate to the final decode."""

    def __init__(self, tokenizer, decode: bool, started: float):
        self.tokenizer, self.decode, self.started = tokenizer, decode, started
        self.ids: list[int] = []
        self.first_token_s: float | None = None
        self.emitted = ""
        self.queue: queue.Queue = queue.Queue()
        self._prompt_seen = False

    def text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def put(self, value) -> None:
        if not self._prompt_seen:  # generate() first hands over the prompt
            self._prompt_seen = True
            return
        if self.first_token_s is None:
            self.first_token_s = time.perf_counter() - self.started
        self.ids.extend(int(x) for x in value.reshape(-1).tolist())
        if self.decode:
            text = self.text()
            # A trailing U+FFFD is half a character: wait for the rest before emitting.
            if text.startswith(self.emitted) and not text.endswith("\ufffd") and len(text) > len(self.emitted):
                self.queue.put(text[len(self.emitted):])
                self.emitted = text

    def end(self) -> None:
        if self.decode:
            text = self.text()
            if text.startswith(self.emitted) and len(text) > len(self.emitted):
                self.queue.put(text[len(self.emitted):])
                self.emitted = text


class TransformersBackend:
    """A local Hugging Face model directory (the output of `shicheng train`), on CPU or GPU.

    One generation runs at a time per model (a lock): transformers' generate is not re-entrant on one
    model, and the server's queue in front of it bounds the waiting.
    """

    def __init__(self, model_dir: str | Path, device: str = "auto", dtype: str = "auto"):
        require_local_packages()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a model directory (no config.json)")
        dev = _pick_device(device)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=_pick_dtype(dtype, dev)).to(dev)
        self._setup(model, tokenizer, name=path.name)
        self.model_dir = path

    @classmethod
    def from_model(cls, model, tokenizer, name: str = "model") -> TransformersBackend:
        """Wrap an already loaded model and tokenizer (benchmarks with random weights, notebooks)."""
        self = cls.__new__(cls)
        self._setup(model, tokenizer, name=name)
        self.model_dir = None
        return self

    def _setup(self, model, tokenizer, name: str) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"{name}: the tokenizer has no chat template; configure_chat_tokens() sets ours")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"  # batched decoding needs the prompts right-aligned
        if self.tokenizer.pad_token_id is None:
            raise ValueError(f"{name}: the tokenizer has no pad token")
        self.name = name
        self.device = next(model.parameters()).device
        self._lock = threading.Lock()  # one generation at a time
        # Tokenizing has its own lock: a fast tokenizer's padding state is shared ("Already borrowed"), and a
        # prompt can be counted while another generation runs.
        self._tokenizer_lock = threading.Lock()
        config = getattr(model, "config", None)
        self.context_length: int | None = getattr(config, "max_position_embeddings", None)

    def encode(self, messages_list: list[list[dict]]):
        texts = [self.tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False)
                 for m in messages_list]
        with self._tokenizer_lock:
            return self.tokenizer(texts, add_special_tokens=False, padding=True,
                                  return_tensors="pt").to(self.device)

    def count_prompt_tokens(self, messages: list[dict]) -> int:
        """How many tokens `messages` take as a prompt (chat template and generation prompt included)."""
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        with self._tokenizer_lock:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _kwargs(self, max_new_tokens: int, temperature: float, top_p: float, min_new_tokens: int) -> dict:
        gen = self.model.generation_config
        kw: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": self.tokenizer.pad_token_id,
                              "eos_token_id": gen.eos_token_id if gen.eos_token_id is not None
                              else self.tokenizer.eos_token_id}
        if min_new_tokens:
            kw["min_new_tokens"] = min_new_tokens
        if temperature > 0:
            kw.update(do_sample=True, temperature=temperature, top_p=top_p)
        else:
            # Greedy; unset the sampling knobs a saved generation_config may carry so none is applied.
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kw

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        eos = self.tokenizer.eos_token_id if eos is None else eos
        return set(eos if isinstance(eos, list) else [eos])

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)

    def generate(self, messages: list[dict], *, max_new_tokens: int = 1024, temperature: float = 0.0,
                 top_p: float = 1.0, min_new_tokens: int = 0) -> GenerationResult:
        return self.generate_batch([messages], max_new_tokens=max_new_tokens, temperature=temperature,
                                   top_p=top_p, min_new_tokens=min_new_tokens)[0]

    def generate_batch(self, messages_list: list[list[dict]], *, max_new_tokens: int = 1024,
                       temperature: float = 0.0, top_p: float = 1.0, min_new_tokens: int = 0
                       ) -> list[GenerationResult]:
        """Answer several conversations in one left-padded batch; `seconds` is the batch's wall time."""
        import torch

        if not messages_list:
            return []
        eos = self._eos_ids()
        results = []
        # Tokenizing under the lock too: a fast tokenizer's padding state is shared, and concurrent calls
        # fail with "Already borrowed".
        with self._lock, torch.inference_mode():
            inputs = self.encode(messages_list)
            prompt_lens = inputs["attention_mask"].sum(dim=1).tolist()
            started = time.perf_counter()
            timer = _Streamer(self.tokenizer, decode=False, started=started) if len(messages_list) == 1 else None
            out = self.model.generate(**inputs, streamer=timer,
                                      **self._kwargs(max_new_tokens, temperature, top_p, min_new_tokens))
            self._synchronize()
            seconds = time.perf_counter() - started
            for row, prompt_len in zip(out[:, inputs["input_ids"].shape[1]:].tolist(), prompt_lens, strict=True):
                end = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
                text = self.tokenizer.decode(row[:end], skip_special_tokens=True, clean_up_tokenization_spaces=False)
                results.append(GenerationResult(text=text, prompt_tokens=int(prompt_len), completion_tokens=end,
                                                seconds=seconds,
                                                first_token_s=timer.first_token_s if timer else None))
        return results

    def stream(self, messages: list[dict], *, max_new_tokens: int = 1024, temperature: float = 0.0,
               top_p: float = 1.0, min_new_tokens: int = 0) -> TextStream:
        kwargs = self._kwargs(max_new_tokens, temperature, top_p, min_new_tokens)
        return TextStream(lambda handle: self._stream(handle, messages, kwargs))

    def _stream(self, handle: TextStream, messages: list[dict], kwargs: dict) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        stop = threading.Event()

        class _Stop(StoppingCriteria):  # lets a consumer that walks away end the generation early
            def __call__(self, input_ids, scores, **kw):
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

        failure: list[BaseException] = []
        with self._lock:
            inputs = self.encode([messages])
            started = time.perf_counter()
            streamer = _Streamer(self.tokenizer, decode=True, started=started)

            def run() -> None:
                try:
                    with torch.inference_mode():
                        self.model.generate(**inputs, streamer=streamer,
                                            stopping_criteria=StoppingCriteriaList([_Stop()]), **kwargs)
                except BaseException as e:  # surfaced to the consumer below
                    failure.append(e)
                finally:
                    streamer.queue.put(_DONE)

            worker = threading.Thread(target=run, name=f"generate-{self.name}", daemon=True)
            worker.start()
            try:
                while (piece := streamer.queue.get()) is not _DONE:
                    yield piece
            finally:
                stop.set()
                worker.join()
            if failure:
                raise failure[0]
            seconds = time.perf_counter() - started
        eos = self._eos_ids()
        handle.result = GenerationResult(
            text=streamer.emitted, prompt_tokens=int(inputs["input_ids"].shape[1]),
            completion_tokens=next((i + 1 for i, t in enumerate(streamer.ids) if t in eos), len(streamer.ids)),
            seconds=seconds, first_token_s=streamer.first_token_s)


class OpenAIBackend:
    """Any OpenAI-compatible chat endpoint: a vLLM server running our model, `shicheng serve`, or a hosted API."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 120):
        from openai import OpenAI

        # A local vLLM server needs no key; the client insists on a string.
        api_key = os.environ.get(api_key_env) or "EMPTY"
        self.client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=1)
        self.base_url, self.name = base_url, model

    def _request(self, messages: list[dict], max_new_tokens: int, temperature: float, top_p: float) -> dict:
        return {"model": self.name, "messages": messages, "max_tokens": max_new_tokens,
                "temperature": temperature, "top_p": top_p}

    def generate(self, messages: list[dict], *, max_new_tokens: int = 1024, temperature: float = 0.0,
                 top_p: float = 1.0) -> GenerationResult:
        started = time.perf_counter()
        reply = self.client.chat.completions.create(**self._request(messages, max_new_tokens, temperature, top_p))
        seconds = time.perf_counter() - started
        usage = reply.usage
        return GenerationResult(text=reply.choices[0].message.content or "",
                                prompt_tokens=usage.prompt_tokens if usage else 0,
                                completion_tokens=usage.completion_tokens if usage else 0,
                                seconds=seconds, first_token_s=None)

    def stream(self, messages: list[dict], *, max_new_tokens: int = 1024, temperature: float = 0.0,
               top_p: float = 1.0) -> TextStream:
        return TextStream(lambda handle: self._stream(handle, messages, max_new_tokens, temperature, top_p))

    def _stream(self, handle: TextStream, messages, max_new_tokens, temperature, top_p) -> Iterator[str]:
        started = time.perf_counter()
        first: float | None = None
        parts: list[str] = []
        usage = None
        # stream_options is part of the OpenAI protocol; vLLM answers it with a final usage chunk.
        chunks = self.client.chat.completions.create(**self._request(messages, max_new_tokens, temperature, top_p),
                                                     stream=True, stream_options={"include_usage": True})
        with chunks:
            for chunk in chunks:
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    piece = choice.delta.content if choice.delta else None
                    if piece:
                        first = first if first is not None else time.perf_counter() - started
                        parts.append(piece)
                        yield piece
        handle.result = GenerationResult(text="".join(parts), prompt_tokens=usage.prompt_tokens if usage else 0,
                                         completion_tokens=usage.completion_tokens if usage else 0,
                                         seconds=time.perf_counter() - started, first_token_s=first)


def require_local_packages() -> None:
    """A clear one-line error instead of a ModuleNotFoundError traceback when torch/transformers are missing."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise BackendUnavailable(LOCAL_EXTRA) from e


def is_url(model: str) -> bool:
    return str(model).startswith(("http://", "https://"))


def make_backend(model: str | Path, *, backend: str = "auto", **kw: Any) -> Backend:
    """`model` is a model directory or an endpoint URL; `backend` is auto, transformers or openai.

    Keywords: transformers takes `device`, `dtype`; openai takes `model_name` (the served model id,
    default "shicheng"), `api_key_env`, `timeout_s`.
    """
    model = str(model)
    if backend == "auto":
        backend = "openai" if is_url(model) else "transformers"
    if backend == "transformers":
        if is_url(model):
            raise ValueError(f"{model}: a URL needs --backend openai (transformers loads a local directory)")
        if not Path(model).is_dir():
            raise FileNotFoundError(f"model directory not found: {model}")
        require_local_packages()
        return TransformersBackend(model, **{k: v for k, v in kw.items() if k in ("device", "dtype")})
    if backend == "openai":
        if not is_url(model):
            raise ValueError(f"{model}: the openai backend needs an endpoint URL such as http://127.0.0.1:8000/v1")
        return OpenAIBackend(model, kw.get("model_name") or "shicheng",
                             **{k: v for k, v in kw.items() if k in ("api_key_env", "timeout_s")})
    raise ValueError(f"unknown backend {backend!r}: use auto, transformers or openai")


def load_masters(model_dir: str | Path) -> dict[str, Master]:
    """The masters a trained model knows, from its masters.json (a list of Master objects); {} if absent."""
    from pydantic import ValidationError

    if is_url(str(model_dir)):
        return {}
    path = Path(model_dir) / "masters.json" if Path(model_dir).is_dir() else Path(model_dir)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of masters, got {type(data).__name__}")
    masters: dict[str, Master] = {}
    for i, item in enumerate(data):
        try:
            master = Master.model_validate(item)
        except ValidationError as e:
            fields = "; ".join(f"field '{'.'.join(map(str, x['loc']))}': {x['msg']}" for x in e.errors())
            raise ValueError(f"{path}: master [{i}]: {fields}") from e
        if master.id in masters:
            raise ValueError(f"{path}: master [{i}]: id {master.id!r} appears twice")
        masters[master.id] = master
    return masters
