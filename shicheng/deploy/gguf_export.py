"""A Qwen2 stage model directory (the output of `shicheng train`) -> one GGUF file that llama.cpp loads.

Why a converter of our own: llama.cpp's `convert_hf_to_gguf.py` and the `conversion/` package it imports are
scripts in the llama.cpp source tree; neither the `gguf` wheel nor llama-cpp-python's wheel ships them, so
they cannot be imported as a library, and vendoring a 10,000-line script for one architecture would be
worse. For Qwen2 the conversion is small, and every part of it that is not ours comes from the `gguf`
package: GGUFWriter writes the file, `get_tensor_name_map(MODEL_ARCH.QWEN2, …)` names the tensors, and
SpecialVocab reads the merges, the special token ids and the chat template. What is ours, and follows the
upstream Qwen2 path (`Qwen2Model` → `_set_vocab_gpt2` → `get_vocab_base`) step for step:
- the token list and types from tokenizer.json: BPE tokens as NORMAL, our added TCM terms and answer tags
  as USER_DEFINED (llama.cpp matches those before BPE, like Hugging Face's added tokens), `<|…|>` tokens as
  CONTROL, and `[PADn]` UNUSED rows up to the embedding size (extension pads it to a multiple of 64);
- `tokenizer.ggml.pre = "qwen2"`, after checking that tokenizer.json splits text with Qwen2's regex
  (upstream guesses the pre-tokenizer from a hash of token ids, which cannot know a vocabulary trained here;
  llama.cpp skips the NFC normaliser, which changes nothing in text that is already composed, as ours is);
- the chat template without the training-only `{% generation %}` markers, no BOS (Qwen2 adds none), our
  masters and decoding defaults as metadata (shicheng.deploy.metadata);
- tensors streamed one at a time (a 1.5B model never sits in memory twice): norms and biases in F32, the
  matrices in F16 or BF16. Quantised types are made from this file by llama.cpp's own quantiser (quantize.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from shicheng.deploy.metadata import (
    DEFAULT_N_CTX,
    DEPLOY_EXTRA,
    GENERATION_KEY,
    MASTERS_KEY,
    SOURCE_KEY,
    STAGE_KEY,
    DeployUnavailable,
    inference_chat_template,
)
from shicheng.vocab import QWEN2_PATTERN

ARCHITECTURE = "Qwen2ForCausalLM"
FLOAT_TYPES = ("f16", "bf16", "f32")

Progress = Callable[[int, int, str], None]  # (tensors written, total, name)


class ExportError(ValueError):
    """A model directory this exporter cannot convert; the message names the file and field."""


@dataclass
class ModelInfo:
    """What the exporter read from a stage directory's config.json and tokenizer files."""

    path: Path
    config: dict
    tokens: list[str]
    token_types: list[int]
    n_layers: int
    vocab_size: int
    tied: bool


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ExportError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e
    if not isinstance(data, dict):
        raise ExportError(f"{path}: expected a JSON object")
    return data


def _require_gguf():
    try:
        import gguf
    except ImportError as e:
        raise DeployUnavailable(DEPLOY_EXTRA) from e
    return gguf


def read_config(model_dir: Path) -> dict:
    """config.json of a Qwen2 model directory, checked: a clear error for anything else."""
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory not found: {model_dir}")
    path = model_dir / "config.json"
    if not path.is_file():
        raise ExportError(f"{model_dir}: not a model directory (no config.json)")
    config = _read_json(path)
    archs = config.get("architectures") or []
    if archs != [ARCHITECTURE]:
        raise ExportError(f"{path}: architectures is {archs}; only {ARCHITECTURE} (the architecture shicheng trains) "
                          "can be exported")
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"):
        if not isinstance(config.get(key), int):
            raise ExportError(f"{path}: field {key!r} is missing or not an integer")
    rope = config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type") or rope.get("type") or \
        (config.get("rope_parameters") or {}).get("rope_type") or "default"
    if rope_type != "default":
        raise ExportError(f"{path}: rope scaling {rope_type!r} is not supported by this exporter (default RoPE only)")
    if config.get("use_sliding_window"):
        raise ExportError(f"{path}: use_sliding_window is true; llama.cpp's qwen2 has no sliding-window attention")
    return config


