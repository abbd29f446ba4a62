"""`shicheng train` under two processes on CPU (gloo): the same losses as one process with the same global batch,
rank 0 alone writing what the run keeps, stage 0 computed once, the GRPO rewards the same on every rank, and a
run killed mid-stage resuming from its last complete checkpoint. Plus the multi-GPU launch configs: FSDP where
it can run on CPU, DeepSpeed's config against DeepSpeed's own schema.

How two processes start on CPU: `accelerate launch --cpu` starts one process (several need mpirun), so the
tests use the torch-elastic launcher accelerate uses for GPUs, with ACCELERATE_USE_CPU=true so that the ranks
join over gloo:

    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 -m shicheng.cli train --config F

Who writes what is observed, not assumed: a sitecustomize on the workers' PYTHONPATH adds a Python audit hook
that logs, per rank, every file under the run directory opened for writing or renamed into place.
Sizes: a hidden-32, 2-layer model and a handful of steps; each launch takes some 20-40 s on 2 busy cores.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from shicheng.curate.pipeline import curate
from shicheng.demo import generate_demo
from shicheng.train.runner import read_manifest
from shicheng.train.stages import complete_checkpoint

ROOT = Path(__file__).resolve().parents[2]
ACCELERATE = Path(sys.executable).parent / "accelerate"
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 1024, "tie_word_embeddings": True}
# Same rows per optimiser step in both runs (DDP hands batch 2k to rank 0 and 2k+1 to rank 1), so the losses
# differ only by float32 summation order, and by which loss kernel ran: one process uses the answer-only
# projection, two use TRL's own (stages.AnswerLossSFTTrainer); both are the token-mean cross-entropy.
# Measured: |difference| < 2e-5 over six steps; the bound leaves room for reduction order.
LOSS_RTOL = 1e-4

pytestmark = pytest.mark.skipif(not ACCELERATE.exists(), reason="the accelerate launcher is not installed")

AUDIT = '''
import os, sys
_root = os.environ.get("SHICHENG_AUDIT_ROOT")
if _root:
    _rank = os.environ.get("RANK", "launcher")
    _fd = os.open(os.path.join(os.environ["SHICHENG_AUDIT_DIR"], f"rank-{_rank}.log"),
                  os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _note(path):
        path = os.path.abspath(os.fsdecode(path))
        if path.startswith(_root):
            os.write(_fd, (os.path.relpath(path, _root) + "\\n").encode())

    def _hook(event, args):
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            mode, flags = args[1], args[2]
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (mode is None and flags & _writing):
                _note(args[0])
        elif event == "os.rename" and isinstance(args[1], (str, bytes, os.PathLike)):
            _note(args[1])

    sys.addaudithook(_hook)
'''


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist-demo")
    generate_demo(root / "materials", seed=3, n_cases=80)
    curate([root / "materials"], root / "data", seed=3, show_progress=False)
    return root / "data"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stage(name, method, datasets, **kw):
    return {"name": name, "method": method, "datasets": datasets, "max_length": 384, "logging_steps": 1,
            "save_steps": 50, **kw}


def _config(path: Path, data_dir: Path, stages: list[dict]) -> Path:
    cfg = {"run_dir": str(path.parent / "run"), "data_dir": str(data_dir), "seed": 0, "base_model": {"tiny": TINY},
           "tokenizer": {"train_vocab_size": 800, "max_new_tokens": 50}, "stages": stages}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Run: shicheng train --config cfg.yaml\n" + yaml.safe_dump(cfg, allow_unicode=True),
                    encoding="utf-8")
    return path


def _command(cfg: Path, processes: int, accelerate_config: Path | None = None) -> tuple[list[str], dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    train = ["-m", "shicheng.cli", "train", "--config", str(cfg)]
    if processes == 1:
        return [sys.executable, *train], env
    audit = cfg.parent / "audit"
    audit.mkdir(exist_ok=True)
    (audit / "sitecustomize.py").write_text(AUDIT, encoding="utf-8")
    env.update({"ACCELERATE_USE_CPU": "true", "SHICHENG_AUDIT_ROOT": str(cfg.parent / "run"),
                "SHICHENG_AUDIT_DIR": str(audit),
                "PYTHONPATH": os.pathsep.join([str(audit), str(ROOT), env.get("PYTHONPATH", "")])})
    launch = [str(ACCELERATE), "launch", "--num_processes", str(processes), "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    launch += ["--config_file", str(accelerate_config)] if accelerate_config else ["--multi_gpu"]
    return [*launch, *train], env


def _train(cfg: Path, processes: int, accelerate_config: Path | None = None) -> str:
    cmd, env = _command(cfg, processes, accelerate_config)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    return out


def _losses(stage_dir: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (stage_dir / "metrics.jsonl").open(encoding="utf-8")) if "loss" in r]


def _writes(cfg: Path) -> dict[str, list[str]]:
    """Per rank, the files under the run dir it opened for writing (in order, repeats kept); the launcher
    process (no RANK) must write nothing there."""
    found = {p.stem.removeprefix("rank-"): p.read_text(encoding="utf-8").split()
             for p in sorted((cfg.parent / "audit").glob("rank-*.log"))}
    assert found.pop("launcher", []) == []
    return found


SFT_GRPO = [
    ("general", "sft", ["stage2_sft"], {"max_steps": 6, "learning_rate": 3e-3, "save_steps": 3}),
    ("grpo", "grpo", ["stage5_rl"], {"max_steps": 2, "learning_rate": 1e-5, "num_generations": 2,
                                     "max_completion_length": 16}),
]


def _stages(global_batch: int, processes: int) -> list[dict]:
    return [_stage(name, method, ds, batch_size=global_batch // processes, **kw) for name, method, ds, kw in SFT_GRPO]


def test_two_processes_train_like_one_and_only_rank_0_writes(tmp_path, data_dir):
    one = _config(tmp_path / "one" / "cfg.yaml", data_dir, _stages(4, 1))
    two = _config(tmp_path / "two" / "cfg.yaml", data_dir, _stages(4, 2))
    _train(one, 1)
    log = _train(two, 2)
    run1, run2 = one.parent / "run", two.parent / "run"

    # The same global batch, the same losses.
    l1, l2 = _losses(run1 / "stage-1-general"), _losses(run2 / "stage-1-general")
    assert len(l1) == len(l2) == 6  # one metrics line per step: rank 1 logs nothing
    assert l2 == pytest.approx(l1, rel=LOSS_RTOL)

    # Stage 0 computed once (rank 0) and shared: one report line, the same tokenizer and weights as one process.
    assert log.count("tokenizer: +") == 1, log[-3000:]
    for name in ("tokenizer.json", "model.safetensors"):
        assert (run1 / "stage-0-base" / name).read_bytes() == (run2 / "stage-0-base" / name).read_bytes()

    for i, name in ((1, "general"), (2, "grpo")):
        m = read_manifest(run2 / f"stage-{i}-{name}")
        assert m["status"] == "done" and m["num_processes"] == 2 and m["distributed_type"] == "MULTI_CPU"
        assert (run2 / f"stage-{i}-{name}" / "masters.json").exists()
        assert not (run2 / f"stage-{i}-{name}" / "checkpoints").exists()
    grpo_log = [json.loads(x) for x in (run2 / "stage-2-grpo" / "metrics.jsonl").open(encoding="utf-8")]
    assert [r["step"] for r in grpo_log if "loss" in r] == [1, 2]
    assert all(any(k.startswith("rewards/") for k in r) for r in grpo_log if "loss" in r)

    writes = _writes(two)
    assert set(writes) == {"0", "1"}, writes.keys()
    kept = {"config.yaml", "stage-0-base/manifest.json", "stage-0-base/masters.json", "stage-0-base/config.json",
            "style_model.json", *(f"stage-{i}-{n}/{f}" for i, n in ((1, "general"), (2, "grpo"))
                                  for f in ("manifest.json", "masters.json", "config.json", "metrics.jsonl"))}
    assert kept <= set(writes["0"]), kept - set(writes["0"])
    # Rank 1 (its hook installed: it has a log) writes nothing the run keeps. Its own RNG state in each
    # checkpoint is the Trainer's; torch.save writes it from C++, which the hook does not see.
    assert all(Path(p).name == "rng_state_1.pth" for p in writes["1"]), writes["1"]
    # Rank 0 wrote each stage's manifest twice (running, done) through the tmp file, and config.yaml once.
    assert writes["0"].count("config.yaml") == 1
    assert writes["0"].count("stage-1-general/manifest.json") == 2


GRPO_PROBE = '''
import json, sys
from accelerate.utils import gather_object
from shicheng.metrics import MasterStyleModel
from shicheng.train import stages
from shicheng.train.config import load_config
from shicheng.train.dist import process_state

fits = []
_fit = MasterStyleModel.fit_rows.__func__
MasterStyleModel.fit_rows = classmethod(lambda cls, rows: fits.append(1) or _fit(cls, rows))
cfg = load_config(sys.argv[1])
state = process_state()
funcs, weights = stages.reward_functions(cfg, cfg.stages[0])
rows = [json.loads(x) for x in open(cfg.data_dir + "/stage5_rl/train.jsonl", encoding="utf-8")][:6]
from shicheng.domain import Answer
from shicheng.template import render_answer
# Each row's gold answer and another master's answer to it, as GRPO completions with the row's columns.
completions = [[{"role": "assistant", "content": render_answer(Answer(**r["gold"]))}] for r in rows]
completions += completions[1:] + completions[:1]
cols = {k: [r[k] for r in rows] * 2 for k in rows[0] if k != "prompt"}
prompts = [r["prompt"] for r in rows] * 2
scores = {f.__name__: f(prompts, completions, **cols) for f in funcs}
out = gather_object([{"rank": state.process_index, "fits": len(fits), "scores": scores}])
if state.is_main_process:
    open(sys.argv[2], "w").write(json.dumps(out))
'''


def test_grpo_rewards_agree_across_ranks(tmp_path, data_dir):
    """Every rank scores with the same style model (fit once, on rank 0) and gives a completion the same reward."""
    cfg = _config(tmp_path / "cfg.yaml", data_dir, [_stage("grpo", "grpo", ["stage5_rl"], batch_size=2,
                                                           num_generations=2)])
    (tmp_path / "run").mkdir()
    probe, result = tmp_path / "probe.py", tmp_path / "result.json"
    probe.write_text(GRPO_PROBE, encoding="utf-8")
    cmd, env = _command(cfg, 2)
    cmd = [*cmd[:cmd.index("-m")], str(probe), str(cfg), str(result)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    ranks = json.loads(result.read_text(encoding="utf-8"))
    assert [r["rank"] for r in ranks] == [0, 1]
    assert [r["fits"] for r in ranks] == [1, 0]  # rank 1 loaded what rank 0 fit
    assert ranks[0]["scores"] == ranks[1]["scores"]
    scores = ranks[0]["scores"]
    assert any("master_style" in k for k in scores) and all(len(v) == 12 for v in scores.values())
    assert len({round(x, 6) for v in scores.values() for x in v if x is not None}) > 2  # not a constant
    assert _writes(cfg) == {"0": ["style_model.json"], "1": []}


def test_complete_checkpoint_needs_trainer_state_and_every_ranks_rng(tmp_path):
    ckpt = tmp_path / "checkpoint-6"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"x")
    assert not complete_checkpoint(ckpt, 2)  # weights alone: rank 0 was still writing
    (ckpt / "rng_state_0.pth").write_bytes(b"x")
    (ckpt / "trainer_state.json").write_text('{"global_step": 6', encoding="utf-8")
    assert not complete_checkpoint(ckpt, 2)  # trainer_state.json cut short
    (ckpt / "trainer_state.json").write_text('{"global_step": 6}', encoding="utf-8")
    assert not complete_checkpoint(ckpt, 2)  # rank 1 has not written its RNG state yet
    assert complete_checkpoint(ckpt, 1)  # one process resuming a two-process run needs rank 0's only
    (ckpt / "rng_state_1.pth").write_bytes(b"x")
    assert complete_checkpoint(ckpt, 2)


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and its workers, by pid: torch elastic starts each rank in a session of its own, so
    killing the launcher's process group would leave the ranks training."""
    import psutil

    try:
        tree = [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    psutil.wait_procs(tree, timeout=30)
    proc.wait()


def test_two_process_run_killed_mid_stage_resumes_from_its_last_complete_checkpoint(tmp_path, data_dir):
    stages = [_stage("general", "sft", ["stage2_sft"], batch_size=2, max_steps=2000, save_steps=3,
                     learning_rate=1e-3)]
    cfg = _config(tmp_path / "cfg.yaml", data_dir, stages)
    cmd, env = _command(cfg, 2)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT,
                            start_new_session=True)
    ckpt_dir = tmp_path / "run" / "stage-1-general" / "checkpoints"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and not any(complete_checkpoint(p, 2) for p in ckpt_dir.glob("checkpoint-*")):
            assert proc.poll() is None, "the run ended before it wrote a checkpoint"
            time.sleep(0.3)
        time.sleep(1.0)
    finally:
        _kill_tree(proc)
    assert read_manifest(tmp_path / "run" / "stage-1-general")["status"] == "running"
    done = sorted((p for p in ckpt_dir.glob("checkpoint-*") if complete_checkpoint(p, 2)),
                  key=lambda p: int(p.name.split("-")[1]))
    assert done, "no complete checkpoint before the kill"
    last = int(done[-1].name.split("-")[1])
    # The window the Trainer leaves open: rank 0 has written a newer checkpoint, rank 1 not yet its RNG state.
    # (A kill at that moment leaves exactly this; transformers' get_last_checkpoint would pick it.)
    torn = ckpt_dir / f"checkpoint-{last + 1}"
    if torn.exists():
        subprocess.run(["rm", "-rf", str(torn)], check=True)
    subprocess.run(["cp", "-r", str(done[-1]), str(torn)], check=True)
    (torn / "rng_state_1.pth").unlink()
    data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    data["stages"][0]["max_steps"] = last + 3
    cfg.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    log = _train(cfg, 2)
    # Each rank says where it resumes: both from the last complete checkpoint, none from the torn one.
    assert log.count(f"resuming from {done[-1]}\n") == log.count("resuming from") == 2, log[-3000:]
    m = read_manifest(tmp_path / "run" / "stage-1-general")
    assert m["status"] == "done" and m["final_metrics"]["resumed_from"] == f"checkpoint-{last}"
    assert m["final_metrics"]["steps"] == last + 3


