"""Section-guided decoding: whatever the model prefers, the answer has the task's sections, in order, once."""

from __future__ import annotations

import random

import pytest

from shicheng.domain import REQUIRED_OUTPUT_KEYS, Task
from shicheng.guide import (
    RESERVE,
    SectionGuide,
    Step,
    TorchSectionGuide,
    apply_step,
    heading_lines,
    token_bytes,
)
from shicheng.metrics.reading import completeness, read_answer, required_sections
from shicheng.template import parse_answer

END = 0
# A small byte vocabulary that can break every rule: headings of its own, tags anywhere, blank lines, the end,
# and a character split over two byte tokens.
VOCAB = [b"", b"\n", b"\n\n", b"#", b"##", b"## ", b" ", b"\xe8", b"\xbe\xa8", "辨证".encode(), "处方".encode(),
         "气虚".encode(), "附子9g".encode(), "。".encode(), b"<think>", b"</think>", b"<output>", b"</output>",
         "\n## 辨证\n".encode(), "。\n\n## 医嘱".encode(), b"</", b"output>", "## 病因病机\n脾虚".encode(),
         "\n1. 若".encode(), "加减".encode(), *(bytes([b]) for b in range(256) if b not in b"\n #")]


def decode(guide: SectionGuide, prefer, budget: int) -> bytes:
    """Greedy decoding over VOCAB: `prefer(step, text)` scores the tokens, the guide masks them."""
    import numpy as np

    text = b""
    for step in range(budget):
        scores = np.array(prefer(step, text), dtype=float)
        guide.mask_row(text, scores, budget - step)
        token = int(scores.argmax())
        if token == END:
            break
        text += VOCAB[token]
    return text


@pytest.mark.parametrize("task", [Task.full_chain, Task.syndrome, Task.prescription, Task.modification])
def test_random_preferences_always_give_every_section_in_order(task):
    import numpy as np

    sections = required_sections(task)
    guide = SectionGuide(VOCAB, [END], sections)
    for seed in range(60):
        rng = np.random.default_rng(seed)
        opening = np.zeros(len(VOCAB))
        if seed % 2 == 0:  # half the answers open with <think>, as the full-chain training answers do
            opening[VOCAB.index(b"<think>")] = 8.0

        def prefer(step, text, rng=rng, opening=opening):
            return rng.normal(size=len(VOCAB)) + (opening if step == 0 else 0.0)

        # a random choice can leave half a character behind another token: the model's text, not the guide's
        text = decode(guide, prefer, budget=40 + RESERVE * (len(sections) + 2)).decode("utf-8", "replace")
        parsed = parse_answer(text)
        share, missing = completeness(parsed.answer, task)
        assert share == 1.0, (seed, missing, text)
        assert parsed.output_closed and not parsed.trailing and not parsed.duplicates, text
        order = [k for k in parsed.found if k in sections]
        assert order == list(sections), (seed, order)


def test_a_model_that_wants_to_stop_or_close_early_is_kept_writing():
    wants = [VOCAB.index(t) for t in (b"", b"</output>", b"</", b"\n\n")]

    def prefer(step, text):
        scores = [0.0] * len(VOCAB)
        for rank, t in enumerate(wants):
            scores[t] = 10.0 - rank
        scores[VOCAB.index("气虚".encode())] = 1.0
        return scores

    text = decode(SectionGuide(VOCAB, [END], REQUIRED_OUTPUT_KEYS), prefer, budget=300).decode()
    assert completeness(parse_answer(text).answer, None)[0] == 1.0, text
    assert "<output>\n## 病因病机\n气虚\n\n## 辨证\n气虚\n\n" in text  # each blank line led to the next heading
    assert text.endswith("## 医嘱\n气虚</output>")