def _check_split(tokenizer: dict, path: Path) -> None:
    """llama.cpp's "qwen2" pre-tokenizer is Qwen2's regex; refuse a tokenizer.json that splits otherwise."""
    pre = tokenizer.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    patterns = [(p.get("pattern") or {}).get("Regex") for p in parts if p.get("type") == "Split"]
    if QWEN2_PATTERN not in patterns:
        raise ExportError(f"{path}: pre_tokenizer does not split with Qwen2's regex (found {patterns or 'none'}); "
                          "llama.cpp's qwen2 tokenizer would read text differently")
    model = tokenizer.get("model") or {}
    if model.get("type") != "BPE":
        raise ExportError(f"{path}: model.type is {model.get('type')!r}; a Qwen2 tokenizer is byte-level BPE")


def _looks_special(token: str) -> bool:
    # upstream's does_token_look_special, the part that applies to Qwen's tokens
    return token.startswith("<|") and token.endswith("|>")


def read_vocab(model_dir: Path, vocab_size: int) -> tuple[list[str], list[int]]:
    """(tokens, GGUF token types), one per embedding row, from tokenizer.json."""
    gguf = _require_gguf()
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise ExportError(f"{model_dir}: no tokenizer.json (the fast tokenizer `shicheng train` saves)")
    tokenizer = _read_json(path)
    _check_split(tokenizer, path)
    by_id: dict[int, str] = {i: t for t, i in tokenizer["model"]["vocab"].items()}
    added = {}
    for item in tokenizer.get("added_tokens", []):
        by_id[item["id"]] = item["content"]
        added[item["id"]] = item
    if max(by_id) >= vocab_size:
        raise ExportError(f"{model_dir / 'config.json'}: vocab_size {vocab_size} is smaller than the tokenizer "
                          f"(token id {max(by_id)})")
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = by_id[i]
        tokens.append(token)
        if i in added:
            special = added[i].get("special") or _looks_special(token)
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def read_model(model_dir: str | Path) -> ModelInfo:
    """Everything but the weights, checked before a byte is written."""
    path = Path(model_dir)
    config = read_config(path)
    tokens, types = read_vocab(path, config["vocab_size"])
    return ModelInfo(path=path, config=config, tokens=tokens, token_types=types,
                     n_layers=config["num_hidden_layers"], vocab_size=config["vocab_size"],
                     tied=bool(config.get("tie_word_embeddings", False)))


def _weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(_read_json(index).get("weight_map", {}).values()))
        files = [model_dir / n for n in names]
    else:
        files = [model_dir / "model.safetensors"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ExportError(f"{model_dir}: weight file(s) missing: {', '.join(missing)} (a model saved with "
                          "save_pretrained, safetensors)")
    return files


def _tensors(model_dir: Path, info: ModelInfo) -> Iterator[tuple[str, str, Callable]]:
    """(HF name, GGUF name, loader) for every tensor to write, in file order; loaders read one tensor each."""
    from safetensors import safe_open

    gguf = _require_gguf()
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, info.n_layers)
    for file in _weight_files(model_dir):
        with safe_open(str(file), framework="pt") as f:
            keys = list(f.keys())
        for key in keys:
            if key.endswith(".rotary_emb.inv_freq"):
                continue  # recomputed by llama.cpp from rope_theta
            if key == "lm_head.weight" and info.tied:
                continue  # tied: llama.cpp reuses token_embd
            new = names.get_name(key, try_suffixes=(".weight", ".bias"))
            if new is None:
                raise ExportError(f"{file}: tensor {key!r} has no place in llama.cpp's qwen2 (not a Qwen2 model?)")

            def load(file=file, key=key):
                with safe_open(str(file), framework="pt") as f:
                    return f.get_tensor(key)

            yield key, new, load


