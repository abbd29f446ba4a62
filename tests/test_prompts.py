"""The modification layout: prompts.modification_text writes it, prompts.read_modification reads it back."""

from __future__ import annotations

from shicheng.domain import Answer, Visit
from shicheng.prescription import parse_prescription
from shicheng.prompts import Modification, modification_text, read_modification


def visit(index: int, rx: str, modifications: str | None = None) -> Visit:
    return Visit(index=index, chief_complaint="胃痛", prescription=parse_prescription(rx).prescription,
                 answer=Answer(prescription=rx, modifications=modifications))


def test_what_modification_text_writes_reads_back():
    before = visit(1, "柴胡10g 白芍15g 黄芩10g 甘草6g")
    after = visit(2, "柴胡10g 白芍15g 甘草6g 丹参15g 川芎10g", "胸闷刺痛，故去黄芩，加丹参、川芎活血。")
    text = modification_text(before, after)
    stated = read_modification(text)
    assert stated == Modification(added="丹参15g 川芎10g", removed="黄芩",
                                  new_prescription="柴胡10g 白芍15g 甘草6g 丹参15g 川芎10g")
    unchanged = read_modification(modification_text(before, visit(2, "柴胡10g 白芍15g 黄芩10g 甘草6g")))
    assert (unchanged.added, unchanged.removed) == ("", "")  # 加：无 / 去：无 say so, and are not missing


def test_model_variants_of_the_layout():
    # list markers, several 加 lines, a new prescription over two lines, 调整后方药
    stated = read_modification("- 加：丹参15g\n* 加：川芎10g\n- 去：无\n理由：血瘀。\n调整后方药：\n柴胡10g\n丹参15g")
    assert stated == Modification(added="丹参15g，川芎10g", removed="", new_prescription="柴胡10g\n丹参15g")
    # 加减： is not a 加： line, and running text states nothing in this layout
    assert read_modification("加减：腹胀甚者加木香6g") == Modification(None, None, None)
    assert read_modification(None) == Modification(None, None, None)
    assert read_modification("调整后处方：无").new_prescription == ""
