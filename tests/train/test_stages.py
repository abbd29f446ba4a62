"""The training-loop pieces our stages add to TRL: the answer-only loss projection, task-weighted rows and
length-grouped batches, each checked against what it replaces."""

from __future__ import annotations

import collections
import json
import math

import pytest
import torch
from datasets import Dataset
from transformers import Qwen2Config, Qwen2ForCausalLM

from shicheng.train.config import Phase, StageCfg, TrainConfig
from shicheng.train.stages import (
    load_split,
    phase_schedule,
    phased_rows,
    sampler_args,
    sft_trainer_class,
    weighted_rows,
)
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


def _trainer(cls, tmp_path, tokenizer, rows, eval_rows=None):
    from trl import SFTConfig

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(cfg)
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to=[], bf16=False,
                     assistant_only_loss=True, max_length=256, save_strategy="no", disable_tqdm=True)
    evald = Dataset.from_list(eval_rows) if eval_rows else None
    return cls(model=model, args=args, train_dataset=Dataset.from_list(rows), eval_dataset=evald,
               processing_class=tokenizer)


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


def _task_rows(n_per_task: dict[str, int]) -> list[dict]:
    rows = []
    for task, n in n_per_task.items():
        for i in range(n):
            answer = TEXT[: 3 + (7 * i) % 40]
            rows.append({"task": task, "messages": [{"role": "user", "content": f"{task}{i}"},
                                                    {"role": "assistant", "content": answer}]})
    return rows


def _phased_stage(**kw) -> StageCfg:
    phases = [Phase(rows=40, task_weights={"syndrome": 1, "full_chain": 0}),
              Phase(rows=60, task_weights={"syndrome": 1, "full_chain": 2})]
    return StageCfg(name="master-sft", method="sft", datasets=["stage4_master_sft"], batch_size=4, phases=phases,
                    **kw)


def test_phased_rows_train_each_mix_in_turn_and_group_lengths_within_a_phase():
    data = Dataset.from_list(_task_rows({"syndrome": 30, "full_chain": 30}))
    order = phased_rows(data, _phased_stage(group_by_length=True), seed=0)
    tasks = [data[i]["task"] for i in order]
    assert len(order) == 100
    assert set(tasks[:40]) == {"syndrome"}  # phase 1: syndrome rows alone, some twice
    assert collections.Counter(tasks[40:]) == {"full_chain": 40, "syndrome": 20}
    lengths = [sum(len(m["content"]) for m in data[i]["messages"]) for i in order]
    assert lengths[:40] == sorted(lengths[:40], reverse=True)  # one 200-row chunk per phase here
    assert lengths[40:] == sorted(lengths[40:], reverse=True)
    assert phased_rows(data, _phased_stage(group_by_length=True), seed=0) == order  # deterministic in the seed
    shuffled = phased_rows(data, _phased_stage(), seed=0)
    assert sorted(shuffled[:40]) != shuffled[:40] or sorted(shuffled[40:]) != shuffled[40:]


def test_a_phased_stage_trains_its_rows_in_order_restarting_the_learning_rate(tmp_path):
    from shicheng.train.stages import train_sft

    data_dir = tmp_path / "data" / "stage4_master_sft"
    data_dir.mkdir(parents=True)
    rows = _task_rows({"syndrome": 30, "full_chain": 30})
    (data_dir / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                          encoding="utf-8")
    stage = _phased_stage(group_by_length=True, learning_rate=1e-3, logging_steps=1, save_steps=1000)
    cfg = TrainConfig(run_dir=str(tmp_path / "run"), data_dir=str(tmp_path / "data"),
                      base_model={"tiny": {}}, stages=[stage])
    train = load_split(cfg, stage, "train")
    assert [r["task"] for r in train][:40] == ["syndrome"] * 40
    tokenizer = train_demo_tokenizer([TEXT * 3] * 20, vocab_size=400)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    out = tmp_path / "stage"
    out.mkdir()
    trainer, metrics = train_sft(cfg, stage, model, tokenizer, out, resume=False)
    assert metrics["steps"] == 25  # 40 + 60 rows, 4 a batch
    seen = [ids for batch in trainer.get_train_dataloader() for ids in batch["input_ids"].tolist()]
    expected = [trainer.train_dataset[i]["input_ids"] for i in range(len(trainer.train_dataset))]
    assert [[t for t in ids if t != tokenizer.pad_token_id] for ids in seen] == expected  # load_split's order
    lrs = [r["learning_rate"] for r in map(json.loads, (out / "metrics.jsonl").open()) if "learning_rate" in r]
    assert min(lrs[7:11]) < 2e-4 and max(lrs[11:15]) > 8e-4  # decayed at the end of phase 1, then up again


