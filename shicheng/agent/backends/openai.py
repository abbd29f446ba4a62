"""Any OpenAI-compatible chat endpoint as a Backend: a vLLM server running our model, `shicheng serve`,
or a hosted API.

Options beyond the OpenAI protocol go in the request body where vLLM reads them: `repetition_penalty`
and `min_tokens` (sent only when set, so that a hosted API that refuses unknown fields is not sent
them). No OpenAI-compatible server blocks repeated n-grams, so `no_repeat_ngram_size` > 0 is refused
rather than dropped: a comparison must not decode one system differently from another in silence.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from shicheng.agent.backends.base import (
    Backend,
    GenerationKwargs,
    GenerationOptions,
    GenerationResult,
    TextStream,
    UnsupportedOption,
)

if TYPE_CHECKING:  # typing.Unpack is Python 3.11+
    from typing_extensions import Unpack


class OpenAIBackend(Backend):
    """`generate_batch` sends its conversations as at most `concurrency` concurrent requests: the server
    (vLLM) batches them itself."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 120,
                 concurrency: int = 8, defaults: GenerationOptions | None = None):
        from openai import OpenAI

        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        # A local vLLM server needs no key; the client insists on a string.
        api_key = os.environ.get(api_key_env) or "EMPTY"
        self.client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=1)
        self.base_url, self.name, self.concurrency = base_url, model, concurrency
        self.defaults = self.check_options(defaults or GenerationOptions())

    @classmethod
    def check_options(cls, options: GenerationOptions) -> GenerationOptions:
        if options.no_repeat_ngram_size:
            raise UnsupportedOption(
                f"an OpenAI-compatible endpoint cannot apply no_repeat_ngram_size={options.no_repeat_ngram_size} "
                "(neither the OpenAI protocol nor vLLM has n-gram blocking); set it to 0 for every system")
        if options.sections:
            raise UnsupportedOption(
                "an OpenAI-compatible endpoint cannot apply section-guided decoding (shicheng.guide masks the "
                "model's logits, which an endpoint does not expose); ask without it (--no-guide)")
        return options

    def count_prompt_tokens(self, messages: list[dict]) -> None:
        return None  # the endpoint's tokenizer is not here; it refuses a prompt that is too long itself

    def _request(self, messages: list[dict], o: GenerationOptions) -> dict[str, Any]:
        extra = {}
        if o.repetition_penalty is not None:
            extra["repetition_penalty"] = o.repetition_penalty
        if o.min_new_tokens:
            extra["min_tokens"] = o.min_new_tokens
        request: dict[str, Any] = {"model": self.name, "messages": messages, "max_tokens": o.max_new_tokens,
                                   "temperature": o.temperature, "top_p": o.top_p}
        if extra:
            request["extra_body"] = extra
        return request

    def _generate(self, messages: list[dict], o: GenerationOptions) -> GenerationResult:
        started = time.perf_counter()
        reply = self.client.chat.completions.create(**self._request(messages, o))
        seconds = time.perf_counter() - started
        usage = reply.usage
        return GenerationResult(text=reply.choices[0].message.content or "",
                                prompt_tokens=usage.prompt_tokens if usage else 0,
                                completion_tokens=usage.completion_tokens if usage else 0,
                                seconds=seconds, first_token_s=None)

    def generate(self, messages: list[dict], **options: Unpack[GenerationKwargs]) -> GenerationResult:
        return self._generate(messages, self.options(**options))

    def generate_batch(self, messages_list: list[list[dict]], **options: Unpack[GenerationKwargs]
                       ) -> list[GenerationResult]:
        o = self.options(**options)
        workers = min(self.concurrency, len(messages_list))
        if workers <= 1:
            return [self._generate(m, o) for m in messages_list]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"openai-{self.name}") as pool:
            return list(pool.map(lambda m: self._generate(m, o), messages_list))

    def stream(self, messages: list[dict], **options: Unpack[GenerationKwargs]) -> TextStream:
        o = self.options(**options)
        return TextStream(lambda handle: self._stream(handle, messages, o))

    def _stream(self, handle: TextStream, messages: list[dict], o: GenerationOptions) -> Iterator[str]:
        started = time.perf_counter()
        first: float | None = None
        parts: list[str] = []
        usage = None
        # stream_options is part of the OpenAI protocol; vLLM answers it with a final usage chunk.
        chunks = self.client.chat.completions.create(**self._request(messages, o), stream=True,
                                                     stream_options={"include_usage": True})
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

    def close(self) -> None:
        self._closed = True
        self.client.close()
