"""The llama.cpp backend behind the Backend interface: chosen for a .gguf path, its masters, streaming, options."""

from __future__ import annotations

import shutil

import pytest

from shicheng.agent import Backend, GenerationOptions, PromptTooLong, load_masters, make_backend
from shicheng.agent.backends import backend_class, check_prompt_fits
from shicheng.agent.backends.llamacpp import LlamaCppBackend
from shicheng.deploy.metadata import beside_masters_path
from tests.helpers.deploy import training_conversations

pytestmark = pytest.mark.usefixtures("torch_one_thread")

MESSAGES = [{"role": "user", "content": "患者男，45岁。主诉：胃脘冷痛三年。舌淡胖，苔白滑，脉沉细。"}]


@pytest.fixture(scope="module")
def llama(trained_ggufs):
    backend = make_backend(trained_ggufs["f16"], n_threads=1)
    yield backend
    backend.close()


def test_a_gguf_path_picks_the_llamacpp_backend(trained_ggufs, trained_model_dir):
    assert backend_class("model.gguf") is LlamaCppBackend and backend_class("M.GGUF", "llamacpp") is LlamaCppBackend
    with pytest.raises(ValueError, match=r"a \.gguf file needs --backend llamacpp"):
        backend_class("model.gguf", "transformers")
    with pytest.raises(ValueError, match=r"the llamacpp backend loads a \.gguf file"):
        backend_class(str(trained_model_dir), "llamacpp")
    with pytest.raises(ValueError, match="use auto, transformers, llamacpp, openai"):
        backend_class("model.gguf", "vllm")
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        make_backend(trained_model_dir / "missing.gguf")


def test_masters_come_from_beside_the_file_or_from_inside_it(trained_ggufs, trained_model_dir, tmp_path):
    expected = load_masters(trained_model_dir)
    assert len(expected) == 5 and load_masters(trained_ggufs["f16"]) == expected
    alone = tmp_path / "alone.gguf"
    shutil.copyfile(trained_ggufs["f16"], alone)
    assert not beside_masters_path(alone).exists()
    assert load_masters(alone) == expected  # from the shicheng.masters metadata
    first = sorted(expected)[0]
    beside_masters_path(alone).write_text(f'[{expected[first].model_dump_json()}]', encoding="utf-8")
    assert list(load_masters(alone)) == [first]  # an edited beside file wins
    beside_masters_path(alone).write_text("[{", encoding="utf-8")
    with pytest.raises(ValueError, match=r"alone\.masters\.json: not valid JSON"):
        load_masters(alone)
    assert load_masters(tmp_path / "missing.gguf") == {}


def test_generate_and_stream_agree(llama):
    assert isinstance(llama, Backend) and llama.context_length == 4096
    whole = llama.generate(MESSAGES, max_new_tokens=40)
    assert whole.prompt_tokens == llama.count_prompt_tokens(MESSAGES) > 10
    assert 1 <= whole.completion_tokens <= 40 and whole.text
    assert 0 < whole.first_token_s <= whole.seconds
    stream = llama.stream(MESSAGES, max_new_tokens=40)
    pieces = list(stream)
    assert len(pieces) > 1 and "".join(pieces) == whole.text == stream.result.text
    assert stream.result.completion_tokens == whole.completion_tokens
    batch = llama.generate_batch([MESSAGES, training_conversations()[1][:-1]], max_new_tokens=12)
    assert batch[0].text == llama.generate(MESSAGES, max_new_tokens=12).text and len(batch) == 2
    assert llama.generate_batch([]) == []


def test_a_stream_closed_early_frees_the_model(llama):
    stream = llama.stream(MESSAGES, max_new_tokens=200)
    next(stream)
    stream.close()
    assert llama.generate(MESSAGES, max_new_tokens=4).completion_tokens >= 1  # the lock was released


def test_options_are_applied(llama):
    conversation = training_conversations()[0][:-1]
    taught = llama.generate_ids(conversation, max_new_tokens=600, repetition_penalty=1.0, no_repeat_ngram_size=0)
    assert llama.is_eog(taught[-1]) and len(taught) < 500
    n = len(taught) + 20
    longer = llama.generate_ids(conversation, max_new_tokens=n, min_new_tokens=n, repetition_penalty=1.0,
                                no_repeat_ngram_size=0)
    assert len(longer) == n and not any(llama.is_eog(t) for t in longer)
    prompt = llama.prompt_ids(conversation)
    unique = llama.generate_ids(conversation, max_new_tokens=30, no_repeat_ngram_size=1)
    assert len(set(unique)) == len(unique) and not set(unique) & set(prompt)  # no 1-gram seen before, prompt too
    sampled = llama.generate(MESSAGES, max_new_tokens=16, temperature=0.8, top_p=0.9)
    assert 1 <= sampled.completion_tokens <= 16
    assert llama.check_options(GenerationOptions(no_repeat_ngram_size=8)).no_repeat_ngram_size == 8
    with pytest.raises(TypeError, match="unknown generation options"):
        llama.generate(MESSAGES, beam_width=4)


def test_prompt_too_long_for_the_context(trained_ggufs):
    with LlamaCppBackend(trained_ggufs["q8_0"], n_ctx=256, n_threads=1) as small:  # llama.cpp's least
        assert small.context_length == 256
        prompt = small.count_prompt_tokens(MESSAGES)
        check_prompt_fits(small, MESSAGES, max_new_tokens=256 - prompt)
        with pytest.raises(PromptTooLong, match="exceed the model's context of 256 tokens"):
            check_prompt_fits(small, MESSAGES, max_new_tokens=257 - prompt)
        short = [{"role": "user", "content": "胃痛"}]
        result = small.generate(short, max_new_tokens=400, repetition_penalty=1.0, no_repeat_ngram_size=0,
                                min_new_tokens=390)
        assert result.prompt_tokens + result.completion_tokens == 256  # stops at the end of the context
    with pytest.raises(RuntimeError, match="is closed"):
        small.generate(short, max_new_tokens=2)
