"""`shicheng curate` end to end: the demo corpus, and a folder of deliberately bad materials."""

import json
from pathlib import Path

import pytest

from shicheng.curate.demo import generate_demo
from shicheng.curate.pipeline import curate
from shicheng.domain import Answer, Case, Patient, Visit

STAGES = ("stage1_cpt", "stage2_sft", "stage3_reasoning", "stage4_master_sft", "stage5_rl")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    generate_demo(root / "materials", seed=0, n_cases=450)
    result = curate([root / "materials"], root / "out", seed=0, show_progress=False)
    return root, result


def test_demo_produces_five_stages_and_card(demo):
    root, result = demo
    out = root / "out"
    for stage in STAGES:
        assert (out / stage / "train.jsonl").stat().st_size > 0, stage
    card = json.loads((out / "card.json").read_text(encoding="utf-8"))
    assert card["synthetic"] is True and len(card["masters"]) == 5
    by_master = card["stages"]["stage4_master_sft"]["train"]["by_master"]
    assert len(by_master) == 5 and len(set(by_master.values())) == 1  # balanced
    assert set(card["stages"]["stage4_master_sft"]["train"]["by_task"]) >= {"syndrome", "modification", "full_chain"}
    assert card["stages"]["stage2_sft"]["train"]["by_master"] == {"None": card["stages"]["stage2_sft"]["train"]["rows"]}
    assert card["stages"]["stage1_cpt"]["train"]["tokens"]["tokens_total"] > 0
    assert "stage5_rl" in (out / "README.md").read_text(encoding="utf-8")
    row = json.loads((out / "stage5_rl" / "train.jsonl").open(encoding="utf-8").readline())
    assert row["gold_herbs"] and row["master_id"] and [m["role"] for m in row["prompt"]] == ["system", "user"]
    assert sum(result.cases.values()) >= 400


def test_same_seed_same_hashes(demo, tmp_path):
    root, result = demo
    again = curate([root / "materials"], tmp_path / "out", seed=0, show_progress=False)
    assert again.card["stages"] == result.card["stages"]


def test_no_patient_in_two_splits(demo):
    root, _ = demo
    seen = {}
    for split in ("train", "validation", "test"):
        for line in (root / "out" / "cases" / f"{split}.jsonl").open(encoding="utf-8"):
            case = json.loads(line)
            pid = case["patient"].get("id") or case["id"]
            assert seen.setdefault(pid, split) == split, pid


def test_no_personal_data_in_demo_outputs(demo):
    root, _ = demo
    raw = "\n".join(p.read_text(encoding="utf-8") for p in (root / "materials" / "records").glob("*.txt"))
    import re

    phones = set(re.findall(r"1380000\d{4}", raw))
    assert phones, "the demo should contain fictional phone numbers to scrub"
    for path in (root / "out").rglob("*.jsonl"):
        text = path.read_text(encoding="utf-8")
        assert not any(p in text for p in phones), path
        assert not re.search(r"(?<!\d)\d{17}[\dX](?!\d)", text), path


def _bad_materials(d: Path) -> None:
    d.mkdir()
    good = Case(id="J1", patient=Patient(id="MRN-778812", sex="female", age=34),
                visits=[Visit(chief_complaint="月经后期3月，经量少色淡", tongue="舌淡苔薄", pulse="脉细",
                              answer=Answer(syndrome="血虚证", prescription="当归10g 熟地15g 白芍10g 川芎6g"))])
    no_rx = Case(id="J2", visits=[Visit(chief_complaint="咳嗽一周，痰白清稀", answer=Answer(syndrome="风寒犯肺"))])
    (d / "cases.jsonl").write_text("\n".join([good.model_dump_json(), "{broken json", no_rx.model_dump_json(),
                                              good.model_dump_json()]) + "\n", encoding="utf-8")
    (d / "export.csv").write_text("病例号,主诉,处方\nC1,头痛,川芎10g\n", encoding="utf-8")
    (d / "mapping.yaml").write_text("columns: {case_id: 病例号, chief_complaint: 主诉, tongue: 舌象, prescription: 处方}\n",
                                    encoding="utf-8")
    record = ("【医案】GB-1\n患者：赵建国，男，60岁，电话：13912345678，身份证：110105196003071234，住址：北京市朝阳区幸福路8号\n"
              "初诊：2022年5月1日\n主诉：胸闷心痛半年\n舌象：舌暗有瘀斑\n脉象：脉涩\n辨证：心血瘀阻\n"
              "处方：丹参15g 川芎10g 红花6g 赤芍10g\n")
    (d / "records_gb.txt").write_bytes(record.encode("gb18030"))
    (d / "empty.txt").write_text("", encoding="utf-8")
    (d / "blob.bin").write_bytes(bytes(range(256)) * 4)


def test_bad_materials_reported_nothing_lost_no_personal_data(tmp_path):
    mats = tmp_path / "bad"
    _bad_materials(mats)
    out = tmp_path / "out"
    result = curate([mats], out, seed=0, show_progress=False)
    result.ledger.check()
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").open(encoding="utf-8")]
    by_source = {r["source"]: r["reason"] for r in rejects}
    assert any(s.endswith("cases.jsonl:2") and "JSON" in r for s, r in by_source.items())
    assert any("export.csv" in s and "舌象" in r for s, r in by_source.items())
    assert any(s.endswith("empty.txt") and "empty" in r for s, r in by_source.items())
    assert any(s.endswith("blob.bin") for s in by_source)
    assert any("no prescription" in r for r in by_source.values())
    assert any(r.startswith("duplicate") for r in by_source.values())
    steps = result.card["curation"]["steps"]
    assert all(c["inputs"] == c["kept"] + c["rejected"] for c in steps.values())
    kept = [json.loads(x) for s in ("train", "validation", "test") for x in (out / "cases" / f"{s}.jsonl").open()]
    assert {c["id"] for c in kept} == {"J1", "GB-1"}
    everything = "\n".join(p.read_text(encoding="utf-8") for p in out.rglob("*") if p.is_file())
    for leaked in ("赵建国", "13912345678", "110105196003071234", "幸福路8号", "MRN-778812", "2022年5月1日"):
        assert leaked not in everything, leaked
