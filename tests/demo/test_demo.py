"""The embedded demo corpus: fictional masters, the syndrome table, and the generated raw materials."""

import hashlib
import re
from collections import Counter, defaultdict

import pytest
import yaml

from shicheng.demo import DEMO_DIR, generate_demo, load_demo_masters, masters_dir
from shicheng.demo.cases import id_check_digit
from shicheng.demo.data import SCHOOLS, DemoDataError, load_styles, load_syndromes, parse_herb_list
from shicheng.demo.generator import build_demo
from shicheng.demo.render import HEADER, MAPPING, write_full_list
from shicheng.domain import Patient
from shicheng.knowledge import load_knowledge
from shicheng.prescription import parse_prescription
from shicheng.safety import check_safety


@pytest.fixture(scope="module")
def kb():
    return load_knowledge()


@pytest.fixture(scope="module")
def corpus():
    return build_demo(seed=0, n_cases=450)


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo")
    counts = generate_demo(path, seed=0)
    return path, counts


def tree_hash(root):
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def patient_of(case):
    return Patient(sex="male" if case.patient.sex == "男" else "female", age=case.patient.age,
                   pregnant=bool(case.patient.pregnant_weeks))


# ---------------------------------------------------------------------- data files
def test_masters_load_and_are_fictional(kb):
    masters = load_demo_masters()
    assert len(masters) == 5 and len(list(masters_dir().glob("*.yaml"))) == 5
    styles = load_styles()
    assert sorted(styles[m].school for m in masters) == sorted(SCHOOLS)
    for m in masters.values():
        assert m.fictional and "虚构" in m.notes and "synthetic" in m.notes, m.id
        assert m.academic_thoughts and m.specialties
        for f in m.signature_formulas:
            assert f in kb.formulas, (m.id, f)
        for h in m.signature_herbs:
            assert kb.resolve(h) is not None, (m.id, h)


def test_syndrome_table_is_wide_and_consistent(kb):
    table = load_syndromes()
    assert table.synthetic and len(table.syndromes) >= 32
    tags = Counter(t for s in table.syndromes for t in s.tags)
    for needed in "寒热虚实气血阴阳表湿痰瘀心肝脾肺肾":
        assert tags[needed] >= 2, needed
    per_school = Counter(school for s in table.syndromes for school in s.schools)
    assert all(per_school[school] >= 15 for school in SCHOOLS), per_school
    for s in table.syndromes:
        for t in (s.textbook, *s.schools.values()):
            assert t.formula or t.herbs, s.id
            if t.formula:
                assert t.formula in kb.formulas, (s.id, t.formula)
            for h in parse_herb_list(t.herbs) + parse_herb_list(t.add):
                assert kb.resolve(h.name) is not None, (s.id, h.name)
    assert sum(s.pregnancy_ok for s in table.syndromes) >= 6


def test_a_broken_syndrome_names_file_entry_and_field(tmp_path):
    data = yaml.safe_load((DEMO_DIR / "syndromes.yaml").read_text(encoding="utf-8"))
    data["syndromes"][3]["schools"]["nonsense"] = {"formula": "桂枝汤"}
    del data["syndromes"][5]["pulse"]
    path = tmp_path / "syndromes.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(DemoDataError) as err:
        load_syndromes(path)
    message = str(err.value)
    assert str(path) in message and "lung-heat" in message and "nonsense" in message
    assert "ying-level-heat" in message and "pulse" in message


def test_herb_token_errors_are_explained():
    assert parse_herb_list("制附子30先煎 大枣4枚")[1].unit == "枚"
    with pytest.raises(ValueError, match="附子"):
        parse_herb_list("附子")


# ---------------------------------------------------------------------- generation
def test_generation_is_deterministic_and_seeded(out, tmp_path):
    path, _ = out
    again = tmp_path / "again"
    generate_demo(again, seed=0)
    assert tree_hash(again) == tree_hash(path)
    other = tmp_path / "other"
    generate_demo(other, seed=1)
    assert tree_hash(other) != tree_hash(path)


