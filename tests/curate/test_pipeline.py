"""`shicheng curate` end to end: the demo corpus, and a folder of deliberately bad materials."""

import json
from pathlib import Path

import pytest

from shicheng.curate.pipeline import curate
from shicheng.demo import generate_demo
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


# Personal data planted by `_bad_materials` and `_more_personal_materials`: none may reach any output file.
PLANTED = (
    "赵建国", "13912345678", "110105196003071234", "幸福路8号", "MRN-778812", "2022年5月1日",
    "王秀兰", "13687654321", "11010519720304562X", "张江路88号", "ZY2023001234", "2021年3月4日",
    "孙丽娟", "13598765432", "2021年4月4日", "周志强", "13822223333", "青石路6号", "13511112222", "13733334444",
    "13811110000",
)


def _more_personal_materials(d: Path) -> None:
    """Records as clinics write them: several header fields on one line, a bad age holding a phone, a case the
    composer rejects (its record goes to rejects.jsonl), a table value in the wrong column, a short note."""
    (d / "records_multi.txt").write_text(
        "【医案】GB-2\n姓名：王秀兰  性别：女  年龄：52岁  电话：13687654321  身份证号：11010519720304562X\n"
        "住址：上海市浦东新区张江路88号  病历号：ZY2023001234\n初诊：2021年3月4日\n主诉：头痛3天，遇风加重\n"
        "舌象：舌红苔黄\n脉象：脉弦\n辨证：肝阳上亢\n处方：天麻10g 钩藤15g 石决明30g\n\n"
        "【医案】GB-3\n患者：孙丽娟，女，年龄：52岁（13598765432）\n初诊：2021年4月4日\n主诉：失眠多梦半年，心悸健忘\n"
        "舌象：舌淡\n脉象：脉细弱\n辨证：心脾两虚\n处方：酸枣仁20g 茯神15g 龙眼肉10g\n\n"
        "【医案】GB-4\n初诊\n主诉：胃脘胀痛2月\n现病史：患者周志强，电话13822223333，家住青石路6号，2021年5月6日起胃脘胀痛。\n"
        "舌象：舌淡红\n脉象：脉弦\n辨证：肝胃不和\n处方：自拟方，七剂\n", encoding="utf-8")
    (d / "ward").mkdir()
    (d / "ward" / "mapping.yaml").write_text("columns: {case_id: 病例号, age: 年龄, chief_complaint: 主诉, "
                                             "prescription: 处方}\n", encoding="utf-8")
    (d / "ward" / "ward.csv").write_text("病例号,年龄,主诉,处方\nW1,13511112222,咳嗽一周,桑叶10g\n", encoding="utf-8")
    (d / "notes.md").write_text("# 随诊笔记\n\n联系：13733334444\n\n"
                                "脾胃为后天之本，气血生化之源，临证当时时顾护胃气，用药不可过于苦寒。\n", encoding="utf-8")
    bad_sex = {"id": "J9", "patient": {"id": "J9", "sex": "13811110000"}, "visits": [{"chief_complaint": "头痛"}]}
    with (d / "cases.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(bad_sex, ensure_ascii=False) + "\n")


def test_no_planted_personal_data_in_any_output_file(tmp_path):
    mats = tmp_path / "bad"
    _bad_materials(mats)
    _more_personal_materials(mats)
    out = tmp_path / "out"
    result = curate([mats], out, seed=0, show_progress=False)
    result.ledger.check()
    kept = {json.loads(x)["id"] for s in ("train", "validation", "test") for x in (out / "cases" / f"{s}.jsonl").open()}
    assert kept == {"J1", "GB-1", "GB-2", "GB-3"}
    cases = {json.loads(x)["id"]: json.loads(x) for s in ("train", "validation", "test")
             for x in (out / "cases" / f"{s}.jsonl").open()}
    assert (cases["GB-2"]["patient"]["sex"], cases["GB-2"]["patient"]["age"]) == ("female", 52)
    # Each kind of output that carries text made from the materials is really there, so the search means something.
    rejects = (out / "rejects.jsonl").read_text(encoding="utf-8")
    assert "GB-4" in rejects and "compose failed" in rejects  # with the (scrubbed) case record
    assert "ward/ward.csv:row 2" in rejects and "too short" in rejects
    card = json.loads((out / "card.json").read_text(encoding="utf-8"))
    assert any("records_multi.txt:" in w and "age: not an age" in w for w in card["warnings"])
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"card.json", "README.md", "rejects.jsonl", "corpus.jsonl", "split.json"}
    for path in files:
        text = path.read_text(encoding="utf-8")
        for value in PLANTED:
            assert value not in text, f"{value} in {path.relative_to(out)}"


def test_same_materials_in_two_folders_give_identical_outputs(tmp_path):
    first, second = tmp_path / "a" / "materials", tmp_path / "elsewhere" / "deeper" / "copy"
    for d in (first, second):
        d.parent.mkdir(parents=True)
        _bad_materials(d)
        _more_personal_materials(d)
    outs = [tmp_path / "out1", tmp_path / "out2"]
    results = [curate([d], o, seed=0, show_progress=False) for d, o in zip((first, second), outs, strict=True)]
    assert results[0].card == results[1].card
    names = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(outs[1]) for p in outs[1].rglob("*") if p.is_file())
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    everything = "".join((outs[0] / n).read_text(encoding="utf-8") for n in names)
    assert str(tmp_path) not in everything  # no path as typed anywhere
    case = json.loads((outs[0] / "cases" / "train.jsonl").open(encoding="utf-8").readline())
    assert not case["source"].startswith("/")
    assert results[0].card["materials"][0]["files"] == 10


def test_a_prescription_the_parser_fails_on_rejects_that_case_and_the_run_goes_on(tmp_path, monkeypatch):
    from shicheng import prescription

    real = prescription.parse_prescription

    def fails_on_trailing_prefix(text, kb=None):  # how the parser once crashed: "… 生" at the end
        if text.rstrip("。 ").endswith("生"):
            raise IndexError("string index out of range")
        return real(text, kb)

    monkeypatch.setattr(prescription, "parse_prescription", fails_on_trailing_prefix)
    mats = tmp_path / "m"
    mats.mkdir()
    (mats / "r.txt").write_text(
        "【医案】P-1\n初诊\n主诉：胁肋胀痛1月\n舌象：舌红\n脉象：脉弦\n辨证：肝郁气滞\n处方：柴胡10 白芍10 生\n\n"
        "【医案】P-2\n初诊\n主诉：咳嗽一周，痰黄\n舌象：舌红苔黄\n脉象：脉浮数\n辨证：风热犯肺\n处方：桑叶10g 菊花10g\n",
        encoding="utf-8")
    result = curate([mats], tmp_path / "out", seed=0, show_progress=False)
    result.ledger.check()
    assert sum(result.cases.values()) == 1
    (reject,) = [r for r in result.ledger.rejects if r.source == "r.txt:1"]
    assert reject.step == "compose" and "prescription parser failed (IndexError" in reject.reason
    assert any(w.startswith("r.txt:1 visit 1: prescription kept as text only") for w in result.card["warnings"])
