"""The judge end to end against a real loopback server speaking the OpenAI protocol: valid verdicts, every
failure recorded as unscored after its retries, the cache (zero calls on a rerun, resume after a kill),
response_format and its fallback, the concurrency bound, and token and cost accounting."""

from __future__ import annotations

import json
import time

import pytest

from shicheng.evaluate.judge import judge_predictions
from shicheng.evaluate.judge_backends import JudgeConfigError, OpenAIJudge
from shicheng.evaluate.judge_cache import CACHE_FILE, VerdictCache
from shicheng.evaluate.judge_panel import summarize
from shicheng.evaluate.rubric import load_rubric
from tests.helpers import judge_data as data
from tests.helpers.judge_server import JudgeServer, schema_of, verdict_reply
from tests.helpers.openai_server import HTTPError

RUBRIC = load_rubric()
FULL_SCHEMA = RUBRIC.verdict_schema(RUBRIC.items, "reference")  # what case judge-a visit 1 is judged on


def fast_judge(server: JudgeServer, **kw) -> OpenAIJudge:
    settings = {"timeout_s": 5.0, "transport_retries": 2, "backoff_s": 0.01, "backoff_max_s": 0.02}
    return OpenAIJudge(server.url, server.model, **(settings | kw))


def run(rows, judges, cache_dir, **kw):
    return judge_predictions(rows, data.cases(), judges, RUBRIC, masters=data.masters(), cache_dir=cache_dir,
                             progress=False, **kw)


def valid(messages, body):
    return verdict_reply(schema_of(body) or FULL_SCHEMA, share=0.5)


def test_a_valid_verdict_is_scored_with_schema_sent_and_tokens_counted(tmp_path):
    with JudgeServer(valid) as server:
        judge = fast_judge(server, price_in_per_m=2.0, price_out_per_m=8.0)
        [v] = run([data.row(data.GOOD)], [judge], tmp_path)
    assert v.status == "scored" and v.judge_called and not v.cached and (v.attempts, v.calls) == (1, 1)
    body = server.requests[0]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == FULL_SCHEMA
    assert body["messages"][0]["role"] == "system" and "【标准答案】" in body["messages"][1]["content"]
    # Judged criteria at half marks (fill_schema), code criteria ours: herbs 5/5 → 9, composition 1,
    # completeness 5/5 answered → 5.  Judged: 2+2+1 + 3+2 + 2.5+1.5+1 + 2.5+1.5+1 = 20.
    assert v.total == pytest.approx(5 + 20 + 9 + 1)
    assert v.max_total == 55 and v.share == pytest.approx(35 / 55)
    # The judge's own numbers: completeness 2.5, herb_match 4.5, composition 0.5.
    assert v.judge_total == pytest.approx(2.5 + 20 + 4.5 + 0.5)
    # The server counts characters as tokens: prompt = all message contents, completion = the reply.
    sent = sum(len(m["content"]) for m in body["messages"])
    reply = valid(None, body)
    assert (v.prompt_tokens, v.completion_tokens) == (sent, len(reply))
    assert v.cost == pytest.approx((sent * 2.0 + len(reply) * 8.0) / 1e6)
    assert v.rationale == "评分理由" and v.missing == [] and v.judge_missing == []


def _assert_unscored_then_rerun_free(tmp_path, reply, expect_calls: int, reason: str, **judge_kw):
    with JudgeServer(reply) as server:
        [v] = run([data.row(data.GOOD)], [fast_judge(server, **judge_kw)], tmp_path)
        assert v.status == "unscored" and v.total is None and reason in v.reason
        assert v.calls == expect_calls and server.calls == expect_calls
        # Never 0: no criterion carries points, and the summary counts it as unscored.
        assert all(c.points is None for it in v.items for c in it.criteria) and v.completeness.points is None
        assert summarize([v])[v.judge]["unscored"] == 1
        [again] = run([data.row(data.GOOD)], [fast_judge(server, **judge_kw)], tmp_path)
        assert server.calls == expect_calls  # the rerun asked nothing
        assert again.status == "unscored" and again.cached and again.reason == v.reason
    return v, server


def test_invalid_json_is_retried_with_the_error_then_recorded_unscored(tmp_path):
    v, server = _assert_unscored_then_rerun_free(tmp_path, lambda m, b: "这不是JSON，我拒绝评分。", 3, "not valid JSON")
    assert v.attempts == 3 and len(v.errors) == 3
    retry = server.requests[1]["messages"]
    assert retry[-2] == {"role": "assistant", "content": "这不是JSON，我拒绝评分。"}
    assert retry[-1]["role"] == "user" and "不符合要求：not valid JSON" in retry[-1]["content"]
    assert len(server.requests[2]["messages"]) == len(server.requests[0]["messages"]) + 4