def test_counts_cover_masters_general_csv_and_follow_ups(out):
    path, counts = out
    assert counts["cases"] >= 1500 and counts["visits"] > 1.8 * counts["cases"]
    assert counts["multi_visit_cases"] > 0.6 * counts["cases"]
    assert set(counts["master_cases"]) == set(load_demo_masters())
    assert min(counts["master_cases"].values()) >= 200
    assert 0.2 <= counts["general_cases"] / counts["cases"] <= 0.3
    assert counts["csv_cases"] >= 40 and counts["csv_rows"] > counts["csv_cases"]
    assert 0.05 <= counts["pregnant"] / counts["cases"] <= 0.15
    assert 0.15 <= counts["with_personal_data"] / counts["cases"] <= 0.25
    assert counts["exact_duplicates"] >= 4 and counts["near_duplicates"] >= 4
    # the cases draw on the case pool only, each pair of (master, syndrome) many times
    assert counts["syndromes"] == len(load_syndromes().case_pool()) >= 12
    for name in counts["files"]:
        assert (path / name).is_file(), name


def test_every_file_carries_the_notice_and_records_their_markers(out):
    path, _ = out
    for f in path.rglob("*"):
        if f.is_file():
            text = f.read_text(encoding="utf-8")
            assert HEADER in text.splitlines()[0] or HEADER in text.splitlines()[1], f
    masters = load_demo_masters()
    for mid, master in masters.items():
        text = (path / "records" / f"{mid}.txt").read_text(encoding="utf-8")
        assert text.count(f"医家：{master.name}") == text.count("【医案】")
        for marker in ("初诊：", "二诊：", "三诊：", "处方：", "辨证：", "治法：", "按语：", "上方", "病历号：", "电话：",
                       "身份证：", "住址：", "妊娠：", "剂，"):
            assert marker in text, (mid, marker)
    general = (path / "records" / "general.txt").read_text(encoding="utf-8")
    assert "医家：教材" in general and "按语：" not in general
    li = (path / "records" / "li-shouyang.txt").read_text(encoding="utf-8")
    assert re.search(r"制附子(3|4|6)\d[g克]?(\(|（)?先煎", li)  # 扶阳 附子 above the pharmacopoeia's 15 g
    assert "(先煎)" in li or "（先煎）" in li


def test_personal_data_is_fictional_but_valid_looking(out):
    path, _ = out
    text = "".join(f.read_text(encoding="utf-8") for f in (path / "records").glob("*.txt"))
    phones = re.findall(r"电话：(\d+)", text)
    assert phones and all(re.fullmatch(r"1380000\d{4}", p) for p in phones)
    ids = re.findall(r"身份证：([0-9X]+)", text)
    assert ids and all(len(i) == 18 and id_check_digit(i[:17]) == i[17] for i in ids)
    assert "某" in text and re.search(r"患者：[\u4e00-\u9fff]{2,3}，[男女]", text)


def test_duplicates_are_there_for_dedup(corpus):
    for new, original in corpus.exact_duplicates.items():
        body = corpus.duplicate_records[new].split("\n", 1)[1]
        assert body == corpus.records[original].split("\n", 1)[1]
    for new, original in corpus.near_duplicates.items():
        near, orig = corpus.duplicate_records[new].splitlines(), corpus.records[original].splitlines()
        assert len(near) == len(orig)
        differing = [a for a, b in zip(near, orig, strict=True) if a != b]
        assert 2 <= len(differing) <= 3, differing  # the id, a symptom phrase dropped, the number of packs


