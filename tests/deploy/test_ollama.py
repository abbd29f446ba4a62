"""The Ollama Modelfile: its Go template writes exactly the prompt our Jinja chat template writes."""

from __future__ import annotations

import re

import jinja2.sandbox

from shicheng.deploy.metadata import inference_chat_template
from shicheng.deploy.ollama import GO_TEMPLATE, modelfile_text
from shicheng.train.tokenizer import CHAT_TEMPLATE


def render_go(template: str, messages: list[dict]) -> str:
    """Ollama's rendering of this template's shape: `{{- range .Messages }}BODY{{ end }}TAIL`."""
    match = re.fullmatch(r"\{\{- range \.Messages \}\}(.*)\{\{ end \}\}(.*)", template, flags=re.S)
    assert match, template
    body, tail = match.groups()
    assert set(re.findall(r"\{\{[^}]*\}\}", body)) == {"{{ .Role }}", "{{ .Content }}"}
    return "".join(body.replace("{{ .Role }}", m["role"]).replace("{{ .Content }}", m["content"])
                   for m in messages) + tail


def render_jinja(messages: list[dict]) -> str:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(inference_chat_template(CHAT_TEMPLATE)).render(messages=messages,
                                                                         add_generation_prompt=True)


def test_go_template_renders_as_the_chat_template():
    for messages in ([{"role": "system", "content": "你是名老中医。"}, {"role": "user", "content": "胃痛三年\n舌淡"}],
                     [{"role": "user", "content": "失眠"}],
                     [{"role": "system", "content": "s"}, {"role": "user", "content": "u1"},
                      {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"}]):
        assert render_go(GO_TEMPLATE, messages) == render_jinja(messages)


def test_modelfile_carries_the_defaults():
    text = modelfile_text("tiny-q4_k_m.gguf", {"repetition_penalty": 1.15, "no_repeat_ngram_size": 8}, 4096,
                          system="你是一名中医临床辅助决策助手。")
    lines = text.splitlines()
    assert "FROM ./tiny-q4_k_m.gguf" in lines and "ollama create shicheng -f tiny-q4_k_m.Modelfile" in text
    assert f'TEMPLATE """{GO_TEMPLATE}"""' in text
    assert 'SYSTEM """你是一名中医临床辅助决策助手。"""' in lines
    assert {'PARAMETER stop "<|im_end|>"', 'PARAMETER stop "<|endoftext|>"', "PARAMETER temperature 0",
            "PARAMETER repeat_penalty 1.15", "PARAMETER repeat_last_n -1", "PARAMETER num_ctx 4096"} <= set(lines)
    assert "repeat_penalty" not in modelfile_text("m.gguf", {}, 2048)
