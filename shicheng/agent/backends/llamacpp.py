"""A GGUF file (written by `shicheng export`) as a Backend, through llama-cpp-python: the clinic-laptop path.

Same prompts, parser and safety checks as the transformers backend, because only the generation differs:
the chat template is the one stored in the GGUF (our ChatML, rendered with the same Jinja settings as
transformers' `apply_chat_template`), the text is tokenised by llama.cpp with special tokens parsed, and
the answer goes back to the agent's parser unchanged.

Decoding follows GenerationOptions as the transformers backend does, so that the same options give the same
tokens (tests/deploy/test_parity.py compares them token for token):
- temperature 0 is greedy (llama.cpp's greedy sampler: the argmax, as transformers' greedy search);
- `repetition_penalty` is llama.cpp's repeat penalty (the same formula: a logit is divided by the penalty,
  or multiplied when negative, once per distinct token), over the prompt and answer as transformers does:
  the prompt tokens are fed to the penalty sampler first and its window is the whole context;
- `no_repeat_ngram_size` and `min_new_tokens` have no llama.cpp sampler, so they are applied here on the
  logits before sampling (a banned token's logit set to -inf, as transformers' processors do). This is why
  the backend raises no UnsupportedOption: every option is applied. It matters for the defaults: options
  left at None mean "the model's own default", which for a stage model is its generation_config.json (the
  demo's: repetition_penalty 1.15, no_repeat_ngram_size 8) and for its GGUF the same values, stored as
  `shicheng.generation`. Refusing n-gram blocking would make every default consult of a demo GGUF fail;
  dropping it in silence would make it decode differently from the model directory.
- `sections` (section-guided decoding, shicheng.guide) masks the logits the same way, after the n-gram block;
  a GGUF exported from a model trained with `guide_sections` guides by default (`guides_sections`).
"""

from __future__ import annotations

import codecs
import os
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from shicheng.agent.backends.base import (
    Backend,
    BackendUnavailable,
    GenerationKwargs,
    GenerationOptions,
    GenerationResult,
    TextStream,
)
from shicheng.deploy.metadata import (
    CHAT_TEMPLATE_KEY,
    DEFAULT_N_CTX,
    DEPLOY_EXTRA,
    DeployUnavailable,
    generation_defaults,
    quiet_llama_logs,
    read_gguf_fields,
)
from shicheng.guide import GuideVocab, SectionGuide

if TYPE_CHECKING:  # typing.Unpack is Python 3.11+
    from typing_extensions import Unpack

HF_TOP_K = 50  # transformers' default top_k when sampling, which the transformers backend leaves in place


def require_llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:  # not installed, or its shared library failed to build or load
        raise BackendUnavailable(f"{DEPLOY_EXTRA} ({e})") from e
    return llama_cpp


THREADS_ENV = "SHICHENG_LLAMA_THREADS"


def default_threads() -> int:
    """$SHICHENG_LLAMA_THREADS, else the CPUs this process may use (llama-cpp-python's own default is half of
    them, for SMT machines). llama.cpp's threads spin while they wait for each other, so on a machine whose
    other work holds a core, fewer threads decode faster: on these 2-core machines, with one core busy, one
    thread decoded the 1.5B q4_k_m model at 9 tokens/s and two at 0.4 (measured)."""
    if os.environ.get(THREADS_ENV, "").strip():
        try:
            return max(1, int(os.environ[THREADS_ENV]))
        except ValueError:
            raise ValueError(f"${THREADS_ENV}={os.environ[THREADS_ENV]!r}: expected a number of threads") from None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class _NgramBlocker:
    """transformers' NoRepeatNGramLogitsProcessor, incrementally: the tokens that would complete an n-gram
    already in the sequence (prompt included)."""

    def __init__(self, n: int, ids: list[int]):
        self.n, self.ids, self.seen = n, [], {}
        for t in ids:
            self.add(t)

    def add(self, token: int) -> None:
        self.ids.append(token)
        if self.n and len(self.ids) >= self.n:
            gram = tuple(self.ids[-self.n:])
            self.seen.setdefault(gram[:-1], set()).add(gram[-1])

    def banned(self) -> list[int]:
        if not self.n or len(self.ids) < self.n - 1:
            return []
        prefix = tuple(self.ids[len(self.ids) - self.n + 1:]) if self.n > 1 else ()
        return sorted(self.seen.get(prefix, ()))


