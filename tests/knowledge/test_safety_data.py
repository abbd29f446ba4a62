"""The safety data of issue 8: every row names a canonical herb, carries a source, and loads or is refused."""

import shutil

import pytest

from shicheng.knowledge import DATA_DIR, KnowledgeError, load_knowledge
from shicheng.knowledge.loader import read_files


@pytest.fixture(scope="module")
def kb():
    return load_knowledge()


@pytest.fixture(scope="module")
def raw():
    return read_files(DATA_DIR)


def test_every_safety_rule_pregnancy_and_dose_row_names_a_canonical_herb(kb, raw):
    for rule in kb.rules:
        for h in (*rule.a, *rule.b):
            assert h in kb.herbs, (rule.id, h)
    for loc, row in raw.pregnancy:
        assert row.herb in kb.herbs, loc
        assert row.source, loc
    for loc, row in raw.dose_ranges:
        assert row.herb in kb.herbs, loc
        assert "ChP2020" in row.source, loc  # every range is the pharmacopoeia's, not a guess
        assert 0 < row.min_g <= row.max_g, loc
    for name, comps in kb.components.items():
        assert kb.resolve(name).name == name and all(c in kb.herbs for c in comps), name


def test_dose_ranges_cover_the_herbs_in_common_use(kb):
    assert len(kb.dose_ranges) >= 250
    common = ("当归 黄芪 茯苓 熟地黄 生地黄 白术 党参 人参 柴胡 黄芩 黄连 黄柏 桂枝 白芍 赤芍 川芎 丹参 红花 桃仁 陈皮 "
              "枳实 枳壳 厚朴 苍术 茯苓 泽泻 猪苓 薏苡仁 山药 山茱萸 牡丹皮 知母 石膏 麦冬 五味子 酸枣仁 远志 "
              "龙胆 栀子 连翘 金银花 板蓝根 大黄 芒硝 麝香 肉桂 天南星 胆南星 土鳖虫 三七 牛膝 杜仲 续断 枸杞子")
    missing = [h for h in common.split() if h not in kb.dose_ranges]
    assert not missing, missing


def test_powder_ranges_are_in_fractions_of_a_gram(kb):
    musk = kb.dose_ranges["麝香"]
    assert (musk.min_g, musk.max_g) == (0.03, 0.1) and "入丸散" in musk.note
    assert kb.dose_ranges["牛黄"].max_g == 0.35 and kb.dose_ranges["冰片"].max_g == 0.3
    # the range of a processed form is recorded on its base herb
    assert kb.dose_ranges["天南星"].source == "ChP2020 制天南星"


def test_new_lexicon_entries_and_forms(kb):
    assert kb.base_of("芍药") == "芍药" and kb.base_of("芍藥") == "芍药"
    assert kb.base_of("熟附") == "附子"
    assert kb.base_of("干生姜") == "干姜"
    assert kb.base_of("米仁根") == "薏苡根" and kb.base_of("米仁") == "薏苡仁"
    for name in ("松花粉", "朱砂根", "草乌叶", "南天仙子"):
        assert kb.base_of(name) == name, name
        assert kb.herbs[name].source
    assert kb.components["朱茯神"] == ("朱砂",)
    assert kb.resolve("辰茯神").name == "朱茯神"


def test_rules_of_issue_8(kb):
    by_id = {r.id: r for r in kb.rules}
    assert "乌头" in by_id["18fan-wutou"].a and "乌头" in by_id["19wei-wutou-xijiao"].a
    assert {"人参叶", "芍药"} <= set(by_id["18fan-lilu"].b)
    assert "人参叶" in by_id["19wei-renshen-wulingzhi"].a
    assert {"砒石", "砒霜"} <= set(by_id["19wei-shuiyin-pishuang"].b)
    assert kb.pregnancy["乌头"][0] == "禁用" and kb.pregnancy["草乌叶"][0] == "慎用"


def _copy(tmp_path):
    d = tmp_path / "data"
    shutil.copytree(DATA_DIR, d)
    return d


def test_bad_component_rows_are_refused_with_file_and_line(tmp_path):
    d = _copy(tmp_path)
    with (d / "components.csv").open("a", encoding="utf-8") as fh:
        fh.write("不存在的药,朱砂,test\n")  # unknown carrier
        fh.write("炒白术,朱砂粉,test\n")  # component not a base herb
        fh.write("辰茯神,朱砂,test\n")  # not the standard written form (朱茯神)
        fh.write("朱茯神,茯神,test\n")  # listed twice, and the herb itself
        fh.write("酒当归,,test\n")  # no component
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(d)
    text = str(err.value)
    lines = (d / "components.csv").read_text(encoding="utf-8").splitlines()
    at = {ln.split(",")[0]: i for i, ln in enumerate(lines, start=1) if ln.endswith(",test")}
    assert f"components.csv:{at['不存在的药']}: unknown herb '不存在的药'" in text
    assert f"components.csv:{at['炒白术']}: component '朱砂粉', use its base herb '朱砂'" in text
    assert f"components.csv:{at['辰茯神']}: components name '辰茯神', use its standard written form '朱茯神'" in text
    assert f"components.csv:{at['朱茯神']}: '朱茯神' listed twice" in text
    assert f"components.csv:{at['酒当归']}: field 'components'" in text


def test_duplicate_dose_range_is_refused(tmp_path):
    d = _copy(tmp_path)
    with (d / "dose_ranges.csv").open("a", encoding="utf-8") as fh:
        fh.write("麝香,0.03,1,,test\n")
        fh.write("炙甘草,2,10,,test\n")  # 甘草 again, through a processed form
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(d)
    assert "dose range for '麝香' already given at dose_ranges.csv:" in str(err.value)
    assert "dose range for '炙甘草' (甘草) given twice" in str(err.value)


def test_data_folder_without_components_still_loads(tmp_path):
    d = _copy(tmp_path)
    (d / "components.csv").unlink()
    assert load_knowledge(d).components == {}
