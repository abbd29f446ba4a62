"""One function per training method, each a thin layer over TRL: cpt, sft, grpo, dpo.

Each takes the model and tokenizer of the previous stage, trains on the stage's datasets, writes
checkpoints under `out/checkpoints` (so a killed stage resumes), and returns the final metrics.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import torch
from datasets import Dataset, concatenate_datasets, load_dataset
from transformers import TrainerCallback
from transformers.trainer_utils import speed_metrics

from shicheng.train.config import StageCfg, TrainConfig
from shicheng.train.dist import process_state

ENDOFTEXT = "<|endoftext|>"
IM_END = "<|im_end|>"


class JsonlMetrics(TrainerCallback):
    """Appends every log record (loss, lr, rewards, frac_reward_zero_std …) to metrics.jsonl, from rank 0 only
    (the logged values are already averaged over the ranks)."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")


def load_split(cfg: TrainConfig, stage: StageCfg, split: str) -> Dataset | None:
    data = _load_split(cfg, stage, split)
    if data is not None and split != "train" and stage.group_by_length:
        data = data.select(longest_first(data))
    return data


def row_lengths(data: Dataset) -> list[int] | None:
    """Characters per row (all messages, or the text); None when the rows have neither."""
    if "messages" in data.column_names:
        return [sum(len(m["content"]) for m in msgs) for msgs in data["messages"]]
    if "text" in data.column_names:
        return [len(t) for t in data["text"]]
    return None


def longest_first(data: Dataset) -> list[int]:
    """Row indices, longest row first. For the held-out rows: the evaluation loop pads each batch to its
    longest row and keeps the dataset's order, which is shuffled."""
    lengths = row_lengths(data)
    if lengths is None:
        return list(range(len(data)))
    return sorted(range(len(data)), key=lambda i: -lengths[i])


