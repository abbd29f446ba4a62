"""Offline composer: the eight-part answer written deterministically from a visit's structured fields.

Used when no teacher model is available (the demo's default). It never touches the master's syndrome,
treatment principle or prescription; it writes only the sections the master did not: reasoning that
walks from the findings through the pathogenesis to the prescription, an explanation that gives every
herb its role (君臣佐使) and lexicon category, modifications from a small rule table (filtered through
the safety checker), and advice. The rules below are textbook commonplaces (中医诊断学, 中药学); they
make plain, checkable text, not clinical judgement.
"""

from __future__ import annotations

import re

from shicheng.curate.ledger import Ledger
from shicheng.curate.rxread import UnreadablePrescription, read_prescription
from shicheng.domain import Answer, Case, HerbItem, Master, Prescription, Visit
from shicheng.knowledge import Knowledge, load_knowledge
from shicheng.safety import check_safety

STEP = "compose"

# Syndrome elements (证素): term -> (pathogenesis, treatment, advice). Longer terms first; a matched term
# is blanked out so that 湿热 does not also count as 湿 and 热.
NATURES: tuple[tuple[str, str, str, str], ...] = (
    ("阳虚", "阳气虚衰，温煦失职", "温阳", "注意保暖，忌食生冷寒凉"),
    ("阴虚", "阴液亏虚，虚热内生", "滋阴", "忌辛辣燥热之品，少熬夜"),
    ("气虚", "正气不足，推动无力", "益气", "避免过度劳累，适度活动"),
    ("血虚", "营血亏虚，失于濡养", "养血", "饮食宜富营养、易消化"),
    ("气滞", "气机郁滞，升降失常", "理气", "调畅情志，避免忧思恼怒"),
    ("肝郁", "肝失疏泄，气机郁结", "疏肝解郁", "调畅情志，避免忧思恼怒"),
    ("血瘀", "瘀血内阻，不通则痛", "活血化瘀", "适度活动以助气血运行"),
    ("湿热", "湿热蕴结，阻滞气机", "清热利湿", "忌辛辣油腻及饮酒"),
    ("痰", "痰浊内阻，气机不利", "化痰", "忌肥甘厚味"),
    ("湿", "湿邪困阻，运化失司", "祛湿", "忌肥甘厚味及生冷，居处避潮湿"),
    ("寒", "寒邪凝滞，气血运行不畅", "散寒", "注意保暖，忌食生冷"),
    ("火", "火热炽盛，灼伤津液", "泻火", "忌辛辣炙煿、烟酒"),
    ("热", "热邪内蕴", "清热", "忌辛辣炙煿、烟酒"),
    ("风", "风邪为患，善行数变", "祛风", "避风寒，慎起居"),
    ("燥", "燥邪伤津", "润燥", "多饮温水，忌辛辣"),
    ("食", "饮食停滞，胃失和降", "消食导滞", "饮食有节，勿暴饮暴食"),
    ("瘀", "瘀血阻络", "化瘀", "适度活动以助气血运行"),
    ("郁", "气机郁结", "解郁", "调畅情志"),
    ("虚", "正气亏虚", "补虚", "避免过度劳累"),
)
LOCATIONS: tuple[str, ...] = ("中焦", "上焦", "下焦", "胞宫", "冲任", "膀胱", "大肠", "小肠", "经络", "少阳", "阳明",
                              "太阳", "太阴", "少阴", "厥阴", "心", "肝", "脾", "肺", "肾", "胃", "胆", "卫", "营", "表")
