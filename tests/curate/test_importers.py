"""Importers on the forms raw materials really arrive in. All records here are invented for these tests."""

import codecs
import datetime
import json

import pytest

from shicheng.curate.importers import MappingError, import_path
from shicheng.curate.importers.corpus import import_corpus
from shicheng.curate.importers.jsonl import import_jsonl
from shicheng.curate.importers.tabular import import_table, load_mapping
from shicheng.curate.importers.text_records import import_text_records
from shicheng.curate.ledger import Ledger
from shicheng.domain import Answer, Case, Visit
from shicheng.records import looks_like_case_records
from shicheng.records.values import parse_age, parse_pregnant, visit_number
from shicheng.text import NotTextError, decode_bytes, read_text

RECORDS = """李守阳医案选（内部资料）

【医案】FY-0001
医家：李守阳
患者：王某，男，45岁，病历号：ZY2023001234，电话：13812345678
病名：胃脘痛
初诊：2023年3月5日
主诉：胃脘冷痛反复发作3年，加重1周。
现病史：3年前因饮食生冷出现胃脘冷痛，喜温喜按，纳差，便溏。
既往史：慢性浅表性胃炎病史。
舌象：舌淡胖，苔白滑。
脉象：脉沉细。
辨证：脾肾阳虚，寒凝中焦。
病机：久病伤阳，脾肾阳虚，寒从中生。
治法：温补脾肾，散寒止痛。
处方：附子理中汤加减。制附子15g(先煎) 干姜10g 党参15g 炒白术12g 炙甘草6g，7剂，水煎服，日一剂。
方解：附子、干姜温阳散寒，党参、白术健脾益气。
按语：本案胃痛日久，
阳气虚衰，故以附子理中汤温之。
二诊：2023年3月12日
主诉/症状：服药后胃痛减轻，纳食增加。
舌脉：舌淡红苔薄白，脉细。
治法：守法。
处方：上方去干姜，加砂仁6g(后下)。7剂。
复诊 2023年3月19日
胃痛已止，偶有嗳气。舌淡红，苔薄白，脉缓。
处方：上方加陈皮10g，7剂。
医嘱:忌生冷油腻，调畅情志。

【医案】FY-0002
医家：张仲明
患者：刘某，女，32岁，孕12周。
病名：失眠
初诊
【主诉】不寐半年。
舌红少苔，脉细数。
辨证:心肾不交。 治法:交通心肾。
处方：黄连6g 肉桂3g 酸枣仁20g

医案三
患者：赵某，女，60岁。
（原稿缺失）
"""
EMPTY_CASE_LINE = RECORDS.split("\n").index("医案三") + 1


def _write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


# --- encoding ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("encoding,expected", [("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig"),
                                               ("gb18030", "gb18030"), ("utf-16", "utf-16")])
def test_read_text_detects_chinese_encodings(tmp_path, encoding, expected):
    text = "主诉：胃脘冷痛反复发作3年。\r\n舌淡胖，苔白滑，脉沉细。\r\n"
    decoded = read_text(_write(tmp_path, "a.txt", text, encoding))
    assert decoded.encoding == expected
    assert decoded.text.lstrip("\ufeff") == "主诉：胃脘冷痛反复发作3年。\n舌淡胖，苔白滑，脉沉细。\n"


def test_binary_bytes_are_not_text():
    with pytest.raises(NotTextError, match=r"binary file: scan\.txt"):
        decode_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "scan.txt")


def test_lone_carriage_returns_become_newlines():
    assert decode_bytes("一\r二\r\n三".encode()).text == "一\n二\n三"


def test_value_parsers():
    assert [visit_number(v) for v in (1, "2", 3.0, "初诊", "二诊", "第三诊", "十诊", "复诊", "")] == \
        [1, 2, 3, 1, 2, 3, 10, None, None]
    assert [parse_age(v) for v in ("45岁", "45", 45.0, "3岁半", "6个月", "")] == [45, 45, 45, 3.5, 0.5, None]
    assert [parse_pregnant(v) for v in ("是", "否", "true", "False", "孕12周", None)] == \
        [True, False, True, False, True, False]
    with pytest.raises(ValueError, match="not an age"):
        parse_age("abc")