def test_the_rules_one_by_one():
    guide = SectionGuide(VOCAB, [END], ("syndrome", "prescription"))
    ids = {b: i for i, b in enumerate(VOCAB)}
    # inside the reasoning: no heading and no end; </think> leads into the output part and its first heading
    think = guide.step(b"<think>\n\xe5\x87\x89\n")  # at the start of a line
    assert think.kind == "block" and {END, ids[b"#"], ids[b"##"], ids["\n## 辨证\n".encode()]} <= set(think.ids)
    assert ids[b"</think>"] not in think.ids and ids[b"<output>"] not in think.ids
    forced = guide.step(b"<think>\nx</think>")
    assert forced.kind == "only" and set(forced.ids) == {ids[b"\n"]}
    # `</output>` has no place in the reasoning, in one token or in two
    assert ids[b"</output>"] in think.ids and ids[b"output>"] in guide.step(b"<think>\nx</").ids
    assert ids[b"output>"] not in think.ids
    # a blank line in the reasoning ends it
    assert set(guide.step(b"<think>\nx\n\n").ids) == {ids[b"</think>"], ids[b"</"], ids[b"<"]}
    # a started heading can only become the expected one
    assert guide.step("<output>\n## 辨证\n气虚\n".encode() + b"##").ids == (ids[b" "],)
    # no blank line and no next heading before the section has text
    right_after = guide.step("<output>\n## 辨证\n".encode())
    assert {ids[b"\n"], ids[b"\n\n"], ids[b"#"], END} <= set(right_after.ids)
    # a blank line after text: the next heading is written
    nxt = guide.step("<output>\n## 辨证\n气虚\n\n".encode())
    assert nxt.kind == "only" and ids[b"#"] in nxt.ids and ids[b"\n"] not in nxt.ids
    # the part closes only when every heading has text; after </output> only the end
    assert ids[b"</output>"] in guide.step("<output>\n## 辨证\n气虚\n\n## 处方\n".encode()).ids
    assert ids[b"</output>"] not in guide.step("<output>\n## 辨证\n气虚\n\n## 处方\n附子9g\n".encode()).ids
    assert guide.step("<output>\n## 辨证\n气虚\n\n## 处方\n附子9g\n</output>".encode()) == Step("only", (END,))


def test_the_budget_ends_a_long_section_but_never_inside_a_character():
    guide = SectionGuide(VOCAB, [END], ("syndrome", "prescription"))
    long = "<output>\n## 辨证\n气虚气虚".encode()
    tight = guide.step(long, left=RESERVE)
    assert tight.kind == "only" and VOCAB.index(b"\n") in tight.ids
    half = guide.step(long + b"\xe8", left=RESERVE)  # half of 辨: the character is finished first
    assert half.kind == "only" and VOCAB.index(b"\xbe\xa8") in half.ids and VOCAB.index(b"\n") not in half.ids
    assert guide.step(long, left=10 * RESERVE).kind == "block"


def test_unknown_sections_and_empty_guides_are_refused():
    with pytest.raises(ValueError, match="unknown output section"):
        heading_lines(["syndrome", "pulse"])
    with pytest.raises(ValueError, match="no section"):
        SectionGuide(VOCAB, [END], ())


def test_apply_step_keeps_a_choice_when_another_processor_masked_every_allowed_token():
    import numpy as np

    scores = np.array([1.0, -np.inf, -np.inf, 3.0])
    apply_step(Step("only", (1, 2)), scores)
    assert scores[0] == -np.inf and scores[3] == -np.inf and scores[1] == scores[2] == 0.0


