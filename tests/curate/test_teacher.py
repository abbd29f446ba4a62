"""Teacher expansion end to end against a real loopback OpenAI-compatible server."""

import threading
import time

import pytest

from shicheng.curate.ledger import Ledger
from shicheng.curate.teacher import (
    TeacherConfig,
    TeacherError,
    TeacherStats,
    check_reply,
    expand_cases,
    herb_set,
    syndrome_kept,
    teacher_messages,
)
from shicheng.domain import Answer, Case, Master, Patient, Visit
from shicheng.template import render_answer
from tests.helpers.openai_server import HTTPError, OpenAIServerFactory

SYNDROME = "脾肾阳虚，寒凝中焦"
PRINCIPLE = "温补脾肾，散寒止痛"
RX = "附子理中汤加减。制附子15g(先煎) 干姜10g 党参15g 炒白术12g 炙甘草6g，7剂，水煎服，日一剂。"
MASTER = Master(id="li", name="李守阳", school="温阳学派", academic_thoughts="重视阳气，善用附子。")


@pytest.fixture
def openai_server():
    with OpenAIServerFactory() as factory:
        yield factory


def make_case(n: int = 1, reasoning: str | None = None) -> Case:
    visit = Visit(index=1, label="初诊", chief_complaint="胃脘冷痛反复发作3年，加重1周", tongue="舌淡胖，苔白滑",
                  pulse="脉沉细", answer=Answer(syndrome=SYNDROME, treatment_principle=PRINCIPLE, prescription=RX,
                                               reasoning=reasoning))
    return Case(id=f"FY-{n:04d}", master_id="li", patient=Patient(sex="male", age=45), disease="胃脘痛",
                visits=[visit], source=f"cases.txt:{n}")


def teacher_reply(syndrome: str = "脾肾阳虚、寒凝中焦。", rx: str = RX) -> str:
    return render_answer(Answer(
        reasoning="胃脘冷痛，舌淡胖苔白滑，脉沉细，为脾肾阳虚、寒凝中焦之象。",
        etiology_pathogenesis="素体阳虚，寒从中生，寒凝气滞，不通则痛。", syndrome=syndrome,
        treatment_principle="温中散寒", prescription=rx, prescription_explanation="制附子为君，温补脾肾。",
        master_theory="体现重视阳气之学术思想。", modifications="若呕吐，加吴茱萸。", advice="忌生冷，注意保暖。"))


def config(server, tmp_path, **kw) -> TeacherConfig:
    return TeacherConfig(url=server.url, model="teacher-x", cache_dir=tmp_path / "cache", retry_backoff_s=0, **kw)


def run(cases, cfg, ledger=None):
    ledger = ledger or Ledger()
    stats = TeacherStats()
    out = expand_cases(cases, {"li": MASTER}, cfg, ledger, stats=stats, progress=False)
    ledger.check()
    return out, ledger, stats


def test_valid_reply_fills_answer_and_restores_the_masters_text(openai_server, tmp_path):
    server = openai_server(lambda messages: teacher_reply(rx="制附子 15g，干姜 10g，党参 15g，白术 12g，甘草 6g"))
    out, ledger, stats = run([make_case()], config(server, tmp_path, temperature=0.2))
    answer = out[0].visits[0].answer
    assert answer.reasoning.startswith("胃脘冷痛")
    assert answer.prescription_explanation == "制附子为君，温补脾肾。"
    assert answer.master_theory == "体现重视阳气之学术思想。"
    # The master's own sections, verbatim, not the teacher's rewording.
    assert (answer.syndrome, answer.treatment_principle, answer.prescription) == (SYNDROME, PRINCIPLE, RX)
    assert herb_set(answer.prescription) == {"附子", "干姜", "党参", "白术", "甘草"}
    assert server.calls == 1 and stats.calls == 1 and stats.expanded == 1
    body = server.requests[0]
    assert body["model"] == "teacher-x" and body["temperature"] == 0.2
    prompt = body["messages"][1]["content"]
    assert "李守阳" in prompt and "重视阳气" in prompt and RX in prompt and "## 方解" in prompt
    assert ledger.steps["teacher"].kept == 1


