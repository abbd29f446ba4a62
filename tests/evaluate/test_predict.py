"""`predict` on the tiny local model (batched, resumable, counterfactual mode, asked exactly as training
asked) and against a loopback OpenAI-protocol server (bounded concurrency, a failing request recorded as
an error row)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shicheng.agent.backends import TransformersBackend
from shicheng.curate.datasets import build_stage_rows
from shicheng.demo import load_demo_masters
from shicheng.domain import Case, Task, Visit
from shicheng.evaluate.predict import load_masters_from, predict, read_out, read_predictions
from shicheng.prompts import GENERIC_SYSTEM, prompt_messages
from tests.helpers import predict_data as data
from tests.helpers.judge_server import JudgeServer
from tests.helpers.openai_server import HTTPError

pytestmark = pytest.mark.usefixtures("torch_one_thread")
MASTERS = load_demo_masters()


class CountingBackend(TransformersBackend):
    """The tiny model, recording every batch it is asked to generate."""

    def __init__(self, model_dir: Path):
        super().__init__(model_dir, device="cpu")
        self.batches: list[list[list[dict]]] = []

    def generate_batch(self, messages_list, **options):
        self.batches.append(messages_list)
        return super().generate_batch(messages_list, **options)

    @property
    def asked(self) -> int:
        return sum(len(b) for b in self.batches)


@pytest.fixture()
def local(tiny_model_dir) -> CountingBackend:
    return CountingBackend(tiny_model_dir)


@pytest.fixture()
def cases(tmp_path) -> Path:
    return data.write_cases(tmp_path / "cases")[0]


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run(model_dir, cases, out, backend, **kw):
    return predict(str(model_dir), cases=cases, out=out, backend=backend, progress=False, max_new_tokens=6, **kw)


def test_rows_are_written_with_every_field_and_asked_as_training_asked(tiny_model_dir, cases, tmp_path, local):
    out = tmp_path / "p.jsonl"
    report = run(tiny_model_dir, cases, out, local, batch_size=2, tasks=["full_chain", "modification"])
    rows = rows_of(out)
    # 3 visits × full chain, plus the modification task on the one follow-up visit (never on a first visit).
    assert report.total == report.generated == len(rows) == 4 and report.resumed == 0 and report.failed == 0
    assert sorted((r["case_id"], r["visit"], r["task"]) for r in rows) == [
        ("test-cold", 1, "full_chain"), ("test-cold", 2, "full_chain"), ("test-cold", 2, "modification"),
        ("test-sleep", 1, "full_chain")]
    for r in rows:
        assert set(r) == {"case_id", "visit", "master", "case_master", "task", "system", "output", "tokens",
                          "prompt_tokens", "seconds"}
        assert r["system"] == tiny_model_dir.name and r["master"] == r["case_master"]
        assert 1 <= r["tokens"] <= 6 and r["prompt_tokens"] > 0 and r["seconds"] >= 0
    # Batches of at most 2; every prompt is the one training built for that visit, task and master.
    assert [len(b) for b in local.batches] == [2, 2]
    # Stage 4 of the curated datasets, built from the same cases, holds the prompts training used.
    stage4 = build_stage_rows(data.held_out_cases(), [], MASTERS, {c.id: "test" for c in data.held_out_cases()})
    trained = {(r["case_id"], r["visit"], r["task"]): r["messages"][:2] for r in stage4["stage4_master_sft"]["test"]}
    asked = {json.dumps(m, ensure_ascii=False) for b in local.batches for m in b}
    compared = [k for k in ((r["case_id"], r["visit"], r["task"]) for r in rows) if k in trained]
    assert len(compared) == 3  # the full chain of every visit (the modification row has no stage-4 twin)
    for key in compared:
        assert json.dumps(trained[key], ensure_ascii=False) in asked
    assert report.decoding["max_new_tokens"] == 6 and report.decoding["temperature"] == 0.0


def test_a_rerun_generates_nothing_and_a_killed_run_resumes_the_missing_rows(tiny_model_dir, cases, tmp_path,
                                                                            local):
    out = tmp_path / "p.jsonl"
    run(tiny_model_dir, cases, out, local)
    first = rows_of(out)
    assert local.asked == 3
    again = run(tiny_model_dir, cases, out, local)
    assert local.asked == 3 and again.resumed == 3 and again.generated == 0 and rows_of(out) == first
    # A kill mid-write: the last line cut short. The next run drops it and asks that one answer again.
    text = out.read_text(encoding="utf-8")
    out.write_text(text[: text.rstrip("\n").rfind("\n") + 1] + text.rstrip("\n").rsplit("\n", 1)[1][:25],
                   encoding="utf-8")
    resumed = run(tiny_model_dir, cases, out, local)
    assert (resumed.resumed, resumed.generated) == (2, 1) and local.asked == 4
    assert len(rows_of(out)) == 3


def test_failed_rows_are_asked_again_and_replaced(tiny_model_dir, cases, tmp_path, local):
    out = tmp_path / "p.jsonl"
    run(tiny_model_dir, cases, out, local)
    rows = rows_of(out)
    rows[0] |= {"output": "", "error": "APITimeoutError: timed out"}
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    report = run(tiny_model_dir, cases, out, local)
    assert (report.resumed, report.generated) == (2, 1)
    after = rows_of(out)
    assert len(after) == 3 and not any("error" in r for r in after)


def test_a_damaged_line_in_the_middle_is_an_error_naming_it(tmp_path):
    out = tmp_path / "p.jsonl"
    out.write_text('{"case_id": "a"}\nnot json\n{"x": 1}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"p\.jsonl:1: not a prediction line"):
        read_out(out)


def test_all_masters_asks_every_case_as_every_master(tiny_model_dir, cases, tmp_path, local):
    out = tmp_path / "cf.jsonl"
    report = run(tiny_model_dir, cases, out, local, all_masters=True, batch_size=8)
    rows = rows_of(out)
    assert report.total == len(rows) == 3 * len(MASTERS)  # 3 visits × 5 masters
    assert {(r["case_id"], r["visit"], r["master"]) for r in rows} == {
        (c.id, v + 1, m) for c in data.held_out_cases() for v in range(len(c.visits)) for m in MASTERS}
    assert all(r["case_master"] == (data.LI if r["case_id"] == "test-cold" else data.HUANG) for r in rows)
    # The asked master is named in the system prompt and the task line.
    for m in (msgs for b in local.batches for msgs in b):
        name = next(x.name for x in MASTERS.values() if f"你是{x.name}" in m[0]["content"])
        assert m[1]["content"].endswith(f"（{name}）")
    only = run(tiny_model_dir, cases, tmp_path / "two.jsonl", local, all_masters=True, masters=[data.LI, data.HUANG])
    assert only.total == 6


def test_all_masters_asks_a_case_without_a_master_once_generically(tiny_model_dir, cases, tmp_path, local):
    general = Case(id="test-general", visits=[Visit(chief_complaint="头痛三日", tongue="舌红", pulse="脉浮数")])
    with_general = tmp_path / "with-general.jsonl"
    with_general.write_text(cases.read_text(encoding="utf-8") + general.model_dump_json() + "\n", encoding="utf-8")
    out = tmp_path / "cf.jsonl"
    report = run(tiny_model_dir, with_general, out, local, all_masters=True, masters_file=tiny_model_dir)
    rows = [r for r in rows_of(out) if r["case_id"] == "test-general"]
    assert report.total == 3 * len(MASTERS) + 1
    assert [(r["master"], r["case_master"]) for r in rows] == [(None, None)]
    generic = [m for b in local.batches for m in b if "头痛三日" in m[1]["content"]]
    assert generic == [prompt_messages(general, 0, Task.full_chain, None)]
    assert generic[0][0]["content"] == GENERIC_SYSTEM


def test_masters_filter_and_unknown_master_error(tiny_model_dir, cases, tmp_path, local):
    report = run(tiny_model_dir, cases, tmp_path / "li.jsonl", local, masters=[data.LI])
    assert report.total == 2  # test-cold's two visits
    with pytest.raises(ValueError, match="unknown master id 'nobody'; known masters: fang-shouzheng, huang-peizhong"):
        run(tiny_model_dir, cases, tmp_path / "x.jsonl", local, masters=["nobody"])
    with pytest.raises(ValueError, match="unknown task 'diagnose'"):
        run(tiny_model_dir, cases, tmp_path / "x.jsonl", local, tasks=["diagnose"])
    assert local.asked == 2


def test_missing_files_are_named(tiny_model_dir, tmp_path, local):
    with pytest.raises(FileNotFoundError, match=r"cases file not found: .*nope\.jsonl"):
        run(tiny_model_dir, tmp_path / "nope.jsonl", tmp_path / "x.jsonl", local)
    with pytest.raises(FileNotFoundError, match=r"without cases/test\.jsonl"):
        run(tiny_model_dir, tmp_path, tmp_path / "x.jsonl", local)


def test_a_curated_folder_with_a_split_is_read(tiny_model_dir, tmp_path, local):
    data.write_cases(tmp_path / "data" / "cases")
    report = run(tiny_model_dir, tmp_path / "data", tmp_path / "p.jsonl", local, split="test")
    assert report.total == 3


ANSWER = "<think>脾阳不足。</think><output>## 辨证\n脾胃虚寒证。\n## 处方\n附子10g 干姜10g</output>"


def endpoint_reply(messages, body):
    if "失眠多梦" in messages[-1]["content"]:
        raise HTTPError(500, "the model crashed")
    return ANSWER


def test_an_endpoint_runs_with_bounded_concurrency_and_a_failure_is_an_error_row(tmp_path, cases, tiny_model_dir):
    out = tmp_path / "api.jsonl"
    with JudgeServer(endpoint_reply, model="frontier", hold_s=0.15) as server:
        report = predict(server.url, model_name="frontier", cases=cases, out=out, all_masters=True,
                         concurrency=3, batch_size=4, progress=False, timeout_s=10,
                         masters_file=tiny_model_dir / "masters.json")
        rows = rows_of(out)
        assert report.total == len(rows) == 15 and report.system == "frontier"
        assert server.max_in_flight == 3  # 15 requests, never more than 3 at once
        failed = [r for r in rows if r.get("error")]
        # test-sleep (its findings say 失眠多梦) asked as each of the 5 masters: 500 → error rows, empty output.
        assert len(failed) == report.failed == 5
        assert all(r["case_id"] == "test-sleep" and r["output"] == "" and "InternalServerError" in r["error"]
                   for r in failed)
        assert all(r["output"] == ANSWER and r["tokens"] == len(ANSWER) for r in rows if not r.get("error"))
        sent = server.calls
        body = server.requests[0]
        assert body["model"] == "frontier" and body["temperature"] == 0.0
        # A rerun asks only the failed ones again.
        server.body_reply = lambda messages, body: ANSWER
        again = predict(server.url, model_name="frontier", cases=cases, out=out, all_masters=True,
                        concurrency=3, progress=False, masters_file=tiny_model_dir / "masters.json")
        assert (again.resumed, again.generated, again.failed) == (10, 5, 0) and server.calls == sent + 5
    answers, failures = read_predictions([out])
    assert len(answers) == 15 and failures == []


def test_an_endpoint_needs_its_model_name(tmp_path, cases):
    with pytest.raises(ValueError, match="needs model_name"):
        predict("http://127.0.0.1:9/v1", cases=cases, out=tmp_path / "x.jsonl", progress=False)


def test_masters_from_a_folder_of_json_files_refuse_a_repeated_id(tmp_path):
    folder = tmp_path / "masters"
    folder.mkdir()
    (folder / "a.json").write_text(MASTERS[data.LI].model_dump_json(), encoding="utf-8")
    assert list(load_masters_from(folder)) == [data.LI]
    (folder / "b.yaml").write_text(MASTERS[data.LI].model_dump_json(), encoding="utf-8")
    with pytest.raises(ValueError, match="'li-shouyang' is already given by"):
        load_masters_from(folder)
    with pytest.raises(FileNotFoundError, match="masters file or folder not found"):
        load_masters_from(tmp_path / "none")


def test_per_master_keeps_the_first_cases_of_each_master(tmp_path):
    extra = [c.model_copy(update={"id": f"{c.id}-{k}"}) for k in range(3) for c in data.held_out_cases()]
    path = tmp_path / "many.jsonl"
    path.write_text("".join(c.model_dump_json() + "\n" for c in extra), encoding="utf-8")
    report = predict("gold", cases=path, out=tmp_path / "g.jsonl", per_master=2, progress=False)
    ids = sorted({r["case_id"] for r in rows_of(tmp_path / "g.jsonl")})
    assert ids == ["test-cold-0", "test-cold-1", "test-sleep-0", "test-sleep-1"]
    assert report.total == 2 * 2 + 2 * 1  # visits: test-cold has two, test-sleep one