def _target_type(gguf, gguf_name: str, ndim: int, float_type: str):
    q = gguf.GGMLQuantizationType
    # as upstream: 1-D tensors (norms, biases) stay F32, llama.cpp's kernels expect it
    if ndim <= 1 or gguf_name.endswith("_norm.weight") or float_type == "f32":
        return q.F32
    return q.BF16 if float_type == "bf16" else q.F16


def _to_numpy(tensor, qtype, gguf):
    import torch

    data = tensor.to(torch.float32).numpy()
    return gguf.quants.quantize(data, qtype)


def _add_hparams(writer, config: dict, float_type: str, gguf) -> None:
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config.get("max_position_embeddings") or DEFAULT_N_CTX)
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config.get("num_key_value_heads") or config["num_attention_heads"])
    theta = config.get("rope_theta") or (config.get("rope_parameters") or {}).get("rope_theta") or 10000.0
    writer.add_rope_freq_base(float(theta))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    head_dim = config.get("head_dim")
    if head_dim and head_dim != config["hidden_size"] // config["num_attention_heads"]:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    file_types = {"f16": gguf.LlamaFileType.MOSTLY_F16, "bf16": gguf.LlamaFileType.MOSTLY_BF16,
                  "f32": gguf.LlamaFileType.ALL_F32}
    writer.add_file_type(file_types[float_type])


def _add_tokenizer(writer, info: ModelInfo, gguf) -> None:
    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(info.tokens)
    writer.add_token_types(info.token_types)
    special = gguf.SpecialVocab(info.path, load_merges=True, n_vocab=info.vocab_size)
    if not special.merges:
        raise ExportError(f"{info.path / 'tokenizer.json'}: no BPE merges")
    if not isinstance(special.chat_template, str):
        raise ExportError(f"{info.path / 'tokenizer_config.json'}: no chat_template (configure_chat_tokens sets ours)")
    special.chat_template = inference_chat_template(special.chat_template)
    # Qwen2 prompts start with no BOS and get no EOS appended; the chat template writes every token itself.
    special.add_special_token = {"bos": False, "eos": False}
    special.add_to_gguf(writer, quiet=True)


def generation_defaults(model_dir: Path) -> dict:
    """The decoding defaults `shicheng train` saved in generation_config.json (only those it sets)."""
    path = model_dir / "generation_config.json"
    if not path.is_file():
        return {}
    gen = _read_json(path)
    out = {}
    if isinstance(gen.get("repetition_penalty"), (int, float)) and gen["repetition_penalty"] != 1.0:
        out["repetition_penalty"] = float(gen["repetition_penalty"])
    if isinstance(gen.get("no_repeat_ngram_size"), int) and gen["no_repeat_ngram_size"] > 0:
        out["no_repeat_ngram_size"] = gen["no_repeat_ngram_size"]
    if gen.get("guide_sections") is True:
        out["guide_sections"] = True
    return out


def masters_json(model_dir: Path) -> str | None:
    """masters.json as text (checked as the backends read it back), None when the model has none."""
    from shicheng.agent.backends import parse_masters  # late: the backends package imports shicheng.deploy

    path = model_dir / "masters.json"
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8-sig")
    try:
        parse_masters(text, str(path))
    except ValueError as e:
        raise ExportError(str(e)) from e
    return text