def _load_split(cfg: TrainConfig, stage: StageCfg, split: str) -> Dataset | None:
    parts = []
    for name in stage.datasets:
        path = Path(cfg.data_dir) / name / f"{split}.jsonl"
        if path.exists() and path.stat().st_size > 0:
            parts.append(load_dataset("json", data_files=str(path), split="train"))
    if not parts:
        return None
    data = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    if split == "train":
        data = data.shuffle(seed=cfg.seed)
    if stage.phases:
        if "task" not in data.column_names:
            raise ValueError(f"stage {stage.name}: phases draw rows by task, but {stage.datasets} has no `task` column")
        if split == "train":
            return data.select(phased_rows(data, stage, cfg.seed))
        # held out: the last (final) mix, an eighth of the stage's rows as for a capped stage
        cap = max(16, sum(p.rows for p in stage.phases) // 8)
        return data.select(weighted_rows(data["task"], stage.phases[-1].task_weights or {}, cap))
    cap = stage.max_train_rows if split == "train" else max(16, (stage.max_train_rows or 10**9) // 8)
    if stage.task_weights and "task" in data.column_names:
        return data.select(weighted_rows(data["task"], stage.task_weights, cap))
    if cap is not None and len(data) > cap:
        data = data.select(range(cap))
    return data


def weighted_rows(tasks: list[str], weights: dict[str, float], cap: int | None) -> list[int]:
    """Row indices (a task's rows in their shuffled order, repeated when its share is larger than what it has)
    such that each task's share of the stage's rows follows its weight.

    The stage keeps `cap` rows (all of them when there is no cap); tasks not named weigh 1, weight 0 leaves a
    task out. Repeating is the point: a task weighted 3 is seen about three times as often, even when it has
    no more rows than the others.
    """
    by_task: dict[str, list[int]] = {}
    for i, task in enumerate(tasks):
        if weights.get(task, 1.0) > 0:
            by_task.setdefault(task, []).append(i)
    budget = sum(len(v) for v in by_task.values()) if cap is None else cap
    total_weight = sum(weights.get(t, 1.0) for t in by_task)
    chosen = []
    for task, idx in sorted(by_task.items()):
        n = round(budget * weights.get(task, 1.0) / total_weight)
        chosen += [idx[k % len(idx)] for k in range(n)]
    return sorted(chosen)


# HF's LengthGroupedSampler sorts chunks of 50 batches by length; phased stages order their rows the same way.
MEGABATCH_BATCHES = 50


def phased_rows(data: Dataset, stage: StageCfg, seed: int) -> list[int]:
    """Row indices in training order: each phase's weighted rows, shuffled, phase after phase.

    The trainer keeps this order (`keep_order`), so a tiny model can first learn to read the findings on short
    answers (the demo: syndrome rows alone) before the long ones share its steps. With `group_by_length`, rows
    are sorted by length inside chunks of 50 batches, as transformers' LengthGroupedSampler does, but never
    across a phase boundary.
    """
    lengths = row_lengths(data) if stage.group_by_length else None
    rng = random.Random(seed)
    order: list[int] = []
    for phase in stage.phases:
        rows = weighted_rows(data["task"], phase.task_weights or {}, phase.rows)
        rng.shuffle(rows)
        if lengths is not None:
            size = stage.batch_size * stage.grad_accum * MEGABATCH_BATCHES
            rows = [i for k in range(0, len(rows), size)
                    for i in sorted(rows[k:k + size], key=lambda i: -lengths[i])]
        order += rows
    return order


def phase_schedule(optimizer, phase_rows: list[int], rows_per_step: float, warmup_ratio: float):
    """Cosine with warm-up restarted at each phase: the long answers of a later phase are learnt at the full
    learning rate, not on the tail of one schedule (in the demo, one schedule over both phases left 23 % of the
    full chains complete, a restart 39 %, same rows). Phase lengths are in rows, so a phase boundary may
    fall inside a step."""
    bounds, start = [], 0.0
    for rows in phase_rows:
        bounds.append((start, rows / rows_per_step))
        start += rows / rows_per_step

    def factor(step: int) -> float:
        begin, length = next(((b, n) for b, n in bounds if step < b + n), bounds[-1])
        local = step - begin
        warm = max(1.0, warmup_ratio * length)
        if local < warm:
            return (local + 1) / warm
        return max(0.0, 0.5 * (1 + math.cos(math.pi * min(1.0, (local - warm) / max(1.0, length - warm)))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def transformers_major(version: str | None = None) -> int:
    """The major version of `version`, or of the installed transformers."""
    if version is None:
        import transformers

        version = transformers.__version__
    return int(version.split(".", 1)[0])


def warmup_args(ratio: float, transformers_version: str | None = None) -> dict:
    """The warmup fraction as the installed transformers reads it.

    transformers 5 removed `warmup_ratio` (deprecated in 5.0, gone in 5.2) and reads a `warmup_steps` below 1
    as a fraction of the steps; 4.x reads `warmup_steps` as a step count only, so 0.03 there would mean no
    warmup at all, and the fraction must go to `warmup_ratio` (transformers PR #41326, peft issue #2949).
    """
    major = transformers_major(transformers_version)
    return {"warmup_steps": ratio} if major >= 5 else {"warmup_ratio": ratio}


def sampler_args(group_by_length: bool, transformers_version: str | None = None) -> dict:
    """Length-grouped batches as the installed transformers spells them (5.x: `train_sampling_strategy`,
    4.x: `group_by_length`). Without packing, batches of similar lengths waste little compute on padding."""
    if not group_by_length:
        return {}
    major = transformers_major(transformers_version)
    return {"train_sampling_strategy": "group_by_length"} if major >= 5 else {"group_by_length": True}


def _common_args(cfg: TrainConfig, stage: StageCfg, out: Path, has_eval: bool) -> dict:
    # a phased stage groups by length itself (phased_rows) and keeps that order
    return dict(**sampler_args(stage.group_by_length and not stage.phases),
        output_dir=str(out / "checkpoints"), per_device_train_batch_size=stage.batch_size,
        per_device_eval_batch_size=stage.batch_size, gradient_accumulation_steps=stage.grad_accum,
        learning_rate=stage.learning_rate, num_train_epochs=stage.epochs, max_steps=stage.max_steps,
        **warmup_args(stage.warmup_ratio), weight_decay=stage.weight_decay, lr_scheduler_type="cosine",
        logging_steps=stage.logging_steps, save_steps=stage.save_steps, save_total_limit=2,
        eval_strategy="epoch" if has_eval else "no", report_to=[], seed=cfg.seed, data_seed=cfg.seed,
        bf16=cfg.bf16, gradient_checkpointing=stage.gradient_checkpointing, dataloader_num_workers=0,
        disable_tqdm=False, save_only_model=False,
    )


def _peft_config(stage: StageCfg, extra_modules: list[str] | None = None):
    if stage.lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(r=stage.lora.r, lora_alpha=stage.lora.alpha, lora_dropout=stage.lora.dropout,
                      target_modules=stage.lora.targets, task_type="CAUSAL_LM", modules_to_save=extra_modules)


def _embedding_optimizer(model, stage: StageCfg):
    """AdamW with the token embeddings (and an untied lm_head) in their own group and learning rate."""
    emb = {id(p) for p in (model.get_input_embeddings().weight, model.get_output_embeddings().weight)}
    fast = [p for p in model.parameters() if id(p) in emb and p.requires_grad]
    rest = [p for p in model.parameters() if id(p) not in emb and p.requires_grad]
    return torch.optim.AdamW([{"params": rest, "lr": stage.learning_rate},
                              {"params": fast, "lr": stage.embedding_learning_rate}],
                             lr=stage.learning_rate, weight_decay=stage.weight_decay)


def train_cpt(cfg, stage, model, tokenizer, out: Path, resume: bool):
    from trl import SFTConfig

    SFTTrainer = sft_trainer_class()
    train, evald = load_split(cfg, stage, "train"), load_split(cfg, stage, "validation")
    train = train.select_columns(["text"])
    evald = evald.select_columns(["text"]) if evald is not None else None
    args = SFTConfig(**_common_args(cfg, stage, out, evald is not None), dataset_text_field="text",
                     max_length=stage.max_length, packing=stage.packing, eos_token=ENDOFTEXT,
                     packing_strategy="wrapped" if stage.packing else "bfd")
    optimizers = (None, None)
    if stage.embedding_learning_rate is not None and stage.lora is None:
        optimizers = (_embedding_optimizer(model, stage), None)
    peft = _peft_config(stage, ["embed_tokens", "lm_head"])  # new token rows must learn under LoRA too
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=evald, processing_class=tokenizer,
                         peft_config=peft, optimizers=optimizers, callbacks=[JsonlMetrics(out / "metrics.jsonl")])
    return _run(trainer, resume)


def _answer_loss_trainer():
    """SFTTrainer whose loss projects onto the vocabulary only the positions that carry a label.

    TRL's default loss runs its chunked log-prob kernel over every position (prompt included) and also
    computes the entropy; on CPU, with prompts several times longer than the answers and a vocabulary as
    wide as the model, that projection is most of the step (benchmarks/train_throughput.py measures it).
    CPT has labels everywhere and still gains: one plain cross-entropy instead of the tiled kernel.
    The result is the same token-mean cross-entropy. Used only where it is exact and cheap to be sure of:
    on CPU (on a GPU TRL's fused kernel avoids materialising 150k-wide logits, which this would not), in
    one process (a DDP wrapper must see the forward call) and without a PEFT wrapper.
    """
    import torch.nn.functional as F
    from trl import SFTTrainer

    class AnswerLossSFTTrainer(SFTTrainer):
        keep_order = False  # a phased stage: train the rows in the order load_split gave them
        phase_rows: list[int] | None = None  # ... and give each phase its own warm-up and cosine decay

        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.phase_rows and self.lr_scheduler is None:
                self.lr_scheduler = phase_schedule(optimizer or self.optimizer, self.phase_rows,
                                                   rows_per_step=len(self.train_dataset) / num_training_steps,
                                                   warmup_ratio=self.warmup_ratio)
            return super().create_scheduler(num_training_steps, optimizer)

        def _get_train_sampler(self, *args, **kwargs):
            if self.keep_order:
                dataset = args[0] if args else kwargs.get("train_dataset") or self.train_dataset
                return torch.utils.data.SequentialSampler(dataset)
            return super()._get_train_sampler(*args, **kwargs)

        def _projects_answers_only(self, model) -> bool:
            return (self.accelerator.num_processes == 1 and self.args.device.type == "cpu"
                    and getattr(model, "model", None) is not None and not hasattr(model, "peft_config"))

        def _answer_token_losses(self, model, inputs):
            """Cross-entropy summed over the answer tokens, their logits (for the accuracy) and targets."""
            labels = inputs["labels"]
            kwargs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
            hidden = model.model(**kwargs, use_cache=False).last_hidden_state[:, :-1]
            target = labels[:, 1:]
            keep = target != -100
            logits = model.get_output_embeddings()(hidden[keep]).float()
            return F.cross_entropy(logits, target[keep], reduction="sum"), logits, target[keep]

        def _answer_loss(self, model, inputs, num_items_in_batch=None):
            loss, logits, target = self._answer_token_losses(model, inputs)
            n = num_items_in_batch if num_items_in_batch is not None else len(target)
            loss = loss / torch.as_tensor(n, device=loss.device).clamp(min=1)
            metrics = getattr(self, "_metrics", None)  # TRL's per-log averages; older TRL has none
            if metrics is not None and len(target):
                with torch.no_grad():
                    hits = (logits.argmax(-1) == target).float().mean().item()
                metrics["train" if model.training else "eval"]["mean_token_accuracy"].append(hits)
            return loss

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs or "labels" not in inputs or not self._projects_answers_only(model):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            return self._answer_loss(model, inputs, num_items_in_batch)

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            """The held-out loss as one mean over all answer tokens, whatever the batches.

            Trainer.evaluate averages the batches' own means, so its loss moves with the order of the rows, and
            it asks compute_loss for the outputs, which is TRL's projection of every position. Order-free, the
            held-out rows can come longest first (load_split) and batches pad little: stage 4's validation rows
            took 24 s instead of 42 s (CPU, one process; elsewhere Trainer.evaluate, on the same order).
            """
            dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
            model = self.model
            if dataset is None or isinstance(dataset, dict) or not self._projects_answers_only(model):
                return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            start = time.time()
            loader = self.get_eval_dataloader(dataset)
            was_training = model.training
            model.eval()
            total, tokens, hits = 0.0, 0, 0
            with torch.no_grad():
                for inputs in loader:
                    loss, logits, target = self._answer_token_losses(model, self._prepare_inputs(inputs))
                    total += float(loss)
                    tokens += len(target)
                    hits += int((logits.argmax(-1) == target).sum())
            p = metric_key_prefix
            metrics = {f"{p}_loss": total / max(tokens, 1), f"{p}_mean_token_accuracy": hits / max(tokens, 1),
                       f"{p}_answer_tokens": tokens,
                       **speed_metrics(p, start, num_samples=len(dataset), num_steps=len(loader))}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            model.train(was_training)
            return metrics

    return AnswerLossSFTTrainer


def sft_trainer_class():
    """The SFT trainer our stages use (TRL's, with the answer-only loss projection on CPU)."""
    return _answer_loss_trainer()


def train_sft(cfg, stage, model, tokenizer, out: Path, resume: bool):
    from trl import SFTConfig

    SFTTrainer = sft_trainer_class()
    train, evald = load_split(cfg, stage, "train"), load_split(cfg, stage, "validation")
    train = train.select_columns(["messages"])
    evald = evald.select_columns(["messages"]) if evald is not None else None
    args = SFTConfig(**_common_args(cfg, stage, out, evald is not None), max_length=stage.max_length,
                     packing=stage.packing, assistant_only_loss=True, eos_token=IM_END)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=evald, processing_class=tokenizer,
                         peft_config=_peft_config(stage), callbacks=[JsonlMetrics(out / "metrics.jsonl")])
    if stage.phases:
        trainer.keep_order, trainer.warmup_ratio = True, stage.warmup_ratio
        trainer.phase_rows = [p.rows for p in stage.phases]
    return _run(trainer, resume)


def style_model_for(cfg: TrainConfig):
    """Fit (once per run, on rank 0) the master-style model on the stage-5 training rows; cached as JSON in the
    run dir, which the other ranks load after rank 0 wrote it, so that every rank scores with the same model."""
    from shicheng.metrics import MasterStyleModel

    path = Path(cfg.run_dir) / "style_model.json"
    with process_state().main_process_first():
        if path.exists():
            return MasterStyleModel.load(path)
        rows = [json.loads(line) for line in (Path(cfg.data_dir) / "stage5_rl" / "train.jsonl").open(encoding="utf-8")]
        model = MasterStyleModel.fit_rows(rows)
        model.save(path)
        return model


def reward_functions(cfg: TrainConfig, stage: StageCfg):
    from shicheng.train import rewards

    style = style_model_for(cfg) if "master_style" in stage.rewards else None
    return rewards.reward_functions(stage.rewards, style)


def train_grpo(cfg, stage, model, tokenizer, out: Path, resume: bool):
    from trl import GRPOConfig, GRPOTrainer

    train = load_split(cfg, stage, "train")
    funcs, weights = reward_functions(cfg, stage)
    common = _common_args(cfg, stage, out, False)
    args = GRPOConfig(**common, num_generations=stage.num_generations,
                      max_completion_length=stage.max_completion_length, temperature=stage.temperature,
                      beta=stage.beta, reward_weights=weights, remove_unused_columns=False,
                      repetition_penalty=stage.repetition_penalty,
                      generation_kwargs={"no_repeat_ngram_size": stage.no_repeat_ngram_size}
                      if stage.no_repeat_ngram_size else None,
                      steps_per_generation=1, log_completions=False)  # one global batch per generation
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=train,
                          processing_class=tokenizer, peft_config=_peft_config(stage),
                          callbacks=[JsonlMetrics(out / "metrics.jsonl")])
    return _run(trainer, resume)


def style_pairs(rows: list[dict], seed: int) -> list[dict]:
    """DPO pairs: the requested master's gold answer (chosen) vs another master's answer to a case of the
    same syndrome when there is one, else to any case (rejected)."""
    from shicheng.domain import Answer
    from shicheng.template import render_answer

    rng = random.Random(seed)
    by_syndrome: dict[str, list[dict]] = {}
    for r in rows:
        by_syndrome.setdefault((r["gold"].get("syndrome") or "")[:4], []).append(r)
    pairs = []
    for r in rows:
        same = [o for o in by_syndrome[(r["gold"].get("syndrome") or "")[:4]] if o["master_id"] != r["master_id"]]
        others = same or [o for o in rows if o["master_id"] != r["master_id"]]
        if not others:
            continue
        o = rng.choice(others)
        pairs.append({"prompt": r["prompt"],
                      "chosen": [{"role": "assistant", "content": render_answer(Answer(**r["gold"]))}],
                      "rejected": [{"role": "assistant", "content": render_answer(Answer(**o["gold"]))}]})
    return pairs


def train_dpo(cfg, stage, model, tokenizer, out: Path, resume: bool):
    from trl import DPOConfig, DPOTrainer

    rows = load_split(cfg, stage, "train").to_list()
    train = Dataset.from_list(style_pairs(rows, cfg.seed))
    args = DPOConfig(**_common_args(cfg, stage, out, False), beta=stage.dpo_beta, max_length=stage.max_length)
    trainer = DPOTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                         peft_config=_peft_config(stage), callbacks=[JsonlMetrics(out / "metrics.jsonl")])
    return _run(trainer, resume)


