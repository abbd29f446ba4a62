"""The clinical agent: ask a trained model as a master would be asked, read and safety-check its answer.

Backends (a local transformers model, or any OpenAI-compatible endpoint such as vLLM) are chosen by a
setting; consultations build their prompts with shicheng.prompts, exactly as training did.
"""

from shicheng.agent.backends import (
    Backend,
    BackendUnavailable,
    GenerationOptions,
    GenerationResult,
    OpenAIBackend,
    PromptTooLong,
    TextStream,
    TransformersBackend,
    UnsupportedOption,
    is_url,
    load_masters,
    make_backend,
)
from shicheng.agent.consult import (
    Consultation,
    ConsultError,
    case_from_text,
    consult,
    consult_messages,
    consult_stream,
    load_case,
    read_case_file,
    read_consultation,
    read_text_case,
    resolve_master,
    with_previous_prescription,
)

__all__ = [
    "Backend", "BackendUnavailable", "ConsultError", "Consultation", "GenerationOptions", "GenerationResult",
    "OpenAIBackend", "PromptTooLong", "TextStream", "TransformersBackend", "UnsupportedOption", "case_from_text",
    "consult", "consult_messages", "consult_stream", "is_url", "load_case", "load_masters", "make_backend",
    "read_case_file", "read_consultation", "read_text_case", "resolve_master", "with_previous_prescription",
]