# --- JSONL --------------------------------------------------------------------------------------------------

def _case(case_id: str) -> Case:
    return Case(id=case_id, master_id="li_shouyang", visits=[Visit(
        chief_complaint="咳嗽2周。", tongue="舌红，苔薄黄。", pulse="脉浮数。",
        answer=Answer(syndrome="风热犯肺", prescription="桑叶10g 菊花10g 杏仁10g"))])


def test_jsonl_keeps_good_lines_and_rejects_broken_ones_with_line_and_field(tmp_path):
    lines = [_case("J-1").model_dump_json(), "", '{"id": "J-2", "visits": [', '{"id": "J-3", "visits": []}',
             json.dumps({"id": "J-4", "visits": [{"index": 0, "chief_complaint": "头痛"}]}, ensure_ascii=False),
             _case("J-5").model_dump_json()]
    path = _write(tmp_path, "cases.jsonl", "\n".join(lines) + "\n")
    ledger = Ledger()
    result = import_jsonl(path, ledger)
    assert [c.id for c in result.cases] == ["J-1", "J-5"]
    assert result.cases[1].source == f"{path}:6"
    rejects = {r.source: r.reason for r in ledger.rejects}
    assert rejects[f"{path}:3"].startswith("not valid JSON")
    assert "field 'visits'" in rejects[f"{path}:4"]
    assert "field 'visits.0.index'" in rejects[f"{path}:5"]
    assert vars(ledger.steps["import"]) == {"inputs": 5, "kept": 2, "rejected": 3}
    ledger.check()


def test_jsonl_written_in_gb18030_is_still_read(tmp_path):
    path = _write(tmp_path, "gbk.jsonl", _case("G-1").model_dump_json() + "\n", "gb18030")
    result = import_jsonl(path, Ledger())
    assert result.cases[0].visits[0].chief_complaint == "咳嗽2周。"


# --- CSV / XLSX ---------------------------------------------------------------------------------------------

MAPPING = {"columns": {
    "case_id": "病例号", "patient_id": "患者编号", "master": "医家", "sex": "性别", "age": "年龄", "pregnant": "妊娠",
    "visit": "就诊次序", "date": "就诊日期", "chief_complaint": "主诉", "tongue": "舌象", "pulse": "脉象",
    "syndrome": "证型", "treatment_principle": "治法", "prescription": "处方", "disease": "病名"}}
HEADER = "病例号,患者编号,医家,性别,年龄,妊娠,就诊次序,就诊日期,主诉,舌象,脉象,证型,治法,处方,病名"
CSV_ROWS = [
    HEADER,
    "C001,P9001,李守阳,男,45岁,否,二诊,2023-03-12,胃痛减轻,舌淡红苔薄白,脉细,脾胃虚寒,温中健脾,"
    "\"党参15g 白术12g 干姜6g 炙甘草6g\",胃脘痛",
    "C001,P9001,李守阳,男,45岁,否,初诊,2023-03-05,胃脘冷痛3年,舌淡胖苔白滑,脉沉细,脾胃虚寒,温中散寒,"
    "\"党参15g 白术12g 干姜10g 炙甘草6g\",胃脘痛",
    "C002,P9002,王清源,女,abc,是,1,2023-04-01,咳嗽1周,舌红苔黄,脉浮数,风热犯肺,疏风清热,桑菊饮,咳嗽",
    "C003,P9003,王清源,女,28,是,1,2023-04-02,恶心呕吐2周,舌淡苔白,脉滑,胃虚气逆,和胃降逆,"
    "\"紫苏梗10g 砂仁6g\",妊娠恶阻",
    ",,,,,,,,,,,,,,",
]


