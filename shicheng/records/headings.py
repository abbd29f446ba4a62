"""What the fields of a case record are called, and where each one goes in a Case.

A target is where a field's text goes: case-level targets describe the patient or the case, visit-level
ones one visit, answer-level ones the master's answer for that visit. HEADINGS lists the words real
records write before a colon (主诉：, 舌象：, 处方：) for each target; a column mapping names targets directly.
"""

from __future__ import annotations

import re

CASE_TARGETS = ("case_id", "patient_id", "master", "sex", "age", "pregnant", "disease")
VISIT_TARGETS = ("visit", "date", "chief_complaint", "present_illness", "history", "tongue", "pulse",
                 "tongue_pulse", "other_findings", "commentary")  # tongue_pulse: one 舌脉 field, split later
PRESENTATION_TARGETS = ("chief_complaint", "present_illness", "tongue", "pulse", "other_findings")
ANSWER_TARGETS = ("etiology_pathogenesis", "syndrome", "treatment_principle", "prescription",
                  "prescription_explanation", "master_theory", "modifications", "advice")
ALL_TARGETS = CASE_TARGETS + VISIT_TARGETS + ANSWER_TARGETS

HEADINGS: dict[str, tuple[str, ...]] = {
    "chief_complaint": ("主诉",),
    "present_illness": ("现病史", "病史", "刻下症", "刻下", "刻诊", "症见", "现症", "症状", "临床表现"),
    "history": ("既往史", "过敏史", "个人史", "家族史", "月经史", "婚育史"),
    "tongue": ("舌象", "舌苔", "舌质", "舌"),
    "pulse": ("脉象", "脉"),
    "tongue_pulse": ("舌脉", "舌脉象"),
    "other_findings": ("查体", "体格检查", "辅助检查", "理化检查", "实验室检查", "检查", "望诊"),
    "syndrome": ("辨证", "证型", "中医诊断", "诊断", "证候", "辨证分型"),
    "etiology_pathogenesis": ("病因病机", "病机", "病机分析"),
    "treatment_principle": ("治则治法", "治法", "治则", "立法"),
    "prescription": ("处方", "方药", "方剂", "药用", "方用", "处方用药"),
    "prescription_explanation": ("方解",),
    "commentary": ("按语", "按", "评析", "体会", "评按"),
    "advice": ("医嘱", "调护", "调摄", "嘱"),
    "modifications": ("随症加减", "随证加减", "加减"),
    "date": ("就诊日期", "就诊时间", "日期"),
    "master": ("医家", "医师", "医生", "主治医师", "导师"),
    "patient": ("患者", "病人", "姓名", "一般情况"),
    "sex": ("性别",),
    "age": ("年龄",),
    "disease": ("病名", "西医诊断", "疾病"),
    "pregnant": ("妊娠", "是否妊娠"),
    "patient_id": ("病历号", "患者编号", "门诊号", "住院号", "病案号"),
    # Identifying fields with no clinical use: known as headings so that they end the field before them.
    "personal": ("电话", "手机", "手机号", "手机号码", "联系电话", "联系方式", "联系人", "身份证", "身份证号",
                 "身份证号码", "证件号", "证件号码", "住址", "地址", "家庭住址", "家庭地址", "现住址", "工作单位",
                 "单位", "职业", "民族", "籍贯", "婚姻", "婚否", "出生日期", "出生年月", "邮箱", "电子邮箱",
                 "医保号", "医保卡号", "就诊卡号", "卡号", "邮编"),
}
# Fields of the case as a whole, however many share a line; the rest belong to the visit being read.
CASE_LEVEL = ("master", "patient", "sex", "age", "disease", "pregnant", "patient_id", "personal")
_TARGET = {word: target for target, words in HEADINGS.items() for word in words}
HEADING_WORDS = "|".join(sorted(_TARGET, key=len, reverse=True))  # longest first: 现病史 before 病史

# A heading: optionally numbered ("1、") or in 【】, then a colon (or the closing 】); "主诉/症状：" allowed.
HEADING = re.compile(rf"^\s*(?:[(（]?\d+[)）.、]\s*)?[【\[]?\s*((?:{HEADING_WORDS})(?:\s*[/／、]\s*(?:{HEADING_WORDS}))*)\s*"
                     rf"(?:[】\]]\s*[:：]?|[:：])\s*")


def heading_target(match: re.Match) -> str:
    """The target of a HEADING match; of "主诉/症状：" the first word's."""
    return _TARGET[re.split(r"\s*[/／、]\s*", match.group(1))[0]]


__all__ = ["ALL_TARGETS", "ANSWER_TARGETS", "CASE_LEVEL", "CASE_TARGETS", "HEADING", "HEADINGS", "HEADING_WORDS",
           "PRESENTATION_TARGETS", "VISIT_TARGETS", "heading_target"]