def test_phases_are_validated():
    with pytest.raises(ValueError, match="phases replace max_train_rows"):
        _phased_stage(max_train_rows=100)
    with pytest.raises(ValueError, match="packing: false"):
        _phased_stage(packing=True)
    with pytest.raises(ValueError, match="epochs: 1"):
        _phased_stage(epochs=2)
    with pytest.raises(ValueError, match="for sft stages"):
        StageCfg(name="s", method="cpt", datasets=["d"], phases=[Phase(rows=4)])
    with pytest.raises(ValueError, match="unknown task"):
        Phase(rows=4, task_weights={"syndromes": 1})


def test_each_phase_warms_up_and_decays_on_its_own():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = phase_schedule(opt, [400, 800], rows_per_step=8, warmup_ratio=0.1)  # 50 then 100 steps
    lrs = []
    for _ in range(150):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < 0.5 and max(lrs[:50]) == pytest.approx(1.0, abs=0.05)
    assert lrs[49] < 0.05  # the first phase ends decayed ...
    assert lrs[50] < 0.2 and max(lrs[50:]) == pytest.approx(1.0, abs=0.05)  # ... the second warms up again
    assert lrs[149] < 0.05


def test_evaluation_is_one_mean_over_the_answer_tokens_whatever_the_batches(tmp_path):
    from trl import SFTTrainer

    tokenizer = train_demo_tokenizer([TEXT * 3] * 20, vocab_size=400)
    rows = _rows(12)
    ours = _trainer(sft_trainer_class(), tmp_path / "a", tokenizer, rows, eval_rows=rows)
    shuffled = ours.evaluate()
    ours.eval_dataset = ours.eval_dataset.select(list(range(11, -1, -1)))
    reordered = ours.evaluate()
    # TRL's evaluation averages batch means: with every row in one batch that is the token mean
    plain = _trainer(SFTTrainer, tmp_path / "b", tokenizer, rows, eval_rows=rows)
    plain.args.per_device_eval_batch_size = len(rows)
    one_batch = plain.evaluate()
    assert shuffled["eval_loss"] == pytest.approx(one_batch["eval_loss"], rel=1e-5)
    assert reordered["eval_loss"] == pytest.approx(shuffled["eval_loss"], rel=1e-6)
    assert shuffled["eval_mean_token_accuracy"] == pytest.approx(one_batch["eval_mean_token_accuracy"], abs=1e-6)
    assert "eval_entropy" in one_batch and "eval_entropy" not in shuffled  # TRL's full projection did not run
    assert ours.state.log_history[-1]["eval_loss"] == reordered["eval_loss"]  # logged like Trainer.evaluate


def test_held_out_rows_come_longest_first_when_lengths_are_grouped(tmp_path):
    rows = [{"task": "syndrome", "messages": [{"role": "user", "content": "问" * n},
                                              {"role": "assistant", "content": "答"}]} for n in (3, 9, 1, 5)]
    (tmp_path / "d").mkdir()
    for split in ("train", "validation"):
        (tmp_path / "d" / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                                         encoding="utf-8")
    cfg = TrainConfig(run_dir=str(tmp_path / "run"), data_dir=str(tmp_path), base_model={"tiny": {}},
                      stages=[StageCfg(name="s", method="sft", datasets=["d"], group_by_length=True)])
    held_out = load_split(cfg, cfg.stages[0], "validation")
    assert [len(r["messages"][0]["content"]) for r in held_out] == [9, 5, 3, 1]
    cfg.stages[0].group_by_length = False
    assert [len(r["messages"][0]["content"]) for r in load_split(cfg, cfg.stages[0], "validation")] == [3, 9, 1, 5]


def test_a_stage_is_evaluated_once_at_its_end(tmp_path):
    from transformers import TrainerCallback
    from trl import SFTConfig

    from shicheng.train.stages import _run

    class CountEvaluations(TrainerCallback):
        n = 0

        def on_evaluate(self, args, state, control, **kwargs):
            CountEvaluations.n += 1

    tokenizer = train_demo_tokenizer([TEXT * 3] * 20, vocab_size=400)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to=[], bf16=False,
                     assistant_only_loss=True, max_length=256, save_strategy="no", disable_tqdm=True,
                     eval_strategy="epoch", num_train_epochs=1)
    trainer = sft_trainer_class()(model=model, args=args, train_dataset=Dataset.from_list(_rows(8)),
                                  eval_dataset=Dataset.from_list(_rows(4)), processing_class=tokenizer,
                                  callbacks=[CountEvaluations()])
    _, metrics = _run(trainer, resume=False)
    assert CountEvaluations.n == 1
    assert math.isfinite(metrics["eval_loss"]) and metrics["steps"] == 2
