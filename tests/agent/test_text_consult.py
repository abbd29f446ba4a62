"""Consultations on the text clinicians paste: facts without headings, traditional characters, a previous
prescription inside the text, honest safety summaries, follow-up answers in running text, a parser that
fails, and the command-line options around them. The model is the loopback fake OpenAI server."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from shicheng.agent import GenerationResult, OpenAIBackend, consult, read_consultation, read_text_case
from shicheng.cli import app as shicheng_app
from shicheng.domain import Case, Patient, Task, Visit
from shicheng.prescription import parse_prescription

ISSUE_TEXT = "患者女，30岁，妊娠12周。咳嗽三日，咽痛，痰黄。"
PREGNANCY_ANSWER = "<output>\n## 辨证\n风热犯肺证。\n## 处方\n桑叶10g 菊花10g 三棱10g 红花6g\n</output>"
UNCHECKED_ANSWER = "<output>\n## 处方\n茯苓15g 某某草10g 陈皮\n</output>"
TRADITIONAL = "主訴：咳嗽三日。\n現病史：咽痛，發熱。\n舌象：舌紅苔薄黃。\n脈象：脈浮數。"
INLINE_FOLLOW_UP = "二诊：咳嗽减轻，仍咽痛。前方：柴胡10g 黄芩10g 甘草6g。舌红，脉数。"


def run(*args: str):
    return CliRunner().invoke(shicheng_app, ["consult", *args])


@pytest.fixture
def upstream(openai_server):
    answers = {"text": PREGNANCY_ANSWER}
    server = openai_server(lambda messages: answers["text"])
    server.answers = answers
    return server


def test_free_text_patient_facts_reach_the_safety_check(upstream):
    result = run("--model", upstream.url, "--text", ISSUE_TEXT, "--json")
    assert result.exit_code == 0, result.output
    c = json.loads(result.stdout)
    assert c["patient"] == {"id": None, "sex": "female", "age": 30.0, "pregnant": True}
    assert [(f["field"], f["source"], f["evidence"]) for f in c["patient_facts"]] == [
        ("sex", "text", "患者女"), ("age", "text", "30岁"), ("pregnant", "text", "妊娠12周")]
    rules = {(f["rule"], f["herbs"][0]) for f in c["findings"]}
    assert ("妊娠禁用", "三棱") in rules and ("妊娠慎用", "红花") in rules
    assert "女，30岁，妊娠期" in upstream.requests[-1]["messages"][1]["content"]
    page = run("--model", upstream.url, "--text", ISSUE_TEXT)
    assert page.exit_code == 0, page.output
    assert "妊娠12周" in page.output and "text" in page.output and "妊娠禁用" in page.output


def test_flags_override_the_text_and_say_so(upstream):
    result = run("--model", upstream.url, "--text", ISSUE_TEXT, "--not-pregnant", "--age", "41", "--json")
    c = json.loads(result.stdout)
    assert c["patient"]["pregnant"] is False and c["patient"]["age"] == 41
    sources = {f["field"]: f["source"] for f in c["patient_facts"]}
    assert sources == {"sex": "text", "age": "flag", "pregnant": "flag"}
    assert not any(f["rule"].startswith("妊娠") and f["level"] == "error" for f in c["findings"])


def test_a_heading_record_reports_header_facts(upstream):
    case, _, facts = read_text_case("性别：女  年龄：52岁\n主诉：咳嗽三日。\n现病史：妊娠8周，咽痛。")
    assert case.patient.sex == "female" and case.patient.age == 52 and case.patient.pregnant
    assert [(f.field, f.source) for f in facts] == [("sex", "header"), ("age", "header"), ("pregnant", "text")]


def test_traditional_characters_are_read_as_simplified(upstream):
    result = run("--model", upstream.url, "--text", TRADITIONAL, "--json")
    assert result.exit_code == 0, result.output
    user = upstream.requests[-1]["messages"][1]["content"]
    assert "主诉：咳嗽三日。" in user and "现病史：咽痛，发热。" in user
    assert "舌象：舌红苔薄黄。" in user and "脉象：脉浮数。" in user  # the pulse in its own field
    case, _, _ = read_text_case(TRADITIONAL)
    assert (case.visits[0].tongue, case.visits[0].pulse) == ("舌红苔薄黄。", "脉浮数。")


def test_the_page_never_says_no_findings_without_what_was_not_checked(upstream):
    upstream.answers["text"] = UNCHECKED_ANSWER
    result = run("--model", upstream.url, "--text", "咳嗽三日，痰白。", "--json")
    c = json.loads(result.stdout)
    assert "某某草" in c["safety"]["unrecognised"]
    assert any("陈皮" in name for name in c["safety"]["not_dose_checked"])
    assert "not recognised" in c["safety_summary"] and "not dose-checked" in c["safety_summary"]
    page = run("--model", upstream.url, "--text", "咳嗽三日，痰白。").output
    assert "某某草" in page and "not dose-checked" in page
    # No finding at all, yet 陈皮 had no dose: the page says the check was incomplete, and why.
    upstream.answers["text"] = "<output>\n## 处方\n茯苓15g 陈皮\n</output>"
    page = run("--model", upstream.url, "--text", "咳嗽三日，痰白。").output
    assert "安全检查 safety" in page and "check is incomplete" in page and "陈皮" in page.split("安全检查")[1]
    assert "No safety findings" not in page and "no findings" not in page


def test_a_previous_prescription_in_the_text_makes_a_follow_up(upstream):
    upstream.answers["text"] = "<output>\n## 处方\n柴胡10g 黄芩10g 甘草6g 桔梗10g\n</output>"
    result = run("--model", upstream.url, "--text", INLINE_FOLLOW_UP, "--json")
    c = json.loads(result.stdout)
    assert c["visit_index"] == 1 and c["changes"] == {"added": ["桔梗"], "removed": []}
    user = upstream.requests[-1]["messages"][1]["content"]
    assert "【上次就诊】" in user and "上次处方：柴胡10g 黄芩10g 甘草6g" in user
    current = user.split("【本次就诊】")[1]
    assert "咳嗽减轻" in current and "前方" not in current  # not written twice


def test_the_previous_prescription_option(upstream, tmp_path):
    upstream.answers["text"] = "<output>\n## 处方\n党参15g 白术12g 茯苓15g\n</output>"
    result = run("--model", upstream.url, "--text", "服药后乏力减轻，纳增。", "--previous-prescription",
                 "党参15g 白术12g 茯苓15g 陈皮10g", "--task", "modification", "--json")
    assert result.exit_code == 0, result.output
    c = json.loads(result.stdout)
    assert c["visit_index"] == 1 and c["task"] == "modification"
    assert c["changes"]["removed"] == ["陈皮"]
    assert "上次处方：党参15g" in upstream.requests[-1]["messages"][1]["content"]
    case_file = tmp_path / "case.json"
    case_file.write_text(Case(id="c9", visits=[Visit(chief_complaint="乏力。")]).model_dump_json(), encoding="utf-8")
    from_file = run("--model", upstream.url, "--case", str(case_file), "--previous-prescription", "黄芪30g",
                    "--json")
    assert from_file.exit_code == 0, from_file.output
    assert json.loads(from_file.stdout)["visit_index"] == 1


def test_visit_option_errors_are_one_based(upstream, tmp_path):
    case_file = tmp_path / "case.json"
    case_file.write_text(Case(id="c1", visits=[Visit(chief_complaint="胃痛。")]).model_dump_json(), encoding="utf-8")
    result = run("--model", upstream.url, "--case", str(case_file), "--visit", "5")
    assert result.exit_code == 2
    assert "no visit 5" in result.output and "1-based" in result.output and "no visit 4" not in result.output
    text = run("--model", upstream.url, "--text", "胃痛", "--visit", "2")
    assert text.exit_code == 2 and "no visit 2" in text.output


def test_masters_of_a_missing_model_is_an_error(tmp_path):
    result = CliRunner().invoke(shicheng_app, ["masters", "--model", "/nonexistent"])
    assert result.exit_code == 2 and "/nonexistent: model directory not found" in result.output
    missing = CliRunner().invoke(shicheng_app, ["masters", "--model", str(tmp_path), "--masters",
                                                str(tmp_path / "none.json")])
    assert missing.exit_code == 2 and "masters file not found" in missing.output


# ---- reading answers ------------------------------------------------------------------------------------

def _follow_up() -> Case:
    first = parse_prescription("柴胡10g 白芍15g 黄芩10g 甘草6g").prescription
    return Case(id="f1", patient=Patient(sex="female", age=40), visits=[
        Visit(index=1, chief_complaint="胁肋胀痛一月。", prescription=first),
        Visit(index=2, present_illness="胁痛减轻，近日咳嗽。")])


def test_modification_in_running_text_gives_the_prescription_and_checks_it():
    text = "<output>\n## 随症加减\n咳嗽加重，加苦杏仁10g、海藻10g；去黄芩。\n</output>"
    c = read_consultation(GenerationResult(text, 10, 5, 0.1, None), _follow_up(), None, Task.modification, 1)
    assert c.prescription is not None
    assert c.prescription.base_herbs() == ["柴胡", "白芍", "甘草", "苦杏仁", "海藻"]
    assert c.changes == {"added": ["苦杏仁", "海藻"], "removed": ["黄芩"]}
    assert any(f.rule == "十八反" and set(f.herbs) == {"甘草", "海藻"} for f in c.findings)


def test_a_parser_failure_is_reported_not_raised(monkeypatch, openai_server):
    """The crash class of issue item 1 (an exception inside parse_prescription), injected: the
    consultation still comes back, with the text reported as not read."""
    import shicheng.agent.checks as checks

    def broken(text, kb=None):
        raise IndexError("string index out of range")

    monkeypatch.setattr(checks, "parse_prescription", broken)
    server = openai_server(lambda messages: "<output>\n## 处方\n柴胡10 白芍10 生\n</output>")
    case = Case(id="c1", visits=[Visit(chief_complaint="胁痛。")])
    c = consult(OpenAIBackend(server.url, "m"), case, None)
    assert c.prescription is None
    assert any("parser failed" in u and "IndexError" in u for u in c.prescription_unparsed)
    assert any("柴胡10 白芍10 生" in u for u in c.safety.unrecognised)
    assert "not recognised" in c.safety_summary