def test_csv_in_gb18030_groups_visits_into_cases(tmp_path):
    path = _write(tmp_path, "cases.csv", "\r\n".join(CSV_ROWS) + "\r\n", "gb18030")
    ledger = Ledger()
    result = import_table(path, ledger, MAPPING, masters={"李守阳": "li_shouyang"})
    by_id = {c.id: c for c in result.cases}
    assert sorted(by_id) == ["C001", "C003"]
    c1 = by_id["C001"]
    assert [(v.index, v.label, v.chief_complaint) for v in c1.visits] == \
        [(1, "初诊", "胃脘冷痛3年"), (2, "二诊", "胃痛减轻")]
    assert c1.master_id == "li_shouyang" and c1.source == f"{path}:row 3"
    assert (c1.patient.id, c1.patient.sex, c1.patient.age, c1.patient.pregnant) == ("P9001", "male", 45, False)
    assert c1.disease == "胃脘痛"
    assert c1.visits[0].answer.treatment_principle == "温中散寒"
    assert c1.visits[0].answer.prescription == "党参15g 白术12g 干姜10g 炙甘草6g"
    assert by_id["C003"].patient.pregnant and by_id["C003"].master_id is None
    assert any("王清源" in w for w in result.warnings)
    (reject,) = ledger.rejects
    assert reject.source == f"{path}:row 4"
    # The column and row locate the bad value; the value itself is withheld (it may be personal data).
    assert "column '年龄' (age)" in reject.reason and "3-character value" in reject.reason
    assert "abc" not in reject.reason
    assert vars(ledger.steps["import"]) == {"inputs": 3, "kept": 2, "rejected": 1}
    ledger.check()


def test_csv_missing_mapped_column_rejects_every_row_naming_column_and_file(tmp_path):
    rows = [line.replace(",舌象", ",舌苔") for line in CSV_ROWS[:3]]
    path = _write(tmp_path, "export.csv", "\n".join(rows))
    ledger = Ledger()
    result = import_table(path, ledger, MAPPING)
    assert result.cases == []
    assert [r.source for r in ledger.rejects] == [f"{path}:row 2", f"{path}:row 3"]
    assert "'舌象' (tongue)" in ledger.rejects[0].reason and "export.csv" in ledger.rejects[0].reason
    ledger.check()


def test_tsv_with_a_joint_tongue_pulse_column_and_follow_up_visits(tmp_path):
    mapping = {"columns": {"case_id": "ID", "visit": "诊次", "chief_complaint": "主诉", "tongue_pulse": "舌脉",
                           "prescription": "处方"}}
    rows = ["ID\t诊次\t主诉\t舌脉\t处方",
            "T1\t初诊\t头晕目眩1月\t舌红苔黄，脉弦数\t天麻10g 钩藤15g",
            "T1\t复诊\t头晕减轻\t舌红苔薄黄，脉弦\t上方加菊花10g",
            "T1\t复诊\t头晕已止\t舌淡红，脉弦细\t守方",
            "T1\t2\t重复的二诊\t舌红\t"]
    path = _write(tmp_path, "visits.tsv", "\n".join(rows))
    ledger = Ledger()
    (case,) = import_table(path, ledger, mapping).cases
    assert [(v.index, v.label, v.tongue, v.pulse) for v in case.visits] == [
        (1, "初诊", "舌红苔黄", "脉弦数"), (2, "复诊", "舌红苔薄黄", "脉弦"), (3, "复诊", "舌淡红", "脉弦细")]
    (duplicate,) = ledger.rejects
    assert duplicate.source == f"{path}:row 5" and "visit 2 is already at row 3" in duplicate.reason
    ledger.check()


def test_mapping_is_validated():
    with pytest.raises(MappingError, match="unknown mapping targets"):
        load_mapping({"columns": {"case_id": "病例号", "chief_complaint": "主诉", "symptom": "症状"}})
    with pytest.raises(MappingError, match="case_id"):
        load_mapping({"columns": {"chief_complaint": "主诉"}})
    with pytest.raises(MappingError, match="inverted"):
        load_mapping({"columns": {"病例号": "case_id", "主诉": "chief_complaint"}})