def test_token_bytes_concatenate_to_the_decoded_text(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    table = token_bytes(tokenizer)
    text = "<think>\n脾阳不足。</think>\n<output>\n## 处方\n制附子15g 干姜10g\n</output>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert b"".join(table[i] for i in ids).decode() == tokenizer.decode(ids) == text
    assert table[tokenizer.convert_tokens_to_ids("<|im_end|>")] == b""


def test_torch_processor_follows_each_row_of_a_batch():
    import torch

    guide = SectionGuide(VOCAB, [END], ("syndrome",))
    proc = TorchSectionGuide(guide, max_new_tokens=60)
    rng = random.Random(0)
    ids = torch.zeros((3, 5), dtype=torch.long)  # three prompts of five tokens
    for _ in range(60):
        scores = torch.tensor([[rng.random() for _ in VOCAB] for _ in range(3)])
        scores = proc(ids, scores)
        ids = torch.cat([ids, scores.argmax(dim=1, keepdim=True)], dim=1)
    for row in ids[:, 5:].tolist():
        end = row.index(END) if END in row else len(row)
        text = b"".join(VOCAB[t] for t in row[:end]).decode("utf-8", "replace")
        parsed = read_answer(text)
        assert parsed.answer.syndrome and parsed.output_closed, text


# --- end to end, through the backends and their callers (a random-weight tiny model writes no heading alone) ----

def _conversation():
    from shicheng.prompts import prompt_messages
    from tests.helpers.predict_data import held_out_cases

    return prompt_messages(held_out_cases()[0], 0, Task.full_chain, None)


@pytest.fixture(scope="module")
def tiny_backend(tiny_model_dir, torch_one_thread):
    from shicheng.agent.backends.transformers import TransformersBackend

    backend = TransformersBackend(tiny_model_dir, device="cpu")
    yield backend
    backend.close()


def test_transformers_backend_guides_a_batch_and_a_stream(tiny_backend):
    messages = _conversation()
    free = tiny_backend.generate(messages, max_new_tokens=240)
    assert completeness(read_answer(free.text).answer, None)[0] < 1.0  # noise: the guide is what writes headings
    other = [messages[0], {"role": "user", "content": "患者女，38岁。主诉：失眠多梦半年。舌淡，脉细弱。"}]
    batch = tiny_backend.generate_batch([messages, other], max_new_tokens=240, sections=REQUIRED_OUTPUT_KEYS)
    for result in batch:
        parsed = read_answer(result.text)
        assert completeness(parsed.answer, None)[0] == 1.0, result.text
        assert parsed.output_closed and not parsed.duplicates and result.completion_tokens <= 240
        assert [k for k in parsed.found if k != "reasoning"] == list(REQUIRED_OUTPUT_KEYS)
    stream = tiny_backend.stream(messages, max_new_tokens=240, sections=REQUIRED_OUTPUT_KEYS)
    assert "".join(stream) == batch[0].text == stream.result.text


def test_a_model_trained_guided_is_guided_by_predict_and_consult(tiny_model_dir, tmp_path, torch_one_thread):
    import shutil

    from transformers import GenerationConfig

    from shicheng.agent import consult
    from shicheng.agent.backends.transformers import TransformersBackend
    from shicheng.evaluate.predict import predict
    from tests.helpers.predict_data import held_out_cases, write_cases

    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    gen = GenerationConfig.from_pretrained(model)
    gen.guide_sections = True  # what `shicheng train` writes for `generation: {guide_sections: true}`
    gen.save_pretrained(model)
    with TransformersBackend(model, device="cpu") as backend:
        assert backend.guides_sections
        case = held_out_cases()[0]
        guided = consult(backend, case, None, Task.syndrome, visit_index=0, max_new_tokens=120)
        assert guided.sections.get("syndrome") and not guided.missing
        free = consult(backend, case, None, Task.syndrome, visit_index=0, guide=False, max_new_tokens=120)
        assert free.missing == ["syndrome"]
    cases, _ = write_cases(tmp_path / "data")
    report = predict(str(model), cases=cases, out=tmp_path / "p.jsonl", tasks=["full_chain", "syndrome"],
                     max_new_tokens=240, progress=False, device="cpu")
    assert report.decoding["sections"] == "guided" and report.failed == 0
    import json

    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").open(encoding="utf-8")]
    assert {r["task"] for r in rows} == {"full_chain", "syndrome"}
    for r in rows:
        assert completeness(read_answer(r["output"]).answer, r["task"])[0] == 1.0, r
    off = predict(str(model), cases=cases, out=tmp_path / "off.jsonl", tasks=["syndrome"], max_new_tokens=60,
                  progress=False, device="cpu", guide=False)
    assert off.decoding["sections"] is None


def test_an_endpoint_refuses_guided_decoding(openai_server):
    from shicheng.agent.backends import UnsupportedOption
    from shicheng.agent.backends.openai import OpenAIBackend

    server = openai_server(lambda messages: "ok")
    backend = OpenAIBackend(server.url, model="m")
    with pytest.raises(UnsupportedOption, match="section-guided decoding"):
        backend.generate([{"role": "user", "content": "hi"}], sections=("syndrome",))


def test_training_saves_the_default_and_every_backend_reads_it(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from shicheng.agent.backends.transformers import saved_guide_sections
    from shicheng.deploy.gguf_export import generation_defaults
    from shicheng.train.config import load_config
    from shicheng.train.runner import set_generation_defaults

    cfg = load_config("configs/demo-cpu.yaml")
    assert cfg.generation.guide_sections  # the demo guides (configs/qwen2.5-1.5b.yaml says why it does not)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    set_generation_defaults(cfg, model)
    model.save_pretrained(tmp_path / "guided")
    assert saved_guide_sections(tmp_path / "guided")
    assert generation_defaults(tmp_path / "guided")["guide_sections"] is True  # and so the GGUF's metadata
    assert not saved_guide_sections(tiny_model_dir)
