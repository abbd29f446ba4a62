from pathlib import Path

import pytest
import yaml

from shicheng.train.config import TrainConfig, load_config, parse_stage_range

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_validates_and_names_its_command(path):
    cfg = load_config(path)
    assert [s.method for s in cfg.stages][:1] == ["cpt"] and len(cfg.stages) == 5
    head = path.read_text(encoding="utf-8").splitlines()[:4]
    assert any("Run:" in line and ("shicheng train" in line or "make demo" in line) for line in head)


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_parse_and_name_their_command(path):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert data["distributed_type"] in ("DEEPSPEED", "FSDP")
    assert "accelerate launch" in path.read_text(encoding="utf-8").splitlines()[1]


def test_config_errors_name_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_dir: r\ndata_dir: d\nbase_model: {path: x}\nstages:\n"
                   "  - {name: a, method: grpo, datasets: [s], batch_size: 6, num_generations: 4}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.yaml.*multiple of num_generations"):
        load_config(bad)
    with pytest.raises(ValueError, match="exactly one of"):
        TrainConfig.model_validate({"run_dir": "r", "data_dir": "d", "base_model": {},
                                    "stages": [{"name": "a", "method": "sft", "datasets": ["x"]}]})


def test_stage_range():
    assert parse_stage_range("3-5", 5) == [2, 3, 4]
    assert parse_stage_range("2", 5) == [1]
    assert parse_stage_range(None, 3) == [0, 1, 2]
    with pytest.raises(ValueError):
        parse_stage_range("4-6", 5)