def test_xlsx_round_trip(tmp_path):
    from openpyxl import Workbook

    book = Workbook()
    book.active.title = "说明"
    sheet = book.create_sheet("医案")
    sheet.append(["某中医院名老中医工作室 医案导出"])
    sheet.append(HEADER.split(","))
    sheet.append(["X01", "P1", "李守阳", "女", 52, "否", 2, datetime.datetime(2023, 5, 8), "潮热汗出减轻",
                  "舌红少苔", "脉细", "肝肾阴虚", "滋补肝肾", "知柏地黄丸加减", "绝经前后诸证"])
    sheet.append(["X01", "P1", "李守阳", "女", 52, "否", 1, datetime.datetime(2023, 5, 1), "潮热汗出半年",
                  "舌红少苔", "脉细数", "肝肾阴虚", "滋阴清热", "知母10g 黄柏10g 熟地黄15g", "绝经前后诸证"])
    sheet.append([1002, "P2", "李守阳", "男", "60岁", "", "初诊", None, "眩晕1月", "舌暗", "脉弦", "肝阳上亢",
                  "平肝潜阳", "天麻10g 钩藤15g", "眩晕"])
    path = tmp_path / "cases.xlsx"
    book.save(path)
    ledger = Ledger()
    result = import_path(path, ledger, mapping={**MAPPING, "sheet": "医案"}, masters={"李守阳": "li_shouyang"})
    x01, x02 = result.cases
    assert [(v.index, v.date, v.chief_complaint) for v in x01.visits] == \
        [(1, "2023-05-01", "潮热汗出半年"), (2, "2023-05-08", "潮热汗出减轻")]
    assert x01.patient.age == 52 and x01.patient.sex == "female"
    assert x02.id == "1002" and x02.patient.age == 60
    assert vars(ledger.steps["import"]) == {"inputs": 2, "kept": 2, "rejected": 0}
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"PK\x03\x04 not really a workbook")
    import_path(broken, ledger, mapping=MAPPING)
    assert ledger.rejects[-1].reason.startswith("unreadable xlsx") and ledger.rejects[-1].source == str(broken)
    ledger.check()


def test_table_needs_a_mapping_or_finds_one_next_to_it(tmp_path):
    import yaml

    path = _write(tmp_path, "cases.csv", "\n".join(CSV_ROWS[:3]))
    with pytest.raises(MappingError, match="column mapping"):
        import_path(path, Ledger())
    (tmp_path / "mapping.yaml").write_text(yaml.safe_dump(MAPPING, allow_unicode=True), encoding="utf-8")
    ledger = Ledger()
    result = import_path(tmp_path, ledger)  # mapping.yaml itself is configuration, not a record
    assert [c.id for c in result.cases] == ["C001"] and ledger.rejects == []


# --- plain-text case records --------------------------------------------------------------------------------

def test_text_records_split_cases_visits_and_fields(tmp_path):
    path = _write(tmp_path, "records.txt", RECORDS)
    ledger = Ledger()
    result = import_text_records(path, ledger, masters={"李守阳": "li_shouyang"})
    first, second = result.cases
    assert (first.id, first.source, first.master_id, first.disease) == ("FY-0001", f"{path}:3", "li_shouyang",
                                                                       "胃脘痛")
    assert (first.patient.id, first.patient.sex, first.patient.age) == ("ZY2023001234", "male", 45)
    v1, v2, v3 = first.visits
    assert [(v.index, v.label, v.date) for v in first.visits] == \
        [(1, "初诊", "2023年3月5日"), (2, "二诊", "2023年3月12日"), (3, "复诊", "2023年3月19日")]
    assert v1.chief_complaint == "胃脘冷痛反复发作3年，加重1周。"
    assert (v1.tongue, v1.pulse, v1.history) == ("舌淡胖，苔白滑。", "脉沉细。", "慢性浅表性胃炎病史。")
    assert v1.answer.syndrome == "脾肾阳虚，寒凝中焦。"
    assert v1.answer.etiology_pathogenesis.startswith("久病伤阳")
    assert v1.answer.prescription.startswith("附子理中汤加减。制附子15g(先煎)")
    assert v1.answer.prescription_explanation.startswith("附子、干姜")
    assert v1.commentary == "本案胃痛日久，阳气虚衰，故以附子理中汤温之。"  # broken line joined, no space
    assert (v2.tongue, v2.pulse) == ("舌淡红苔薄白", "脉细。")  # 舌脉 on one line
    assert (v3.present_illness, v3.tongue, v3.pulse) == ("胃痛已止，偶有嗳气。", "舌淡红，苔薄白", "脉缓。")
    assert v3.answer.advice == "忌生冷油腻，调畅情志。"  # ASCII colon
    assert (second.id, second.patient.pregnant, second.master_id) == ("FY-0002", True, None)
    assert second.visits[0].chief_complaint == "不寐半年。"  # heading in 【】
    assert (second.visits[0].tongue, second.visits[0].pulse) == ("舌红少苔", "脉细数。")  # no headings
    assert second.visits[0].answer.syndrome == "心肾不交。"
    assert second.visits[0].answer.treatment_principle == "交通心肾。"  # two fields on one line
    assert any("张仲明" in w for w in result.warnings)
    (reject,) = ledger.rejects
    assert reject.source == f"{path}:{EMPTY_CASE_LINE}" and reject.reason.startswith("no visit content")
    dumped = json.dumps([c.model_dump() for c in result.cases], ensure_ascii=False)
    for personal in ("王某", "刘某", "13812345678"):
        assert personal not in dumped
    assert vars(ledger.steps["import"]) == {"inputs": 3, "kept": 2, "rejected": 1}


