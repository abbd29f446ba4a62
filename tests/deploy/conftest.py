"""Fixtures of the deployment tests: the tiny trained model (tests/helpers/deploy.py) and its GGUF exports.

Every test here needs the deploy extra; without it (or when its llama.cpp build failed) they skip and say why.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.deploy import build_trained_model, export, require_deploy


@pytest.fixture(autouse=True)
def _deploy_extra():
    require_deploy()


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory) -> Path:
    """The tiny trained model directory; treat it as read-only."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a second OpenMP thread spin-waits on this small shared machine
    try:
        return build_trained_model(tmp_path_factory.mktemp("trained") / "stage-5-tiny")
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def trained_ggufs(trained_model_dir, tmp_path_factory) -> dict[str, Path]:
    """{"f16": …, "q8_0": …}: one `shicheng export` run with two quantisations (STEM-QUANT.gguf)."""
    require_deploy()
    return export(trained_model_dir, tmp_path_factory.mktemp("trained-gguf") / "tiny.gguf", ("f16", "q8_0"))
