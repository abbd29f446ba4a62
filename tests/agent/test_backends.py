"""Generation backends: the tiny local model through transformers, and the loopback OpenAI-compatible server."""

from __future__ import annotations

import json
import threading
import time

import pytest

from shicheng.agent import (
    Backend,
    GenerationOptions,
    OpenAIBackend,
    TransformersBackend,
    UnsupportedOption,
    load_masters,
    make_backend,
)
from shicheng.agent.backends import check_prompt_fits
from shicheng.demo import load_demo_masters

pytestmark = pytest.mark.usefixtures("torch_one_thread")

MESSAGES = [{"role": "system", "content": "你是一名中医临床辅助决策助手。"},
            {"role": "user", "content": "患者男，45岁。主诉：胃脘冷痛三年。舌淡胖，苔白滑，脉沉细。"}]
OTHER = [MESSAGES[0], {"role": "user", "content": "失眠多梦半年。"}]


@pytest.fixture(scope="module")
def local(tiny_model_dir) -> TransformersBackend:
    return TransformersBackend(tiny_model_dir, device="cpu")


def test_generate_returns_text_and_token_counts(local):
    result = local.generate(MESSAGES, max_new_tokens=24)
    assert isinstance(local, Backend)
    prompt = local.tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert result.prompt_tokens == len(local.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert 1 <= result.completion_tokens <= 24
    assert isinstance(result.text, str) and result.text
    assert 0 < result.first_token_s <= result.seconds


def test_stream_deltas_concatenate_to_generate_text(local):
    whole = local.generate(MESSAGES, max_new_tokens=40)
    stream = local.stream(MESSAGES, max_new_tokens=40)
    pieces = list(stream)
    assert len(pieces) > 1
    assert "".join(pieces) == whole.text
    assert stream.result.text == whole.text
    assert stream.result.completion_tokens == whole.completion_tokens
    assert stream.result.prompt_tokens == whole.prompt_tokens


def test_generate_batch_left_pads_and_matches_single_answers(local):
    batch = local.generate_batch([MESSAGES, OTHER], max_new_tokens=16)
    assert [r.text for r in batch] == [local.generate(m, max_new_tokens=16).text for m in (MESSAGES, OTHER)]
    assert batch[0].prompt_tokens > batch[1].prompt_tokens  # the padding is not counted
    assert local.generate_batch([]) == []


def test_closing_a_stream_early_stops_and_frees_the_model(local):
    stream = local.stream(MESSAGES, max_new_tokens=200)
    first = next(stream)
    assert first
    stream.close()
    assert not local._lock.locked()
    assert local.generate(MESSAGES, max_new_tokens=4).completion_tokens >= 1


def test_sampling_respects_max_new_tokens(local):
    result = local.generate(MESSAGES, max_new_tokens=12, temperature=0.8, top_p=0.9)
    assert 1 <= result.completion_tokens <= 12


def test_openai_backend_generate_and_stream(openai_server):
    answer = "<think>脾阳不足。</think>\n<output>\n## 辨证\n脾胃虚寒证。\n</output>"
    server = openai_server(lambda messages: answer, model="shicheng-test")
    backend = OpenAIBackend(server.url, "shicheng-test", timeout_s=10)
    result = backend.generate(MESSAGES, max_new_tokens=64)
    assert result.text == answer
    assert result.completion_tokens == len(answer)  # the loopback server counts characters as tokens
    assert result.prompt_tokens == sum(len(m["content"]) for m in MESSAGES)
    request = server.requests[-1]
    assert request["messages"] == MESSAGES and request["max_tokens"] == 64 and request["temperature"] == 0.0
    stream = backend.stream(MESSAGES, max_new_tokens=64)
    pieces = list(stream)
    assert len(pieces) > 1 and "".join(pieces) == answer
    assert stream.result.text == answer and stream.result.first_token_s is not None
    assert server.requests[-1]["stream"] is True
    assert server.calls == 2


def test_make_backend_chooses_by_model_string(tiny_model_dir, openai_server, tmp_path):
    server = openai_server(lambda messages: "ok")
    assert isinstance(make_backend(tiny_model_dir, device="cpu"), TransformersBackend)
    remote = make_backend(server.url, model_name="li-shouyang")
    assert isinstance(remote, OpenAIBackend) and remote.name == "li-shouyang"
    assert remote.generate(MESSAGES).text == "ok"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        make_backend(tmp_path / "no-such-model")
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        make_backend(tmp_path)
    with pytest.raises(ValueError, match="endpoint URL"):
        make_backend(tiny_model_dir, backend="openai")
    with pytest.raises(ValueError, match="--backend openai"):
        make_backend(server.url, backend="transformers")
    with pytest.raises(ValueError, match="unknown backend 'vllm'"):
        make_backend(tiny_model_dir, backend="vllm")


def test_load_masters_reads_masters_json(tiny_model_dir, tmp_path):
    masters = load_masters(tiny_model_dir)
    assert masters == load_demo_masters()
    assert load_masters(tmp_path) == {}
    assert load_masters("http://127.0.0.1:1/v1") == {}
    bad = tmp_path / "masters.json"
    bad.write_text("[{", encoding="utf-8")
    with pytest.raises(ValueError, match=r"masters\.json: not valid JSON"):
        load_masters(tmp_path)
    bad.write_text(json.dumps([{"id": "ok-id", "name": "甲", "school": "乙"}, {"id": "Bad Id", "name": "丙"}]),
                   encoding="utf-8")
    with pytest.raises(ValueError, match=r"master \[1\]: field 'id'.*field 'school'"):
        load_masters(bad)


def test_concurrent_callers_share_one_local_model(local):
    from concurrent.futures import ThreadPoolExecutor

    expected = local.generate(MESSAGES, max_new_tokens=12).text
    with ThreadPoolExecutor(max_workers=4) as pool:
        texts = list(pool.map(lambda i: local.generate(MESSAGES, max_new_tokens=12).text if i % 2
                              else "".join(local.stream(MESSAGES, max_new_tokens=12)), range(8)))
    assert texts == [expected] * 8


def test_endpoint_errors_surface(openai_server):
    from openai import APIStatusError

    from tests.helpers.openai_server import HTTPError

    def refuse(messages):
        raise HTTPError(503, "overloaded")

    backend = OpenAIBackend(openai_server(refuse).url, "m", timeout_s=5)
    with pytest.raises(APIStatusError, match="overloaded"):
        backend.generate(MESSAGES)


def test_backend_declares_every_method_and_both_backends_implement_it(local, openai_server):
    assert Backend.__abstractmethods__ == {"count_prompt_tokens", "generate", "generate_batch", "stream", "close"}

    class Partial(Backend):  # a backend that forgot generate_batch, stream and close
        name = "partial"

        def count_prompt_tokens(self, messages):
            return None

        def generate(self, messages, **options):
            raise NotImplementedError

    with pytest.raises(TypeError, match="generate_batch"):
        Partial()
    remote = OpenAIBackend(openai_server(lambda messages: "ok").url, "m", timeout_s=5)
    for backend in (local, remote):
        assert isinstance(backend, Backend) and backend.name
    assert local.context_length == 4096 and local.count_prompt_tokens(MESSAGES) > 10
    # An endpoint cannot count for us: it checks the prompt's length itself.
    assert remote.context_length is None and remote.count_prompt_tokens(MESSAGES) is None
    assert check_prompt_fits(remote, MESSAGES, 10**9) is None


def test_generation_options_are_checked_and_filled_from_the_defaults(local):
    with pytest.raises(ValueError, match=r"max_new_tokens must be at least 1.*top_p must lie in \(0, 1\]"):
        GenerationOptions(max_new_tokens=0, top_p=0.0)
    with pytest.raises(TypeError, match=r"unknown generation options \['beam_width'\]"):
        local.options(beam_width=4)
    assert local.options(max_new_tokens=8) == GenerationOptions(max_new_tokens=8)
    kw = local.generate_kwargs(local.options(repetition_penalty=1.15, no_repeat_ngram_size=3))
    assert (kw["repetition_penalty"], kw["no_repeat_ngram_size"], kw["do_sample"]) == (1.15, 3, False)
    # Left unset, the model's own generation config decides (nothing is passed).
    assert "repetition_penalty" not in local.generate_kwargs(local.options())
    seeded = TransformersBackend.from_model(local.model, local.tokenizer, name="seeded",
                                            defaults=GenerationOptions(max_new_tokens=5))
    assert seeded.generate(MESSAGES).completion_tokens <= 5


def test_repetition_options_change_what_the_local_model_writes(local):
    plain = local.generate(MESSAGES, max_new_tokens=40).text
    assert len(set(plain)) < len(plain)  # random weights repeat themselves: the options have work to do
    penalised = local.generate(MESSAGES, max_new_tokens=40, repetition_penalty=10.0).text
    blocked = local.generate_batch([MESSAGES], max_new_tokens=40, no_repeat_ngram_size=1)[0].text
    assert penalised != plain and blocked != plain
    assert "".join(local.stream(MESSAGES, max_new_tokens=40, repetition_penalty=10.0)) == penalised


def test_openai_generate_batch_is_concurrent_within_its_bound_and_keeps_the_order(openai_server):
    lock, running, peak = threading.Lock(), [0], [0]

    def slow_echo(messages):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        return "答：" + messages[-1]["content"]

    server = openai_server(slow_echo)
    backend = OpenAIBackend(server.url, "m", timeout_s=10, concurrency=2)
    conversations = [[{"role": "user", "content": f"病例{i}"}] for i in range(5)]
    results = backend.generate_batch(conversations, max_new_tokens=16)
    assert [r.text for r in results] == [f"答：病例{i}" for i in range(5)]
    assert peak[0] == 2 and server.calls == 5
    assert backend.generate_batch([]) == []
    with pytest.raises(ValueError, match="concurrency must be at least 1"):
        OpenAIBackend(server.url, "m", concurrency=0)


def test_openai_backend_sends_what_vllm_reads_and_refuses_ngram_blocking(openai_server):
    server = openai_server(lambda messages: "ok")
    backend = OpenAIBackend(server.url, "m", timeout_s=5)
    backend.generate(MESSAGES, max_new_tokens=32)
    assert "repetition_penalty" not in server.requests[-1] and "min_tokens" not in server.requests[-1]
    backend.generate_batch([MESSAGES], max_new_tokens=32, repetition_penalty=1.15, min_new_tokens=4,
                           no_repeat_ngram_size=0)
    sent = server.requests[-1]
    assert (sent["repetition_penalty"], sent["min_tokens"], sent["max_tokens"]) == (1.15, 4, 32)
    before = server.calls
    for call in (backend.generate, backend.generate_batch, backend.stream):
        with pytest.raises(UnsupportedOption, match="no_repeat_ngram_size=3"):
            call([MESSAGES] if call == backend.generate_batch else MESSAGES, no_repeat_ngram_size=3)
    assert server.calls == before  # refused before anything was sent
    with pytest.raises(UnsupportedOption):
        OpenAIBackend.check_options(GenerationOptions(no_repeat_ngram_size=8))
    assert TransformersBackend.check_options(GenerationOptions(no_repeat_ngram_size=8)).no_repeat_ngram_size == 8


def test_a_closed_backend_refuses_to_generate(tiny_model_dir, openai_server):
    with TransformersBackend(tiny_model_dir, device="cpu") as local:
        assert local.generate(MESSAGES, max_new_tokens=2).completion_tokens >= 1
    with pytest.raises(RuntimeError, match="is closed"):
        local.generate(MESSAGES, max_new_tokens=2)
    with pytest.raises(RuntimeError, match="is closed"):
        local.stream(MESSAGES, max_new_tokens=2)
    local.close()  # closing twice is harmless
    with OpenAIBackend(openai_server(lambda messages: "ok").url, "m", timeout_s=5) as remote:
        assert remote.generate(MESSAGES).text == "ok"
    with pytest.raises(RuntimeError, match="backend m is closed"):
        remote.generate(MESSAGES)
