"""The stage comparison through a Backend: a tiny local model and a loopback OpenAI-protocol endpoint that
writes the same texts get the same scores; the endpoint that writes the gold answers scores as the gold."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from shicheng.agent import GenerationOptions, TransformersBackend, UnsupportedOption
from shicheng.cli import app as shicheng_app
from shicheng.curate.pipeline import curate
from shicheng.demo import generate_demo
from shicheng.evaluate.compare import SCORES, compare_stages, generate_answers, gold_text, read_stage_rows

pytestmark = pytest.mark.usefixtures("torch_one_thread")
LIMIT = 6
DECODING = {"max_new_tokens": 24, "repetition_penalty": 1.15, "no_repeat_ngram_size": 0}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    generate_demo(root / "materials", seed=3, n_cases=40)
    curate([root / "materials"], root / "data", seed=3, show_progress=False)
    return root / "data"


def replaying(texts_by_user_turn: dict[str, str]):
    """An endpoint reply: the text recorded for the prompt's user turn."""
    return lambda messages: texts_by_user_turn[messages[-1]["content"]]


def test_local_model_and_endpoint_score_the_same_texts_the_same(data_dir, tiny_model_dir, openai_server):
    rows = read_stage_rows(data_dir, "test", LIMIT)
    assert len(rows) == LIMIT and len({r["master_id"] for r in rows}) > 1
    options = GenerationOptions(temperature=0.0, **DECODING)
    with TransformersBackend(tiny_model_dir, device="cpu") as local:
        texts = generate_answers(local, [r["prompt"] for r in rows], options, batch_size=4, show_progress=False)
    server = openai_server(replaying({r["prompt"][-1]["content"]: t for r, t in zip(rows, texts, strict=True)}))
    result = compare_stages(data_dir, [tiny_model_dir, server.url], limit=LIMIT, batch_size=4, show_progress=False,
                            model_name="shicheng-test", device="cpu", **DECODING)
    by_dir, by_url = result["models"][str(tiny_model_dir)], result["models"][server.url]
    assert (by_dir["backend"], by_url["backend"]) == ("TransformersBackend", "OpenAIBackend")
    assert by_dir["sample"] == by_url["sample"] == texts[0][:600]
    for key in (*SCORES, "n", "attribution_per_master"):
        assert by_dir[key] == by_url[key], key
    # Every system was asked with the one decoding, the endpoint included.
    assert server.calls == LIMIT
    for sent in server.requests:
        assert (sent["temperature"], sent["max_tokens"], sent["repetition_penalty"]) == (0.0, 24, 1.15)
        assert sent["model"] == "shicheng-test"
    assert result["decoding"] | {"greedy": True} == result["decoding"]
    assert result["decoding"]["repetition_penalty"] == 1.15 and result["decoding"]["no_repeat_ngram_size"] == 0


def test_an_endpoint_writing_the_gold_answers_scores_as_the_gold(data_dir, openai_server):
    rows = read_stage_rows(data_dir, "test")
    server = openai_server(replaying({r["prompt"][-1]["content"]: gold_text(r) for r in rows}))
    result = compare_stages(data_dir, [server.url], show_progress=False, **DECODING)
    gold, endpoint = result["gold_answers"], result["models"][server.url]
    assert gold["n"] == endpoint["n"] == len(rows)
    assert {k: endpoint[k] for k in SCORES} == {k: gold[k] for k in SCORES}
    # The gold answers are well formed and name exactly the gold herbs.
    assert gold["format"] == 1.0 and gold["herb_f1"] == 1.0 and gold["syndrome_f1"] == 1.0
    assert 0.0 < gold["master_attribution"] <= 1.0


def test_an_endpoint_cannot_block_ngrams_and_nothing_generates(data_dir, tiny_model_dir, openai_server):
    server = openai_server(lambda messages: "ok")
    with pytest.raises(UnsupportedOption, match="no_repeat_ngram_size=8"):
        compare_stages(data_dir, [tiny_model_dir, server.url], limit=2, show_progress=False)
    assert server.calls == 0
    with pytest.raises(FileNotFoundError, match="no stage-5 valid split"):
        compare_stages(data_dir, [server.url], split="valid", no_repeat_ngram_size=0, show_progress=False)


def test_compare_stages_command(data_dir, openai_server, tmp_path):
    rows = read_stage_rows(data_dir, "test", 3)
    server = openai_server(replaying({r["prompt"][-1]["content"]: gold_text(r) for r in rows}))
    out = tmp_path / "compare.json"
    args = ["compare-stages", "--data", str(data_dir), "--model", server.url, "--limit", "3", "--out", str(out)]
    refused = CliRunner().invoke(shicheng_app, args)
    assert refused.exit_code == 2 and "no_repeat_ngram_size=8" in refused.output
    result = CliRunner().invoke(shicheng_app, [*args, "--no-repeat-ngram", "0"])
    assert result.exit_code == 0, result.output
    assert "gold answers" in result.output and "stage comparison on test (3 prompts)" in result.output
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written["models"][server.url]["herb_f1"] == written["gold_answers"]["herb_f1"] == 1.0
