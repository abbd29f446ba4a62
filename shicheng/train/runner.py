"""`shicheng train`: the five-stage curriculum, one stage after another, each from the last one's model.

    RUN/stage-0-base/            base model + (trained or extended) tokenizer, tokenizer report
    RUN/stage-N-name/            Hugging Face model dir + metrics.jsonl + manifest.json (+ checkpoints/ while running)

A stage with a manifest whose status is "done" is skipped on rerun; a stage killed mid-way restarts
from its last checkpoint. The manifest records config, dataset hashes, tokenizer hash, seed, git
commit, duration and final metrics, so a model directory says how it was made.

Under `accelerate launch` (several processes) every rank runs this same code: rank 0 alone computes
stage 0 and writes config.yaml, the manifests, masters.json and each stage's model; the other ranks
wait at a barrier and then read what it wrote (tests/train/test_distributed.py).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from shicheng.domain import load_master_files
from shicheng.train.config import TrainConfig, load_config, parse_stage_range
from shicheng.train.dist import process_state

console = Console()


def _sha256(path: Path) -> str | None:
    if not path.exists():
        return None
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def read_manifest(stage_dir: Path) -> dict | None:
    path = stage_dir / "manifest.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def is_done(stage_dir: Path) -> bool:
    m = read_manifest(stage_dir)
    return bool(m and m.get("status") == "done")


def write_manifest(stage_dir: Path, data: dict) -> None:
    tmp = stage_dir / "manifest.json.tmp"
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    tmp.replace(stage_dir / "manifest.json")


def _corpus_texts(cfg: TrainConfig, limit_chars: int = 5_000_000) -> list[str]:
    texts, total = [], 0
    path = Path(cfg.data_dir) / "stage1_cpt" / "train.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `shicheng curate` first (data_dir: {cfg.data_dir})")
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            t = json.loads(line)["text"]
            texts.append(t)
            total += len(t)
            if total >= limit_chars:
                break
    return texts


def _dialogue_texts(cfg: TrainConfig, limit_chars: int = 3_000_000) -> list[str]:
    """The turns of the SFT training rows (stages 2–4), for a tokenizer trained from scratch: the system
    prompt and task lines recur in every row, and a vocabulary that has seen them spends a few tokens on
    them instead of a hundred per row."""
    texts, total = [], 0
    for name in ("stage4_master_sft", "stage2_sft", "stage3_reasoning"):
        path = Path(cfg.data_dir) / name / "train.jsonl"
        if not path.exists():
            continue
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                for message in json.loads(line).get("messages", []):
                    texts.append(message["content"])
                    total += len(message["content"])
                if total >= limit_chars:
                    return texts
    return texts


def _heldout_texts(cfg: TrainConfig) -> list[str]:
    path = Path(cfg.data_dir) / "stage1_cpt" / "validation.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["text"] for line in path.open(encoding="utf-8")]


def prepare_base(cfg: TrainConfig, out: Path) -> dict:
    """Stage 0: the base model with the TCM-extended tokenizer (embeddings resized and initialised)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from shicheng.train import tokenizer as tk

    torch.manual_seed(cfg.seed)
    corpus = _corpus_texts(cfg)
    if cfg.tokenizer.train_vocab_size:
        tokenizer = tk.train_demo_tokenizer([*corpus, *_dialogue_texts(cfg)],
                                            vocab_size=cfg.tokenizer.train_vocab_size)
    else:
        tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer.path or cfg.base_model.path)
    dtype = getattr(torch, cfg.base_model.dtype)
    if cfg.base_model.tiny is not None:
        t = cfg.base_model.tiny
        vocab = tokenizer.get_vocab()
        config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=t.hidden_size,
                             intermediate_size=t.intermediate_size, num_hidden_layers=t.num_hidden_layers,
                             num_attention_heads=t.num_attention_heads, num_key_value_heads=t.num_key_value_heads,
                             max_position_embeddings=t.max_position_embeddings,
                             tie_word_embeddings=t.tie_word_embeddings, bos_token_id=vocab[tk.ENDOFTEXT],
                             eos_token_id=vocab[tk.IM_END], pad_token_id=vocab[tk.ENDOFTEXT])
        model = Qwen2ForCausalLM(config).to(dtype)
    else:
        kwargs = {"dtype": dtype}
        if cfg.base_model.attn_implementation:
            kwargs["attn_implementation"] = cfg.base_model.attn_implementation
        model = AutoModelForCausalLM.from_pretrained(cfg.base_model.path, **kwargs)
    report = None
    if cfg.tokenizer.extend:
        terms = tk.mine_terms(tokenizer, tk.knowledge_terms(), corpus, min_pieces=cfg.tokenizer.min_pieces,
                              max_new=cfg.tokenizer.max_new_tokens, min_freq=cfg.tokenizer.min_freq)
        report = tk.extend_tokenizer(tokenizer, model, [*tk.TAG_TOKENS, *terms], heldout_texts=_heldout_texts(cfg))
        console.print(f"tokenizer: +{report.added} TCM tokens; tokens/1k chars {report.tokens_per_1k_before} -> "
                      f"{report.tokens_per_1k_after} ({report.reduction_pct}% fewer)")
    else:
        tk.configure_chat_tokens(tokenizer, model)
    out.mkdir(parents=True, exist_ok=True)
    set_generation_defaults(cfg, model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    copy_masters(cfg, out)
    return {"tokenizer_extension": report.to_dict() if report else None, "parameters": model.num_parameters()}


def set_generation_defaults(cfg: TrainConfig, model) -> None:
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.repetition_penalty = cfg.generation.repetition_penalty
        gen.no_repeat_ngram_size = cfg.generation.no_repeat_ngram_size
        # not a transformers setting: GenerationConfig keeps it as an extra attribute in generation_config.json
        gen.guide_sections = cfg.generation.guide_sections


def copy_masters(cfg: TrainConfig, out: Path) -> None:
    """masters.json beside the weights: the masters this model was trained on (the agent lists them)."""
    folder = Path(cfg.data_dir) / "masters"
    found = load_master_files(folder, suffixes=(".json",)) if folder.is_dir() else {}
    masters = [m.model_dump(mode="json") for m in found.values()]
    (out / "masters.json").write_text(json.dumps(masters, ensure_ascii=False, indent=2), encoding="utf-8")


def load_stage_model(stage_dir: Path, cfg: TrainConfig):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(stage_dir)
    dtype = getattr(torch, cfg.base_model.dtype)
    kwargs = {"dtype": dtype}
    if cfg.base_model.attn_implementation:
        kwargs["attn_implementation"] = cfg.base_model.attn_implementation
    if (stage_dir / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(stage_dir, **kwargs).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(stage_dir, **kwargs)
    return model, tokenizer


def _dataset_hashes(cfg: TrainConfig, names: list[str]) -> dict:
    return {f"{n}/{p.name}": _sha256(p) for n in names for p in sorted((Path(cfg.data_dir) / n).glob("*.jsonl"))}


def _loss_curve(stage_dir: Path) -> tuple[float | None, float | None]:
    path = stage_dir / "metrics.jsonl"
    if not path.exists():
        return None, None
    losses = [r["loss"] for r in map(json.loads, path.open(encoding="utf-8")) if "loss" in r]
    return (losses[0], losses[-1]) if losses else (None, None)


def run_stage(cfg: TrainConfig, index: int, source: Path, resume: bool) -> dict:
    from transformers import set_seed

    from shicheng.train.stages import TRAINERS

    stage = cfg.stages[index]
    out = cfg.stage_dir(index)
    state = process_state()
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
            (out / "metrics.jsonl").unlink(missing_ok=True)
        write_manifest(out, {"status": "running", "stage": stage.model_dump(), "source": str(source),
                             "num_processes": state.num_processes})
    state.wait_for_everyone()  # no rank looks for checkpoints while rank 0 may still be clearing them
    set_seed(cfg.seed)
    model, tokenizer = load_stage_model(source, cfg)
    if state.is_main_process:
        console.rule(f"stage {index + 1}/{len(cfg.stages)}: {stage.name} ({stage.method}) from {source.name}")
    t0 = time.time()
    trainer, metrics = TRAINERS[stage.method](cfg, stage, model, tokenizer, out, resume)
    if not state.is_main_process:
        state.wait_for_everyone()  # rank 0 writes the model and the manifest; the next stage loads them
        return read_manifest(out)
    model = trainer.model
    if stage.lora is not None and stage.merge:
        model = model.merge_and_unload()
    set_generation_defaults(cfg, model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    copy_masters(cfg, out)
    first, last = _loss_curve(out)
    metrics.update({"first_logged_loss": first, "last_logged_loss": last})
    manifest = {
        "status": "done", "stage": stage.model_dump(), "index": index + 1, "source": str(source),
        "seed": cfg.seed, "git_commit": git_commit(), "duration_s": round(time.time() - t0, 1),
        "datasets": _dataset_hashes(cfg, stage.datasets), "tokenizer_sha256": _sha256(out / "tokenizer.json"),
        "base_model": cfg.base_model.model_dump(), "final_metrics": metrics, "num_processes": state.num_processes,
        "distributed_type": str(trainer.accelerator.distributed_type.value),
    }
    write_manifest(out, manifest)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # the stage is done; its model dir is the artefact
    state.wait_for_everyone()
    return manifest


def train(config: str | Path, stages: str | None = None, resume: bool = True) -> list[dict]:
    cfg = load_config(config)
    run_dir = Path(cfg.run_dir)
    state = process_state()
    selected = set(parse_stage_range(stages, len(cfg.stages)))
    base = run_dir / "stage-0-base"
    # Rank 0 first: it writes config.yaml and computes stage 0 (tokenizer, extension, base model); the other
    # ranks enter after it, find stage 0 done and load it.
    with state.main_process_first():
        if state.is_main_process:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), allow_unicode=True,
                                                                sort_keys=False), encoding="utf-8")
        if not is_done(base):
            if not state.is_main_process:
                raise RuntimeError(f"{base}: rank 0 did not finish stage 0")
            t0 = time.time()
            info = prepare_base(cfg, base)
            write_manifest(base, {"status": "done", "seed": cfg.seed, "git_commit": git_commit(),
                                  "duration_s": round(time.time() - t0, 1), "base_model": cfg.base_model.model_dump(),
                                  "tokenizer_sha256": _sha256(base / "tokenizer.json"), **info})
    source, done = base, []
    for i, stage in enumerate(cfg.stages):
        out = cfg.stage_dir(i)
        if is_done(out):
            if state.is_main_process:
                console.print(f"stage {i + 1} {stage.name}: done, skipped")
            done.append(read_manifest(out))
            source = out
            continue
        if i not in selected:
            if i < max(selected):
                raise RuntimeError(f"stage {i + 1} ({stage.name}) is not finished; run it before stage {max(selected) + 1}")
            break
        done.append(run_stage(cfg, i, source, resume))
        source = out
    if state.is_main_process:
        _summary(done)
        console.print(f"final model: {source}")
    return done


def _summary(manifests: list[dict]) -> None:
    table = Table(title="curriculum")
    for col in ("stage", "method", "steps", "first loss", "last loss", "seconds"):
        table.add_column(col)
    for m in manifests:
        fm = m.get("final_metrics", {})
        first, last = fm.get("first_logged_loss"), fm.get("last_logged_loss")
        table.add_row(f"{m.get('index')} {m['stage']['name']}", m["stage"]["method"], str(fm.get("steps", "")),
                      f"{first:.3f}" if first is not None else "-", f"{last:.3f}" if last is not None else "-",
                      str(m.get("duration_s")))
    total = sum(m.get("duration_s") or 0 for m in manifests)
    table.add_row("total", "", "", "", "", f"{total:.1f}")
    console.print(table)
