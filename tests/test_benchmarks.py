"""The GPU run-book's guards, checked on CPU: the suite stops with its message when no GPU is visible, and
the vLLM benchmark reports (in JSON, exit 0) that vLLM is missing instead of failing the suite."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_suite_stops_with_its_message_without_a_gpu(tmp_path):
    if shutil.which("nvidia-smi"):
        pytest.skip("a GPU machine: the suite would run for real")
    env = {**os.environ, "OUT": str(tmp_path / "out")}
    had_venv = (ROOT / ".venv-gpu").exists()
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "no GPU visible" in done.stderr
    assert (ROOT / ".venv-gpu").exists() == had_venv  # it stopped before installing anything
    assert not (tmp_path / "out" / "gpu-suite.json").exists()  # nothing was benchmarked


def test_vllm_benchmark_says_when_vllm_is_missing():
    try:
        import vllm  # noqa: F401
        pytest.skip("vllm imports here: the benchmark would load a model")
    except Exception:
        pass
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "vllm_throughput.py"), "--config", "tiny"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["benchmark"] == "vllm_throughput"
    assert report["skipped"].startswith("vllm does not import")


def test_guide_benchmark_prints_both_ways_side_by_side():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "guide_overhead.py"), "--batch", "2",
                           "--new-tokens", "16", "--repeats", "1"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["mask"][0]["answer_tokens"] > 20 and report["mask"][0]["second_step_us_mean"] > 0
    assert {"free", "guided"} <= set(report["generate"])
    assert all(report["generate"][m]["new_tokens"] > 0 for m in ("free", "guided"))
