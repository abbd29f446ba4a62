"""The clinical agent: ask a trained model as a master would be asked, read and safety-check its answer.

Backends (a local transformers model, or any OpenAI-compatible endpoint such as vLLM) are chosen by a
setting; consultations build their prompts with shicheng.prompts, exactly as training did.
"""

from shicheng.agent.backends import (
    Backend,
    GenerationResult,
    OpenAIBackend,
    TextStream,
    TransformersBackend,
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
    read_consultation,
    resolve_master,
)

__all__ = [
    "Backend", "ConsultError", "Consultation", "GenerationResult", "OpenAIBackend", "TextStream",
    "TransformersBackend", "case_from_text", "consult", "consult_messages", "consult_stream", "is_url",
    "load_case", "load_masters", "make_backend", "read_consultation", "resolve_master",
]