def test_fsdp_config_on_cpu(tmp_path, data_dir):
    """The shipped FSDP config, two processes. accelerate builds FSDP only for accelerator devices, so on CPU the
    run is plain DDP: the manifest records what ran, and the test says so instead of claiming FSDP ran."""
    fsdp = yaml.safe_load((ROOT / "configs/accelerate/fsdp.yaml").read_text(encoding="utf-8"))
    assert fsdp["distributed_type"] == "FSDP" and fsdp["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"] == \
        "Qwen2DecoderLayer"
    local = {**fsdp, "mixed_precision": "no", "num_processes": 2}
    path = tmp_path / "fsdp.yaml"
    path.write_text(yaml.safe_dump(local), encoding="utf-8")
    cfg = _config(tmp_path / "cfg.yaml", data_dir, [_stage("general", "sft", ["stage2_sft"], batch_size=2,
                                                           max_steps=3, learning_rate=3e-3)])
    _train(cfg, 2, accelerate_config=path)
    m = read_manifest(tmp_path / "run" / "stage-1-general")
    assert m["status"] == "done" and m["num_processes"] == 2
    if m["distributed_type"] != "FSDP":
        import accelerate
        import torch

        pytest.skip(f"FSDP cannot run on CPU here: accelerate {accelerate.__version__} (torch {torch.__version__}) "
                    "turns distributed_type FSDP on only for GPU-class devices (MULTI_GPU/NPU/XPU/HPU/…); with "
                    f"ACCELERATE_USE_CPU the ranks ran as {m['distributed_type']} (DDP over gloo), the FSDP plugin "
                    "ignored")
    assert _losses(tmp_path / "run" / "stage-1-general")


