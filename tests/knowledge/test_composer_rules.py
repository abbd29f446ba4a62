"""The composer's rule tables as knowledge data: the shipped file validates, a broken one is reported by
file, line, row and field."""

import pytest

from shicheng.knowledge import KnowledgeError, load_knowledge
from shicheng.knowledge.composer_rules import RULES_FILE, load_composer_rules, read_composer_rules


@pytest.fixture(scope="module")
def shipped():
    return RULES_FILE.read_text(encoding="utf-8")


def write(tmp_path, text):
    path = tmp_path / "composer_rules.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text, needle):
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def problems(path):
    with pytest.raises(KnowledgeError) as err:
        read_composer_rules(path)
    return err.value.problems


def test_shipped_rules_validate_against_the_lexicon():
    rules = load_composer_rules()
    kb = load_knowledge()
    assert rules.source and len(rules.natures) >= 15 and len(rules.symptom_rules) >= 10
    terms = [n.term for n in rules.natures]
    assert terms.index("湿热") < terms.index("湿") and terms.index("湿热") < terms.index("热")
    assert rules.envoy_roles["甘草"] == "调和诸药"
    for rule in rules.symptom_rules:
        assert all(kb.resolve(h) is not None for h in rule.add), rule
    assert {"中焦", "少阳", "表"} <= set(rules.locations)
    assert read_composer_rules(RULES_FILE) == rules


def test_missing_field_names_file_line_row_and_field(tmp_path, shipped):
    row = '  - {term: "阴虚", pathogenesis: "阴液亏虚，虚热内生", treatment: "滋阴", advice: "忌辛辣燥热之品，少熬夜"}'
    assert row in shipped
    path = write(tmp_path, shipped.replace(row, '  - {term: "阴虚", pathogenesis: "阴液亏虚，虚热内生", treatment: "滋阴"}'))
    assert problems(path) == [f"composer_rules.yaml:{line_of(shipped, row)} natures[1] (阴虚): "
                              "field 'advice': Field required"]


def test_unknown_field_and_blank_keyword_are_reported(tmp_path, shipped):
    text = shipped.replace('{sign: "无力", meaning: "无力主虚"}', '{sign: "无力", meaning: "无力主虚", note: x}')
    text = text.replace("keywords: [头痛]", "keywords: [头痛, ' ']")
    found = problems(write(tmp_path, text))
    pulse_line = line_of(shipped, '{sign: "无力"')
    assert (f"composer_rules.yaml:{pulse_line} pulse_signs[0] (无力): field 'note': Extra inputs are not permitted"
            in found), found
    rule_line = line_of(shipped, "keywords: [头痛]")
    assert any(p.startswith(f"composer_rules.yaml:{rule_line} symptom_rules[9] (头痛明显): field 'keywords'")
               and "blank" in p for p in found), found


def test_a_row_hidden_by_an_earlier_shorter_term_is_refused(tmp_path, shipped):
    wet = '  - {term: "湿", pathogenesis: "湿邪困阻，运化失司", treatment: "祛湿", advice: "忌肥甘厚味及生冷，居处避潮湿"}\n'
    damp_heat = '  - {term: "湿热",'
    assert wet in shipped
    text = shipped.replace(wet, "").replace(damp_heat, wet + damp_heat)
    found = problems(write(tmp_path, text))
    assert len(found) == 1 and "natures[8] (湿热): '湿热' is hidden by '湿' at natures[7]" in found[0]
    assert found[0].startswith(f"composer_rules.yaml:{line_of(text, damp_heat)} ")


def test_herbs_and_categories_must_be_in_the_lexicon(tmp_path, shipped):
    text = (shipped.replace("add: [火麻仁]", "add: [火麻仁, 不存在的药]")
            .replace('{herb: "甘草", role: "调和诸药"}', '{herb: "炙甘草", role: "调和诸药"}')
            .replace('{category: "涌吐", action: "涌吐"}', '{category: "飞行", action: "涌吐"}'))
    found = problems(write(tmp_path, text))
    assert any("symptom_rules[4] (大便干结): field 'add': unknown herb '不存在的药'" in p for p in found), found
    assert any("envoys[0] (炙甘草): field 'herb': use the canonical name '甘草'" in p for p in found), found
    assert any("category_actions[31] (飞行): field 'category': no herb category" in p for p in found), found
    assert len(found) == 3


def test_sentence_must_carry_the_herbs_placeholder(tmp_path, shipped):
    text = shipped.replace("表证已解，{herbs}可去", "表证已解，{herb}可去")
    found = problems(write(tmp_path, text))
    assert len(found) == 1 and "category_rules[4] (解表): field 'sentence'" in found[0], found


def test_not_yaml_and_not_a_mapping(tmp_path):
    assert "not valid YAML" in problems(write(tmp_path, "natures: [\n"))[0]
    assert "expected a mapping" in problems(write(tmp_path, "- a\n- b\n"))[0]
    assert "field 'natures': Field required" in " ".join(problems(write(tmp_path, "version: 1\nsource: x\n")))