def test_reply_that_adds_a_herb_is_retried_then_rejected(openai_server, tmp_path):
    server = openai_server(lambda messages: teacher_reply(rx=RX.replace("炙甘草6g", "炙甘草6g 黄芪30g")))
    cfg = config(server, tmp_path, max_retries=2)
    out, ledger, stats = run([make_case()], cfg)
    assert out == []
    assert server.calls == 3 and stats.retries == 2 and stats.invalid == 1
    (reject,) = ledger.rejects
    assert reject.step == "teacher" and reject.source == "cases.txt:1"
    assert reject.reason.startswith("teacher reply invalid:")
    assert "added 黄芪" in reject.reason and "3 attempt" in reject.reason
    # Retries tell the teacher what was wrong.
    assert "处方药物被改动：多出 黄芪" in server.requests[1]["messages"][1]["content"]
    # The invalid replies were cached: a rerun replays them without calling and rejects the same way.
    again = openai_server(lambda messages: teacher_reply())
    out2, ledger2, stats2 = run([make_case()], config(again, tmp_path, max_retries=2))
    assert again.calls == 0 and stats2.cache_hits == 3 and out2 == []
    assert ledger2.rejects[0].reason == reject.reason


def test_reply_that_drops_a_herb_is_rejected(openai_server, tmp_path):
    server = openai_server(lambda messages: teacher_reply(rx=RX.replace("干姜10g ", "")))
    out, ledger, _ = run([make_case()], config(server, tmp_path, max_retries=1))
    assert out == [] and server.calls == 2
    assert "dropped 干姜" in ledger.rejects[0].reason and "added" not in ledger.rejects[0].reason


def test_reply_that_changes_the_syndrome_is_rejected(openai_server, tmp_path):
    server = openai_server(lambda messages: teacher_reply(syndrome="肝郁脾虚"))
    out, ledger, _ = run([make_case()], config(server, tmp_path, max_retries=0))
    assert out == [] and "syndrome changed" in ledger.rejects[0].reason


def test_timeout_is_a_failed_call_never_a_fake_answer(openai_server, tmp_path):
    def slow(messages):
        time.sleep(1.5)
        return teacher_reply()

    server = openai_server(slow)
    out, ledger, stats = run([make_case()], config(server, tmp_path, timeout_s=0.3, max_retries=1))
    assert out == [] and server.calls == 2 and stats.failures == 1
    assert ledger.rejects[0].reason.startswith("teacher call failed: visit 1 (初诊) after 2 attempt(s): APITimeout")
    assert not list((tmp_path / "cache").rglob("*.json"))  # failures are not cached


def test_server_error_then_success_is_retried(openai_server, tmp_path):
    seen = []

    def flaky(messages):
        seen.append(1)
        if len(seen) == 1:
            raise RuntimeError("overloaded")
        return teacher_reply()

    server = openai_server(flaky)
    out, _, stats = run([make_case()], config(server, tmp_path))
    assert len(out) == 1 and server.calls == 2 and stats.retries == 1 and stats.failures == 0


def test_rerun_with_same_cache_makes_zero_calls(openai_server, tmp_path):
    first = openai_server(lambda messages: teacher_reply())
    cases = [make_case(i) for i in range(1, 4)]
    out1, _, _ = run(cases, config(first, tmp_path))
    assert first.calls == 3
    second = openai_server(lambda messages: teacher_reply())
    out2, _, stats = run(cases, config(second, tmp_path))
    assert second.calls == 0 and stats.calls == 0 and stats.cache_hits == 3
    assert [c.model_dump() for c in out2] == [c.model_dump() for c in out1]


def test_resume_after_a_partial_run_calls_only_the_unfinished(openai_server, tmp_path):
    def half_down(messages):
        if "第三例" in messages[1]["content"]:
            raise HTTPError(503, "down")
        return teacher_reply()

    cases = [make_case(i) for i in range(1, 4)]
    cases[2].visits[0].other_findings = "第三例"
    partial = openai_server(half_down)
    out1, ledger1, _ = run(cases, config(partial, tmp_path, max_retries=0))
    assert len(out1) == 2 and "teacher call failed" in ledger1.rejects[0].reason
    resumed = openai_server(lambda messages: teacher_reply())
    out2, ledger2, stats = run(cases, config(resumed, tmp_path, max_retries=0))
    assert resumed.calls == 1 and stats.cache_hits == 2 and len(out2) == 3 and not ledger2.rejects


def test_concurrent_calls(openai_server, tmp_path):
    lock, state = threading.Lock(), {"now": 0, "peak": 0}

    def slow(messages):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.3)
        with lock:
            state["now"] -= 1
        return teacher_reply()

    server = openai_server(slow)
    cases = [make_case(i) for i in range(1, 9)]
    start = time.monotonic()
    out, _, _ = run(cases, config(server, tmp_path, concurrency=4))
    elapsed = time.monotonic() - start
    assert len(out) == 8 and server.calls == 8
    assert 1 < state["peak"] <= 4
    assert elapsed < 8 * 0.3  # sequential calls would take at least 2.4 s
    assert [c.id for c in out] == [c.id for c in cases]


