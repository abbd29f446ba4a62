"""A local transformers model as a judge, with schema-constrained decoding so that every verdict validates.

Why xgrammar (over outlines and lm-format-enforcer): it is the most actively maintained of the three (the
default structured-output engine of vLLM and SGLang, releases every few weeks), compiles a JSON schema
to a grammar in milliseconds, enforces numeric bounds (`minimum`/`maximum`), enums, `maxItems` and regex
patterns, and masks logits on CPU as well as GPU. lm-format-enforcer is pure Python and light but does
not enforce numeric bounds, so a verdict could still fall outside the rubric's points; outlines pulls a
much larger dependency tree. On CPU xgrammar runs without triton (only its GPU kernels use it), so it
can be installed with `--no-deps` plus `apache-tvm-ffi` where the 290 MB triton wheel is unwanted.

Decoding always ends inside the token budget: the schema bounds every number, array and string, and the
grammar fixes the separators (no free whitespace), so the longest valid reply has a computable length in
bytes (`max_reply_bytes`), which bounds the tokens of a byte-level tokenizer. Generation is greedy by
default; with random weights the text is nonsense, yet it is always a verdict that validates.

One xgrammar leniency matters for the validator: its UTF-8 automaton accepts overlong sequences (E0 80 ..),
which Python decodes as up to three U+FFFD, so a rationale can come out a few characters longer than its
pattern's bound. That is why the validator bounds the rationale's type only (rubric.verdict_model).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from shicheng.agent.backends import BackendUnavailable, TransformersBackend
from shicheng.evaluate.judge_backends import (
    JudgeBackend,
    JudgeCallError,
    JudgeOutcome,
    JudgeRequest,
    RawReply,
    parse_verdict,
)

# A JSON number as xgrammar writes it under minimum/maximum: integer digits, a point, at most 6 decimals.
_DECIMALS = 6
# One character of a JSON string at its longest: a \uXXXX escape (a UTF-8 character is at most 4 bytes).
_CHAR_BYTES = 6


def max_reply_bytes(schema: dict[str, Any]) -> int:
    """Upper bound on the UTF-8 length of any compact reply valid under `schema` (", " and ": " separators).

    Only the shapes our verdict schemas use are accepted; anything unbounded raises ValueError, because
    constrained decoding could then run past any budget."""
    kind = schema.get("type")
    if "enum" in schema:
        return max(len(json.dumps(v, ensure_ascii=False).encode()) for v in schema["enum"])
    if kind == "object":
        props = schema.get("properties") or {}
        inner = sum(len(json.dumps(k).encode()) + 2 + max_reply_bytes(v) for k, v in props.items())
        return 2 + inner + 2 * max(len(props) - 1, 0)
    if kind == "number" and "maximum" in schema:
        return len(str(int(schema["maximum"]))) + 1 + _DECIMALS + (0 if schema.get("minimum", -1) >= 0 else 1)
    if kind == "integer" and "maximum" in schema:
        return len(str(int(schema["maximum"]))) + (0 if schema.get("minimum", -1) >= 0 else 1)
    if kind == "array" and "maxItems" in schema:
        n = int(schema["maxItems"])
        return 2 + n * max_reply_bytes(schema["items"]) + 2 * max(n - 1, 0)
    if kind == "string" and "pattern" in schema:
        bound = _pattern_bound(schema["pattern"])
        if bound is not None:
            return 2 + bound * _CHAR_BYTES
    raise ValueError(f"schema node has no length bound, constrained decoding could run forever: {schema}")


def _pattern_bound(pattern: str) -> int | None:
    # Our patterns are one bounded character class: ^[...]{0,N}$.
    m = re.fullmatch(r"\^\[[^\]]*\]\{\d+,(\d+)\}\$", pattern)
    return int(m.group(1)) if m else None


class TransformersJudge(JudgeBackend):
    """A judge running a local Hugging Face model directory (e.g. one trained with this project).

    `judge_many` batches (`batch_size` prompts per generate call, each with its own grammar) instead of
    using threads: one model generates one batch at a time.
    """

    def __init__(self, model: str | Path | TransformersBackend, *, name: str | None = None, device: str = "auto",
                 dtype: str = "auto", temperature: float = 0.0, batch_size: int = 4, max_attempts: int = 2,
                 max_new_tokens: int | None = None):
        try:
            import xgrammar as xgr
        except ImportError as e:  # `make demo` installs the training extras only
            raise BackendUnavailable("a local judge model needs xgrammar: `make venv`, or pip install "
                                     "'shicheng[judge-local]' (on CPU: pip install --no-deps 'xgrammar>=0.2.8' "
                                     "'apache-tvm-ffi>=0.1.11')") from e

        self.backend = model if isinstance(model, TransformersBackend) else TransformersBackend(model, device, dtype)
        self.name = name or self.backend.name
        self.temperature = temperature
        self.batch_size = max(1, batch_size)
        self.max_attempts = max_attempts
        self.max_new_tokens = max_new_tokens  # None: the schema's bound
        tok, mdl = self.backend.tokenizer, self.backend.model
        self._eos = sorted(self.backend.eos_token_ids)
        # The embedding may have more rows than the tokenizer has tokens (padding to a multiple): mask them all.
        vocab_rows = mdl.get_output_embeddings().weight.shape[0]
        info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=vocab_rows, stop_token_ids=self._eos)
        self._compiler = xgr.GrammarCompiler(info)
        self._grammars: dict[str, Any] = {}
        self._lock = threading.Lock()

    def identity(self) -> dict[str, Any]:
        path = self.backend.model_dir
        return {"kind": "transformers", "model": self.name, "weights": _fingerprint(path) if path else None,
                "temperature": self.temperature, "max_new_tokens": self.max_new_tokens}

    def _grammar(self, schema: dict[str, Any]):
        # Compiled from the schema as given: the grammar keeps its property order (scores before rationale).
        text = json.dumps(schema, ensure_ascii=False)
        if text not in self._grammars:
            self._grammars[text] = self._compiler.compile_json_schema(text, any_whitespace=False)
        return self._grammars[text]

    def _budget(self, schemas: Sequence[dict[str, Any]]) -> int:
        bound = max(max_reply_bytes(s) for s in schemas) + 8  # + the stop token and a margin
        return min(bound, self.max_new_tokens) if self.max_new_tokens else bound

    def generate_batch(self, messages_list: Sequence[list[dict[str, str]]], schemas: Sequence[dict[str, Any]]
                       ) -> list[RawReply]:
        import torch
        import xgrammar as xgr

        be = self.backend
        with self._lock:
            try:
                enc = be.encode(list(messages_list))
                processor = xgr.contrib.hf.LogitsProcessor([self._grammar(s) for s in schemas])
                kw: dict[str, Any] = {"max_new_tokens": self._budget(schemas), "pad_token_id": be.tokenizer.pad_token_id,
                                      "eos_token_id": self._eos, "logits_processor": [processor]}
                if self.temperature > 0:
                    kw.update(do_sample=True, temperature=self.temperature, top_p=1.0, top_k=None)
                else:
                    kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
                with torch.inference_mode():
                    out = be.model.generate(**enc, **kw)
            except Exception as e:  # a model or grammar error fails these judgements, it must not stop the run
                raise JudgeCallError(f"local generation failed: {type(e).__name__}: {e}") from e
        prompt_len = enc["input_ids"].shape[1]
        replies = []
        for row, mask in zip(out, enc["attention_mask"], strict=True):
            new = [int(t) for t in row[prompt_len:].tolist()]
            while new and new[-1] in (*self._eos, be.tokenizer.pad_token_id):
                new.pop()
            text = be.tokenizer.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            replies.append(RawReply(text=text, prompt_tokens=int(mask.sum()), completion_tokens=len(new) + 1))
        return replies

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> RawReply:
        return self.generate_batch([messages], [schema])[0]

    def judge_many(self, requests: Sequence[JudgeRequest], concurrency: int = 1
                   ) -> Iterator[tuple[int, JudgeOutcome]]:
        """Batches of `batch_size`; `concurrency` is ignored (one model, one batch at a time)."""
        for start in range(0, len(requests), self.batch_size):
            batch = list(range(start, min(start + self.batch_size, len(requests))))
            try:
                replies = self.generate_batch([requests[i].messages for i in batch],
                                              [requests[i].schema for i in batch])
            except JudgeCallError as e:
                for i in batch:
                    yield i, JudgeOutcome(status="failed", error=str(e), attempts=1, calls=1, errors=[str(e)])
                continue
            for i, reply in zip(batch, replies, strict=True):
                yield i, self._first(requests[i], reply)

    def _first(self, request: JudgeRequest, reply: RawReply) -> JudgeOutcome:
        verdict, error = parse_verdict(reply.text, request.validator)
        if verdict is not None:
            return JudgeOutcome(status="ok", verdict=verdict, raw=reply.text, attempts=1, calls=1,
                                prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens)
        # Only a cut-off generation gets here (max_new_tokens set below the schema's bound): ask again alone.
        retry = JudgeRequest(messages=[*request.messages, {"role": "assistant", "content": reply.text},
                                       request.rubric.retry_message(error)],
                             schema=request.schema, validator=request.validator, rubric=request.rubric)
        if self.max_attempts <= 1:
            return JudgeOutcome(status="invalid", error=error, raw=reply.text, attempts=1, calls=1, errors=[error],
                                prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens)
        rest = self.judge(retry, attempts=self.max_attempts - 1)
        rest.attempts += 1
        rest.calls += 1
        rest.prompt_tokens += reply.prompt_tokens
        rest.completion_tokens += reply.completion_tokens
        rest.errors.insert(0, error)
        return rest


def _fingerprint(path: Path) -> str:
    """Names, sizes and modification times of the weight files: retrained weights must not hit old verdicts."""
    files = sorted(p for p in Path(path).iterdir() if p.suffix in (".safetensors", ".bin", ".json"))
    return ";".join(f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in files)


__all__ = ["TransformersJudge", "max_reply_bytes"]