# Tongue and pulse signs and what they indicate (中医诊断学). Longer signs first, blanked once matched.
TONGUE_SIGNS: tuple[tuple[str, str], ...] = (
    ("淡红", "舌色淡红属常色"), ("薄白", "苔薄白属常苔或病邪尚浅"), ("黄腻", "苔黄腻主湿热内蕴"),
    ("白腻", "苔白腻主寒湿或痰湿"), ("白滑", "苔白滑主寒湿"), ("瘀斑", "瘀斑主血瘀"), ("瘀点", "瘀点主血瘀"),
    ("齿痕", "边有齿痕主脾虚湿盛"), ("少苔", "少苔主阴虚"), ("无苔", "无苔主阴液亏虚"), ("剥", "剥苔主胃阴不足"),
    ("裂", "裂纹主阴血亏虚"), ("胖", "舌体胖大主脾虚湿盛"), ("淡", "舌淡主阳气不足或气血亏虚"),
    ("绛", "舌绛主热入营血"), ("紫", "舌紫主血瘀"), ("暗", "舌暗主瘀滞"), ("红", "舌红主热"),
    ("腻", "苔腻主湿浊痰饮"), ("黄", "苔黄主热"), ("白", "苔白主寒"), ("滑", "苔滑主水湿内停"),
    ("燥", "苔燥主津液已伤"), ("干", "苔干主津液已伤"),
)
PULSE_SIGNS: tuple[tuple[str, str], ...] = (
    ("无力", "无力主虚"), ("结代", "结代主脏气衰微或气血阻滞"), ("浮", "浮主表"), ("沉", "沉主里"),
    ("迟", "迟主寒"), ("数", "数主热"), ("细", "细主气血不足或阴虚"), ("弦", "弦主肝郁、痛证"),
    ("滑", "滑主痰湿、食积"), ("涩", "涩主血瘀、精亏"), ("弱", "弱主气血不足"), ("缓", "缓主湿或脾虚"),
    ("紧", "紧主寒、痛"), ("洪", "洪主热盛"), ("濡", "濡主湿"), ("虚", "虚主正气不足"),
)
# Lexicon (sub-)category -> what such a herb does here. Most specific first.
CATEGORY_ACTIONS: tuple[tuple[str, str], ...] = (
    ("发散风寒", "发散风寒"), ("发散风热", "疏散风热"), ("解表", "解表散邪"), ("清热泻火", "清热泻火"),
    ("清热燥湿", "清热燥湿"), ("清热解毒", "清热解毒"), ("清热凉血", "清热凉血"), ("清虚热", "清退虚热"),
    ("清热", "清热"), ("泻下", "泻下通便"), ("祛风湿", "祛风除湿"), ("化湿", "化湿运脾"), ("利水", "利水渗湿"),
    ("温里", "温里散寒"), ("理气", "理气行滞"), ("消食", "消食和胃"), ("驱虫", "驱虫消积"), ("止血", "止血"),
    ("活血", "活血化瘀"), ("化痰", "化痰"), ("止咳", "止咳平喘"), ("安神", "安神定志"), ("平肝", "平肝潜阳"),
    ("息风", "息风止痉"), ("开窍", "开窍醒神"), ("补气", "补气健脾"), ("补阳", "温补阳气"), ("补血", "养血和营"),
    ("补阴", "滋阴养液"), ("补虚", "扶正补虚"), ("收涩", "收敛固涩"), ("涌吐", "涌吐"), ("杀虫", "攻毒杀虫"),
    ("拔毒", "拔毒生肌"),
)
# Herbs that, when present, serve as envoys (使) harmonising the formula or guarding the stomach.
ENVOYS: dict[str, str] = {"甘草": "调和诸药", "大枣": "补中和胃、调和诸药", "生姜": "和胃调中、助药力",
                          "饴糖": "缓急和中", "蜂蜜": "缓和药性"}
