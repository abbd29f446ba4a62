"""The curriculum end to end on a small demo run: loss falls in every supervised stage, GRPO logs its rewards,
reruns skip finished stages, and a stage killed mid-way resumes from its checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from shicheng.curate.pipeline import curate
from shicheng.demo import generate_demo
from shicheng.train.runner import read_manifest, train

TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 1024, "tie_word_embeddings": True}


def _stage(name, method, datasets, **kw):
    return {"name": name, "method": method, "datasets": datasets, "batch_size": 4, "max_length": 384,
            "logging_steps": 1, "save_steps": 5, **kw}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    generate_demo(root / "materials", seed=3, n_cases=80)
    curate([root / "materials"], root / "data", seed=3, show_progress=False)
    return root / "data"


def _config(tmp_path, data_dir, stages, **extra) -> Path:
    cfg = {"run_dir": str(tmp_path / "run"), "data_dir": str(data_dir), "seed": 0,
           "base_model": {"tiny": TINY}, "tokenizer": {"train_vocab_size": 1500, "max_new_tokens": 100}, "stages": stages,
           **extra}
    path = tmp_path / "cfg.yaml"
    path.write_text("# Run: shicheng train --config cfg.yaml\n" + yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


def test_five_stages_loss_falls_and_rerun_skips(tmp_path, data_dir):
    stages = [
        _stage("cpt", "cpt", ["stage1_cpt"], max_steps=16, learning_rate=3e-3, embedding_learning_rate=6e-3, packing=True),
        # LoRA (then merged) where the loss is still high enough to fall visibly in 16 steps of a 64-wide model
        _stage("general", "sft", ["stage2_sft"], max_steps=16, learning_rate=1e-2, max_length=640,
               lora={"r": 16, "alpha": 32, "dropout": 0.0}),
        _stage("reasoning", "sft", ["stage3_reasoning"], max_steps=16, learning_rate=3e-3, max_length=1024),
        _stage("master", "sft", ["stage4_master_sft"], max_steps=16, learning_rate=3e-3, max_length=1024),
        _stage("grpo", "grpo", ["stage5_rl"], max_steps=2, learning_rate=1e-5, num_generations=2, max_completion_length=32),
    ]
    cfg = _config(tmp_path, data_dir, stages)
    manifests = train(cfg)
    assert [m["stage"]["name"] for m in manifests] == ["cpt", "general", "reasoning", "master", "grpo"]
    run = tmp_path / "run"
    for i, m in enumerate(manifests[:4], start=1):
        losses = [r["loss"] for r in map(json.loads, (run / f"stage-{i}-{m['stage']['name']}" / "metrics.jsonl").open())
                  if "loss" in r]
        assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4, (m["stage"]["name"], losses)  # per-step noise averaged
    for m in manifests:
        assert m["status"] == "done" and m["tokenizer_sha256"] and m["datasets"] and m["seed"] == 0
    grpo_log = [json.loads(x) for x in (run / "stage-5-grpo" / "metrics.jsonl").open()]
    assert any("frac_reward_zero_std" in r for r in grpo_log)
    assert any(k.startswith("rewards/") for r in grpo_log for k in r)
    assert (run / "stage-5-grpo" / "config.json").exists() and (run / "stage-5-grpo" / "masters.json").exists()
    base = read_manifest(run / "stage-0-base")
    assert base["tokenizer_extension"]["added"] > 0
    t0 = time.time()
    again = train(cfg)  # everything finished: nothing retrains
    assert time.time() - t0 < 30 and [m["duration_s"] for m in again] == [m["duration_s"] for m in manifests]


def test_killed_stage_resumes_from_checkpoint(tmp_path, data_dir):
    stages = [_stage("cpt", "cpt", ["stage1_cpt"], max_steps=400, save_steps=3, learning_rate=1e-3)]
    cfg = _config(tmp_path, data_dir, stages)
    cmd = [sys.executable, "-m", "shicheng.cli", "train", "--config", str(cfg)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt_dir = tmp_path / "run" / "stage-1-cpt" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and not list(ckpt_dir.glob("checkpoint-*/trainer_state.json")):
        time.sleep(0.5)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(ckpt_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert done, "no checkpoint was written before the kill"
    assert read_manifest(tmp_path / "run" / "stage-1-cpt")["status"] == "running"
    # Finish quickly: the same run, now allowed fewer steps than planned, resumes rather than restarting.
    data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    last = int(done[-1].name.split("-")[1])
    data["stages"][0]["max_steps"] = last + 3
    cfg.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "resuming from" in res.stdout + res.stderr
    m = read_manifest(tmp_path / "run" / "stage-1-cpt")
    assert m["status"] == "done" and m["final_metrics"]["resumed_from"].startswith("checkpoint-")


def test_dpo_on_style_contrast_pairs(tmp_path, data_dir):
    import json as _json

    from shicheng.train.stages import style_pairs

    rows = [_json.loads(x) for x in (data_dir / "stage5_rl" / "train.jsonl").open(encoding="utf-8")]
    pairs = style_pairs(rows, seed=0)
    assert pairs and all(p["chosen"] != p["rejected"] for p in pairs)
    stages = [_stage("dpo", "dpo", ["stage5_rl"], max_steps=3, learning_rate=1e-4, max_length=1024)]
    manifests = train(_config(tmp_path, data_dir, stages, ))
    assert manifests[0]["status"] == "done" and manifests[0]["final_metrics"]["steps"] == 3
