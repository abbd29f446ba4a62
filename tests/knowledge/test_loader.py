import shutil

import pytest

from shicheng.knowledge import DATA_DIR, KnowledgeError, load_knowledge


@pytest.fixture(scope="module")
def kb():
    return load_knowledge()


def test_shipped_knowledge_is_wide_and_valid(kb):
    assert len(kb.herbs) >= 600
    assert len({f.name for f in kb.formulas.values()}) >= 150
    assert len(kb.merged) >= 20
    assert len(kb.rules) >= 12
    for herb in kb.herbs.values():
        assert herb.source, herb.name


def test_every_row_has_a_source_and_names_resolve(kb):
    for surface, resolved in kb.surfaces.items():
        assert resolved.base in kb.herbs, surface
    for rule in kb.rules:
        assert rule.source
        for h in (*rule.a, *rule.b):
            assert h in kb.herbs


def test_design_aliases_and_processed_forms(kb):
    expect = {"元参": "玄参", "首乌": "何首乌", "云苓": "茯苓", "川军": "大黄", "银花": "金银花", "炙甘草": "甘草",
              "法半夏": "半夏", "姜半夏": "半夏", "清半夏": "半夏", "麸炒白术": "白术", "酒白芍": "白芍",
              "烫水蛭": "水蛭", "制附子": "附子", "附片": "附子", "當歸": "当归"}
    for written, base in expect.items():
        assert kb.base_of(kb.to_simplified(written)) == base, written
    assert kb.base_of("白附子") == "白附子"  # a different plant, not 附子


def _copy(tmp_path):
    d = tmp_path / "data"
    shutil.copytree(DATA_DIR, d)
    return d


def test_duplicate_canonical_name_is_reported(tmp_path):
    d = _copy(tmp_path)
    first = sorted(d.glob("herbs*.csv"))[0]
    lines = first.read_text(encoding="utf-8").splitlines()
    data = [ln for ln in lines if ln and not ln.startswith("#")]
    first.write_text("\n".join([*lines, data[1]]) + "\n", encoding="utf-8")
    with pytest.raises(KnowledgeError, match="duplicate canonical name"):
        load_knowledge(d)


def test_alias_clash_and_unknown_rule_herb_and_bad_row_are_reported(tmp_path):
    d = _copy(tmp_path)
    with (d / "herbs_zz_test.csv").open("w", encoding="utf-8") as fh:
        fh.write("name,pinyin,category,aliases,processed,traditional,source\n")
        fh.write("测试草,cè shì cǎo,其他,云苓,,,test\n")  # alias already owned by 茯苓
        fh.write("少一列,x,其他,,,\n")
    rules = d / "incompatibilities.yaml"
    rules.write_text(rules.read_text(encoding="utf-8").replace("b: [三棱]", "b: [三棱, 不存在的药]"),
                     encoding="utf-8")
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(d)
    text = str(err.value)
    assert "herbs_zz_test.csv:2: alias '云苓' already defined" in text
    assert "herbs_zz_test.csv:3: expected 7 columns" in text
    assert "unknown herb '不存在的药'" in text


def test_rule_must_name_base_herb(tmp_path):
    d = _copy(tmp_path)
    rules = d / "incompatibilities.yaml"
    rules.write_text(rules.read_text(encoding="utf-8").replace("a: [甘草]", "a: [炙甘草]"), encoding="utf-8")
    with pytest.raises(KnowledgeError, match="use its base herb '甘草'"):
        load_knowledge(d)


def test_describe(kb):
    info = kb.describe("法半夏")
    assert info["base"] == "半夏" and info["dose_range_g"]["max"] == 9
    assert any("附子" in p["herbs"] for p in info["incompatible_with"])
    assert kb.describe("桂枝汤")["kind"] == "formula"
    assert kb.describe("不存在") is None
