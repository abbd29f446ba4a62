"""The retrieval baseline (nearest training visit of the same master by findings, answer copied) and the
gold system, on hand-made cases whose nearest neighbours are known (tests/helpers/predict_data.py)."""

from __future__ import annotations

import json

import pytest

from shicheng.domain import Case, Task, Visit
from shicheng.evaluate.baseline import CharTfidf, RetrievalBaseline, char_ngrams, gold_text
from shicheng.evaluate.predict import predict
from shicheng.metrics import base_herbs
from shicheng.prompts import messages
from shicheng.template import parse_answer
from tests.helpers import predict_data as data


@pytest.fixture(scope="module")
def baseline() -> RetrievalBaseline:
    return RetrievalBaseline(data.train_cases())


def test_char_tfidf_cosine_is_one_for_equal_texts_and_zero_for_disjoint_ones():
    tfidf = CharTfidf(["胃脘冷痛", "失眠多梦", "腰膝酸软"])
    q = tfidf.transform(["胃脘冷痛", "心悸"])
    sims = (tfidf.matrix @ q.T).toarray()
    assert sims[0, 0] == pytest.approx(1.0)
    assert sims[1, 0] == pytest.approx(0.0) and sims[2, 0] == pytest.approx(0.0)
    assert not sims[:, 1].any()  # 心悸 shares no n-gram with any training text
    # n-grams stay within a line: two fields are not one phrase
    assert "痛舌" not in char_ngrams("胃痛\n舌淡") and {"胃", "胃痛", "舌淡"} <= set(char_ngrams("胃痛\n舌淡"))


def test_nearest_is_of_the_master_asked_even_when_another_masters_visit_is_closer(baseline):
    cold = data.held_out_cases()[0]
    # Asked as li-shouyang: train-huang-cold has the same findings word for word, but it is huang's.
    hit = baseline.nearest(cold, 0, Task.full_chain, data.LI)
    assert (hit.case_id, hit.visit) == ("train-li-cold", 1)
    assert 0 < hit.similarity < 1
    # The copied answer is the training visit's gold answer, rendered as training renders it.
    train = {c.id: c for c in data.train_cases()}
    assert hit.text == messages(train["train-li-cold"], 0, Task.full_chain, None, think=True)[-1]["content"]
    # Asked as huang-peizhong (counterfactual), the identical huang visit is found, similarity 1.
    other = baseline.nearest(cold, 0, Task.full_chain, data.HUANG)
    assert (other.case_id, other.visit) == ("train-huang-cold", 1)
    assert other.similarity == pytest.approx(1.0)


def test_sleep_case_finds_the_huang_sleep_case(baseline):
    sleep = data.held_out_cases()[1]
    hit = baseline.nearest(sleep, 0, Task.prescription, data.HUANG)
    assert hit.case_id == "train-huang-sleep"
    assert parse_answer(hit.text).answer.prescription.startswith("归脾汤")
    assert parse_answer(hit.text).found == ["prescription"]


def test_a_copied_followup_prescription_is_written_in_full(baseline):
    """train-li-cold visit 2 says 上方去党参，加肉桂6g; copied to another patient it must stand alone."""
    cold = data.held_out_cases()[0]
    hit = baseline.nearest(cold, 1, Task.prescription, data.LI)
    assert (hit.case_id, hit.visit) == ("train-li-cold", 2)
    rx = parse_answer(hit.text).answer.prescription
    assert "上方" not in rx
    assert set(base_herbs(rx)) == {"附子", "干姜", "白术", "甘草", "肉桂"}


def test_modification_task_draws_only_from_followup_visits(baseline):
    cold = data.held_out_cases()[0]
    hit = baseline.nearest(cold, 1, Task.modification, data.LI)
    assert (hit.case_id, hit.visit) == ("train-li-cold", 2)
    assert "去：党参" in hit.text and "加：肉桂" in hit.text