# Symptom-keyed modifications: (keywords in the findings, condition, herbs to add, purpose).
SYMPTOM_RULES: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("失眠|不寐|眠差|多梦|难以入睡", "夜寐不安", ("酸枣仁", "首乌藤"), "养心安神"),
    ("纳差|纳呆|食少|不欲食|食欲不振", "纳谷不香", ("焦山楂", "焦神曲", "焦麦芽"), "消食和胃"),
    ("腹胀|脘痞|胀满|痞满", "脘腹胀满", ("木香", "厚朴"), "行气消胀"),
    ("便溏|泄泻|腹泻|大便稀", "大便溏薄", ("茯苓", "白扁豆"), "健脾渗湿"),
    ("便秘|大便干|大便秘结|大便难", "大便干结", ("火麻仁",), "润肠通便"),
    ("口干|口渴|咽干", "口干较甚", ("麦冬", "石斛"), "养阴生津"),
    ("自汗|盗汗|多汗|汗出", "汗出较多", ("浮小麦", "煅牡蛎"), "固表敛汗"),
    ("咳|痰多", "咳嗽痰多", ("苦杏仁", "陈皮"), "宣肺化痰"),
    ("恶心|呕吐|欲呕", "恶心欲呕", ("姜半夏", "竹茹"), "和胃降逆"),
    ("头痛", "头痛明显", ("川芎",), "行气活血止痛"),
    ("眩晕|头晕", "头晕目眩", ("天麻", "钩藤"), "平肝息风"),
    ("心悸|心慌", "心悸不宁", ("龙骨", "牡蛎"), "重镇安神"),
    ("乏力|倦怠|神疲", "神疲乏力明显", ("黄芪",), "补气"),
    ("水肿|浮肿", "肢体浮肿", ("茯苓", "泽泻"), "利水消肿"),
)
# Category-keyed adjustments of the herbs already prescribed: (category word, sentence with {herbs}).
CATEGORY_RULES: tuple[tuple[str, str], ...] = (
    ("温里", "若畏寒肢冷已除、舌转淡红，{herbs}宜减量，以防温燥伤阴"),
    ("清热", "若热象渐退，{herbs}等寒凉之品宜减量，以免苦寒伤胃"),
    ("泻下", "大便通畅后即减去{herbs}，中病即止"),
    ("活血", "若见出血倾向或月经量多，{herbs}宜减量或暂停"),
    ("解表", "表证已解，{herbs}可去"),
)
_RELATIVE = re.compile(r"上方|原方|前方|守方")
_DOSES = re.compile(r"(\d+|[一二三四五六七八九十]+)\s*[剂付贴]")


class ComposeError(ValueError):
    """The visit lacks what the composer needs (the master's syndrome, or a prescription it can read)."""


def _match_table(text: str, table) -> list[tuple]:
    """Rows of `table` whose term occurs in `text`, in the text's order; each match is blanked (same
    length, so positions hold) so that a shorter term inside it does not match again."""
    hits = []
    for row in table:
        pos = text.find(row[0])
        if pos >= 0:
            hits.append((pos, row))
            text = text.replace(row[0], "\u3000" * len(row[0]))
    return [row for _, row in sorted(hits, key=lambda hit: hit[0])]


def _category(kb: Knowledge, herb: HerbItem) -> tuple[str, str]:
    """(top-level category for display, action phrase) from the lexicon; unknown herbs say so."""
    row = kb.herbs.get(herb.base or "")
    if row is None or not row.category:
        return "本库未收录药类", "辅助主药"
    action = next((a for key, a in CATEGORY_ACTIONS if key in row.category), "辅助主药")
    return row.category.split("/")[0], action


def assign_roles(herbs: list[HerbItem]) -> dict[str, list[HerbItem]]:
    """君臣佐使 by a plain rule: 君 is the first-listed herb unless one or two others are heavier;
    臣 up to two herbs sharing the sovereign's category, then the next listed; envoys (甘草, 大枣, 生姜 …)
    are 使; the rest are 佐. Records list the sovereign first by convention, hence the fallback."""
    kb = load_knowledge()
    core = [h for h in herbs if h.base not in ENVOYS] or herbs[:1]
    envoys = [h for h in herbs if not _among(h, core)]
    doses = [h.grams or 0 for h in core]
    top = max(doses, default=0)
    heaviest = [h for h, d in zip(core, doses, strict=True) if d == top]
    # The first-listed herb is 君 when its dose agrees (or no doses are given); else the clearly heaviest.
    clear = top > 0 and len(heaviest) <= 2 and not _among(core[0], heaviest)
    sovereign = heaviest if clear else core[:1]
    rest = [h for h in core if not _among(h, sovereign)]
    cats = {_category(kb, h)[0] for h in sovereign}
    minister = ([h for h in rest if _category(kb, h)[0] in cats] + [h for h in rest if _category(kb, h)[0]
                                                                      not in cats])[:2]
    assistant = [h for h in rest if not _among(h, minister)]
    return {"君": sovereign, "臣": minister, "佐": assistant, "使": envoys}