def test_text_records_without_case_markers_and_with_a_default_master(tmp_path):
    text = ("王某，女，38岁。\n2022年6月1日初诊。头痛反复2年，遇风加重。舌淡红，苔薄白，脉浮。\n"
            "治法：疏风止痛。\n处方：川芎茶调散加减。\n\n"
            "陈某，男，70岁。\n初诊：腰膝酸软，夜尿频多。舌淡，脉沉弱。\n处方：金匮肾气丸加减。\n")
    path = _write(tmp_path, "notes.txt", text, "utf-8-sig")
    ledger = Ledger()
    result = import_path(path, ledger, default_master="li_shouyang")
    first, second = result.cases
    assert first.source == f"{path}:1" and second.source == f"{path}:6"
    assert first.visits[0].date == "2022年6月1日"
    assert first.visits[0].present_illness == "头痛反复2年，遇风加重。"
    assert (first.visits[0].tongue, first.visits[0].pulse) == ("舌淡红，苔薄白", "脉浮。")
    assert (second.patient.sex, second.patient.age, second.master_id) == ("male", 70, "li_shouyang")
    assert second.visits[0].present_illness == "腰膝酸软，夜尿频多。"
    ledger.check()


def test_text_record_prescriptions_are_parsed_and_kept_as_text(tmp_path):
    result = import_text_records(_write(tmp_path, "records.txt", RECORDS), Ledger())
    v1, v2, v3 = result.cases[0].visits
    assert {"附子", "干姜", "党参", "白术", "甘草"} <= set(v1.prescription.base_herbs())
    assert v1.answer.prescription.startswith("附子理中汤加减")
    # Follow-ups written as changes to the last prescription (上方…加…) carry the whole list forward.
    assert {"附子", "党参", "白术", "甘草", "砂仁"} <= set(v2.prescription.base_herbs())
    assert {"附子", "砂仁", "陈皮"} <= set(v3.prescription.base_herbs())
    assert v3.answer.prescription == "上方加陈皮10g，7剂。"
    assert not any("lexicon" in w for w in result.warnings)


# --- corpus -------------------------------------------------------------------------------------------------

BOOK_PARAGRAPH = ("脾胃为后天之本，气血生化之源。脾主运化，胃主受纳，二者纳运相得，升降相因，燥湿相济，"
                  "共同完成饮食物的消化吸收。")


def _wrap(text: str, width: int) -> list[str]:
    return [text[i:i + width] for i in range(0, len(text), width)]


def test_plain_text_book_pages_become_paragraphs(tmp_path):
    second = "若饮食不节，劳倦过度，则脾胃受损，运化失职，而生诸病。治宜健脾和胃，调其升降。"
    pages = [["中医内科学讲义  第一章", *_wrap(BOOK_PARAGRAPH, 18)[:2], "- 1 -"],
             ["中医内科学讲义  第一章", *_wrap(BOOK_PARAGRAPH, 18)[2:], "- 2 -"],
             ["中医内科学讲义  第一章", "　　" + second[:18], second[18:], "- 3 -"]]
    text = "第一章　脾胃\n\n" + "\f".join("\n".join(p) for p in pages)
    path = _write(tmp_path, "book.txt", text)
    assert not looks_like_case_records(text)
    ledger = Ledger()
    result = import_path(path, ledger)
    assert [r["text"] for r in result.corpus] == [BOOK_PARAGRAPH, second]
    assert result.corpus[0]["source"] == f"{path}:para 2"
    (short,) = ledger.rejects
    assert short.source == f"{path}:para 1" and short.reason.startswith("too short")
    ledger.check()


