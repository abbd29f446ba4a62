"""`POST /v1/chat/completions`: the OpenAI protocol, asked as the model was trained, every answer checked.

The system prompt. The model was trained with our master system prompt, so it is always sent:
- the client sends no system turn: ours is added ("added");
- the client sends one of our own prompts (an agent in front of this server does): it is kept ("kept");
- the client sends its own (an OpenAI UI's "You are a helpful assistant", a house style): ours comes
  first and the client's text follows it in the same system turn ("merged"). Dropping ours would
  silently drop the master; dropping the client's would silently drop its instructions.
The response says which in `shicheng.system_prompt`.

The safety check. The answer is read like a consultation's (the 处方 section, or the whole reply when
it has no sections) and checked with the patient facts found in the user turns (患者女，30岁，妊娠12周).
The report goes into the extra response field `shicheng` (on the last chunk when streaming); by default
a short notice is also appended to the text when the answer holds a prescription, so that a client that
shows only the text still shows the warning. The server option `--no-chat-safety-notice` or the request
field `safety_notice: false` turns the notice off (the `shicheng` field stays).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable

from shicheng.agent import Backend
from shicheng.agent.checks import AnswerCheck, check_reply, patient_from_text, safety_notice
from shicheng.domain import Master
from shicheng.prompts import system_prompt
from shicheng.serve.errors import error_body, generation_failed
from shicheng.serve.limits import Ticket
from shicheng.serve.schemas import ChatRequest

log = logging.getLogger("shicheng.serve")


def chat_messages(body: ChatRequest, master: Master | None, ours_known: set[str]) -> tuple[list[dict], str]:
    """The messages sent to the model, and how the system prompt was chosen: added, kept or merged."""
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
    ours = system_prompt(master)
    first = next((i for i, m in enumerate(messages) if m["role"] == "system"), None)
    if first is None:
        return [{"role": "system", "content": ours}, *messages], "added"
    theirs = messages[first]["content"].strip()
    if theirs in ours_known:
        return messages, "kept"
    merged = f"{ours}\n\n{theirs}" if theirs else ours
    return [*messages[:first], {"role": "system", "content": merged}, *messages[first + 1:]], "merged"


class ChatTurn:
    """One chat request on its way through: the messages, the patient they describe, and the reply's check."""

    def __init__(self, body: ChatRequest, messages: list[dict], system_mode: str, max_new_tokens: int,
                 notice: bool, reply_id: str, created: int):
        self.body, self.messages, self.system_mode = body, messages, system_mode
        self.gen = {"max_new_tokens": max_new_tokens, "temperature": body.temperature, "top_p": body.top_p}
        self.notice = notice
        self.reply_id, self.created = reply_id, created
        self.patient, self.facts = patient_from_text([m["content"] for m in messages if m["role"] == "user"])

    def check(self, text: str) -> tuple[AnswerCheck | str, str]:
        """The check of the answer (or why it failed), and the notice to append ('' when off or nothing to
        say). A check that fails is said in the notice, never passed over in silence."""
        try:
            checked = check_reply(text, self.patient, self.facts)
        except Exception as e:
            log.error("chat safety check failed: %s", type(e).__name__)
            failed = f"safety check failed ({type(e).__name__}): this answer was NOT checked"
            return failed, f"\n\n——\n【师承安全核查 shicheng safety check】{failed}" if self.notice else ""
        return checked, safety_notice(checked) if self.notice and checked.checked else ""

    def extra(self, checked: AnswerCheck | str, notice: str) -> dict:
        """The `shicheng` response field."""
        found = {"safety_error": checked} if isinstance(checked, str) else checked.model_dump(mode="json")
        return {"system_prompt": self.system_mode, "safety_notice_appended": bool(notice), **found}

    def finish_reason(self, result) -> str:
        if result is not None and result.completion_tokens >= self.gen["max_new_tokens"]:
            return "length"
        return "stop"

    def completion(self, text: str, result) -> dict:
        checked, notice = self.check(text)
        prompt = result.prompt_tokens if result is not None else 0
        completion = result.completion_tokens if result is not None else 0
        return {"id": self.reply_id, "object": "chat.completion", "created": self.created, "model": self.body.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text + notice},
                             "finish_reason": self.finish_reason(result)}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion},
                "shicheng": self.extra(checked, notice)}

    def _event(self, fields: dict) -> str:
        payload = {"id": self.reply_id, "object": "chat.completion.chunk", "created": self.created,
                   "model": self.body.model, **fields}
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    def _chunk(self, delta: dict, finish: str | None = None, **extra) -> str:
        return self._event({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})

    async def stream(self, ticket: Ticket, backend: Backend, on_result: Callable) -> AsyncIterator[str]:
        """`chat.completion.chunk` events: the role, the text, [the notice], the finish with `shicheng`,
        [usage], [DONE]."""
        holder: dict = {}
        parts: list[str] = []

        def make_stream():
            holder["stream"] = backend.stream(self.messages, **self.gen)
            return holder["stream"]

        yield self._chunk({"role": "assistant", "content": ""})
        try:
            async for piece in ticket.stream(make_stream):
                parts.append(piece)
                yield self._chunk({"content": piece})
        except Exception as e:
            err = generation_failed(e)
            yield f"data: {json.dumps(error_body(err.message, err.type, err.code), ensure_ascii=False)}\n\n"
            yield "data: [DONE]\n\n"
            return
        result = holder["stream"].result
        text = result.text if result is not None else "".join(parts)
        on_result(result, text)
        checked, notice = self.check(text)
        if notice:
            yield self._chunk({"content": notice})
        yield self._chunk({}, self.finish_reason(result), shicheng=self.extra(checked, notice))
        usage = self.body.stream_options is not None and self.body.stream_options.include_usage
        if usage and result is not None:
            tokens = {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                      "total_tokens": result.prompt_tokens + result.completion_tokens}
            yield self._event({"choices": [], "usage": tokens})
        yield "data: [DONE]\n\n"


__all__ = ["ChatTurn", "chat_messages"]