def test_deepspeed_zero2_config_passes_deepspeeds_own_schema():
    """The accelerate YAML, turned into a DeepSpeed config the way accelerate and the Trainer do it ("auto" filled
    from the training arguments), validated by DeepSpeed's DeepSpeedConfig; a wrong stage and a typo are refused."""
    pytest.importorskip("deepspeed", reason="deepspeed does not import (pip install deepspeed, DS_BUILD_OPS=0)")
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.utils import DeepSpeedPlugin
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    cluster = ClusterConfig.from_yaml_file(str(ROOT / "configs/accelerate/deepspeed-zero2.yaml"))
    assert cluster.distributed_type.value == "DEEPSPEED"
    plugin = DeepSpeedPlugin(**cluster.deepspeed_config)
    plugin.set_mixed_precision(cluster.mixed_precision)
    recipe = yaml.safe_load((ROOT / "configs/qwen2.5-1.5b.yaml").read_text(encoding="utf-8"))["stages"][1]
    args = TrainingArguments(output_dir="unused", per_device_train_batch_size=recipe.get("batch_size", 8),
                             gradient_accumulation_steps=recipe.get("grad_accum", 1), report_to=[])
    hf = HfTrainerDeepSpeedConfig(copy.deepcopy(plugin.deepspeed_config))
    hf.trainer_config_process(args)
    ds = DeepSpeedConfig(copy.deepcopy(hf.config))
    assert ds.zero_optimization_stage == 2 and ds.bfloat16_config.enabled
    assert ds.gradient_clipping == 1.0 and ds.train_micro_batch_size_per_gpu == args.per_device_train_batch_size
    for bad in ({"stage": 7}, {"overlap_comms": True}):
        broken = copy.deepcopy(hf.config)
        broken["zero_optimization"].update(bad)
        with pytest.raises(ValueError):
            DeepSpeedConfig(broken)
