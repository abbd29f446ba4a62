"""Consultations: prompts as in training, parsed sections, prescription, safety findings, follow-up changes,
cases from text and files, and the `consult` / `masters` commands."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from shicheng.agent import (
    Consultation,
    ConsultError,
    OpenAIBackend,
    TransformersBackend,
    case_from_text,
    consult,
    consult_stream,
    load_case,
    resolve_master,
)
from shicheng.cli import app as shicheng_app
from shicheng.demo import load_demo_masters
from shicheng.domain import Case, Patient, Task, Visit
from shicheng.prescription import parse_prescription
from shicheng.prompts import system_prompt, user_prompt

pytestmark = pytest.mark.usefixtures("torch_one_thread")

MASTERS = load_demo_masters()
PLANTED = """<think>
纳呆便溏，舌淡胖，脉沉细，乃脾胃虚寒。
</think>
<output>
## 病因病机
饮食不节，损伤脾阳，中焦虚寒，运化失司。

## 辨证
脾胃虚寒证。

## 治则治法
温中健脾，和胃止痛。

## 处方
理中汤加减：党参15g 干姜10g 炒白术12g 甘草6g 海藻10g 三棱10g，7剂，水煎服，日一剂。

## 方解
党参益气健脾为君，干姜温中散寒为臣，白术健脾燥湿为佐，甘草调和诸药为使。

## 随症加减
腹胀甚者加木香6g。