def test_errors_name_the_master_and_refuse_a_training_case_as_query(baseline):
    cold = data.held_out_cases()[0]
    with pytest.raises(ValueError, match=r"no training visit of master 'qin-tongmai'.*huang-peizhong, li-shouyang"):
        baseline.nearest(cold, 0, Task.full_chain, "qin-tongmai")
    with pytest.raises(ValueError, match="among the training cases"):
        baseline.nearest(data.train_cases()[0], 0, Task.full_chain, data.LI)
    with pytest.raises(ValueError, match="needs training cases"):
        RetrievalBaseline([])


def test_a_generic_ask_draws_from_all_training_cases_when_none_is_generic(baseline):
    generic = Case(id="q-generic", visits=[Visit(chief_complaint="失眠多梦，心悸", tongue="舌淡", pulse="脉细弱")])
    assert baseline.nearest(generic, 0, Task.syndrome, None).case_id == "train-huang-sleep"


def test_gold_text_falls_back_to_the_sections_a_visit_has():
    case = data.held_out_cases()[0]
    assert gold_text(case, 0, Task.full_chain).startswith("<think>")
    partial = case.model_copy(update={"visits": [case.visits[0].model_copy(update={
        "answer": case.visits[0].answer.model_copy(update={"advice": None, "reasoning": None})})]})
    text = gold_text(partial, 0, Task.full_chain)  # training would skip this visit: 医嘱 is missing
    assert "<think>" not in text and parse_answer(text).missing() == ["advice"]
    assert gold_text(Case(id="x", visits=[Visit(chief_complaint="头痛")]), 0, Task.syndrome) is None


def test_predict_retrieval_and_gold_write_rows(tmp_path):
    test_path, _ = data.write_cases(tmp_path / "cases")
    out = tmp_path / "retrieval.jsonl"
    report = predict("retrieval", cases=test_path, out=out, progress=False, tasks=["full_chain", "prescription"])
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    # 3 visits × 2 tasks; train.jsonl beside test.jsonl is found.
    assert report.total == report.generated == len(rows) == 6 and report.failed == 0
    first = next(r for r in rows if (r["case_id"], r["visit"], r["task"]) == ("test-cold", 1, "full_chain"))
    assert first["system"] == "retrieval" and first["master"] == first["case_master"] == data.LI
    assert first["retrieved"]["case_id"] == "train-li-cold"
    gold_out = tmp_path / "gold.jsonl"
    predict("gold", cases=test_path, out=gold_out, progress=False)
    gold = [json.loads(line) for line in gold_out.read_text(encoding="utf-8").splitlines()]
    cases = {c.id: c for c in data.held_out_cases()}
    assert len(gold) == 3 and all(r["system"] == "gold" for r in gold)
    for r in gold:
        assert r["output"] == gold_text(cases[r["case_id"]], r["visit"] - 1, Task.full_chain)


def test_gold_without_an_answer_is_an_error_row_not_an_empty_answer(tmp_path):
    path = tmp_path / "cases.jsonl"
    bare = Case(id="bare", master_id=data.LI, visits=[Visit(chief_complaint="头痛")])
    path.write_text(bare.model_dump_json() + "\n", encoding="utf-8")
    out = tmp_path / "gold.jsonl"
    report = predict("gold", cases=path, out=out, progress=False)
    [row] = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert report.failed == 1 and row["output"] == "" and "no gold answer" in row["error"]


def test_retrieval_refuses_training_cases_that_hold_a_test_case(tmp_path):
    test_path, train_path = data.write_cases(tmp_path / "cases")
    train_path.write_text(train_path.read_text(encoding="utf-8") + test_path.read_text(encoding="utf-8"),
                          encoding="utf-8")
    with pytest.raises(ValueError, match="holds 2 of the cases to answer"):
        predict("retrieval", cases=test_path, out=tmp_path / "r.jsonl", progress=False)