def test_csv_and_mapping_agree(out, corpus):
    path, counts = out
    mapping = yaml.safe_load((path / "mapping.yaml").read_text(encoding="utf-8"))
    assert mapping["columns"] == MAPPING
    lines = (path / "cases.csv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    assert set(MAPPING.values()) <= set(header)
    assert len(lines) - 1 == counts["csv_rows"]
    text_ids = set(corpus.records)
    assert not text_ids & set(corpus.csv_ids)


def test_treatises_are_sized_and_about_their_master(out):
    path, _ = out
    for mid, master in load_demo_masters().items():
        text = (path / "treatises" / f"{mid}.md").read_text(encoding="utf-8")
        assert 1500 <= len(text) <= 3000, (mid, len(text))
        assert master.name in text and master.signature_formulas[0] in text
    classics = (path / "treatises" / "classics.md").read_text(encoding="utf-8")
    for f in ("桂枝汤", "小柴胡汤", "半夏泻心汤", "银翘散", "血府逐瘀汤", "补阳还五汤", "四逆汤", "补中益气汤"):
        assert f in classics


# ---------------------------------------------------------------------- safety and style
def test_every_herb_resolves_and_prescriptions_are_safe(corpus, kb):
    masters = load_demo_masters()
    doses_over = Counter()
    for case in corpus.cases:
        patient = patient_of(case)
        for visit in case.visits:
            for h in visit.herbs:
                assert kb.resolve(h.name) is not None, (case.id, h.name)
            parsed = parse_prescription(write_full_list(visit), kb)
            assert not parsed.unparsed and all(h.base for h in parsed.herbs), (case.id, parsed.unparsed)
            findings = check_safety(parsed.prescription, patient, kb)
            assert not [f for f in findings if f.level == "error"], (case.id, findings)
            if patient.pregnant:
                assert not [f for f in findings if f.rule.startswith("妊娠")], (case.id, findings)
            for f in findings:
                assert f.rule == "剂量", (case.id, f)
                doses_over[(case.master.id if case.master else None, f.herbs[0])] += 1
    # Only documented school practice exceeds a pharmacopoeia range: 扶阳 with 附子, and 活血化瘀 with the 黄芪 of
    # 补阳还五汤 (黄芪四两, far above ChP 2020's 9–30 g since 黄芪 has a range there).
    assert set(doses_over) == {("li-shouyang", "附子"), ("qin-tongmai", "黄芪")}
    assert masters["li-shouyang"].school.startswith("扶阳")


def test_written_prescriptions_parse_back_to_what_was_prescribed(corpus, kb):
    by_id = {c.id: c for c in corpus.cases}
    deltas = 0
    for case_id, written in corpus.prescriptions.items():
        for visit, text in zip(by_id[case_id].visits, written, strict=True):
            if text.startswith("上方"):  # 上方去X、Y，加A10g、B15g。 — what changed since the last visit
                deltas += 1
                m = re.fullmatch(r"上方(?:去(?P<gone>[^，。]+))?，?(?:加(?P<new>[^。]+))?。.*", text)
                assert m and (m["gone"] or "").split("、") == (visit.removed or [""]), text
                added = parse_prescription(m["new"] or "", kb).herbs if m["new"] else []
                got = [(h.base, h.grams if h.grams is not None else h.dose) for h in added]
                assert got == [(h.base, h.dose) for h in visit.added], text
                continue
            parsed = parse_prescription(text, kb)
            assert not parsed.unparsed, (case_id, text, parsed.unparsed)
            got = sorted((h.base, h.grams if h.grams is not None else h.dose) for h in parsed.herbs)
            assert got == sorted((h.base, h.dose) for h in visit.herbs), text
    assert deltas >= 50


def test_each_master_prescribes_in_his_own_style(corpus, kb):
    masters = load_demo_masters()
    share = defaultdict(Counter)
    total = Counter()
    for case in corpus.cases:
        if case.master:
            total[case.master.id] += 1
            for base in {h.base for v in case.visits for h in v.herbs}:
                share[case.master.id][base] += 1
    for mid, master in masters.items():
        signature = [kb.base_of(h) for h in master.signature_herbs]
        freq = {other: sum(share[other][b] for b in signature) / (len(signature) * total[other]) for other in total}
        own = freq.pop(mid)
        assert own >= 1.5 * max(freq.values()), (mid, own, freq)
    fuyang = [c for c in corpus.cases if c.master and c.master.id == "li-shouyang" and not c.patient.pregnant_weeks]
    with_fuzi = [c for c in fuyang if any(h.base == "附子" for h in c.visits[0].herbs)]
    assert len(with_fuzi) >= 0.8 * len(fuyang)
    assert all(h.note == "先煎" for c in with_fuzi for v in c.visits for h in v.herbs if h.base == "附子")
    buyang = [c for c in corpus.cases if c.master and c.master.id == "qin-tongmai"
              and c.visits[0].formula == "补阳还五汤"]
    assert buyang and all(h.dose >= 60 for c in buyang for h in c.visits[0].herbs if h.base == "黄芪")


def test_case_pool_gives_each_master_many_cases_of_each_syndrome():
    corpus = build_demo(seed=0)
    pairs = Counter((c.master.id, c.syndrome.id) for c in corpus.cases if c.master)
    pool = {s.id for s in load_syndromes().case_pool()}
    assert {s for _, s in pairs} <= pool
    assert sorted(pairs.values())[len(pairs) // 2] >= 15  # the median pair: enough for a tiny model to learn


def test_case_pool_errors_name_the_unknown_syndrome(tmp_path):
    data = yaml.safe_load((DEMO_DIR / "syndromes.yaml").read_text(encoding="utf-8"))
    data["case_syndromes"] = [*data["case_syndromes"], "no-such-syndrome"]
    path = tmp_path / "syndromes.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(DemoDataError, match="no-such-syndrome"):
        load_syndromes(path)
