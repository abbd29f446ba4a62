"""What every generation backend is: the `Backend` base class, its options, results and streams.

`Backend` declares everything a caller may use, so that the agent, the server, the benchmark export and
the evaluation never ask a backend what it can do:
- `name`, `context_length` (None when the backend cannot tell: an endpoint checks for itself) and
  `count_prompt_tokens(messages)` (None likewise);
- `generate(messages)`, `generate_batch(messages_list)` (one list of results, in order; a local model
  decodes them in one left-padded batch, an endpoint answers them as concurrent requests) and
  `stream(messages)` (a TextStream of text deltas whose `result` holds the GenerationResult at the end);
- `close()` (also `with backend: …`).
Decoding is set by keyword (`max_new_tokens=…, temperature=…`), checked into one GenerationOptions; the
backend's `defaults` fill what a call leaves out. A backend that cannot apply an option (an endpoint has
no n-gram blocking) raises UnsupportedOption instead of decoding differently in silence.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

from shicheng.guide import heading_lines

if TYPE_CHECKING:  # typing.Unpack is Python 3.11+
    from typing_extensions import Unpack


class BackendUnavailable(RuntimeError):
    """A backend whose packages are not installed; the message says which extra to install."""


class UnsupportedOption(ValueError):
    """A generation option this backend cannot apply; the message names the backend and the option."""


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


@dataclass(frozen=True)
class GenerationOptions:
    """How to decode. temperature 0 is greedy. `repetition_penalty` and `no_repeat_ngram_size` left at None
    mean the model's own default (a local model's generation_config, an endpoint's settings); a value is
    applied as given (repetition_penalty 1.0 and no_repeat_ngram_size 0 turn them off)."""

    max_new_tokens: int = 1024
    temperature: float = 0.0
    top_p: float = 1.0
    min_new_tokens: int = 0
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    # Section-guided decoding (shicheng.guide): the output sections the answer must write, in this order; None
    # or () decodes freely.
    sections: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            problems.append(f"temperature must be 0 (greedy) or more, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must lie in (0, 1], got {self.top_p}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            problems.append(f"min_new_tokens must lie in [0, max_new_tokens={self.max_new_tokens}], "
                            f"got {self.min_new_tokens}")
        if self.repetition_penalty is not None and self.repetition_penalty <= 0:
            problems.append(f"repetition_penalty must be positive, got {self.repetition_penalty}")
        if self.no_repeat_ngram_size is not None and self.no_repeat_ngram_size < 0:
            problems.append(f"no_repeat_ngram_size must be 0 (off) or more, got {self.no_repeat_ngram_size}")
        if self.sections:
            try:
                heading_lines(self.sections)
            except ValueError as e:
                problems.append(str(e))
        if problems:
            raise ValueError("generation options: " + "; ".join(problems))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class GenerationKwargs(TypedDict, total=False):
    """The keyword form of GenerationOptions, as the generation methods take it."""

    max_new_tokens: int
    temperature: float
    top_p: float
    min_new_tokens: int
    repetition_penalty: float | None
    no_repeat_ngram_size: int | None
    sections: tuple[str, ...] | None


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(GenerationOptions))


@dataclass
class GenerationResult:
    text: str
    prompt_tokens: int
    completion_tokens: int  # 0 when an endpoint reports no usage
    seconds: float
    first_token_s: float | None  # None when the backend cannot tell (a non-streaming HTTP reply)


class TextStream:
    """An iterator of text deltas; `result` holds the whole GenerationResult once the stream is exhausted
    (None before, and after an early `close`)."""

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


class Backend(ABC):
    """A model that answers chat messages: a local model directory or an OpenAI-compatible endpoint."""

    name: str
    context_length: int | None = None  # tokens the model reads at most (prompt + answer); None: unknown
    defaults: GenerationOptions = GenerationOptions()
    # Whether callers that know the task (predict, consult, the server) guide its sections by default: a model
    # trained with `generation: {guide_sections: true}` says so in its generation_config.json.
    guides_sections: bool = False

    _closed: bool = False  # set by close(); every generation method asks for `options` first

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"backend {self.name} is closed")

    def options(self, **options: Unpack[GenerationKwargs]) -> GenerationOptions:
        """The decoding of one call: `defaults` with the given keywords, checked for this backend."""
        self._check_open()
        unknown = sorted(set(options) - set(OPTION_NAMES))
        if unknown:
            raise TypeError(f"unknown generation options {unknown}; known: {list(OPTION_NAMES)}")
        return self.check_options(dataclasses.replace(self.defaults, **options))

    @classmethod
    def check_options(cls, options: GenerationOptions) -> GenerationOptions:
        """Raise UnsupportedOption for an option this kind of backend cannot apply; callers that run several
        backends with one decoding (a comparison) check them all before generating anything."""
        return options

    @abstractmethod
    def count_prompt_tokens(self, messages: list[dict]) -> int | None:
        """Tokens `messages` take as a prompt (chat template included); None when the backend cannot tell."""

    @abstractmethod
    def generate(self, messages: list[dict], **options: Unpack[GenerationKwargs]) -> GenerationResult:
        """One answer."""

    @abstractmethod
    def generate_batch(self, messages_list: list[list[dict]], **options: Unpack[GenerationKwargs]
                       ) -> list[GenerationResult]:
        """One answer per conversation, in order; [] for []."""

    @abstractmethod
    def stream(self, messages: list[dict], **options: Unpack[GenerationKwargs]) -> TextStream:
        """The answer as text deltas that concatenate to the whole text; `result` is set at the end."""

    @abstractmethod
    def close(self) -> None:
        """Free what the backend holds (model weights, HTTP connections); it cannot generate afterwards."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_prompt_fits(backend: Backend, messages: list[dict], max_new_tokens: int | None) -> int | None:
    """Raise PromptTooLong when a backend that knows its context would run past it; returns the prompt's
    token count (None when the backend cannot tell: an endpoint checks for itself)."""
    limit = backend.context_length
    if not limit:
        return None
    tokens = backend.count_prompt_tokens(messages)
    if tokens is None:
        return None
    if tokens >= limit or (max_new_tokens is not None and tokens + max_new_tokens > limit):
        raise PromptTooLong(tokens, max_new_tokens, limit)
    return tokens