class LlamaCppBackend(Backend):
    """A GGUF file on the CPU. One generation at a time (a lock): a llama.cpp context holds one sequence."""

    def __init__(self, gguf_path: str | Path, defaults: GenerationOptions | None = None, n_ctx: int | None = None,
                 n_threads: int | None = None):
        self._lib = require_llama_cpp()
        import jinja2.sandbox

        path = Path(gguf_path)
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        try:
            fields = read_gguf_fields(path, ("general.architecture", "qwen2.context_length", CHAT_TEMPLATE_KEY))
            arch = fields.get("general.architecture", "qwen2")
            if arch != "qwen2":  # a GGUF from elsewhere: its own architecture's key
                fields.update(read_gguf_fields(path, (f"{arch}.context_length",)))
        except DeployUnavailable as e:
            raise BackendUnavailable(str(e)) from e
        if CHAT_TEMPLATE_KEY not in fields:
            raise ValueError(f"{path}: no {CHAT_TEMPLATE_KEY} in its metadata; export it with `shicheng export`")
        self.n_threads = n_threads or default_threads()
        # what the model was trained for bounds a prompt, as max_position_embeddings does for transformers
        n_ctx = min(n_ctx or DEFAULT_N_CTX, int(fields.get(f"{arch}.context_length") or DEFAULT_N_CTX))
        # use_mmap=False: on x86 llama.cpp repacks q4_0/q4_K weights into an interleaved layout for its AVX2
        # kernels; from a memory-mapped file the read pages stay resident beside the repacked copy, so a
        # 1 GB q4_k_m model would hold ~1.8 GB (measured). Read into memory, it holds the model once.
        self.llm = self._lib.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=min(512, n_ctx),
                                   n_threads=self.n_threads, n_threads_batch=self.n_threads, n_gpu_layers=0,
                                   use_mmap=False, verbose=False)
        quiet_llama_logs()  # Llama() sets its logger to ERROR, which still prints warnings (see quiet_llama_logs)
        # Freed when the backend is, or at interpreter exit while the module globals llama-cpp-python's own
        # __del__ needs still exist (a CLI run that never calls close() would print a TypeError otherwise).
        self._free = weakref.finalize(self, self.llm.close)
        # transformers renders chat templates with these settings (apply_chat_template); so do we
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                           extensions=["jinja2.ext.loopcontrols"])
        self._template = env.from_string(fields[CHAT_TEMPLATE_KEY])
        self.model_defaults = generation_defaults(self.llm.metadata)
        self.name = path.stem
        self.path = path
        self.defaults = defaults or GenerationOptions()
        self.context_length = self.llm.n_ctx()
        self._vocab = self._lib.llama_model_get_vocab(self.llm.model)
        self._n_vocab = self.llm.n_vocab()
        self._eog: list[int] | None = None
        self._guide_vocab: GuideVocab | None = None
        self.guides_sections = self.model_defaults.get("guide_sections") is True
        self._lock = threading.Lock()

    # ---- prompts ----------------------------------------------------------------------------------------

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        text = self._template.render(messages=messages, add_generation_prompt=True)
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def count_prompt_tokens(self, messages: list[dict]) -> int:
        return len(self.prompt_ids(messages))

    def tokenize(self, text: str) -> list[int]:
        """Plain text as llama.cpp reads it (special tokens parsed, no BOS): the tokenizer parity tests use it."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def is_eog(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    @property
    def eog_ids(self) -> list[int]:
        """The ids that end an answer (`<|im_end|>`, `<|endoftext|>`), as llama.cpp marks them."""
        if self._eog is None:
            self._eog = [t for t in range(self._n_vocab) if self.is_eog(t)]
        return self._eog

    # ---- decoding ---------------------------------------------------------------------------------------

    def _sampler(self, o: GenerationOptions, repetition_penalty: float):
        lib = self._lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if repetition_penalty != 1.0:
            penalties = lib.llama_sampler_init_penalties(self._n_vocab, self.context_length, repetition_penalty,
                                                         0.0, 0.0)  # no frequency or presence penalty
            lib.llama_sampler_chain_add(chain, penalties)
        if o.greedy:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        else:  # transformers' order: temperature, then top-k, then top-p over the tempered distribution
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(o.temperature))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(HF_TOP_K))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(o.top_p, 1))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(lib.LLAMA_DEFAULT_SEED))
        return chain

    def _tokens(self, prompt: list[int], o: GenerationOptions) -> Iterator[int]:
        """The new token ids, the end-of-turn token included when the answer ends with one."""
        import numpy as np

        lib, llm = self._lib, self.llm
        rp = o.repetition_penalty if o.repetition_penalty is not None else \
            float(self.model_defaults.get("repetition_penalty", 1.0))
        ngram = o.no_repeat_ngram_size if o.no_repeat_ngram_size is not None else \
            int(self.model_defaults.get("no_repeat_ngram_size", 0))
        chain = self._sampler(o, rp)
        try:
            for t in prompt:  # the penalty counts the prompt's tokens, as transformers' does
                lib.llama_sampler_accept(chain, t)
            blocker = _NgramBlocker(ngram, prompt)
            guide = SectionGuide(self.guide_vocab, self.eog_ids, o.sections) if o.sections else None
            written = bytearray()
            # A fresh context for every answer. Reusing the cached prefix (the system prompt every request
            # shares) would decode the rest in other batch sizes, whose rounding can tip a greedy near-tie:
            # the same question could get two different answers.
            llm.reset()
            llm.eval(prompt)
            for step in range(o.max_new_tokens):
                logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(llm.ctx, -1), shape=(self._n_vocab,))
                if step < o.min_new_tokens:
                    logits[self.eog_ids] = -np.inf
                banned = blocker.banned()
                if banned:
                    logits[banned] = -np.inf
                if guide is not None:  # last, as transformers applies our processor after its own
                    guide.mask_row(bytes(written), logits, o.max_new_tokens - step)
                token = int(lib.llama_sampler_sample(chain, llm.ctx, -1))  # reads the logits as changed here
                yield token
                if self.is_eog(token) or llm.n_tokens + 1 >= self.context_length:  # prompt + answer fill it
                    return
                blocker.add(token)
                if guide is not None:
                    written += self._piece(token)
                llm.eval([token])
        finally:
            lib.llama_sampler_free(chain)

    @property
    def guide_vocab(self) -> GuideVocab:
        """The vocabulary as section-guided decoding reads it: each token's bytes (built on first use)."""
        if self._guide_vocab is None:
            self._guide_vocab = GuideVocab([self._piece(t) for t in range(self._n_vocab)])
        return self._guide_vocab

    def generate_ids(self, messages: list[dict], **options: Unpack[GenerationKwargs]) -> list[int]:
        """The new token ids of one answer (its end-of-turn token included): for parity checks and benchmarks."""
        o = self.options(**options)
        with self._lock:
            self._check_open()
            return list(self._tokens(self.prompt_ids(messages), o))

    def _piece(self, token: int) -> bytes:
        # special=False: control tokens (<|im_end|>) render as nothing, as decode(skip_special_tokens=True)
        return self.llm.detokenize([token], special=False)

    def _generate(self, messages: list[dict], o: GenerationOptions) -> GenerationResult:
        prompt = self.prompt_ids(messages)
        started = time.perf_counter()
        first: float | None = None
        ids: list[int] = []
        for token in self._tokens(prompt, o):
            first = first if first is not None else time.perf_counter() - started
            ids.append(token)
        text = b"".join(self._piece(t) for t in ids).decode("utf-8", errors="replace")
        return GenerationResult(text=text, prompt_tokens=len(prompt), completion_tokens=len(ids),
                                seconds=time.perf_counter() - started, first_token_s=first)

    def generate(self, messages: list[dict], **options: Unpack[GenerationKwargs]) -> GenerationResult:
        return self.generate_batch([messages], **options)[0]

    def generate_batch(self, messages_list: list[list[dict]], **options: Unpack[GenerationKwargs]
                       ) -> list[GenerationResult]:
        """One conversation after the other: llama-cpp-python decodes one sequence per context."""
        o = self.options(**options)
        with self._lock:
            self._check_open()
            return [self._generate(m, o) for m in messages_list]

    def stream(self, messages: list[dict], **options: Unpack[GenerationKwargs]) -> TextStream:
        o = self.options(**options)
        return TextStream(lambda handle: self._stream(handle, messages, o))

    def _stream(self, handle: TextStream, messages: list[dict], o: GenerationOptions) -> Iterator[str]:
        with self._lock:
            self._check_open()
            prompt = self.prompt_ids(messages)
            started = time.perf_counter()
            first: float | None = None
            count = 0
            parts: list[str] = []
            # A character split across tokens waits in the decoder until its last byte arrives, so the deltas
            # concatenate to exactly the text `generate` returns.
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            for token in self._tokens(prompt, o):
                first = first if first is not None else time.perf_counter() - started
                count += 1
                piece = decoder.decode(self._piece(token))
                if piece:
                    parts.append(piece)
                    yield piece
            tail = decoder.decode(b"", final=True)
            if tail:
                parts.append(tail)
                yield tail
            handle.result = GenerationResult(text="".join(parts), prompt_tokens=len(prompt), completion_tokens=count,
                                             seconds=time.perf_counter() - started, first_token_s=first)

    def close(self) -> None:
        """Free the weights and the context (after a running generation ends)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._free()
            del self.llm


__all__ = ["THREADS_ENV", "LlamaCppBackend", "default_threads", "require_llama_cpp"]
