"""Write demo cases the way real records are written: plain-text 医案 and one-row-per-visit CSV.

The text follows the record format the text importer reads (【医案】 id, header lines, 初诊/二诊 visits,
headed fields) and is deliberately messy where real records are: heading synonyms, doses with 克 or
Chinese numerals or 钱, shared doses (各), preparation notes in and out of brackets, "上方去X加Y"
follow-ups, separators that vary or are missing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from shicheng.demo.cases import DemoCase, DemoVisit, RxHerb

HEADER = "合成演示数据（synthetic demonstration data），非医疗建议 — not medical advice"
VISIT_LABELS = ("初诊", "二诊", "三诊", "四诊")
CN_DIGITS = "零一二三四五六七八九"
ADMINISTRATION = (
    "水煎服，日一剂", "水煎服，每日1剂，分2次温服", "日一剂，水煎分早晚温服", "每日一剂，水煎取汁400ml，分两次温服",
    "水煎服，日1剂，早晚分服",
)
# (key, standard heading, synonyms real records use) — a record picks one spelling per case.
FIELDS = (
    ("chief_complaint", "主诉", ("主诉",)),
    ("present_illness", "现病史", ("刻下症", "病史")),
    ("history", "既往史", ("既往史",)),
    ("tongue", "舌象", ("舌",)),
    ("pulse", "脉象", ("脉",)),
    ("syndrome", "辨证", ("证型", "中医诊断")),
    ("pathogenesis", "病机", ("病因病机",)),
    ("principle", "治法", ("治则", "治则治法")),
    ("prescription", "处方", ("方药", "药用")),
    ("explanation", "方解", ("方解",)),
    ("modifications", "加减", ("随症加减",)),
    ("advice", "医嘱", ("调护",)),
)


def cn_number(n: int) -> str:
    """1..99 in Chinese numerals, as doses are sometimes written (十五克, 三十克)."""
    if n < 10:
        return CN_DIGITS[n]
    tens, ones = divmod(n, 10)
    return ("" if tens == 1 else CN_DIGITS[tens]) + "十" + (CN_DIGITS[ones] if ones else "")


@dataclass
class Hand:
    """One writer's habits for one prescription: unit style, separator, bracket style, 各."""

    units: str  # g | 克 | bare | cn | qian
    sep: str
    brackets: tuple[str, str]
    share: bool

    @classmethod
    def draw(cls, rng: random.Random, school: str | None) -> Hand:
        units = rng.choices(("g", "克", "bare", "cn", "qian"),
                            weights=(72, 10, 5, 6, 7 if school == "jingfang" else 0))[0]
        sep = rng.choices((" ", "，", "、", ""), weights=(50, 25, 18, 7 if units in ("g", "bare") else 0))[0]
        brackets = rng.choice((("(", ")"), ("（", "）"), ("", "")))
        share = rng.random() < 0.5
        if units == "bare":  # "20包煎" would read as 20 包 (a counting unit): bracket the note
            brackets = ("(", ")")
        if share and sep == "、":  # 各 groups are joined by 、 themselves; keep them readable
            sep = "，"
        return cls(units, sep, brackets, share)


def write_dose(h: RxHerb, hand: Hand) -> str:
    d = int(h.dose) if float(h.dose).is_integer() else h.dose
    if h.unit != "g":
        return f"{d}{h.unit}"
    if hand.units == "qian" and isinstance(d, int) and d % 3 == 0 and d <= 30:
        return f"{cn_number(d // 3)}钱"
    if hand.units == "cn" and isinstance(d, int) and 0 < d < 100:
        return f"{cn_number(d)}克"
    if hand.units == "克":
        return f"{d}克"
    if hand.units == "bare":
        return f"{d}"
    return f"{d}g"


def write_herbs(herbs: list[RxHerb], hand: Hand, rng: random.Random) -> str:
    tokens: list[str] = []
    i = 0
    while i < len(herbs):
        h = herbs[i]
        group = [h]
        if hand.share and h.note is None and hand.units != "bare":
            while (i + len(group) < len(herbs) and len(group) < 3 and herbs[i + len(group)].note is None
                   and (herbs[i + len(group)].dose, herbs[i + len(group)].unit) == (h.dose, h.unit)):
                group.append(herbs[i + len(group)])
        if len(group) > 1 and rng.random() < 0.8:
            tokens.append("、".join(g.name for g in group) + "各" + write_dose(h, hand))
            i += len(group)
            continue
        note = ""
        if h.note:
            note = f"{hand.brackets[0]}{h.note}{hand.brackets[1]}"
        tokens.append(f"{h.name}{write_dose(h, hand)}{note}")
        i += 1
    return hand.sep.join(tokens)


def administration(visit: DemoVisit, rng: random.Random, school: str | None) -> str:
    text = f"{visit.packs}剂，{rng.choice(ADMINISTRATION)}。"
    if school == "jingfang" and visit.formula == "桂枝汤":
        text += "服后啜热稀粥，温覆取微汗。"
    return text