def test_text_with_one_paragraph_per_line_keeps_its_lines_apart(tmp_path):
    text = ("第一章　总论\n中医学是研究人体生理、病理以及疾病的诊断和防治的一门学科。\n"
            "它有独特的理论体系，丰富的临床经验和科学的思维方法，是我国优秀传统文化的重要组成部分。\n第二章　阴阳\n")
    result = import_corpus(_write(tmp_path, "intro.txt", text), Ledger())
    assert [r["text"][:5] for r in result.corpus] == ["中医学是研", "它有独特的"]


def test_markdown_marks_are_stripped(tmp_path):
    md = ("---\ntitle: 讲稿\n---\n# 第三讲　论肝\n\n**肝主疏泄**，调畅气机，[情志](https://example.org)舒畅则气血调和；"
          "![图1](fig1.png)\n肝藏血，体阴而用阳，故治肝宜柔不宜伐。\n\n"
          "| 方名 | 组成 |\n|---|---|\n| 逍遥散 | 柴胡、当归、白芍、白术、茯苓、炙甘草 |\n")
    ledger = Ledger()
    result = import_corpus(_write(tmp_path, "lecture.md", md), ledger)
    texts = [r["text"] for r in result.corpus]
    assert texts[0] == "肝主疏泄，调畅气机，情志舒畅则气血调和；肝藏血，体阴而用阳，故治肝宜柔不宜伐。"
    assert texts[1] == "逍遥散，柴胡、当归、白芍、白术、茯苓、炙甘草"
    assert [r.reason.split(":")[0] for r in ledger.rejects] == ["too short", "too short"]  # heading, header row
    ledger.check()


def test_docx_paragraphs(tmp_path):
    import docx

    document = docx.Document()
    document.add_heading("临证心得", level=1)
    document.add_paragraph(BOOK_PARAGRAPH)
    document.add_paragraph("")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "附子理中汤"
    table.rows[0].cells[1].text = "制附子、干姜、党参、白术、炙甘草，温中祛寒。"
    path = tmp_path / "notes.docx"
    document.save(path)
    ledger = Ledger()
    result = import_path(path, ledger)
    assert [r["text"] for r in result.corpus] == [BOOK_PARAGRAPH, "附子理中汤，制附子、干姜、党参、白术、炙甘草，温中祛寒。"]
    assert ledger.rejects[0].reason.startswith("too short")
    ledger.check()


