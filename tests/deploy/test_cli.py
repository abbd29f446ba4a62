"""`shicheng export`, then `shicheng consult --model FILE.gguf` with the model's default decoding."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from shicheng.cli import app

pytestmark = pytest.mark.usefixtures("torch_one_thread")
runner = CliRunner()


def test_export_then_consult(trained_model_dir, tmp_path):
    out = tmp_path / "clinic.gguf"
    res = runner.invoke(app, ["export", "--model", str(trained_model_dir), "--quant", "q8_0,q4_k_m", "--out", str(out),
                              "--ollama", "--threads", "1", "--json"])
    assert res.exit_code == 0, res.output
    written = json.loads(res.stdout)
    assert written["files"] == {"q8_0": str(tmp_path / "clinic-q8_0.gguf"), "q4_k_m": str(tmp_path / "clinic-q4_k_m.gguf")}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "clinic-q4_k_m.Modelfile", "clinic-q4_k_m.gguf", "clinic-q4_k_m.masters.json",
        "clinic-q8_0.Modelfile", "clinic-q8_0.gguf", "clinic-q8_0.masters.json"]
    assert "FROM ./clinic-q8_0.gguf" in (tmp_path / "clinic-q8_0.Modelfile").read_text()

    res = runner.invoke(app, ["masters", "--model", written["files"]["q8_0"], "--json"])
    assert res.exit_code == 0 and len(json.loads(res.stdout)) == 5
    master = json.loads(res.stdout)[0]["id"]
    # default decoding: the stored repetition penalty and n-gram blocking apply, and nothing is refused
    res = runner.invoke(app, ["consult", "--model", written["files"]["q8_0"], "--master", master, "--json",
                              "--sex", "female", "--age", "34", "--max-new-tokens", "300",
                              "--text", "主诉：颈前肿大半年。现病史：神疲乏力，纳差便溏。舌象：舌淡胖，苔白腻。脉象：脉濡滑。"])
    assert res.exit_code == 0, res.output
    consultation = json.loads(res.stdout)
    assert consultation["master_id"] == master and consultation["sections"]["syndrome"] == "脾虚痰凝证。"
    assert [(f["rule"], sorted(f["herbs"])) for f in consultation["findings"] if f["level"] == "error"] == \
        [("十八反", ["海藻", "甘草"])]


def test_export_errors_exit_2_with_one_line(trained_model_dir, tmp_path):
    cases = [
        (["--model", str(tmp_path), "--out", str(tmp_path / "x.gguf")], "no config.json"),
        (["--model", str(trained_model_dir), "--quant", "q2", "--out", str(tmp_path / "x.gguf")], "unknown --quant 'q2'"),
        (["--model", str(trained_model_dir), "--out", str(tmp_path / "x.bin")], "must end in .gguf"),
        (["--model", str(trained_model_dir), "--format", "onnx", "--out", str(tmp_path / "x.gguf")], "only gguf"),
    ]
    for args, words in cases:
        res = runner.invoke(app, ["export", *args])
        assert res.exit_code == 2, res.output
        assert words in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["consult", "--model", str(tmp_path / "missing.gguf"), "--text", "胃痛"])
    assert res.exit_code == 2 and "model file not found" in res.output
