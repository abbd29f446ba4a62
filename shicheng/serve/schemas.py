"""Request bodies of the API, validated by pydantic so that bad input gets a 422 that names the field.

Chat requests follow the OpenAI protocol and tolerate its extra fields (clients send `n`, `user`,
`presence_penalty` …); consultation requests are ours and refuse unknown fields, so that a typo such
as `chief_complain` is reported instead of silently ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shicheng.domain import Case, Task

# Generous for one clinical visit; the request body limit (413) bounds the total anyway.
MAX_FIELD_CHARS = 20_000
MAX_NEW_TOKENS = 8192


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type in ("text", "input_text"))
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(default="shicheng", description="shicheng (no master) or shicheng-<master id>")
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1, description="one choice per request")
    safety_notice: bool | None = Field(
        default=None, description="append the safety notice to an answer holding a prescription (default: the "
                                  "server's setting); the `shicheng` response field is sent either way")

    @model_validator(mode="after")
    def _has_user_turn(self) -> ChatRequest:
        if not any(m.role == "user" and m.text().strip() for m in self.messages):
            raise ValueError("messages must contain a non-empty user turn")
        return self


class ConsultRequest(BaseModel):
    """A case as separate fields (what the web form sends), as free text, or as a whole Case JSON."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    master: str | None = Field(default=None, description="master id (or its model id shicheng-<id>); none = generic")
    task: Task = Task.full_chain
    case: Case | None = None
    visit_index: int = Field(default=-1, description="which visit of `case` to answer (0-based; -1 = last)")
    sex: Literal["male", "female", "unknown", "男", "女"] | None = None
    age: float | None = Field(default=None, ge=0, le=130)
    pregnant: bool | None = None
    chief_complaint: str | None = Field(default=None, max_length=MAX_FIELD_CHARS)
    present_illness: str | None = Field(default=None, max_length=MAX_FIELD_CHARS)
    history: str | None = Field(default=None, max_length=MAX_FIELD_CHARS)
    tongue: str | None = Field(default=None, max_length=MAX_FIELD_CHARS)
    pulse: str | None = Field(default=None, max_length=MAX_FIELD_CHARS)
    text: str | None = Field(default=None, max_length=MAX_FIELD_CHARS, description="free-text case description")
    previous_prescription: str | None = Field(
        default=None, max_length=MAX_FIELD_CHARS, description="follow-up visit: the prescription the patient took")
    max_tokens: int = Field(default=1024, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _not_empty(self) -> ConsultRequest:
        if self.case is not None:
            return self  # the agent checks the chosen visit (ConsultError -> 422)
        if not any((self.chief_complaint, self.present_illness, self.tongue, self.pulse, self.text)):
            raise ValueError("empty case: give at least one of chief_complaint, present_illness, tongue, pulse, "
                             "text, or a whole `case`")
        return self


__all__ = ["MAX_FIELD_CHARS", "MAX_NEW_TOKENS", "ChatMessage", "ChatRequest", "ConsultRequest"]