def test_visits_with_reasoning_are_left_alone(openai_server, tmp_path):
    server = openai_server(lambda messages: teacher_reply())
    case = make_case(reasoning="名医自述的推理。")
    out, ledger, stats = run([case], config(server, tmp_path))
    assert server.calls == 0 and stats.skipped == 1 and out == [case]
    assert ledger.steps["teacher"].kept == 1


def test_bad_key_stops_the_run(openai_server, tmp_path):
    server = openai_server(lambda messages: (_ for _ in ()).throw(HTTPError(401, "bad key")))
    with pytest.raises(TeacherError, match="AuthenticationError"):
        run([make_case()], config(server, tmp_path))


def test_check_reply_and_syndrome_rules():
    gold = make_case().visits[0].answer
    answer, reason = check_reply(teacher_reply(), gold)
    assert reason is None and answer.syndrome.startswith("脾肾阳虚")
    _, reason = check_reply("<output>## 辨证\n脾肾阳虚</output>", gold)
    assert reason.startswith("missing sections:") and "病因病机" in reason
    assert syndrome_kept(SYNDROME, "证属寒凝中焦，脾肾阳虚")  # every term present, order free
    assert syndrome_kept("脾腎陽虛", "脾肾阳虚")  # traditional characters
    assert not syndrome_kept(SYNDROME, "脾肾阳虚")


def test_prompt_has_the_case_and_the_layout():
    messages = teacher_messages(make_case(), 0, None)
    user = messages[1]["content"]
    assert "舌淡胖" in user and "脉沉细" in user and f"辨证：{SYNDROME}" in user
    assert "<think>" in user and "## 随症加减" in user and "名医特色理论应用" not in user
    assert "7. 严格按下列格式输出" in user  # numbering stays continuous without the master's item


def test_damaged_cache_file_is_asked_again_and_overwritten(openai_server, tmp_path):
    first = openai_server(lambda messages: teacher_reply())
    run([make_case()], config(first, tmp_path))
    (cached,) = (tmp_path / "cache").rglob("*.json")
    cached.write_text("{half a fi", encoding="utf-8")  # as a killed writer without os.replace would leave it
    second = openai_server(lambda messages: teacher_reply())
    out, _, _ = run([make_case()], config(second, tmp_path))
    assert second.calls == 1 and len(out) == 1
    assert '"valid": true' in cached.read_text(encoding="utf-8")


def _parser_failing_on(monkeypatch, marker: str) -> None:
    """The prescription parser raising (as it once did on text ending in 生) for texts containing `marker`."""
    from shicheng import prescription

    real = prescription.parse_prescription

    def parse(text, kb=None):
        if marker in (text or ""):
            raise IndexError("string index out of range")
        return real(text, kb)

    monkeypatch.setattr(prescription, "parse_prescription", parse)


def test_a_reply_the_parser_fails_on_is_an_invalid_reply_with_the_reason(openai_server, tmp_path, monkeypatch):
    _parser_failing_on(monkeypatch, "黄芪30g 生")
    server = openai_server(lambda messages: teacher_reply(rx=RX + " 黄芪30g 生"))
    out, ledger, stats = run([make_case()], config(server, tmp_path, max_retries=1))
    assert out == [] and server.calls == 2 and stats.invalid == 1
    (reject,) = ledger.rejects
    assert reject.reason.startswith("teacher reply invalid: visit 1 (初诊) after 2 attempt(s): prescription unreadable")
    assert "IndexError" in reject.reason and reject.record["last_reply"]
    assert "处方无法解析" in server.requests[1]["messages"][1]["content"]  # the retry says what went wrong


def test_a_master_prescription_the_parser_fails_on_fails_the_visit_without_a_call(openai_server, tmp_path,
                                                                               monkeypatch):
    _parser_failing_on(monkeypatch, "炙甘草6g")
    server = openai_server(lambda messages: teacher_reply())
    out, ledger, stats = run([make_case(1), make_case(2)], config(server, tmp_path))
    assert out == [] and server.calls == 0 and stats.failures == 2
    assert ledger.rejects[0].reason == ("teacher call failed: visit 1 (初诊): master's prescription unreadable: "
                                        "prescription parser failed (IndexError: string index out of range)")
