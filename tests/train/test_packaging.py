"""Packaging: extras hold what each use needs, core dependencies are the ones the package imports, and the
training arguments are right for every transformers version the pins allow."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
import transformers  # noqa: E402
from transformers import TrainingArguments  # noqa: E402

from shicheng.train.stages import warmup_args  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
# distribution name -> the module it is imported as
IMPORT_NAME = {"pyyaml": "yaml", "python-docx": "docx", "charset-normalizer": "charset_normalizer",
               "markdown-it-py": "markdown_it", "opencc": "opencc"}


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def _sources() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "shicheng").rglob("*.py"))


def test_every_core_dependency_is_imported_by_the_package():
    code = _sources()
    for name in _names(PROJECT["dependencies"]):
        module = IMPORT_NAME.get(name, name.replace("-", "_"))
        assert re.search(rf"^\s*(?:import|from) {module}\b", code, re.MULTILINE), f"{name} is never imported"
    assert not _names(PROJECT["dependencies"]) & {"pypinyin", "httpx", "dashscope", "tiktoken", "torch"}


def test_extras_hold_what_each_use_needs():
    extras = {k: _names(v) for k, v in PROJECT["optional-dependencies"].items()}
    assert {"torch", "transformers", "tokenizers"} <= extras["local"]  # serve/consult --model DIR
    assert "shicheng" in extras["train"] and "trl" in extras["train"]  # train = local + trainers
    assert any(r.startswith("shicheng[local") for r in PROJECT["optional-dependencies"]["train"])
    assert extras["qwen-vocab"] == {"dashscope", "tiktoken"}
    assert any("qwen-vocab" in r for r in PROJECT["optional-dependencies"]["dev"])  # tests use the real vocab
    assert "httpx" in extras["dev"]  # the server tests call the app with httpx directly
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    installed = re.search(r"pip install -q -e '\.\[([^\]]+)\]'", makefile).group(1).split(",")
    assert {"dev", "train", "serve", "local"} <= set(installed)


def test_warmup_ratio_goes_where_each_transformers_major_reads_it():
    assert warmup_args(0.05, "4.56.2") == {"warmup_ratio": 0.05}
    assert warmup_args(0.05, "5.0.0") == {"warmup_steps": 0.05}
    # The installed transformers turns the ratio into the right number of steps.
    args = TrainingArguments(output_dir="/tmp/unused", report_to=[], **warmup_args(0.1))
    assert args.get_warmup_steps(200) == 20
    assert args.get_warmup_steps(7) == 1


@pytest.mark.skipif(int(transformers.__version__.split(".")[0]) < 5, reason="checks the transformers 5 API")
def test_transformers_5_has_no_warmup_ratio_any_more():
    with pytest.raises(TypeError):
        TrainingArguments(output_dir="/tmp/unused", report_to=[], warmup_ratio=0.1)


def test_card_and_tokenizer_say_which_extra_to_install_without_dashscope(monkeypatch):
    from shicheng import vocab
    from shicheng.curate.card import render_markdown, token_stats
    from shicheng.train.tokenizer import load_qwen25_vocab_tokenizer

    monkeypatch.setitem(sys.modules, "dashscope", None)  # import dashscope -> ImportError
    vocab.qwen_ranks.cache_clear()
    vocab.qwen_encoding.cache_clear()
    try:
        with pytest.raises(vocab.VocabUnavailable, match=r"shicheng\[qwen-vocab\]"):
            load_qwen25_vocab_tokenizer()
        stats = token_stats([{"text": "胃脘冷痛三年"}])
        assert stats["chars_total"] == 6 and "tokens_total" not in stats
        assert "shicheng[qwen-vocab]" in stats["tokens_note"]
        card = {"disclaimer": "d", "stages": {"stage1_cpt": {"train": {"rows": 1, "sha256": "0" * 64, "tokens": stats}}},
                "split": {"seed": 0, "cases": {"train": 1}}, "curation": {"steps": {}, "rejects_by_reason": []},
                "personal_data_removed": {}}
        assert "token counts not computed" in render_markdown(card)
    finally:
        vocab.qwen_ranks.cache_clear()
        vocab.qwen_encoding.cache_clear()


def test_one_qwen_vocabulary_loader_feeds_the_card_and_the_tokenizer():
    from shicheng import vocab
    from shicheng.curate.card import token_stats

    stats = token_stats([{"text": "患者胃脘冷痛三年，舌淡胖，苔白滑，脉沉细。"}])
    assert stats["tokenizer"].startswith("Qwen2.5") and stats["tokens_total"] > 0
    assert len(vocab.qwen_ranks()) == vocab.QWEN25_BPE_SIZE
    for path in ("shicheng/curate/card.py", "shicheng/train/tokenizer.py"):
        assert "import dashscope" not in (ROOT / path).read_text(encoding="utf-8"), path  # one loader: vocab.py


def test_the_deploy_extra_installs_in_a_step_that_may_fail():
    """gguf + llama-cpp-python (which compiles llama.cpp): `make test` installs them in their own pip step that
    warns instead of failing, so a failed build skips only the GGUF tests."""
    assert _names(PROJECT["optional-dependencies"]["deploy"]) == {"gguf", "llama-cpp-python"}
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    step = re.search(r"pip install -q -e '\.\[deploy\]'[^\n]*\\\n\s*\|\| echo \"warning: [^\"]+\"", makefile)
    assert step, "the deploy extra has no pip step of its own that falls back to a warning"
    assert "CMAKE_BUILD_PARALLEL_LEVEL" in makefile and "-DLLAVA_BUILD=OFF" in makefile