def complete_checkpoint(path: Path, world_size: int) -> bool:
    """A checkpoint every rank finished writing: the Trainer writes trainer_state.json last, from rank 0, but
    each rank writes its own RNG state (rng_state_R.pth, or rng_state.pth alone) with no barrier before it."""
    try:
        json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if world_size <= 1:
        return (path / "rng_state.pth").exists() or (path / "rng_state_0.pth").exists()
    return all((path / f"rng_state_{r}.pth").exists() for r in range(world_size))


def _last_checkpoint(trainer) -> str | None:
    """The newest complete checkpoint (transformers' get_last_checkpoint takes the newest directory, even one
    a killed run left half written)."""
    d = Path(trainer.args.output_dir)
    if not d.exists():
        return None
    found = [p for p in d.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    for path in sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        if complete_checkpoint(path, trainer.args.world_size):
            return str(path)
    return None


def _final_evaluation(trainer) -> dict:
    """The held-out metrics of the final weights: those the epoch-end evaluation logged at the last step when
    there was one (evaluating again would repeat it), else a fresh evaluation."""
    last = trainer.state.global_step
    for entry in reversed(trainer.state.log_history):
        if entry.get("step") == last and "eval_loss" in entry:
            return {k: v for k, v in entry.items() if k.startswith("eval_")}
    return trainer.evaluate()


def _run(trainer, resume: bool):
    ckpt = _last_checkpoint(trainer) if resume else None
    if trainer.accelerator.num_processes > 1:  # every rank resumes from the checkpoint rank 0 chose
        from accelerate.utils import broadcast_object_list

        ckpt = broadcast_object_list([ckpt])[0]
    if ckpt:
        print(f"resuming from {ckpt}", flush=True)
    result = trainer.train(resume_from_checkpoint=ckpt)
    metrics = dict(result.metrics)
    metrics["steps"] = trainer.state.global_step
    metrics["resumed_from"] = Path(ckpt).name if ckpt else None
    if trainer.args.eval_strategy != "no" and trainer.eval_dataset is not None:
        ev = _final_evaluation(trainer)
        metrics.update({k: v for k, v in ev.items() if isinstance(v, (int, float)) and math.isfinite(v)})
    return trainer, metrics


TRAINERS = {"cpt": train_cpt, "sft": train_sft, "grpo": train_grpo, "dpo": train_dpo}