def _among(item: HerbItem, group: list[HerbItem]) -> bool:
    # Identity, not equality: the same herb written twice is two items with equal fields.
    return any(item is g for g in group)


def _herb_label(kb: Knowledge, herb: HerbItem) -> str:
    return f"{herb.name or herb.raw}（{_category(kb, herb)[0]}）"


def _explain(kb: Knowledge, rx_text: str, herbs: list[HerbItem], formula: str | None, syndrome: str,
             relative: bool) -> str:
    if relative:
        removed = [m.group(1).strip() for m in re.finditer(r"去([^加，,。；;]+)", rx_text)]
        parts = ["本诊守上方之法", *(f"去{r}" for r in removed)]
        for h in herbs:
            parts.append(f"加{_herb_label(kb, h)}以{_category(kb, h)[1]}")
        if not herbs and not removed:
            parts.append("原方续服，方义同前")
        return "，".join(parts) + "。"
    roles = assign_roles(herbs)
    lines = [f"本方以{formula}为基础。"] if formula else []
    for role, group in roles.items():
        if not group:
            continue
        names = "、".join(_herb_label(kb, h) for h in group)
        actions = "、".join(dict.fromkeys(ENVOYS.get(h.base or "") if role == "使" else _category(kb, h)[1]
                                          for h in group))
        tail = {"君": f"，针对“{syndrome}”之主证", "臣": "，辅助君药以加强其效", "佐": "，兼顾兼证、制约偏性",
                "使": ""}[role]
        lines.append(f"{names}为{role}，{actions}{tail}。")
    return "".join(lines)


def _signature(master: Master | None, rx: Prescription) -> str:
    """Which of the master's signature formulas and herbs (from the master's YAML) this prescription uses."""
    if master is None:
        return ""
    kb = load_knowledge()
    signature = {kb.base_of(h) or h for h in master.signature_herbs}
    herbs = [h.name or h.raw for h in rx.herbs if h.base in signature]
    parts = []
    if rx.formula_name and rx.formula_name in master.signature_formulas:
        parts.append(f"{rx.formula_name}为{master.name}常用方")
    if herbs:
        parts.append(f"{'、'.join(dict.fromkeys(herbs))}为{master.name}常用药")
    return "；".join(parts) + "。" if parts else ""


def _read_signs(text: str | None, table) -> str:
    return "，".join(meaning for _, meaning in _match_table(text or "", table))


def _pathogenesis(syndrome: str, disease: str | None) -> tuple[str, list[tuple]]:
    natures = _match_table(syndrome, NATURES)
    places = [loc for loc, *_ in _match_table(syndrome, [(loc,) for loc in LOCATIONS])]
    parts = []
    if places:
        parts.append(f"病位在{'、'.join(dict.fromkeys(places))}")
    if natures:
        parts.append(f"病性属{'、'.join(n[0] for n in natures)}")
        parts.append("，".join(n[1] for n in natures))
    else:
        parts.append(f"其病机为{syndrome}")
    if disease:
        parts.append(f"发为{disease}")
    return "；".join(parts) + "。", natures


