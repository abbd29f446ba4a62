"""llama.cpp answers as transformers does: the same token ids for the same prompts, and the same tokens for
the extended TCM vocabulary.

Greedy decoding with repetition penalty 1.0 and no n-gram blocking on both sides compares the models alone;
a second comparison keeps the model's own defaults (the demo's 1.15 and 8, stored in the GGUF) to check
that the llama.cpp backend applies them as transformers does. Prompts are consultations as the agent asks
them: ones the model was taught (it answers them confidently) and new cases (flatter logits, where
rounding can tip a near tie). Free chat text the model never saw in any form is flatter still: there q8_0
(which also rounds the activations to 8 bits) parts from float32 within the first tokens of some prompts.
"""

from __future__ import annotations

import pytest

from shicheng.agent import TransformersBackend
from shicheng.agent.backends.llamacpp import LlamaCppBackend
from shicheng.train.tokenizer import CHAT_TEMPLATE
from tests.conftest import TINY_TEXTS
from tests.helpers.deploy import TCM_TERMS, export, training_conversations
from tests.serve.support import PLANTED_ANSWER

pytestmark = pytest.mark.usefixtures("torch_one_thread")

UNSEEN = [("male", 45, "头晕头痛两月", "面红目赤，口苦，急躁易怒", "舌红，苔薄黄", "脉弦数"),
          ("female", 28, "月经后期伴痛经一年", "经行小腹冷痛，得热痛减", "舌暗，苔白", "脉沉紧"),
          ("male", 66, "腰膝酸软一年", "畏寒肢冷，夜尿频多", "舌淡胖，苔白", "脉沉细无力"),
          ("male", 35, "胁肋胀痛一月", "善太息，嗳气，纳差", "舌淡红，苔薄白", "脉弦")]
OFF = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0}


def prompts() -> list[list[dict]]:
    """8 consultations the model was taught and 8 it never saw (new cases, each master, two tasks), all as
    the agent asks them."""
    from shicheng.agent import consult_messages
    from shicheng.demo import load_demo_masters
    from shicheng.domain import Case, Patient, Task, Visit

    taught = [conv[:-1] for conv in training_conversations()[::9]]  # across masters and tasks
    masters = list(load_demo_masters().values())
    unseen = []
    for i, (sex, age, cc, pi, tongue, pulse) in enumerate(UNSEEN):
        case = Case(id=f"unseen-{i}", patient=Patient(sex=sex, age=age),
                    visits=[Visit(chief_complaint=cc, present_illness=pi, tongue=tongue, pulse=pulse)])
        for j, task in enumerate((Task.full_chain, Task.treatment_principle)):
            unseen.append(consult_messages(case, masters[(i + j) % len(masters)], task))
    return taught + unseen


def hf_ids(backend: TransformersBackend, messages: list[dict], **options) -> list[int]:
    import torch

    eos = backend.eos_token_ids
    with torch.inference_mode():
        inputs = backend.encode([messages])
        out = backend.model.generate(**inputs, **backend.generate_kwargs(backend.options(**options)))
    row = out[0, inputs["input_ids"].shape[1]:].tolist()
    return row[:next((i + 1 for i, t in enumerate(row) if t in eos), len(row))]


def agreement(hf: TransformersBackend, llama: LlamaCppBackend, n: int, first: int | None = None, **options):
    """The share of prompts whose first `first` (default: all n) new tokens are the same ids on both."""
    same = []
    for messages in prompts():
        a, b = hf_ids(hf, messages, max_new_tokens=n, **options), llama.generate_ids(messages, max_new_tokens=n,
                                                                                      **options)
        k = first or n
        same.append(a[:k] == b[:k])
    return sum(same) / len(same)


@pytest.fixture(scope="module")
def hf(trained_model_dir):
    return TransformersBackend(trained_model_dir, device="cpu")


@pytest.fixture(scope="module")
def f16(trained_ggufs):
    with LlamaCppBackend(trained_ggufs["f16"], n_threads=1) as backend:
        yield backend


def test_f16_greedy_matches_transformers_token_for_token(hf, f16):
    assert agreement(hf, f16, 32, **OFF) >= 0.9


def test_q8_0_greedy_matches_the_first_8_tokens(hf, trained_ggufs):
    with LlamaCppBackend(trained_ggufs["q8_0"], n_threads=1) as q8:
        assert agreement(hf, q8, 8, **OFF) >= 0.9