def write_prescription(visit: DemoVisit, rng: random.Random, school: str | None) -> str:
    hand = Hand.draw(rng, school)
    tail = administration(visit, rng, school)
    if visit.index > 1 and (visit.added or visit.removed) and not visit.doses_changed and rng.random() < 0.6:
        parts = []
        if visit.removed:
            parts.append("去" + "、".join(visit.removed))
        if visit.added:
            parts.append("加" + "、".join(f"{h.name}{write_dose(h, hand)}" for h in visit.added))
        return "上方" + "，".join(parts) + "。" + tail
    head = ""
    if visit.index > 1 and not (visit.added or visit.removed or visit.doses_changed):
        head = "效不更方。"
    elif visit.formula and school == "jingfang":
        head = (rng.choice(("{f}原方：", "{f}：")) if visit.plain else "{f}加味：").format(f=visit.formula)
    elif visit.formula:
        choices = ("{f}加减。", "{f}化裁：", "方用{f}加减：", "")
        head = rng.choice(choices).format(f=visit.formula)
    else:
        head = rng.choice(("拟方：", ""))
    return head + write_herbs(visit.herbs, hand, rng) + "，" + tail


def write_full_list(visit: DemoVisit) -> str:
    """The visit's whole prescription in the plainest form (for checks and the CSV's 处方 column)."""
    hand = Hand("g", " ", ("(", ")"), False)
    return write_herbs(visit.herbs, hand, random.Random(0)) + f"，{visit.packs}剂，水煎服。"


def _date(visit: DemoVisit, numeric: bool) -> str:
    return f"{visit.when:%Y-%m-%d}" if numeric else f"{visit.when.year}年{visit.when.month}月{visit.when.day}日"


def patient_line(case: DemoCase) -> str:
    p = case.patient
    parts = [p.name, p.sex, f"{p.age}岁", *(f"{k}：{v}" for k, v in p.personal.items())]
    return "患者：" + "，".join(parts)


def record_text(case: DemoCase, rng: random.Random, prescriptions: list[str]) -> str:
    """One case as a plain-text record; `prescriptions` are the already-written 处方 of each visit."""
    synonyms = rng.random() < 0.15
    numeric_dates = rng.random() < 0.1
    lines = [f"【医案】{case.id}", f"医家：{case.master.name if case.master else '教材'}", patient_line(case)]
    if case.patient.pregnant_weeks:
        lines.append(rng.choice((f"妊娠：孕{case.patient.pregnant_weeks}周", "妊娠：是")))
    elif case.patient.sex == "女" and 20 <= case.patient.age <= 45 and rng.random() < 0.3:
        lines.append("妊娠：否")
    lines.append(f"病名：{case.disease}")
    for visit, rx in zip(case.visits, prescriptions, strict=True):
        label = VISIT_LABELS[visit.index - 1]
        if visit.index == 2 and rng.random() < 0.1:
            label = "复诊"
        lines.append(f"{label}：{_date(visit, numeric_dates)}")
        values = {**visit.__dict__, "prescription": rx}
        if visit.index > 1 and rng.random() < 0.5:
            values["chief_complaint"] = None
        for key, heading, alternatives in FIELDS:
            value = values.get(key)
            if value:
                lines.append(f"{alternatives[0] if synonyms else heading}：{value}")
    if case.visits[-1].commentary:
        lines.append(f"{'按' if synonyms else '按语'}：{case.visits[-1].commentary}")
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("病例号", "患者编号", "医家", "性别", "年龄", "妊娠", "就诊次序", "就诊日期", "主诉", "现病史", "既往史",
               "舌象", "脉象", "证型", "病机", "治法", "处方", "方解", "按语", "医嘱", "病名", "备注")
MAPPING = {
    "case_id": "病例号", "patient_id": "患者编号", "master": "医家", "sex": "性别", "age": "年龄", "pregnant": "妊娠",
    "visit": "就诊次序", "date": "就诊日期", "chief_complaint": "主诉", "present_illness": "现病史", "history": "既往史",
    "tongue": "舌象", "pulse": "脉象", "syndrome": "证型", "etiology_pathogenesis": "病机",
    "treatment_principle": "治法", "prescription": "处方", "prescription_explanation": "方解", "commentary": "按语",
    "advice": "医嘱", "disease": "病名",
}


def csv_rows(case: DemoCase, prescriptions: list[str], patient_id: str) -> list[dict[str, str]]:
    """One row per visit; the disclaimer rides in an unmapped 备注 column so the file stays plain CSV."""
    rows = []
    for visit, rx in zip(case.visits, prescriptions, strict=True):
        rows.append({
            "病例号": case.id, "患者编号": patient_id, "医家": case.master.name if case.master else "教材",
            "性别": case.patient.sex, "年龄": str(case.patient.age),
            "妊娠": "是" if case.patient.pregnant_weeks else "否", "就诊次序": str(visit.index),
            "就诊日期": f"{visit.when:%Y-%m-%d}", "主诉": visit.chief_complaint, "现病史": visit.present_illness,
            "既往史": visit.history or "", "舌象": visit.tongue, "脉象": visit.pulse, "证型": visit.syndrome,
            "病机": visit.pathogenesis or "", "治法": visit.principle, "处方": rx, "方解": visit.explanation or "",
            "按语": visit.commentary or "", "医嘱": visit.advice or "", "病名": case.disease, "备注": HEADER,
        })
    return rows