def _modifications(kb: Knowledge, visit: Visit, rx: Prescription, natures, patient) -> str:
    findings = " ".join(x for x in (visit.chief_complaint, visit.present_illness, visit.other_findings) if x)
    present = {h.base for h in rx.herbs if h.base}
    base_errors = len([f for f in check_safety(rx, patient, kb) if f.level == "error"])
    lines = []
    for keywords, when, names, purpose in SYMPTOM_RULES:
        if not re.search(keywords, findings):
            continue
        added = [HerbItem(raw=n, name=r.name, base=r.base) for n in names if (r := kb.resolve(n))]
        added = [h for h in added if h.base not in present]
        # A suggestion that would create an incompatible pair or a pregnancy contraindication is dropped.
        trial = Prescription(herbs=[*rx.herbs, *added])
        if not added or len([f for f in check_safety(trial, patient, kb) if f.level == "error"]) > base_errors:
            continue
        lines.append(f"若{when}，加{'、'.join(h.name for h in added)}以{purpose}")
    for word, sentence in CATEGORY_RULES:
        hit = [h.name or h.raw for h in rx.herbs
               if word in (kb.herbs[h.base].category if h.base in kb.herbs else "") and h.base not in ENVOYS]
        if hit:
            lines.append(sentence.format(herbs="、".join(dict.fromkeys(hit))))
    if any(n[0] in ("气虚", "阳虚", "血虚", "阴虚") for n in natures) and not any(
            "理气" in (kb.herbs[b].category if b in kb.herbs else "") for b in present):
        lines.append("若服后脘腹胀满，可加陈皮、砂仁理气醒脾，以防滋补壅滞")
    lines.append("病情明显变化时应复诊重新辨证，不宜自行加减")
    return "\n".join(f"{i}. {line}。" for i, line in enumerate(lines, start=1))


def _tips(natures) -> str:
    """The natures' advice phrases without repeats: 忌食生冷 is dropped after 忌食生冷寒凉."""
    phrases: list[str] = []
    for n in natures:
        for phrase in n[3].split("，"):
            if not any(phrase in kept for kept in phrases):
                phrases.append(phrase)
    return "，".join(phrases) or "饮食清淡，忌生冷油腻"


def _advice(kb: Knowledge, case: Case, rx: Prescription, natures) -> str:
    lines = [f"饮食起居：{_tips(natures)}。起居有常，保证睡眠。"]
    admin = rx.administration or ""
    doses = _DOSES.search(admin)
    lines.append(f"服法：{admin}。" if admin else "服法：水煎服，日一剂，早晚分服。")
    lines.append(f"复诊：服药{doses.group(1)}剂后复诊，据病情调整处方。" if doses else "复诊：服药一周后复诊，据病情调整处方。")
    if case.patient.pregnant:
        flagged = [f for f in check_safety(rx, case.patient, kb) if f.rule.startswith("妊娠")]
        note = "患者正值妊娠期，用药须由医师密切观察，中病即止；如有腹痛、阴道出血等不适立即就医。"
        for f in flagged:
            level = f.rule.removeprefix("妊娠")
            note += f"方中{'、'.join(f.herbs)}为孕妇{level}药，" + (
                "须由医师重新评估处方。" if level == "禁用" else "须权衡利弊、谨慎使用。")
        lines.append(f"妊娠：{note}")
    lines.append("服药期间如出现不适，请及时就诊。")
    return "\n".join(lines)


def _rx_text(visit: Visit) -> str | None:
    return (visit.answer.prescription if visit.answer else None) or (
        visit.prescription.raw if visit.prescription else None)


def _read_rx(case: Case, index: int, kb: Knowledge) -> tuple[Prescription, list[HerbItem], bool]:
    """(the prescription in effect at this visit, the herbs written at it, written relative to the last?).

    "上方去X加Y" names only the changes, so the prescription in effect is the previous one minus X plus
    Y; a full list that merely mentions 上方 (most earlier herbs listed again) stands on its own.
    """
    text = _rx_text(case.visits[index]) or ""
    parsed = read_prescription(text, kb).prescription
    if index == 0 or not _RELATIVE.search(text):
        return parsed, parsed.herbs, False
    previous, _, _ = _read_rx(case, index - 1, kb)
    before = {h.base for h in previous.herbs if h.base}
    if before and len({h.base for h in parsed.herbs} & before) * 2 >= len(before):
        return parsed, parsed.herbs, False
    # The parser may read the herbs after 去 as written ones; the 去 segments say which were removed.
    removed = {h.base for m in re.finditer(r"去([^加，,。；;]+)", text)
               for h in read_prescription(m.group(1), kb).herbs if h.base}
    added = [h for h in parsed.herbs if h.base not in removed]
    changed = removed | {h.base for h in added}
    herbs = [h for h in previous.herbs if h.base not in changed] + added
    effective = Prescription(formula_name=previous.formula_name, herbs=herbs, raw=text,
                             administration=parsed.administration or previous.administration)
    return effective, added, True


