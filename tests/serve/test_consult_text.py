"""/v1/consult on loopback with the text clinicians paste: facts without headings, traditional characters,
an inline previous prescription, and a safety report that says what it could not check."""

from __future__ import annotations

import httpx
import pytest

from shicheng.agent import OpenAIBackend

PREGNANT_TEXT = "患者女，30岁，妊娠12周。颈前肿大半年，乏力便溏。"
TRADITIONAL = "主訴：頸前腫大半年。\n現病史：神疲乏力，納差便溏。\n舌象：舌淡胖，苔白膩。\n脈象：脈濡滑。"


@pytest.fixture(scope="module")
def server(live_server, planted_backend):
    return live_server(planted_backend)


def consult(server, **body) -> dict:
    r = httpx.post(f"{server.url}/v1/consult", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_facts_in_free_text_are_used_and_shown(server):
    c = consult(server, text=PREGNANT_TEXT)
    assert c["patient"]["pregnant"] is True and c["patient"]["sex"] == "female"
    assert {f["field"]: (f["source"], f["evidence"]) for f in c["patient_facts"]} == {
        "sex": ("text", "患者女"), "age": ("text", "30岁"), "pregnant": ("text", "妊娠12周")}
    # The planted prescription's 浙贝母 … is checked for pregnancy now; 十八反 as before.
    assert any(f["rule"] == "十八反" for f in c["findings"])
    # The form's fields override the text, and say so.
    c = consult(server, text=PREGNANT_TEXT, pregnant=False, sex="unknown")
    assert c["patient"]["pregnant"] is False
    assert {f["field"]: f["source"] for f in c["patient_facts"]} == {"sex": "text", "age": "text",
                                                                     "pregnant": "flag"}


def test_traditional_text_lands_in_the_right_fields(server, planted_upstream):
    consult(server, text=TRADITIONAL)
    user = planted_upstream.requests[-1]["messages"][1]["content"]
    assert "主诉：颈前肿大半年。" in user and "舌象：舌淡胖，苔白腻。" in user and "脉象：脉濡滑。" in user
    assert "脈" not in user and "訴" not in user


def test_the_report_lists_what_was_not_checked(server):
    c = consult(server, text="颈前肿大半年。")
    assert set(c["safety"]) >= {"findings", "not_dose_checked", "unrecognised"}
    assert c["safety_summary"] and c["safety_summary"] != "No safety findings."
    assert isinstance(c["safety"]["not_dose_checked"], list)


def test_an_inline_previous_prescription_is_a_follow_up(server, planted_upstream):
    c = consult(server, text="二诊：颈前肿大减轻。前方：党参15g 白术12g 陈皮10g。舌淡，脉濡。")
    assert c["visit_index"] == 1
    assert "上次处方：党参15g 白术12g 陈皮10g" in planted_upstream.requests[-1]["messages"][1]["content"]
    assert c["changes"]["removed"] == ["陈皮"]


def test_a_modification_answer_in_running_text_is_checked(live_server, openai_server):
    answer = "<output>\n## 随症加减\n痰多，加海藻10g；去陈皮。\n</output>"
    upstream = openai_server(lambda messages: answer)
    server = live_server(OpenAIBackend(upstream.url, "m"))
    c = consult(server, text="颈前肿大减轻，痰多。", previous_prescription="党参15g 陈皮10g 甘草6g",
                task="modification")
    assert c["prescription"] is not None
    assert [h["base"] for h in c["prescription"]["herbs"]] == ["党参", "甘草", "海藻"]
    assert any(f["rule"] == "十八反" for f in c["findings"])
