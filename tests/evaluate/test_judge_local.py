"""A local transformers judge with xgrammar-constrained decoding: a tiny random-weight Qwen2 model, whose
text is noise, still returns a verdict that validates, every time, greedy or sampled.

The model is built here rather than taken from conftest's `tiny_model_dir`: its tokenizer is trained on
the judge prompts themselves, so a prompt is ~800 tokens instead of ~4800 (byte pieces), and a verdict
takes a fraction of a second on one CPU thread.
"""

from __future__ import annotations

import functools
import json
import re

import pytest

from shicheng.evaluate.judge import judge_predictions
from shicheng.evaluate.judge_backends import JudgeRequest
from shicheng.evaluate.judge_cache import VerdictCache
from shicheng.evaluate.judge_local import TransformersJudge, max_reply_bytes
from shicheng.evaluate.judge_plan import plan_row, read_row
from shicheng.evaluate.rubric import load_rubric
from tests.helpers import judge_data as data
from tests.helpers.judge_server import fill_schema

pytestmark = pytest.mark.usefixtures("torch_one_thread")

# The shipped rubric with a shorter rationale: fewer tokens to decode, the same items and bounds.
RUBRIC = load_rubric().model_copy(update={"rationale_max_chars": 30})
ROWS = [data.row(data.GOOD), data.row(data.PARTIAL, system="stage-4"), data.row(data.GOOD, case_id="judge-c"),
        data.row("脾胃虚寒证，兼气滞。", task="syndrome", system="prose")]


@functools.lru_cache(maxsize=1)
def requests() -> tuple[JudgeRequest, ...]:
    cases, masters = data.cases(), data.masters()
    plans = [plan_row(read_row(r, i), cases[r["case_id"]], masters[r["master"]], RUBRIC, "auto") for i, r in enumerate(ROWS)]
    return tuple(p.request for p in plans)


@pytest.fixture(scope="module")
def tiny_backend(torch_one_thread):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from shicheng.agent.backends import TransformersBackend
    from shicheng.train.tokenizer import configure_chat_tokens, train_demo_tokenizer

    texts = [m["content"] for req in requests() for m in req.messages]
    texts += [json.dumps(fill_schema(req.schema), ensure_ascii=False) for req in requests()]
    tokenizer = train_demo_tokenizer(texts * 2, vocab_size=3000)
    config = Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=128, vocab_size=len(tokenizer), tie_word_embeddings=True,
                         max_position_embeddings=8192, initializer_range=0.3)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    configure_chat_tokens(tokenizer, model)
    return TransformersBackend.from_model(model, tokenizer, name="tiny-judge")


def _strictly_valid(raw: str, req: JudgeRequest) -> dict:
    """The reply is bare, strict JSON (no wrapping, no raw control characters), validates, and keeps the
    schema's property order. The rationale's length is not checked in characters: xgrammar lets overlong
    UTF-8 through, which decodes as up to three U+FFFD per character (judge_local.py)."""
    verdict = json.loads(raw)  # strict=True: a raw control character would fail here
    req.validator.model_validate(verdict)
    assert list(verdict) == list(req.schema["properties"])
    assert re.fullmatch(r"[^\x00-\x1f]*", verdict["rationale"])
    return verdict


def test_every_greedy_verdict_validates(tiny_backend):
    judge = TransformersJudge(tiny_backend, batch_size=3)
    reqs = requests()
    outcomes = dict(judge.judge_many(reqs))
    assert sorted(outcomes) == list(range(len(reqs)))
    for i, out in outcomes.items():
        assert out.status == "ok" and out.attempts == 1, out.error
        verdict = _strictly_valid(out.raw, reqs[i])
        assert verdict == out.verdict or json.loads(json.dumps(out.verdict)) == out.verdict
        assert out.prompt_tokens > 0 and out.completion_tokens > 0


def test_every_sampled_verdict_validates(tiny_backend):
    import torch

    judge = TransformersJudge(tiny_backend, temperature=1.5, batch_size=4)
    reqs = requests()
    for seed in range(2):
        torch.manual_seed(seed)
        for i, out in judge.judge_many(reqs):
            assert out.status == "ok", (seed, i, out.error, out.raw)
            _strictly_valid(out.raw, reqs[i])


def test_judge_predictions_with_the_local_judge_scores_every_row_and_caches(tiny_backend, tmp_path):
    judge = TransformersJudge(tiny_backend, batch_size=4)
    verdicts = judge_predictions(ROWS, data.cases(), [judge], RUBRIC, masters=data.masters(), cache_dir=tmp_path,
                                 progress=False)
    assert [v.status for v in verdicts] == ["scored"] * 4 and all(v.judge_called for v in verdicts)
    assert [v.mode for v in verdicts] == ["reference", "reference", "reference_free", "reference"]
    for v in verdicts:
        assert 0 <= v.total <= v.max_total and v.judge == "tiny-judge"
    # Hybrid: our herb points stand whatever the noise said (GOOD: 9; PARTIAL: 7.2).
    herb = [next(c for it in v.items for c in it.criteria if c.key == "herb_match") for v in verdicts[:2]]
    assert [c.points for c in herb] == pytest.approx([9.0, 7.2])
    assert VerdictCache(tmp_path).bad_lines == 0 and len(VerdictCache(tmp_path)) == 4
    again = judge_predictions(ROWS, data.cases(), [judge], RUBRIC, masters=data.masters(), cache_dir=tmp_path,
                              progress=False)
    assert all(v.cached for v in again) and [v.total for v in again] == [v.total for v in verdicts]


def test_a_budget_below_the_schema_bound_is_recorded_unscored_not_zero(tiny_backend, tmp_path):
    judge = TransformersJudge(tiny_backend, max_new_tokens=12, max_attempts=2)
    [v] = judge_predictions(ROWS[:1], data.cases(), [judge], RUBRIC, masters=data.masters(), cache_dir=tmp_path,
                            progress=False)
    assert v.status == "unscored" and v.total is None and "not valid JSON" in v.reason
    assert v.attempts == 2 and len(v.errors) == 2


def test_the_reply_bound_covers_every_node_and_refuses_unbounded_schemas():
    schema = RUBRIC.verdict_schema(RUBRIC.items, "reference")
    worst = fill_schema(schema, share=1.0)
    worst["rationale"] = "\u00e9" * 30
    assert len(json.dumps(worst, ensure_ascii=False).encode()) <= max_reply_bytes(schema)
    with pytest.raises(ValueError, match="no length bound"):
        max_reply_bytes({"type": "string"})
    with pytest.raises(ValueError, match="no length bound"):
        max_reply_bytes({"type": "array", "items": {"type": "integer", "maximum": 3}})