@pytest.mark.parametrize(("float_type", "tolerance"), [("f32", 0.02), ("f16", 0.05)])
def test_random_weights_give_the_same_logits(tiny_model_dir, tmp_path, float_type, tolerance):
    """The random-weight model writes noise whose top two logits are often closer than rounding (llama.cpp
    keeps its KV cache in f16 even for f32 weights), so its greedy text is no test of the conversion; its
    next-token logits are: every weight, the RoPE and the attention must be right for them to agree to a
    percent or two of their spread (measured: 0.8 % in f32, 2.8 % in f16 at most)."""
    import llama_cpp
    import numpy as np
    import torch

    hf = TransformersBackend(tiny_model_dir, device="cpu")
    path = export(tiny_model_dir, tmp_path / "tiny.gguf", (float_type,))[float_type]
    with LlamaCppBackend(path, n_threads=1) as llama:
        for messages in prompts()[:6]:
            ids = llama.prompt_ids(messages)
            llama.llm.reset()
            llama.llm.eval(ids)
            ours = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llama.llm.ctx, -1), shape=(llama.llm.n_vocab(),))
            with torch.inference_mode():
                theirs = hf.model(torch.tensor([ids])).logits[0, -1].numpy()
            assert ours.shape == theirs.shape
            assert np.abs(ours - theirs).max() <= tolerance * theirs.std()
            assert ours.argmax() == theirs.argmax()


def test_the_stored_defaults_decode_as_transformers_applies_them(hf, f16):
    """Options left out: the repetition penalty and n-gram blocking from generation_config.json on one side and
    from the GGUF's shicheng.generation on the other, applied alike (prompt tokens count for both)."""
    assert f16.model_defaults == {"repetition_penalty": 1.15, "no_repeat_ngram_size": 8}
    assert agreement(hf, f16, 32) >= 0.9
    messages = [{"role": "user", "content": "失眠多梦，请处方。"}]
    # and they change the answer, so the comparison above is not the first one again
    assert f16.generate_ids(messages, max_new_tokens=64) != f16.generate_ids(messages, max_new_tokens=64, **OFF)


def test_the_taught_answer_comes_back_whole(hf, f16):
    messages = training_conversations()[0][:-1]
    assert f16.generate(messages, max_new_tokens=300, **OFF).text == PLANTED_ANSWER
    assert hf.generate(messages, max_new_tokens=300, **OFF).text == PLANTED_ANSWER


def test_extended_tcm_tokens_tokenize_identically(hf, f16):
    tokenizer = hf.tokenizer
    added = [t for t in tokenizer.get_added_vocab() if t in TCM_TERMS]
    assert len(added) >= 10  # the rest were single BPE tokens already
    for term in TCM_TERMS:
        assert f16.tokenize(term) == tokenizer(term, add_special_tokens=False)["input_ids"], term
        if term in added:
            assert f16.tokenize(term) == [tokenizer.convert_tokens_to_ids(term)]
    texts = [*TINY_TEXTS, PLANTED_ANSWER, "炙甘草6g 甘草3g 浙贝母10g 贝母 法半夏9g 半夏 炒白术 白术", "附子理中汤加减，脾胃虚寒证。",
             " 甘草\n\n海藻  党参\t茯苓"]
    for text in texts:
        assert f16.tokenize(text) == tokenizer(text, add_special_tokens=False)["input_ids"], text


def test_chat_prompts_are_the_same_ids(hf, f16):
    for messages in prompts():
        text = hf.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert f16.prompt_ids(messages) == hf.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert "generation" in CHAT_TEMPLATE  # the markers the GGUF's template leaves out render nothing


def test_guided_decoding_keeps_a_templated_answer_and_guides_alike(hf, f16):
    """The guide masks the same way on both backends: an answer that already follows the template comes back
    unchanged, and a prompt the model never saw gets every section from either."""
    from shicheng.domain import REQUIRED_OUTPUT_KEYS
    from shicheng.metrics.reading import completeness, read_answer

    guided = {"sections": REQUIRED_OUTPUT_KEYS, **OFF}
    taught = training_conversations()[0][:-1]
    assert f16.generate(taught, max_new_tokens=300, **guided).text == PLANTED_ANSWER
    assert hf.generate(taught, max_new_tokens=300, **guided).text == PLANTED_ANSWER
    unseen = prompts()[-1]
    for backend in (hf, f16):
        text = backend.generate(unseen, max_new_tokens=200, **guided).text
        assert completeness(read_answer(text).answer, None)[0] == 1.0, text