def _add_ours(writer, model_dir: Path) -> None:
    writer.add_name(model_dir.name)
    writer.add_string(SOURCE_KEY, model_dir.name)
    manifest = model_dir / "manifest.json"
    if manifest.is_file():
        stage = _read_json(manifest).get("stage")
        if isinstance(stage, str):
            writer.add_string(STAGE_KEY, stage)
    defaults = generation_defaults(model_dir)
    writer.add_string(GENERATION_KEY, json.dumps(defaults, sort_keys=True))
    # The same defaults under llama.cpp's own sampling keys, which llama-server and llama-cli take as the model's
    # defaults: greedy, and the repetition penalty over a window as long as the context we run with
    # (transformers penalises the whole sequence; llama.cpp a window of the last N tokens).
    writer.add_sampling_temp(0.0)
    if "repetition_penalty" in defaults:
        writer.add_sampling_penalty_repeat(defaults["repetition_penalty"])
        writer.add_sampling_penalty_last_n(DEFAULT_N_CTX)
    masters = masters_json(model_dir)
    if masters is not None:
        writer.add_string(MASTERS_KEY, masters)


def source_float_type(config: dict) -> str:
    """The lossless float type for the model's own dtype: bf16 stays bf16, anything else goes to f16."""
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "float32")
    return "bf16" if "bfloat16" in dtype else "f16"


def write_gguf(model_dir: str | Path, out: str | Path, float_type: str = "f16",
               progress: Progress | None = None) -> Path:
    """Write `model_dir` as a GGUF of `float_type` (f16, bf16 or f32) to `out`; returns the path."""
    from safetensors import safe_open

    gguf = _require_gguf()
    if float_type not in FLOAT_TYPES:
        raise ExportError(f"float type {float_type!r}: use one of {', '.join(FLOAT_TYPES)}")
    info = read_model(model_dir)
    model_dir = info.path
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = list(_tensors(model_dir, info))
    if not any(new == "token_embd.weight" for _, new, _ in tensors):
        raise ExportError(f"{model_dir}: no embedding tensor (model.embed_tokens.weight)")
    if not info.tied and not any(new == "output.weight" for _, new, _ in tensors):
        raise ExportError(f"{model_dir / 'config.json'}: tie_word_embeddings is false but there is no lm_head.weight")

    tmp = out.with_name(out.name + ".part")
    writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.QWEN2])
    try:
        _add_hparams(writer, info.config, float_type, gguf)
        _add_tokenizer(writer, info, gguf)
        _add_ours(writer, model_dir)
        # Tensor infos first (shapes from the file headers), then the data one tensor at a time.
        shapes = {}
        for file in _weight_files(model_dir):
            with safe_open(str(file), framework="pt") as f:
                shapes.update({k: f.get_slice(k).get_shape() for k in f.keys()})  # noqa: SIM118
        plan = []
        for key, new, load in tensors:
            shape = shapes[key]
            qtype = _target_type(gguf, new, len(shape), float_type)
            if new == "token_embd.weight" and shape[0] != info.vocab_size:
                raise ExportError(f"{model_dir}: the embedding has {shape[0]} rows, config.json's vocab_size is "
                                  f"{info.vocab_size}")
            nbytes = math.prod(shape) * (4 if qtype == gguf.GGMLQuantizationType.F32 else 2)
            raw = None if qtype != gguf.GGMLQuantizationType.BF16 else qtype
            writer.add_tensor_info(new, shape, _np_dtype(qtype), nbytes, raw_dtype=raw)
            plan.append((new, load, qtype))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for i, (new, load, qtype) in enumerate(plan, start=1):
            writer.write_tensor_data(_to_numpy(load(), qtype, gguf))
            if progress:
                progress(i, len(plan), new)
        writer.close()
        tmp.replace(out)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return out


def _np_dtype(qtype):
    """The numpy type the writer's tensor info is given. numpy has no bfloat16: BF16 goes in as raw_dtype with
    a 16-bit stand-in, not uint8, which the writer would take as a byte shape to convert."""
    import numpy as np

    return np.float32 if qtype.name == "F32" else np.float16 if qtype.name == "F16" else np.uint16


__all__ = ["ARCHITECTURE", "DEFAULT_N_CTX", "FLOAT_TYPES", "ExportError", "ModelInfo", "generation_defaults",
           "masters_json", "read_config", "read_model", "read_vocab", "source_float_type", "write_gguf"]
