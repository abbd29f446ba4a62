"""A local Hugging Face model directory (the output of `shicheng train`) as a Backend, on CPU or GPU.

Streaming uses our own streamer rather than `TextIteratorStreamer`: it re-decodes the tokens generated so
far and emits the new suffix once it ends on a whole character, so the deltas always concatenate to
exactly the text `generate` returns (TextIteratorStreamer's word heuristics re-decode windows and can
split a multi-byte character differently from a full decode).
"""

from __future__ import annotations

import functools
import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shicheng.agent.backends.base import (
    Backend,
    BackendUnavailable,
    GenerationKwargs,
    GenerationOptions,
    GenerationResult,
    TextStream,
)
from shicheng.guide import GuideVocab, SectionGuide, TorchSectionGuide, token_bytes

if TYPE_CHECKING:  # typing.Unpack is Python 3.11+
    from typing_extensions import Unpack

_DONE = object()
LOCAL_EXTRA = "serving a local model needs torch and transformers: pip install 'shicheng[local]'"


def require_local_packages() -> None:
    """A clear one-line error instead of a ModuleNotFoundError traceback when torch/transformers are missing."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise BackendUnavailable(LOCAL_EXTRA) from e


def saved_guide_sections(model_dir: Path) -> bool:
    """Whether `shicheng train` saved `guide_sections: true` in the model's generation_config.json (read from the
    file: transformers does not carry unknown keys onto the loaded model's generation_config)."""
    path = model_dir / "generation_config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("guide_sections") is True
    except (OSError, ValueError, AttributeError):
        return False  # no file, or not ours to read: the model decodes freely unless asked


def pick_device(device: str):
    """"auto" is the GPU when there is one, else the CPU; anything else is passed to torch.device."""
    import torch

    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def pick_dtype(dtype: str, device):
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


