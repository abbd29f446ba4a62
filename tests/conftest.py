"""Shared fixtures: the loopback OpenAI-compatible server and a tiny trained-model directory.

The tiny model has random weights, so its text is noise; it has the real layout of a `shicheng train`
output (Qwen2 architecture, our ChatML template, `<|im_end|>` ending a turn, masters.json), which is
what the agent and the server need to be tested end to end on CPU in well under a second per answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest_plugins = ("tests.helpers.openai_server",)

TINY_TEXTS = [
    "患者男，45岁。主诉：胃脘冷痛反复发作三年，加重一周。舌淡胖，苔白滑，脉沉细。辨证：脾胃虚寒证。",
    "治法：温中健脾，和胃止痛。处方：附子理中汤加减。制附子15g 干姜10g 党参15g 炒白术12g 炙甘草6g。",
    "患者女，38岁。主诉：失眠多梦半年。舌淡，苔薄白，脉细弱。辨证：心脾两虚证。治法：益气补血，养心安神。",
    "处方：归脾汤加减。黄芪20g 党参15g 当归10g 茯神15g 炒酸枣仁30g 远志6g 木香6g 炙甘草6g。",
    "<think>脾阳不足，寒从中生。</think><output>## 病因病机\n脾胃虚寒。\n## 辨证\n脾胃虚寒证。\n## 处方\n理中汤。</output>",
    "方解：方中黄芪、党参益气健脾为君；当归养血为臣；木香理气为佐；炙甘草调和诸药为使。医嘱：饮食清淡，忌生冷。",
]


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Write a random-weight Qwen2 model directory with our tokenizer, chat tokens and the demo masters."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from shicheng.demo import load_demo_masters
    from shicheng.train.tokenizer import configure_chat_tokens, train_demo_tokenizer

    tokenizer = train_demo_tokenizer(TINY_TEXTS * 4, vocab_size=600)
    config = Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=128, vocab_size=len(tokenizer), tie_word_embeddings=True,
                         max_position_embeddings=4096, initializer_range=0.3)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    configure_chat_tokens(tokenizer, model)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    masters = [m.model_dump(mode="json") for m in load_demo_masters().values()]
    (out_dir / "masters.json").write_text(json.dumps(masters, ensure_ascii=False, indent=1), encoding="utf-8")
    return out_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny trained-model directory (random weights) shared by the whole session; treat it as read-only."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model")


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model exported to an f16 GGUF (FILE.masters.json beside it); skips without the deploy extra."""
    from tests.helpers.deploy import export, require_deploy

    require_deploy()
    return export(tiny_model_dir, tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf")["f16"]


@pytest.fixture(scope="module")
def torch_one_thread():
    """Run a module's tiny-model generations on one thread, restoring the setting afterwards.

    On a small shared machine, OpenMP's second thread spin-waits for a core that another process holds:
    a batched 64-wide matmul then takes milliseconds instead of microseconds.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