def test_a_schema_violation_is_retried_with_the_error_then_recorded_unscored(tmp_path):
    def out_of_bounds(messages, body):
        return verdict_reply(schema_of(body), scores__syndrome__accuracy=7)

    v, server = _assert_unscored_then_rerun_free(tmp_path, out_of_bounds, 3, "schema violation")
    assert "scores.syndrome.accuracy: Input should be less than or equal to 6" in v.reason
    assert "scores.syndrome.accuracy" in server.requests[1]["messages"][-1]["content"]


def test_a_timeout_is_retried_with_backoff_then_recorded_unscored(tmp_path):
    def slow(messages, body):
        time.sleep(1.5)
        return valid(messages, body)

    started = time.perf_counter()
    v, _ = _assert_unscored_then_rerun_free(tmp_path, slow, 2, "APITimeoutError", timeout_s=0.25,
                                            transport_retries=1)
    assert v.attempts == 1  # a transport failure ends the judgement: it is not a validation retry
    assert time.perf_counter() - started < 3


def test_a_500_is_retried_then_recorded_unscored(tmp_path):
    def broken(messages, body):
        raise RuntimeError("judge crashed")

    _assert_unscored_then_rerun_free(tmp_path, broken, 3, "InternalServerError")


def test_a_transient_500_is_retried_and_the_verdict_is_scored(tmp_path):
    count = {"n": 0}

    def flaky(messages, body):
        count["n"] += 1
        if count["n"] == 1:
            raise HTTPError(503, "overloaded")
        return valid(messages, body)

    with JudgeServer(flaky) as server:
        [v] = run([data.row(data.GOOD)], [fast_judge(server)], tmp_path)
    assert v.status == "scored" and v.calls == 2 and server.calls == 2 and v.attempts == 1


def test_a_reply_fixed_after_the_error_is_scored(tmp_path):
    def second_time_right(messages, body):
        return valid(messages, body) if messages[-1]["content"].startswith("你上一次的输出不符合要求") else "{坏的"

    with JudgeServer(second_time_right) as server:
        [v] = run([data.row(data.GOOD)], [fast_judge(server)], tmp_path)
    assert v.status == "scored" and v.attempts == 2 and server.calls == 2 and len(v.errors) == 1


def test_a_rerun_makes_zero_calls_and_gives_the_same_verdicts(tmp_path):
    rows = [data.row(data.GOOD), data.row(data.PARTIAL, system="stage-4"), data.row(data.GOOD, visit=2),
            data.row(data.EMPTY, system="baseline"), data.row(data.GOOD, case_id="judge-c")]
    with JudgeServer(valid) as server:
        first = run(rows, [fast_judge(server)], tmp_path)
        assert server.calls == 4  # the empty answer is decided by the rule, with no call
        second = run(rows, [fast_judge(server)], tmp_path)
        assert server.calls == 4
    assert [v.model_dump(exclude={"cached"}) for v in first] == [v.model_dump(exclude={"cached"}) for v in second]
    assert [v.cached for v in second] == [True, True, True, False, True]
    s = summarize(second)["judge-test"]
    assert (s["calls"], s["cached"], s["prompt_tokens"], s["rule_only"]) == (0, 4, 0, 1)
    assert s["prompt_tokens_all"] == sum(v.prompt_tokens for v in first)


def test_a_killed_run_resumes_where_it_stopped(tmp_path):
    rows = [data.row(data.good_variant(i), system=f"s{i}") for i in range(4)]
    with JudgeServer(valid) as server:
        run(rows[:2], [fast_judge(server)], tmp_path)
        assert server.calls == 2
        # The kill came in the middle of writing the third line.
        with (tmp_path / CACHE_FILE).open("a", encoding="utf-8") as fh:
            fh.write('{"key": "abc", "status": "ok", "verd')
        verdicts = run(rows, [fast_judge(server)], tmp_path)
        assert server.calls == 4  # only the two unfinished ones were asked
    assert [v.status for v in verdicts] == ["scored"] * 4 and [v.cached for v in verdicts] == [True, True, False, False]
    cache = VerdictCache(tmp_path)
    assert cache.bad_lines == 1 and len(cache) == 4  # the torn line is skipped, the next append began afresh


def test_retry_failed_asks_recorded_failures_again(tmp_path):
    state = {"up": False}

    def outage(messages, body):
        if not state["up"]:
            raise RuntimeError("down")
        return valid(messages, body)

    with JudgeServer(outage) as server:
        [v] = run([data.row(data.GOOD)], [fast_judge(server, transport_retries=0)], tmp_path)
        assert v.status == "unscored" and server.calls == 1
        state["up"] = True
        [v] = run([data.row(data.GOOD)], [fast_judge(server)], tmp_path, retry_failed=True)
        assert v.status == "scored" and server.calls == 2
        [v] = run([data.row(data.GOOD)], [fast_judge(server)], tmp_path)
        assert v.status == "scored" and v.cached and server.calls == 2  # the newer line wins


