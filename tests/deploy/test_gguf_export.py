"""The GGUF a stage model becomes: what llama.cpp reads from it, and the errors for what cannot be exported."""

from __future__ import annotations

import json
import shutil

import pytest

from shicheng.deploy.export import export_model, output_paths
from shicheng.deploy.gguf_export import ExportError, read_config
from shicheng.deploy.metadata import beside_masters_path, inference_chat_template
from shicheng.train.tokenizer import CHAT_TEMPLATE


def _fields(path) -> dict:
    from gguf import GGUFReader

    reader = GGUFReader(str(path), "r")
    return {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}


def test_the_f16_file_holds_the_model_the_tokenizer_and_our_metadata(trained_model_dir, trained_ggufs):
    from gguf import GGUFReader, TokenType
    from transformers import AutoTokenizer

    path = trained_ggufs["f16"]
    fields = _fields(path)
    config = json.loads((trained_model_dir / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(trained_model_dir)
    assert fields["general.architecture"] == "qwen2"
    assert fields["qwen2.block_count"] == config["num_hidden_layers"]
    assert fields["qwen2.embedding_length"] == config["hidden_size"]
    assert fields["qwen2.attention.head_count_kv"] == config["num_key_value_heads"]
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "qwen2"
    # one token per embedding row: the tokenizer's, then [PAD] rows up to the padded size
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    assert len(tokens) == config["vocab_size"] > len(tokenizer)
    assert tokens[len(tokenizer):] == [f"[PAD{i}]" for i in range(len(tokenizer), config["vocab_size"])]
    added = tokenizer.get_added_vocab()
    assert types[added["<|im_end|>"]] == TokenType.CONTROL and types[added["<think>"]] == TokenType.USER_DEFINED
    assert tokens[added["脾虚痰凝证"]] == "脾虚痰凝证" and types[added["脾虚痰凝证"]] == TokenType.USER_DEFINED
    assert len(fields["tokenizer.ggml.merges"]) > 100
    assert fields["tokenizer.ggml.eos_token_id"] == added["<|im_end|>"]
    assert fields["tokenizer.ggml.padding_token_id"] == added["<|endoftext|>"]
    assert fields["tokenizer.ggml.add_bos_token"] is False
    # the chat template renders as ours, without the training-only generation markers
    assert fields["tokenizer.chat_template"] == inference_chat_template(CHAT_TEMPLATE)
    assert "endgeneration" not in fields["tokenizer.chat_template"] and "endgeneration" in CHAT_TEMPLATE
    # our decoding defaults, in our key and in llama.cpp's sampling keys; the masters inside and beside
    assert json.loads(fields["shicheng.generation"]) == {"no_repeat_ngram_size": 8, "repetition_penalty": 1.15}
    assert fields["general.sampling.temp"] == 0.0
    assert fields["general.sampling.penalty_repeat"] == pytest.approx(1.15)
    masters = (trained_model_dir / "masters.json").read_text(encoding="utf-8")
    assert fields["shicheng.masters"] == masters
    assert beside_masters_path(path).read_text(encoding="utf-8") == masters
    # weights: matrices in F16, norms and biases in F32, the tied output not duplicated
    reader = GGUFReader(str(path), "r")
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert kinds["token_embd.weight"] == "F16" and kinds["blk.0.attn_q.weight"] == "F16"
    assert kinds["blk.0.attn_q.bias"] == "F32" and kinds["output_norm.weight"] == "F32"
    assert "output.weight" not in kinds
    assert len(kinds) == 1 + 1 + config["num_hidden_layers"] * 12


def test_q8_0_is_made_by_llama_cpp_and_keeps_the_metadata(trained_ggufs):
    from gguf import GGUFReader

    f16, q8 = trained_ggufs["f16"], trained_ggufs["q8_0"]
    assert f16.name == "tiny-f16.gguf" and q8.name == "tiny-q8_0.gguf"
    kinds = {t.name: t.tensor_type.name for t in GGUFReader(str(q8), "r").tensors}
    assert kinds["blk.0.attn_q.weight"] == "Q8_0" and kinds["output_norm.weight"] == "F32"
    assert q8.stat().st_size < f16.stat().st_size
    f16_fields, q8_fields = _fields(f16), _fields(q8)
    for key in ("shicheng.masters", "shicheng.generation", "tokenizer.chat_template", "tokenizer.ggml.tokens"):
        assert q8_fields[key] == f16_fields[key]
    assert beside_masters_path(q8).is_file()
    assert not list(q8.parent.glob(".*")), "the temporary float file is removed"


def test_quantised_only_export_uses_a_temporary_float_file(trained_model_dir, tmp_path):
    files = export_model(trained_model_dir, tmp_path / "m.gguf", quants=["q4_k_m"]).files
    assert files == {"q4_k_m": tmp_path / "m.gguf"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf", "m.masters.json"]


def test_output_names():
    assert output_paths("x/model.gguf", ["q4_k_m"]) == {"q4_k_m": __import__("pathlib").Path("x/model.gguf")}
    assert {q: p.name for q, p in output_paths("x/model.gguf", ["f16", "q8_0"]).items()} == \
        {"f16": "model-f16.gguf", "q8_0": "model-q8_0.gguf"}
    with pytest.raises(ExportError, match=r"model\.bin: the file name must end in \.gguf"):
        output_paths("model.bin", ["f16"])


def test_errors_name_the_file_and_field(trained_model_dir, tmp_path):
    with pytest.raises(ExportError, match=r"not a model directory \(no config\.json\)"):
        export_model(tmp_path, tmp_path / "x.gguf")
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        export_model(tmp_path / "nowhere", tmp_path / "x.gguf")
    with pytest.raises(ValueError, match=r"unknown --quant 'q3'; known: f16, bf16, f32, q8_0"):
        export_model(trained_model_dir, tmp_path / "x.gguf", quants=["q3"])
    llama = tmp_path / "llama"
    shutil.copytree(trained_model_dir, llama)
    config = json.loads((llama / "config.json").read_text())
    (llama / "config.json").write_text(json.dumps({**config, "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ExportError, match=r"config\.json: architectures is \['LlamaForCausalLM'\]; only "
                                          r"Qwen2ForCausalLM"):
        read_config(llama)
    (llama / "config.json").write_text(json.dumps({**config, "rope_scaling": {"rope_type": "yarn", "factor": 4}}))
    with pytest.raises(ExportError, match="rope scaling 'yarn' is not supported"):
        export_model(llama, tmp_path / "x.gguf")
    (llama / "config.json").write_text(json.dumps(config))
    (llama / "tokenizer.json").unlink()
    with pytest.raises(ExportError, match=r"no tokenizer\.json"):
        export_model(llama, tmp_path / "x.gguf")
    assert not list(tmp_path.glob("*.gguf*")), "nothing is written for a model that cannot be exported"
