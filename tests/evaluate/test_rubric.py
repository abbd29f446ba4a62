"""The rubric YAML: every shipped file validates, the paper's 55 points are exactly the design brief's, bad
files fail naming file and field, the maximum shrinks, and schema and validator agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from shicheng.evaluate.rubric import (
    RUBRICS_DIR,
    Rubric,
    RubricError,
    load_rubric,
    shipped_rubrics,
)
from tests.helpers.judge_server import fill_schema

# Med-Shicheng (arXiv 2603.23520) "Automatic judging": item -> (points, {criterion: points}).
PAPER = {
    "etiology_pathogenesis": (10, {"etiology_identified": 4, "pathogenesis_elaborated": 4, "logic": 2}),
    "syndrome": (10, {"accuracy": 6, "location_nature": 4}),
    "treatment_principle": (10, {"accuracy": 5, "specificity": 3, "master_methods": 2}),
    "prescription": (10, {"herb_match": 9, "composition": 1}),
    "master_theory": (10, {"accuracy": 5, "runs_through": 3, "clarity": 2}),
}
ALL = ("etiology_pathogenesis", "syndrome", "treatment_principle", "prescription", "master_theory")


def test_there_are_shipped_rubrics_and_the_package_data_glob_finds_them():
    assert [p.name for p in shipped_rubrics()] == sorted(p.name for p in RUBRICS_DIR.glob("*.yaml"))
    assert "paper-55-v1.yaml" in [p.name for p in shipped_rubrics()]


@pytest.mark.parametrize("path", shipped_rubrics(), ids=lambda p: p.name)
def test_every_shipped_rubric_validates(path: Path):
    rubric = load_rubric(path)
    assert rubric.version == path.stem  # the file name is the version: two files cannot share one
    for mode in ("reference", "reference_free"):
        schema = rubric.verdict_schema(rubric.items, mode)
        rubric.verdict_model(rubric.items, mode).model_validate(fill_schema(schema, share=1.0))


def test_the_paper_rubric_holds_the_55_points_of_the_design_brief():
    r = load_rubric()  # default: the paper's
    assert r.version == "paper-55-v1" and r.total == 55
    assert (r.completeness.points, r.completeness.computed_by) == (5, "code")
    got = {it.key: (it.points, {c.key: c.points for c in it.criteria}) for it in r.items}
    assert got == PAPER
    rx = {c.key: c for c in r.item("prescription").criteria}
    assert (rx["herb_match"].computed_by, rx["herb_match"].code) == ("code", "herb_match")
    assert (rx["composition"].computed_by, rx["composition"].code) == ("code", "composition")
    assert "别名与炮制品视为同一味药" in rx["herb_match"].description and "不计剂量、炮制与产地" in rx["herb_match"].description
    assert "十八反" in rx["composition"].description
    assert r.item("master_theory").needs_master
    assert r.max_total(r.items) == 55


def test_items_missing_from_the_gold_are_not_scored_and_the_maximum_shrinks():
    r = load_rubric()
    full = r.scored_items(ALL, set(ALL), has_master=True)
    assert [i.key for i in full] == list(ALL) and r.max_total(full) == 55
    no_theory = r.scored_items(ALL, {"etiology_pathogenesis", "syndrome", "treatment_principle", "prescription"}, True)
    assert r.max_total(no_theory) == 45
    assert [i.key for i in r.scored_items(ALL, set(ALL), has_master=False)] == list(ALL[:4])
    syndrome_task = r.scored_items(("syndrome",), set(ALL), has_master=True)
    assert [i.key for i in syndrome_task] == ["syndrome"] and r.max_total(syndrome_task) == 15
    assert r.scored_items(("advice",), set(ALL), True) == [] and r.max_total([]) == 0
    # Reference-free: no gold to leave items out for.
    assert [i.key for i in r.scored_items(ALL, None, True)] == list(ALL)


def test_schema_and_validator_agree_on_bounds_types_and_unknown_keys():
    r = load_rubric()
    items = r.scored_items(("syndrome", "prescription"), {"syndrome", "prescription"}, True)
    schema = r.verdict_schema(items, "reference")
    model = r.verdict_model(items, "reference")
    assert set(schema["properties"]) == {"completeness", "scores", "herb_counts", "missing", "rationale"}
    assert schema["properties"]["scores"]["properties"]["syndrome"]["properties"]["accuracy"] == \
        {"type": "number", "minimum": 0, "maximum": 6.0}
    assert schema["properties"]["missing"]["items"]["enum"] == ["syndrome", "prescription"]
    ok = fill_schema(schema, share=1.0)
    assert model.model_validate(ok).model_dump(mode="json")["scores"]["syndrome"]["accuracy"] == 6.0
    bad = [
        ("scores.syndrome.accuracy", 6.5), ("scores.syndrome.accuracy", -1), ("scores.syndrome.accuracy", "6"),
        ("completeness", True), ("missing", ["advice"]), ("herb_counts.matched", 2.5),
        ("scores.syndrome", {"accuracy": 1, "location_nature": 1, "extra": 1}),
    ]
    for path, value in bad:
        with pytest.raises(Exception) as err:
            model.model_validate(fill_schema(schema, 1.0, {path: value}))
        assert path.split(".")[0] in str(err.value)
    # JSON Schema counts 4.0 as an integer; so do we.
    assert model.model_validate(fill_schema(schema, 1.0, {"herb_counts.gold": 4.0})).herb_counts.gold == 4


def test_the_rationale_pattern_bounds_length_and_forbids_control_characters():
    import re

    r = load_rubric()
    pattern = r.verdict_schema(r.items, "reference")["properties"]["rationale"]["pattern"]
    assert re.fullmatch(pattern, "辨证准确" * 50) and not re.fullmatch(pattern, "辨" * 201)
    assert not re.fullmatch(pattern, "第一行\n第二行")


def test_reference_free_variant_judges_herb_fitness_and_asks_no_herb_counts():
    r = load_rubric()
    crit = {c.key: c for c in r.item("prescription").criteria_in("reference_free")}
    assert set(crit) == {"herb_fit", "composition"}
    assert (crit["herb_fit"].computed_by, crit["herb_fit"].code, crit["herb_fit"].points) == ("judge", None, 9)
    assert crit["composition"].code == "composition"  # needs no gold: still ours
    schema = r.verdict_schema(r.items, "reference_free")
    assert "herb_counts" not in schema["properties"]
    assert "herb_fit" in schema["properties"]["scores"]["properties"]["prescription"]["properties"]
    user = r.messages(mode="reference_free", items=r.items, case="病例X", master="名医Y", answer="回答Z")[1]["content"]
    assert "没有标准答案" in user and "【标准答案】" not in user and "回答Z" in user and "病例X" in user
    with pytest.raises(ValueError, match="gold"):
        r.messages(mode="reference", items=r.items, case="c", master="m", answer="a")


def test_the_prompt_is_chinese_and_shows_case_gold_answer_criteria_and_format():
    r = load_rubric()
    msgs = r.messages(mode="reference", items=r.items, case="主诉：胃痛", master="李守阳", answer="【辨证】脾虚",
                      gold="【辨证】脾胃虚寒证")
    assert [m["role"] for m in msgs] == ["system", "user"]
    user = msgs[1]["content"]
    for part in ("主诉：胃痛", "李守阳", "【辨证】脾胃虚寒证", "【辨证】脾虚", "满分55分", "herb_match 药物匹配（9分）",
                 '"herb_counts"', "missing", "不超过200字"):
        assert part in user
    assert "$" not in user  # every placeholder filled
    assert "JSON" in msgs[0]["content"]


def _write(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load((RUBRICS_DIR / "paper-55-v1.yaml").read_text(encoding="utf-8"))
    edit(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize("edit, field, words", [
    (lambda d: d["items"][1]["criteria"][0].update(points=7), "items.1", "add up to 11"),
    (lambda d: d.update(total=60), "(file)", "not the declared total 60"),
    (lambda d: d["items"][0].update(section="diagnosis"), "items.0", "unknown answer section 'diagnosis'"),
    (lambda d: d["items"][3]["criteria"][0].pop("code"), "items.3.criteria.0", "computed_by 'code' needs `code`"),
    (lambda d: d["items"][2]["criteria"][1].update(points="three"), "items.2.criteria.1.points", "valid number"),
    (lambda d: d["prompts"].update(reference="$case $answer $format $oops"), "prompts", "unknown placeholders"),
    (lambda d: d["prompts"].update(reference="$case $answer"), "prompts", "missing placeholders"),
    (lambda d: d["items"][0].update(colour="red"), "items.0.colour", "Extra inputs"),
])
def test_a_bad_rubric_names_the_file_and_the_field(tmp_path, edit, field, words):
    path = _write(tmp_path, edit)
    with pytest.raises(RubricError) as err:
        load_rubric(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and f"field '{field}" in msg and words in msg


def test_broken_yaml_and_unknown_names_are_clear_errors(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("version: [unclosed\n", encoding="utf-8")
    with pytest.raises(RubricError, match=f"{path}: not valid YAML"):
        load_rubric(path)
    with pytest.raises(RubricError, match=r"no such rubric file.*paper-55-v1"):
        load_rubric("paper-99")


def test_a_copy_with_other_points_gets_its_own_validator():
    r = load_rubric()
    items = [r.item("syndrome")]
    smaller = items[0].model_copy(update={"criteria": [c.model_copy(update={"points": c.points / 2})
                                                       for c in items[0].criteria], "points": 5})
    schema = r.verdict_schema(items, "reference")
    assert r.verdict_model(items, "reference").model_validate(fill_schema(schema, 1.0))
    with pytest.raises(Exception, match="less than or equal to 3"):
        r.verdict_model([smaller], "reference").model_validate(fill_schema(schema, 1.0))


def test_rubric_is_json_serialisable_for_results_files():
    dumped = json.loads(load_rubric().model_dump_json())
    assert dumped["version"] == "paper-55-v1" and isinstance(Rubric.model_validate(dumped), Rubric)