class TransformersBackend(Backend):
    """A local model directory. One generation runs at a time per model (a lock): transformers' generate is
    not re-entrant on one model, and the server's queue in front of it bounds the waiting."""

    def __init__(self, model_dir: str | Path, device: str = "auto", dtype: str = "auto",
                 defaults: GenerationOptions | None = None):
        require_local_packages()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a model directory (no config.json)")
        dev = pick_device(device)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(dtype, dev)).to(dev)
        self._setup(model, tokenizer, name=path.name, defaults=defaults)
        self.model_dir: Path | None = path
        self.guides_sections = saved_guide_sections(path)

    @classmethod
    def from_model(cls, model, tokenizer, name: str = "model", defaults: GenerationOptions | None = None
                   ) -> TransformersBackend:
        """Wrap an already loaded model and tokenizer (benchmarks with random weights, notebooks)."""
        self = cls.__new__(cls)
        self._setup(model, tokenizer, name=name, defaults=defaults)
        self.model_dir = None
        return self

    def _setup(self, model, tokenizer, name: str, defaults: GenerationOptions | None) -> None:
        if not tokenizer.chat_template:
            raise ValueError(f"{name}: the tokenizer has no chat template; configure_chat_tokens() sets ours")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"  # batched decoding needs the prompts right-aligned
        if self.tokenizer.pad_token_id is None:
            raise ValueError(f"{name}: the tokenizer has no pad token")
        self.name = name
        self.defaults = defaults or GenerationOptions()
        self.device = next(model.parameters()).device
        self._lock = threading.Lock()  # one generation at a time
        # Tokenizing has its own lock: a fast tokenizer's padding state is shared ("Already borrowed"), and a
        # prompt can be counted while another generation runs.
        self._tokenizer_lock = threading.Lock()
        # Not every architecture's config names its context length; without one no prompt is refused here.
        self.context_length = getattr(model.config, "max_position_embeddings", None)

    def encode(self, messages_list: list[list[dict]]):
        texts = [self.tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False)
                 for m in messages_list]
        with self._tokenizer_lock:
            return self.tokenizer(texts, add_special_tokens=False, padding=True,
                                  return_tensors="pt").to(self.device)

    def count_prompt_tokens(self, messages: list[dict]) -> int:
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        with self._tokenizer_lock:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    def eos_token_ids(self) -> set[int]:
        """The ids that end an answer: the generation config's, else the tokenizer's."""
        eos = self.model.generation_config.eos_token_id
        eos = self.tokenizer.eos_token_id if eos is None else eos
        return set(eos if isinstance(eos, list) else [eos])

    @functools.cached_property
    def guide_vocab(self) -> GuideVocab:
        """The vocabulary as section-guided decoding reads it (built on first use, once per model)."""
        return GuideVocab(token_bytes(self.tokenizer))

    def generate_kwargs(self, o: GenerationOptions) -> dict[str, Any]:
        """`model.generate` keywords for these options."""
        eos = self.model.generation_config.eos_token_id
        kw: dict[str, Any] = {"max_new_tokens": o.max_new_tokens, "pad_token_id": self.tokenizer.pad_token_id,
                              "eos_token_id": self.tokenizer.eos_token_id if eos is None else eos}
        if o.min_new_tokens:
            kw["min_new_tokens"] = o.min_new_tokens
        if o.repetition_penalty is not None:
            kw["repetition_penalty"] = o.repetition_penalty
        if o.no_repeat_ngram_size is not None:
            kw["no_repeat_ngram_size"] = o.no_repeat_ngram_size
        if o.sections:
            guide = SectionGuide(self.guide_vocab, self.eos_token_ids, o.sections)
            kw["logits_processor"] = [TorchSectionGuide(guide, o.max_new_tokens)]
        if o.greedy:
            # Unset the sampling knobs a saved generation_config may carry so none is applied.
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kw.update(do_sample=True, temperature=o.temperature, top_p=o.top_p)
        return kw

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)

    def generate(self, messages: list[dict], **options: Unpack[GenerationKwargs]) -> GenerationResult:
        return self.generate_batch([messages], **options)[0]

    def generate_batch(self, messages_list: list[list[dict]], **options: Unpack[GenerationKwargs]
                       ) -> list[GenerationResult]:
        """Answer several conversations in one left-padded batch; `seconds` is the batch's wall time."""
        import torch

        kwargs = self.generate_kwargs(self.options(**options))
        if not messages_list:
            return []
        eos = self.eos_token_ids
        results = []
        with self._lock, torch.inference_mode():
            self._check_open()  # closed while this call waited for the lock
            inputs = self.encode(messages_list)
            prompt_lens = inputs["attention_mask"].sum(dim=1).tolist()
            started = time.perf_counter()
            timer = _Streamer(self.tokenizer, decode=False, started=started) if len(messages_list) == 1 else None
            out = self.model.generate(**inputs, streamer=timer, **kwargs)
            self._synchronize()
            seconds = time.perf_counter() - started
            for row, prompt_len in zip(out[:, inputs["input_ids"].shape[1]:].tolist(), prompt_lens, strict=True):
                end = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
                text = self.tokenizer.decode(row[:end], skip_special_tokens=True, clean_up_tokenization_spaces=False)
                results.append(GenerationResult(text=text, prompt_tokens=int(prompt_len), completion_tokens=end,
                                                seconds=seconds,
                                                first_token_s=timer.first_token_s if timer else None))
        return results

    def stream(self, messages: list[dict], **options: Unpack[GenerationKwargs]) -> TextStream:
        kwargs = self.generate_kwargs(self.options(**options))
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
            self._check_open()
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
        eos = self.eos_token_ids
        handle.result = GenerationResult(
            text=streamer.emitted, prompt_tokens=int(inputs["input_ids"].shape[1]),
            completion_tokens=next((i + 1 for i, t in enumerate(streamer.ids) if t in eos), len(streamer.ids)),
            seconds=seconds, first_token_s=streamer.first_token_s)

    def close(self) -> None:
        """Drop the weights (after a running generation ends), so that the next model fits in memory."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            del self.model
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()