def compose_answer(case: Case, visit_index: int, master: Master | None = None) -> Answer:
    """The visit's answer with the missing sections composed; the master's own sections are kept verbatim."""
    kb = load_knowledge()
    visit = case.visits[visit_index]
    gold = visit.answer or Answer()
    rx_text = gold.prescription or (visit.prescription.raw if visit.prescription else None)
    if not gold.syndrome or not rx_text:
        raise ComposeError(f"case {case.id} visit {visit_index + 1}: needs the master's syndrome and prescription")
    try:
        parsed, herbs, relative = _read_rx(case, visit_index, kb)
    except UnreadablePrescription as e:
        raise ComposeError(f"case {case.id} visit {visit_index + 1}: {e}") from e
    if not herbs and not relative:
        raise ComposeError(f"case {case.id} visit {visit_index + 1}: no recognisable herb in '{rx_text[:60]}'")
    etiology, natures = _pathogenesis(gold.syndrome, case.disease)
    principle = gold.treatment_principle or "、".join(dict.fromkeys(n[2] for n in natures)) or None
    explanation = _explain(kb, rx_text, herbs, parsed.formula_name, gold.syndrome, relative)
    explanation += _signature(master, parsed)
    findings = []
    if visit.chief_complaint:
        findings.append(f"患者以“{visit.chief_complaint.rstrip('。')}”为主诉")
    if visit_index > 0:
        findings.append("此为复诊，需结合前诊用药后的变化")
    for label, text, table in (("舌象", visit.tongue, TONGUE_SIGNS), ("脉象", visit.pulse, PULSE_SIGNS)):
        if text:
            meaning = _read_signs(text, table)
            findings.append(f"{label}为“{text.rstrip('。')}”" + (f"：{meaning}" if meaning else ""))
    steps = ["；".join(findings) + "。" if findings else "",
             f"四诊合参：{etiology}", f"故辨为{gold.syndrome.rstrip('。')}。"]
    if principle:
        steps.append(f"证既明，治当{principle.rstrip('。')}。")
    steps.append(explanation)
    composed = Answer(
        reasoning="\n".join(s for s in steps if s), etiology_pathogenesis=etiology,
        treatment_principle=principle, prescription_explanation=explanation,
        master_theory=visit.commentary or None,
        modifications=_modifications(kb, visit, parsed, natures, case.patient),
        advice=_advice(kb, case, parsed, natures))
    data = composed.model_dump()
    data.update({k: v for k, v in gold.model_dump().items() if v})
    data["prescription"] = rx_text
    return Answer(**data)


def compose_cases(cases: list[Case], masters: dict[str, Master], ledger: Ledger) -> list[Case]:
    """Compose every visit that has the master's syndrome and prescription but no reasoning.

    Visits without them are left as they are; a case with a visit the composer cannot read (no
    recognisable herb) is rejected whole into `ledger` (step "compose") with the reason.
    """
    kept = []
    ledger.seen(STEP, len(cases))
    for case in cases:
        visits, problems = list(case.visits), []
        for i, visit in enumerate(case.visits):
            gold = visit.answer
            rx = (gold.prescription if gold else None) or (visit.prescription.raw if visit.prescription else None)
            if gold is None or not gold.syndrome or not rx or gold.reasoning:
                continue
            try:
                visits[i] = visit.model_copy(update={"answer": compose_answer(case, i, masters.get(
                    case.master_id or ""))})
            except ComposeError as e:
                problems.append(str(e))
        if problems:
            ledger.reject(STEP, case.source or case.id, "compose failed: " + "; ".join(problems),
                          case.model_dump(mode="json", exclude_none=True))
        else:
            kept.append(case.model_copy(update={"visits": visits}))
            ledger.keep(STEP)
    return kept


__all__ = ["CATEGORY_ACTIONS", "NATURES", "ComposeError", "assign_roles", "compose_answer", "compose_cases"]
