"""Builders for the deployment tests: a tiny *trained* model with an extended TCM vocabulary, and its GGUF.

The trained model is tests/conftest.py's tiny Qwen2 (our demo BPE, chat tokens, masters) with TCM terms
added as tokens the way stage 1 adds them (`extend_tokenizer`), then taught for a few hundred steps to
answer every consultation with the planted answer of the server tests (its prescription holds 甘草 + 海藻,
a 十八反 pair), so that its greedy answers are confident text with a safety finding in them, through
transformers and through llama.cpp alike. Its generation_config carries the demo's decoding defaults
(repetition_penalty 1.15, no_repeat_ngram_size 8), which the export stores in the GGUF.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.serve.support import PLANTED_ANSWER

SKIP_REASON = ("the deploy extra (gguf, llama-cpp-python) is not installed or its llama.cpp build failed: "
               "pip install -e '.[deploy]' (make test prints a warning when the build fails)")

# Terms a stage-1 extension adds (herbs, a formula, syndromes; the answer's herbs among them), some nested
# (炙甘草 ⊃ 甘草, 浙贝母 ⊃ 贝母) so that the leftmost-longest matching of added tokens is exercised.
TCM_TERMS = ["甘草", "炙甘草", "海藻", "党参", "白术", "炒白术", "茯苓", "贝母", "浙贝母", "陈皮", "半夏", "法半夏",
             "附子理中汤", "归脾汤", "脾虚痰凝证", "脾胃虚寒证", "心脾两虚证", "健脾化痰", "软坚散结"]

CASES = [  # (sex, age, chief complaint, present illness, tongue, pulse)
    ("female", 34, "颈前肿大半年", "神疲乏力，纳差便溏", "舌淡胖，苔白腻", "脉濡滑"),
    ("male", 45, "胃脘冷痛三年", "喜温喜按，泛吐清水", "舌淡胖，苔白滑", "脉沉细"),
    ("female", 38, "失眠多梦半年", "心悸健忘，神疲食少", "舌淡，苔薄白", "脉细弱"),
    ("male", 60, "咳嗽咳痰一月", "痰多色白，胸闷脘痞", "舌淡胖，苔白腻", "脉濡滑"),
]


def require_deploy() -> None:
    """Skip (with the reason) when the deploy extra cannot be imported."""
    try:
        import gguf  # noqa: F401
        import llama_cpp  # noqa: F401
    except (ImportError, OSError, RuntimeError) as e:  # a failed build can leave a library that will not load
        pytest.skip(f"{SKIP_REASON} ({type(e).__name__}: {e})")


def training_conversations() -> list[list[dict]]:
    """The consultations the model is taught: several masters, cases and tasks, all with the planted answer."""
    from shicheng.agent import consult_messages
    from shicheng.demo import load_demo_masters
    from shicheng.domain import Case, Patient, Task, Visit

    masters = [None, *load_demo_masters().values()]
    conversations = []
    for i, (sex, age, cc, pi, tongue, pulse) in enumerate(CASES):
        case = Case(id=f"train-{i}", patient=Patient(sex=sex, age=age),
                    visits=[Visit(chief_complaint=cc, present_illness=pi, tongue=tongue, pulse=pulse)])
        for master in masters:
            for task in (Task.full_chain, Task.syndrome, Task.prescription):
                conversations.append([*consult_messages(case, master, task),
                                      {"role": "assistant", "content": PLANTED_ANSWER}])
    return conversations


def build_trained_model(out_dir: Path, steps: int = 300, seed: int = 0) -> Path:
    """Write the tiny trained model directory (see the module docstring); a few seconds on one CPU thread."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from shicheng.demo import load_demo_masters
    from shicheng.train.tokenizer import configure_chat_tokens, extend_tokenizer, train_demo_tokenizer
    from tests.conftest import TINY_TEXTS

    conversations = training_conversations()
    tokenizer = train_demo_tokenizer(TINY_TEXTS * 4, vocab_size=400)
    config = Qwen2Config(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=256, vocab_size=len(tokenizer), tie_word_embeddings=True,
                         max_position_embeddings=4096)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    report = extend_tokenizer(tokenizer, model, TCM_TERMS)
    assert report.added >= 10, report  # the terms are new tokens, not already single BPE tokens
    configure_chat_tokens(tokenizer, model)

    rows = []
    for conv in conversations:
        prompt = tokenizer.apply_chat_template(conv[:-1], add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(conv, tokenize=False)
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        labels = [-100] * n_prompt + ids[n_prompt:]
        rows.append((torch.tensor([ids]), torch.tensor([labels])))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        ids, labels = rows[int(torch.randint(len(rows), (1,), generator=generator))]
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.generation_config.repetition_penalty = 1.15  # the demo's defaults (configs/demo-cpu.yaml)
    model.generation_config.no_repeat_ngram_size = 8
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    masters = [m.model_dump(mode="json") for m in load_demo_masters().values()]
    (out_dir / "masters.json").write_text(json.dumps(masters, ensure_ascii=False, indent=1), encoding="utf-8")
    (out_dir / "train_loss.txt").write_text(f"{loss.item():.4f}\n")
    return out_dir


def export(model_dir: Path, out: Path, quants=("f16",), **kw) -> dict[str, Path]:
    from shicheng.deploy.export import export_model

    return export_model(model_dir, out, quants=list(quants), **kw).files