def test_a_server_that_rejects_response_format_falls_back_to_plain_prompting(tmp_path):
    def plain_only(messages, body):
        assert "response_format" not in body
        return "```json\n" + verdict_reply(FULL_SCHEMA, share=0.5) + "\n```"

    rows = [data.row(data.good_variant(i), system=f"s{i}") for i in range(3)]
    with JudgeServer(plain_only, reject_response_format=True) as server:
        judge = fast_judge(server)
        verdicts = run(rows, [judge], tmp_path, concurrency=1)
    assert [v.status for v in verdicts] == ["scored"] * 3
    assert server.rejected == 1 and judge.schema_rejected  # learnt once, then plain for the rest of the run
    assert ["response_format" in b for b in server.requests] == [True, False, False, False]
    assert verdicts[0].calls == 2 and verdicts[1].calls == 1


def test_response_format_json_schema_forced_does_not_fall_back(tmp_path):
    with JudgeServer(valid, reject_response_format=True) as server:
        [v] = run([data.row(data.GOOD)], [fast_judge(server, response_format="json_schema")], tmp_path)
    assert v.status == "unscored" and "BadRequestError" in v.reason and server.calls == 1


def test_concurrency_bound_is_respected(tmp_path):
    rows = [data.row(data.good_variant(i), system=f"s{i}") for i in range(9)]
    with JudgeServer(valid, hold_s=0.15) as server:
        verdicts = run(rows, [fast_judge(server)], tmp_path, concurrency=3)
    assert [v.status for v in verdicts] == ["scored"] * 9 and server.calls == 9
    assert 2 <= server.max_in_flight <= 3


def test_rows_sharing_a_prompt_share_one_call(tmp_path):
    # Two systems that wrote the same answer: the judge sees the same prompt (the system is not in it).
    with JudgeServer(valid) as server:
        a, b = run([data.row(data.GOOD), data.row(data.GOOD, system="other")], [fast_judge(server)], tmp_path)
    assert server.calls == 1 and (a.system, b.system) == ("stage-5", "other")
    assert a.total == b.total and a.calls == b.calls == 1 and (a.cached, b.cached) == (False, True)


def test_a_refused_key_stops_the_run_and_records_nothing(tmp_path):
    def unauthorized(messages, body):
        raise HTTPError(401, "invalid api key")

    with JudgeServer(unauthorized) as server, pytest.raises(JudgeConfigError, match="refused"):
        run([data.row(data.GOOD), data.row(data.PARTIAL)], [fast_judge(server)], tmp_path, concurrency=1)
    assert len(VerdictCache(tmp_path)) == 0


def test_a_panel_of_two_servers_gives_one_verdict_per_row_and_judge(tmp_path):
    rows = [data.row(data.GOOD), data.row(data.PARTIAL, system="stage-4")]
    with JudgeServer(lambda m, b: verdict_reply(schema_of(b), 0.8), model="deepseek-test") as a, \
            JudgeServer(lambda m, b: verdict_reply(schema_of(b), 0.4), model="gpt-test") as b:
        verdicts = run(rows, [fast_judge(a), fast_judge(b)], tmp_path)
    assert [(v.system, v.judge) for v in verdicts] == [("stage-5", "deepseek-test"), ("stage-5", "gpt-test"),
                                                       ("stage-4", "deepseek-test"), ("stage-4", "gpt-test")]
    assert verdicts[0].total > verdicts[1].total and (a.calls, b.calls) == (2, 2)
    lines = (tmp_path / CACHE_FILE).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4 and {json.loads(x)["judge"]["model"] for x in lines} == {"deepseek-test", "gpt-test"}


def test_bad_rows_are_named_before_any_call(tmp_path):
    with JudgeServer(valid) as server:
        judge = fast_judge(server)
        for bad, words in [(data.row(data.GOOD, case_id="nope"), "row 0: case 'nope'"),
                           (data.row(data.GOOD, visit=3), "row 0: case 'judge-a' has 2 visit"),
                           (data.row(data.GOOD, task="poetry"), "row 0: unknown task 'poetry'"),
                           (data.row(data.GOOD, master="nobody"), "row 0: master 'nobody'"),
                           ({"case_id": "judge-a", "visit": 1}, "row 0: missing field")]:
            with pytest.raises(ValueError, match=words):
                run([bad], [judge], tmp_path)
        assert server.calls == 0