def _pdf(pages: list[list[str]]) -> bytes:
    """A minimal PDF whose text is Chinese: a Type0 font with Identity-H codes = Unicode code points and a
    ToUnicode map, which is all a text extractor needs (no font program is embedded)."""
    chars = sorted({ch for page in pages for line in page for ch in line})
    cmap = ("/CIDInit /ProcSet findresource begin 12 dict begin begincmap\n"
            "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
            "/CMapName /Adobe-Identity-UCS def /CMapType 2 def\n"
            "1 begincodespacerange <0000> <FFFF> endcodespacerange\n")
    for start in range(0, len(chars), 100):
        block = chars[start:start + 100]
        cmap += f"{len(block)} beginbfchar\n" + "".join(f"<{ord(c):04X}> <{ord(c):04X}>\n" for c in block)
        cmap += "endbfchar\n"
    cmap += "endcmap CMapName currentdict /CMap defineresource pop end end\n"
    objects = {
        1: "<< /Type /Catalog /Pages 2 0 R >>",
        3: "<< /Type /Font /Subtype /Type0 /BaseFont /SimSun /Encoding /Identity-H "
           "/DescendantFonts [4 0 R] /ToUnicode 5 0 R >>",
        4: "<< /Type /Font /Subtype /CIDFontType0 /BaseFont /SimSun /DW 1000 "
           "/CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> >>",
        5: f"<< /Length {len(cmap.encode())} >>\nstream\n{cmap}endstream",
    }
    kids = []
    for n, page in enumerate(pages):
        page_id, content_id = 6 + 2 * n, 7 + 2 * n
        content = "".join(f"BT /F1 12 Tf 50 {780 - 20 * i} Td <{line.encode('utf-16-be').hex().upper()}> Tj ET\n"
                          for i, line in enumerate(page))
        objects[page_id] = (f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents {content_id} 0 R "
                            "/Resources << /Font << /F1 3 0 R >> >> >>")
        objects[content_id] = f"<< /Length {len(content.encode())} >>\nstream\n{content}endstream"
        kids.append(f"{page_id} 0 R")
    objects[2] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>"
    out = bytearray(b"%PDF-1.4\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += f"{number} 0 obj\n{objects[number]}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offsets[n]:010d} 00000 n \n" for n in sorted(objects)).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def test_pdf_text_layer_without_running_headers_and_page_numbers(tmp_path):
    lines = _wrap(BOOK_PARAGRAPH * 2, 20)
    pages = [["伤寒论讲稿", *lines[i:i + 2], f"第 {n + 1} 页"] for n, i in enumerate(range(0, len(lines), 2))]
    path = tmp_path / "lecture.pdf"
    path.write_bytes(_pdf(pages))
    ledger = Ledger()
    result = import_path(path, ledger)
    assert len(pages) >= 3
    assert [r["text"] for r in result.corpus] == [BOOK_PARAGRAPH * 2]
    assert ledger.rejects == []


def test_pdf_without_text_layer_is_rejected(tmp_path):
    path = tmp_path / "scan.pdf"
    path.write_bytes(_pdf([[]]))
    ledger = Ledger()
    assert import_path(path, ledger).corpus == []
    assert ledger.rejects[0].reason.startswith("no text layer") and ledger.rejects[0].source == str(path)
    ledger.check()


# --- a folder of everything ----------------------------------------------------------------------------------

def test_folder_import_dispatches_and_accounts_for_every_record(tmp_path):
    _write(tmp_path, "a_records.txt", RECORDS, "gb18030")
    _write(tmp_path, "b_cases.jsonl", _case("J-1").model_dump_json() + "\n{broken\n")
    _write(tmp_path, "c_book.txt", BOOK_PARAGRAPH + "\n")
    _write(tmp_path, "d_empty.txt", "")
    _write(tmp_path, "e_blank.md", " \n\n")
    (tmp_path / "f_scan.txt").write_bytes(b"\x00\x01\x02\xff" * 64)
    (tmp_path / "g_tool.exe").write_bytes(b"MZ\x90\x00")
    (tmp_path / "h_old.doc").write_bytes(b"\xd0\xcf\x11\xe0")
    (tmp_path / ".DS_Store").write_bytes(b"\x00")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "i_bom.txt").write_bytes(codecs.BOM_UTF8 + RECORDS.split("\n\n【医案】FY-0002")[0].encode())
    ledger = Ledger()
    result = import_path(tmp_path, ledger, masters={"李守阳": "li_shouyang"})
    assert [c.id for c in result.cases] == ["FY-0001", "FY-0002", "J-1", "FY-0001"]
    assert result.cases[3].source == f"{tmp_path / 'sub' / 'i_bom.txt'}:3"
    assert [r["text"] for r in result.corpus] == [BOOK_PARAGRAPH]
    reasons = {r.source.split("/")[-1]: r.reason for r in ledger.rejects}
    assert reasons["d_empty.txt"] == "empty file" and reasons["e_blank.md"] == "empty file"
    assert reasons["f_scan.txt"].startswith("binary file")
    assert reasons["g_tool.exe"].startswith("unsupported file type")
    assert "save it as .docx" in reasons["h_old.doc"]
    assert reasons["b_cases.jsonl:2"].startswith("not valid JSON")
    assert reasons[f"a_records.txt:{EMPTY_CASE_LINE}"].startswith("no visit content")
    steps = ledger.steps["import"]
    assert (steps.kept, steps.rejected) == (5, 7)  # 4 cases and 1 paragraph; 7 rejects above
    ledger.check()
