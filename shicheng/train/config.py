"""The training recipe as one validated YAML: base model, tokenizer extension, ordered stages.

Every YAML under configs/ is loaded by tests/train/test_config.py, so a typo fails CI, not a GPU run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shicheng.domain import validation_message


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TinyModel(_Cfg):
    """A Qwen2-architecture model built from a config with random weights (demo and tests)."""

    hidden_size: int = 128
    intermediate_size: int = 352
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = True


class BaseModelCfg(_Cfg):
    path: str | None = Field(default=None, description="local directory or hub id, e.g. Qwen/Qwen2.5-1.5B")
    tiny: TinyModel | None = Field(default=None, description="build a tiny random Qwen2 instead of loading")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: str | None = Field(default=None, description="sdpa, flash_attention_2, eager …")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.path is None) == (self.tiny is None):
            raise ValueError("base_model needs exactly one of `path` or `tiny`")
        return self


class TokenizerCfg(_Cfg):
    path: str | None = Field(default=None, description="tokenizer dir; default: the base model's")
    train_vocab_size: int | None = Field(default=None, description="train a byte-level BPE of this size on the "
                                                                     "stage-1 corpus (demo: no base tokenizer)")
    extend: bool = True
    max_new_tokens: int = 2000
    min_freq: int = 3
    min_pieces: int = 2


class LoraCfg(_Cfg):
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                        "up_proj", "down_proj"])


def check_task_weights(weights: dict[str, float] | None) -> None:
    if not weights:
        return
    from shicheng.domain import Task

    unknown = sorted(set(weights) - {t.value for t in Task})
    if unknown:
        raise ValueError(f"task_weights names unknown task(s) {unknown}; known: {[t.value for t in Task]}")
    if any(w < 0 for w in weights.values()) or not any(weights.values()):
        raise ValueError("task_weights must be >= 0 and not all 0")


class Phase(_Cfg):
    """One row mix of a phased SFT stage: `rows` rows drawn with `task_weights` (unnamed tasks weigh 1)."""

    rows: int = Field(ge=1)
    task_weights: dict[str, float] | None = None

    @model_validator(mode="after")
    def _weights(self):
        check_task_weights(self.task_weights)
        return self


class StageCfg(_Cfg):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    method: Literal["cpt", "sft", "grpo", "dpo"]
    datasets: list[str] = Field(min_length=1, description="stage dataset folders under data_dir, e.g. stage2_sft")
    lora: LoraCfg | None = None
    merge: bool = Field(default=True, description="merge LoRA weights before the next stage")
    epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 2e-4
    embedding_learning_rate: float | None = Field(default=None, description="CPT: own LR for the new embeddings")
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 1024
    packing: bool = False
    group_by_length: bool = Field(default=False, description="batch rows of similar length (less padding)")
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1, description="fraction of steps spent warming up")
    weight_decay: float = 0.0
    gradient_checkpointing: bool = False
    save_steps: int = 50
    logging_steps: int = 5
    max_train_rows: int | None = Field(default=None, description="cap rows (quick runs); None = all")
    task_weights: dict[str, float] | None = Field(default=None, description=(
        "share of the rows per task (the `task` column), e.g. {full_chain: 3, advice: 0.5}; unnamed tasks weigh 1"))
    phases: list[Phase] | None = Field(default=None, min_length=1, description=(
        "SFT: row mixes trained one after the other, each with its own warm-up and cosine decay (e.g. the short "
        "findings-reading tasks first); replaces max_train_rows and task_weights"))
    # GRPO
    num_generations: int = 4
    max_completion_length: int = 256
    temperature: float = 1.0
    repetition_penalty: float = Field(default=1.0, description="GRPO sampling; >1 keeps small models from looping")
    no_repeat_ngram_size: int = Field(default=0, ge=0, description="GRPO sampling; 0 = off")
    beta: float = 0.0
    rewards: dict[str, float] = Field(default_factory=lambda: {"format": 1.0, "herb_f1": 1.0, "syndrome": 0.5,
                                                               "safety": 1.0, "master_style": 1.0})
    # DPO
    dpo_beta: float = 0.1

    @model_validator(mode="after")
    def _method_fields(self):
        if self.method == "grpo" and self.num_generations < 2:
            raise ValueError("grpo needs num_generations >= 2 (advantages are relative within a group)")
        if self.method == "grpo" and self.batch_size % self.num_generations:
            raise ValueError(f"grpo batch_size {self.batch_size} must be a multiple of num_generations "
                             f"{self.num_generations}")
        check_task_weights(self.task_weights)
        if self.phases:
            clash = [f for f in ("max_train_rows", "task_weights") if getattr(self, f) is not None]
            if self.method != "sft":
                raise ValueError(f"phases are for sft stages (this one is {self.method})")
            if clash:
                raise ValueError(f"phases replace {' and '.join(clash)}: give each phase its rows and task_weights")
            if self.packing:
                raise ValueError("phases need packing: false (packing would mix the phases' rows)")
            if self.epochs != 1 or self.max_steps != -1:
                raise ValueError("phases need epochs: 1 and no max_steps: a phase's rows say how long it trains "
                                 "(repeat rows by giving the phase more rows than its tasks have)")
        return self


class GenerationDefaults(_Cfg):
    """Decoding defaults written into every stage's generation_config.json; consult, serve and bench use them."""

    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = Field(default=0, ge=0)
    # Section-guided decoding by default (shicheng.guide) wherever the task is known: predict, consult, serve.
    guide_sections: bool = False


class TrainConfig(_Cfg):
    run_dir: str
    data_dir: str = Field(description="output of `shicheng curate`")
    seed: int = 0
    base_model: BaseModelCfg
    tokenizer: TokenizerCfg = Field(default_factory=TokenizerCfg)
    bf16: bool = False
    generation: GenerationDefaults = Field(default_factory=GenerationDefaults)
    stages: list[StageCfg] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self):
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique: {names}")
        return self

    def stage_dir(self, index: int) -> Path:
        return Path(self.run_dir) / f"stage-{index + 1}-{self.stages[index].name}"


def load_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from e
    if overrides:
        data.update(overrides)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as e:
        raise ValueError(f"{path}: {validation_message(e, where='{}')}") from e


def parse_stage_range(spec: str | None, n: int) -> list[int]:
    """'3-5' -> [2, 3, 4]; '2' -> [1]; None -> all (0-based indices)."""
    if not spec:
        return list(range(n))
    lo, _, hi = spec.partition("-")
    a, b = int(lo), int(hi or lo)
    if not 1 <= a <= b <= n:
        raise ValueError(f"--stages {spec}: stages are numbered 1..{n}")
    return list(range(a - 1, b))
