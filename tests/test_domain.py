import json

import pytest
from pydantic import ValidationError

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
    load_master_files,
    read_jsonl,
    validation_message,
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


def test_validation_message_names_each_field_and_the_whole():
    with pytest.raises(ValidationError) as err:
        Patient.model_validate({"age": "old", "sex": "x"})
    message = validation_message(err.value)
    assert "field 'sex'" in message and "field 'age'" in message and message.count(";") == 1
    with pytest.raises(ValidationError) as err:
        Case.model_validate([])
    assert validation_message(err.value, whole="(file)").startswith("field '(file)': ")
    with pytest.raises(ValidationError) as err:
        Visit.model_validate({f"extra_{i}": i for i in range(5)})
    assert validation_message(err.value, limit=2).endswith("; and 3 more")
    assert validation_message(err.value, where="{}").startswith("extra_0: Extra inputs are not permitted; ")


MASTER_YAML = "id: {id}\nname: 某医家\nschool: 扶阳\nfictional: true\n"


def test_master_folder_loads_every_yaml_and_refuses_a_duplicate_id_naming_both_files(tmp_path):
    (tmp_path / "a.yaml").write_text(MASTER_YAML.format(id="wang"), encoding="utf-8")
    (tmp_path / "b.yml").write_text(MASTER_YAML.format(id="li"), encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not a master", encoding="utf-8")
    masters = load_master_files(tmp_path)
    assert sorted(masters) == ["li", "wang"] and masters["wang"].school == "扶阳"
    # the same file named twice is one file, not a duplicate
    assert sorted(load_master_files([tmp_path / "a.yaml", tmp_path / "a.yaml"])) == ["wang"]
    (tmp_path / "c.yaml").write_text(MASTER_YAML.format(id="wang"), encoding="utf-8")
    with pytest.raises(ValueError, match=r"c\.yaml: master id 'wang' is already given by .*a\.yaml"):
        load_master_files(tmp_path)
    with pytest.raises(ValueError, match=r"not a folder"):
        load_master_files(tmp_path / "missing")
    (tmp_path / "c.yaml").write_text("id: Bad Id\nname: x\nschool: y\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"c\.yaml: field 'id'"):
        load_master_files(tmp_path)