## 医嘱
忌食生冷，注意保暖。
</output>"""
MODIFICATION = """<output>
## 随症加减
加：丹参15g
去：黄芩
口干减轻而胸闷刺痛，故去黄芩之苦寒，加丹参活血。
调整后处方：柴胡10g 白芍15g 甘草6g 丹参15g
</output>"""


def stomach_case(**patient) -> Case:
    return Case(id="c1", patient=Patient(sex="male", age=52, **patient), visits=[Visit(
        chief_complaint="胃脘冷痛三年。", present_illness="喜温喜按，纳呆便溏。", tongue="舌淡胖，苔白滑。",
        pulse="脉沉细。")])


def follow_up_case() -> Case:
    first = parse_prescription("柴胡10g 白芍15g 黄芩10g 甘草6g").prescription
    return Case(id="f1", patient=Patient(sex="female", age=40), visits=[
        Visit(index=1, chief_complaint="胁肋胀痛一月。", tongue="舌淡红。", pulse="脉弦。", prescription=first),
        Visit(index=2, present_illness="服药后胁痛减轻，口干减轻，近日胸闷刺痛。", tongue="舌暗。", pulse="脉弦涩。"),
    ])


@pytest.fixture(scope="module")
def local(tiny_model_dir) -> TransformersBackend:
    return TransformersBackend(tiny_model_dir, device="cpu")


def test_planted_incompatible_pair_is_flagged_and_sections_parsed(openai_server):
    server = openai_server(lambda messages: PLANTED)
    master = MASTERS["huang-peizhong"]
    case = stomach_case()
    result = consult(OpenAIBackend(server.url, "m"), case, master, max_new_tokens=512)
    sent = server.requests[-1]["messages"]
    assert sent == [{"role": "system", "content": system_prompt(master)},
                    {"role": "user", "content": user_prompt(case, 0, Task.full_chain, master)}]
    assert result.master_id == "huang-peizhong" and result.task is Task.full_chain
    assert result.missing == []
    assert result.sections["syndrome"] == "脾胃虚寒证。"
    assert result.sections["reasoning"].startswith("纳呆便溏")
    assert {"甘草", "海藻", "三棱"} <= set(result.prescription.base_herbs())
    pair = [f for f in result.findings if f.rule == "十八反"]
    assert pair and pair[0].level == "error" and set(pair[0].herbs) == {"甘草", "海藻"}
    assert not any(f.rule.startswith("妊娠") for f in result.findings)  # not pregnant
    assert result.prompt_tokens > 0 and result.completion_tokens == len(PLANTED)
    assert "not medical advice" in result.disclaimer
    again = Consultation.model_validate_json(result.model_dump_json())
    assert again.findings == result.findings


def test_pregnancy_findings_come_from_the_patient(openai_server):
    server = openai_server(lambda messages: PLANTED)
    result = consult(OpenAIBackend(server.url, "m"), stomach_case(pregnant=True), None)
    assert server.requests[-1]["messages"][0]["content"] == system_prompt(None)
    rules = {(f.rule, f.level, f.herbs[0]) for f in result.findings}
    assert ("妊娠禁用", "error", "三棱") in rules
    assert "妊娠期" in server.requests[-1]["messages"][1]["content"]


def test_tiny_model_random_text_gives_a_consultation(local):
    result = consult(local, stomach_case(), MASTERS["li-shouyang"], max_new_tokens=32)
    assert result.raw_text and result.completion_tokens >= 1
    assert set(result.missing) <= set(Task.full_chain.sections)
    assert result.timings["seconds"] > 0 and result.timings["first_token_s"] is not None


def test_consult_stream_events_end_with_the_consultation(local):
    events = list(consult_stream(local, stomach_case(), MASTERS["su-qingyuan"], max_new_tokens=24))
    deltas = [e["text"] for e in events if e["type"] == "delta"]
    assert events[-1]["type"] == "result" and len(deltas) == len(events) - 1
    final = Consultation.model_validate(events[-1]["consultation"])
    assert final.raw_text == "".join(deltas) and final.master_id == "su-qingyuan"
    assert final.completion_tokens >= 1


def test_stream_over_http_flags_the_pair(openai_server):
    server = openai_server(lambda messages: PLANTED)
    events = list(consult_stream(OpenAIBackend(server.url, "m"), stomach_case(), None))
    final = events[-1]["consultation"]
    assert "".join(e["text"] for e in events[:-1]) == PLANTED
    assert any(f["rule"] == "十八反" for f in final["findings"])


def test_follow_up_modification_reports_added_and_removed(openai_server):
    server = openai_server(lambda messages: MODIFICATION)
    case = follow_up_case()
    result = consult(OpenAIBackend(server.url, "m"), case, MASTERS["fang-shouzheng"], Task.modification)
    user = server.requests[-1]["messages"][1]["content"]
    assert user == user_prompt(case, 1, Task.modification, MASTERS["fang-shouzheng"])
    assert "上次处方：柴胡10g 白芍15g 黄芩10g 甘草6g" in user and "【本次就诊】" in user
    assert result.visit_index == 1 and result.missing == []
    assert result.changes == {"added": ["丹参"], "removed": ["黄芩"]}
    assert result.prescription.base_herbs() == ["柴胡", "白芍", "甘草", "丹参"]


def test_follow_up_without_new_list_applies_the_changes_and_checks_safety(openai_server):
    answer = "<output>\n## 随症加减\n加：海藻10g\n去：无\n</output>"
    server = openai_server(lambda messages: answer)
    result = consult(OpenAIBackend(server.url, "m"), follow_up_case(), None, Task.modification)
    assert result.changes == {"added": ["海藻"], "removed": []}
    assert result.prescription.base_herbs() == ["柴胡", "白芍", "黄芩", "甘草", "海藻"]
    assert any(f.rule == "十八反" and set(f.herbs) == {"甘草", "海藻"} for f in result.findings)


def test_bad_requests_are_clear_errors(openai_server):
    backend = OpenAIBackend(openai_server(lambda messages: "x").url, "m")
    with pytest.raises(ConsultError, match="needs a follow-up visit"):
        consult(backend, stomach_case(), None, Task.modification)
    with pytest.raises(ConsultError, match="no visit 5"):
        consult(backend, stomach_case(), None, visit_index=5)
    with pytest.raises(ConsultError, match=r"unknown master 'nobody'; known masters: fang-shouzheng \(方守正\)"):
        resolve_master(MASTERS, "nobody")
    assert resolve_master(MASTERS, None) is None


def test_case_from_text_reads_headings_or_keeps_free_text():
    case = case_from_text("主诉：胃脘冷痛3年。\n舌象：舌淡胖，苔白滑。\n脉象：脉沉细。", sex="female", age=33,
                          pregnant=True)
    visit = case.visits[0]
    assert (visit.chief_complaint, visit.tongue, visit.pulse) == ("胃脘冷痛3年。", "舌淡胖，苔白滑。", "脉沉细。")
    assert case.patient == Patient(id=case.patient.id, sex="female", age=33, pregnant=True)
    free = case_from_text("胃痛三年，喜温喜按", tongue="舌淡")
    assert free.visits[0].present_illness == "胃痛三年，喜温喜按" and free.visits[0].tongue == "舌淡"
    with pytest.raises(ConsultError, match="empty case"):
        case_from_text("  ")
    with pytest.raises(ConsultError, match="unknown case field"):
        case_from_text("x", smell="none")
    with pytest.raises(ConsultError, match="patient: age"):
        case_from_text("胃痛", age=300)


def test_load_case_from_json_jsonl_and_text(tmp_path):
    one = tmp_path / "case.json"
    one.write_text(stomach_case().model_dump_json(), encoding="utf-8")
    assert load_case(one, pregnant=True).patient.pregnant
    many = tmp_path / "cases.jsonl"
    many.write_text("\n".join(c.model_dump_json() for c in (stomach_case(), follow_up_case())), encoding="utf-8")
    assert load_case(many, "f1").id == "f1"
    with pytest.raises(ConsultError, match=r"cases\.jsonl: holds 2 cases \(c1, f1\); choose one with --case-id"):
        load_case(many)
    record = tmp_path / "record.txt"
    record.write_text("【医案】R-1\n患者：女，30岁，孕12周\n初诊：\n主诉：恶心呕吐。\n处方：砂仁6g 紫苏梗10g\n"
                      "二诊：\n主诉：呕吐减轻。\n", encoding="utf-8")
    text_case = load_case(record)
    assert text_case.id == "R-1" and text_case.patient.pregnant and len(text_case.visits) == 2
    broken = tmp_path / "broken.json"
    broken.write_text('{"id": "x",\n "visits": [', encoding="utf-8")
    with pytest.raises(ConsultError, match=r"broken\.json:2: not valid JSON"):
        load_case(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"id": "x", "visits": []}', encoding="utf-8")
    with pytest.raises(ConsultError, match=r"wrong\.json: field 'visits'"):
        load_case(wrong)
    with pytest.raises(ConsultError, match=r"missing\.json: case file not found"):
        load_case(tmp_path / "missing.json")


def test_consult_command_answers_for_each_demo_master(tiny_model_dir):
    runner = CliRunner()
    app = shicheng_app
    for master in MASTERS.values():
        result = runner.invoke(app, ["consult", "--model", str(tiny_model_dir), "--master", master.id, "--text",
                                     "主诉：胃脘冷痛三年。\n舌象：舌淡胖。\n脉象：脉沉细。", "--sex", "male",
                                     "--max-new-tokens", "16", "--device", "cpu"])
        assert result.exit_code == 0, result.output
        assert master.name in result.output and "not medical advice" in result.output
    as_json = runner.invoke(app, ["consult", "--model", str(tiny_model_dir), "--master", "qin-tongmai", "--text",
                                  "胃痛", "--json", "--max-new-tokens", "8", "--device", "cpu"])
    assert as_json.exit_code == 0, as_json.output
    assert Consultation.model_validate(json.loads(as_json.stdout)).master_id == "qin-tongmai"


def test_consult_command_page_shows_the_planted_finding(openai_server, tiny_model_dir, tmp_path):
    server = openai_server(lambda messages: PLANTED)
    case_file = tmp_path / "case.json"
    case_file.write_text(stomach_case().model_dump_json(), encoding="utf-8")
    result = CliRunner().invoke(shicheng_app, [
        "consult", "--model", server.url, "--model-name", "m", "--masters", str(tiny_model_dir / "masters.json"),
        "--master", "huang-peizhong", "--case", str(case_file), "--pregnant"])
    assert result.exit_code == 0, result.output
    page = result.output
    for text in ("【病因病机】", "【辨证】", "【处方】", "海藻", "十八反", "妊娠禁用", "安全提示", "黄培中"):
        assert text in page
    assert page.index("【辨证】") < page.index("【处方】") < page.index("十八反")


def test_commands_reject_bad_input_with_a_reason(tiny_model_dir, tmp_path):
    runner, app = CliRunner(), shicheng_app
    unknown = runner.invoke(app, ["consult", "--model", str(tiny_model_dir), "--master", "nobody", "--text", "胃痛"])
    assert unknown.exit_code == 2 and "unknown master 'nobody'" in unknown.output and "li-shouyang" in unknown.output
    neither = runner.invoke(app, ["consult", "--model", str(tiny_model_dir)])
    assert neither.exit_code == 2 and "exactly one of --case" in neither.output
    missing = runner.invoke(app, ["consult", "--model", str(tiny_model_dir), "--case", str(tmp_path / "x.json")])
    assert missing.exit_code == 2 and "x.json: case file not found" in missing.output
    bad_task = runner.invoke(app, ["consult", "--model", str(tiny_model_dir), "--text", "胃痛", "--task", "cure"])
    assert bad_task.exit_code == 2 and "unknown task 'cure'" in bad_task.output
    listed = runner.invoke(app, ["masters", "--model", str(tiny_model_dir)])
    assert listed.exit_code == 0 and all(m in listed.output for m in MASTERS)
    as_json = runner.invoke(app, ["masters", "--model", str(tiny_model_dir), "--json"])
    assert [m["id"] for m in json.loads(as_json.stdout)] == list(MASTERS)
    none = runner.invoke(app, ["masters", "--model", str(tmp_path)])
    assert none.exit_code == 0 and "no masters.json" in none.output


def test_consult_command_reports_an_unreachable_endpoint(openai_server, tiny_model_dir):
    from tests.helpers.openai_server import HTTPError

    def refuse(messages):
        raise HTTPError(401, "bad key")

    server = openai_server(refuse)
    result = CliRunner().invoke(shicheng_app, ["consult", "--model", server.url, "--text", "胃痛三年"])
    assert result.exit_code == 1 and "endpoint error" in result.output and "bad key" in result.output
    no_masters = CliRunner().invoke(shicheng_app, ["consult", "--model", server.url, "--master", "li-shouyang",
                                                  "--text", "胃痛三年"])
    assert no_masters.exit_code == 2 and "--masters masters.json" in no_masters.output


def test_follow_up_prescription_written_against_the_last_one():
    from shicheng.agent import GenerationResult, read_consultation

    text = "<output>\n## 辨证\n肝郁血瘀证。\n## 处方\n上方去黄芩，加丹参15g，7剂。\n</output>"
    result = read_consultation(GenerationResult(text, 10, 5, 0.1, None), follow_up_case(), None, Task.full_chain, 1)
    assert result.changes == {"added": ["丹参"], "removed": ["黄芩"]}
    assert result.prescription.base_herbs() == ["柴胡", "白芍", "甘草", "丹参"]
    assert "prescription" in result.found and "advice" in result.missing
