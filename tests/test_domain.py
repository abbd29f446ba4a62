import json

import pytest

from shicheng.domain import (
    SECTION_KEYS,
    SEVEN_TASKS,
    Answer,
    Case,
    HerbItem,
    JsonlError,
    Patient,
    Prescription,
    Task,
    Visit,
    iter_jsonl,
    read_jsonl,
    write_jsonl,
)


def _case(i: int = 1) -> Case:
    return Case(
        id=f"c{i}", master_id="fuyang", patient=Patient(sex="女", age=32, pregnant=True),
        visits=[
            Visit(index=1, label="初诊", chief_complaint="胃脘冷痛3年", tongue="舌淡胖", pulse="脉沉细",
                  answer=Answer(syndrome="脾肾阳虚证", prescription="附子理中汤：制附子15g(先煎) 干姜10g"),
                  prescription=Prescription(formula_name="附子理中汤", herbs=[
                      HerbItem(raw="制附子15g", name="制附子", base="附子", processing="制", dose=15, unit="g",
                               grams=15, note="先煎")])),
            Visit(index=2, label="二诊", present_illness="服药后痛减"),
        ])


def test_jsonl_round_trip(tmp_path):
    path = tmp_path / "cases.jsonl"
    cases = [_case(1), _case(2)]
    assert write_jsonl(path, cases) == 2
    back = read_jsonl(path, Case)
    assert back == cases
    assert back[0].patient.sex == "female"


def test_jsonl_errors_name_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = _case().model_dump_json()
    bad_field = json.loads(good)
    bad_field["patient"]["age"] = "old"
    path.write_text("\n".join([good, "{not json", json.dumps(bad_field), "", good]) + "\n", encoding="utf-8")
    items = list(iter_jsonl(path, Case))
    errors = [i for i in items if isinstance(i, JsonlError)]
    assert [e.line for e in errors] == [2, 3]
    assert "patient.age" in str(errors[1]) and "bad.jsonl:3" in str(errors[1])
    with pytest.raises(JsonlError, match=r"bad\.jsonl:2"):
        read_jsonl(path, Case)


def test_case_needs_a_visit_and_rejects_unknown_fields():
    with pytest.raises(ValueError):
        Case(id="x", visits=[])
    with pytest.raises(ValueError):
        Visit.model_validate({"index": 1, "tongue_colour": "red"})


def test_tasks_and_sections():
    assert len(SEVEN_TASKS) == 7
    assert Task.full_chain.sections == SECTION_KEYS
    assert Task.modification.sections == ("modifications",)
    assert Task("syndrome").zh == "证候诊断"
    assert Answer(syndrome="x").missing()[:1] == ["etiology_pathogenesis"]
