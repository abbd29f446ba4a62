"""The training-loop pieces our stages add to TRL: the answer-only loss projection, task-weighted rows and
length-grouped batches, each checked against what it replaces."""

from __future__ import annotations

import collections

import pytest
import torch
from datasets import Dataset
from transformers import Qwen2Config, Qwen2ForCausalLM

from shicheng.train.config import StageCfg
from shicheng.train.stages import sampler_args, sft_trainer_class, weighted_rows
from shicheng.train.tokenizer import train_demo_tokenizer

TEXT = "患者胃脘冷痛舌淡胖苔白滑脉沉细辨证脾肾阳虚治法温补处方附子干姜党参白术炙甘草茯苓"


def _rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        q = TEXT[i % 7:] * (1 + i % 3)
        a = TEXT[: 5 + 3 * i]
        rows.append({"messages": [{"role": "system", "content": "你是中医助手。"}, {"role": "user", "content": q},
                                  {"role": "assistant", "content": a}]})
    return rows


def _trainer(cls, tmp_path, tokenizer, rows):
    from trl import SFTConfig

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(cfg)
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to=[], bf16=False,
                     assistant_only_loss=True, max_length=256, save_strategy="no", disable_tqdm=True)
    return cls(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)


def test_answer_only_projection_gives_trls_loss_and_gradients(tmp_path):
    from trl import SFTTrainer

    tokenizer = train_demo_tokenizer([TEXT * 3] * 20, vocab_size=400)
    rows = _rows(8)
    ours = _trainer(sft_trainer_class(), tmp_path / "a", tokenizer, rows)
    plain = _trainer(SFTTrainer, tmp_path / "b", tokenizer, rows)
    batch = next(iter(plain.get_train_dataloader()))
    assert (batch["labels"] == -100).any() and (batch["labels"] != -100).any()  # prompt masked, answer kept
    n = int((batch["labels"][:, 1:] != -100).sum())
    losses, grads = [], []
    for trainer in (ours, plain):
        trainer.model.train()
        loss = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=n)
        loss.backward()
        losses.append(loss.item())
        grads.append(trainer.model.model.layers[0].mlp.up_proj.weight.grad.clone())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_weighted_rows_follow_the_weights_repeating_small_tasks():
    tasks = ["prescription"] * 300 + ["advice"] * 300 + ["syndrome"] * 20
    chosen = weighted_rows(tasks, {"prescription": 3, "advice": 1, "syndrome": 1}, cap=500)
    counts = collections.Counter(tasks[i] for i in chosen)
    assert counts == {"prescription": 300, "advice": 100, "syndrome": 100}
    syndrome_rows = collections.Counter(i for i in chosen if tasks[i] == "syndrome")
    assert set(syndrome_rows.values()) == {5}  # 20 rows, each seen five times
    no_cap = weighted_rows(tasks, {"advice": 0}, cap=None)
    assert len(no_cap) == 320 and not any(tasks[i] == "advice" for i in no_cap)


def test_task_weights_are_validated():
    with pytest.raises(ValueError, match="unknown task"):
        StageCfg(name="s", method="sft", datasets=["d"], task_weights={"prescriptions": 1})
    with pytest.raises(ValueError, match="not all 0"):
        StageCfg(name="s", method="sft", datasets=["d"], task_weights={"advice": 0})


def test_length_grouping_is_spelt_for_each_transformers_major():
    assert sampler_args(False) == {}
    assert sampler_args(True, "5.3.0") == {"train_sampling_strategy": "group_by_length"}
    assert sampler_args(True, "4.57.1") == {"group_by_length": True}
