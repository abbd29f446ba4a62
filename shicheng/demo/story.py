"""The words of a demo case: complaint, history, course, syndrome, principle, 方解, 加减, 医嘱 and 按语.

Phrases come from the syndrome table and the master's style; this module only strings them together
with a seeded random generator, so the same seed always tells the same story.
"""

from __future__ import annotations

import random

from shicheng.demo.cases import CaseBuilder, DemoCase, DemoPatient, DemoVisit, RxHerb, visit_dates
from shicheng.demo.data import FollowUp, Style, Syndrome, parse_herb_list
from shicheng.domain import Master

ACUTE_TAGS = {"表", "温"}
# Share of first visits with an accompanying symptom that the master treats alongside (随症加减: 夜寐欠安 →
# 酸枣仁、首乌藤). The herbs follow the findings, not the neighbouring record: a model can learn the rule for
# combinations it never saw, which copying the nearest case cannot.
ACCOMPANYING_SHARE = 0.5
BETTER = ("明显减轻", "减轻大半", "较前好转", "有所缓解", "已除")
ENVOYS = {"甘草", "大枣", "生姜"}
IMPROVED_TONGUE = ("舌淡红，苔薄白", "舌质转淡红，苔薄", "舌苔渐化，舌淡红")
# Phrases that only fit one sex, or no pregnant patient (menses, infertility, postpartum …).
FEMALE_ONLY = ("月经", "经行", "经色", "经量", "经期", "带下", "乳房", "乳癖", "痛经", "不孕", "产后", "绝经", "胞宫")
MALE_ONLY = ("阳痿", "遗精", "阴囊")
MENSES = ("月经", "经行", "经色", "经量", "经期", "痛经", "不孕", "产后", "绝经")


def fitting(phrases: list[str], patient: DemoPatient) -> list[str]:
    """The phrases that fit this patient; the syndrome table always keeps some that fit everyone."""
    banned = MALE_ONLY if patient.sex == "女" else FEMALE_ONLY
    if patient.pregnant_weeks:
        banned = banned + FEMALE_ONLY
    if patient.age > 52 or patient.age < 14:  # no menses to speak of
        banned = banned + MENSES
    if patient.age < 22:
        banned = (*banned, "不孕", "产后", "绝经")
    kept = [p for p in phrases if not any(word in p for word in banned)]
    if not kept:
        raise ValueError(f"no phrase of {phrases} fits a {patient.sex} patient (pregnant={bool(patient.pregnant_weeks)})")
    return kept


def _duration(syndrome: Syndrome, rng: random.Random) -> str:
    if ACUTE_TAGS & set(syndrome.tags):
        return rng.choice(("2天", "3天", "5天", "1周", "4天"))
    return rng.choice(("3个月", "半年", "1年", "2年余", "3年", "5年", "10余年", "半月", "2个月"))


def _join(names: list[str]) -> str:
    return "、".join(names)


def action_of(builder: CaseBuilder, h: RxHerb) -> str:
    info = builder.info.get(h.name) or builder.info.get(h.base)
    if info is not None:
        return info.action
    category = builder.kb.herbs[h.base].category.split("/")[-1]
    return category.removesuffix("药") or "调和"


def explanation(builder: CaseBuilder, herbs: list[RxHerb], formula: str | None, original: bool = False) -> str:
    """方解 by position: the leading herb is the sovereign (君), the next two ministers (臣), envoys last."""
    envoys = [h for h in herbs if h.base in ENVOYS]
    rest = [h for h in herbs if h.base not in ENVOYS]
    if formula:
        opening = f"方用{formula}原方，药味与比例悉遵原书。" if original else f"方以{formula}为基础化裁。"
    else:
        opening = "方为自拟。"
    parts = [opening]
    if rest:
        parts.append(f"方中{rest[0].name}{action_of(builder, rest[0])}，为君药；")
    if len(rest) > 1:
        ministers = rest[1:3]
        parts.append("，".join(f"{h.name}{action_of(builder, h)}" for h in ministers) + "，共为臣药；")
    if len(rest) > 3:
        parts.append(f"{_join([h.name for h in rest[3:]])}协助君臣，为佐药；")
    if envoys:
        parts.append(f"{_join([h.name for h in envoys])}调和诸药，为使药。")
    return "".join(parts).rstrip("；") + ("" if parts[-1].endswith("。") else "。")


class StoryTeller:
    def __init__(self, builder: CaseBuilder):
        self.b = builder
        self.table = builder.table

    def case(self, case_id: str, master: Master | None, syndrome: Syndrome, rng: random.Random, *,
             pregnant: bool, personal: bool, n_visits: int) -> DemoCase:
        style: Style | None = self.b.styles[master.id] if master else None
        school = style.school if style else None
        t = syndrome.schools[school] if school else syndrome.textbook
        dates = visit_dates(rng, n_visits)
        patient = self.b.patient(syndrome, rng, pregnant, personal, dates[0].year)
        herbs, removed_for_pregnancy = self.b.first_prescription(t, style, syndrome, rng, pregnant)
        extra = rng.choice(self.table.followups) if rng.random() < ACCOMPANYING_SHARE else None
        if extra is not None:
            limit = style.max_followup_adds if style else 2
            if self.b.apply(herbs, parse_herb_list(extra.add)[:limit], guard=True, pregnant=pregnant):
                for h in herbs:
                    self.b.clamp(h, school)
            else:
                extra = None  # nothing could be added safely: the symptom is not written either
        syndrome_text = t.syndrome or syndrome.name
        principle = (t.principle or syndrome.principle).rstrip("。")
        if style and style.principle_suffix and rng.random() < 0.5:
            principle = f"{principle.rstrip('。')}，{rng.choice(style.principle_suffix)}"
        if extra is not None:
            principle = f"{principle}，{extra.principle}"
        pathogenesis = syndrome.pathogenesis
        if style and style.pathogenesis_suffix and rng.random() < 0.7:
            pathogenesis += rng.choice(style.pathogenesis_suffix)
        chief = rng.choice(fitting(syndrome.chief, patient))
        duration = _duration(syndrome, rng)
        first = DemoVisit(
            index=1, when=dates[0], chief_complaint=self.complaint(syndrome, chief, duration, rng),
            present_illness=self.present_illness(syndrome, chief, duration, patient, rng, extra),
            history=self.history(rng), tongue=rng.choice(syndrome.tongue), pulse=rng.choice(syndrome.pulse),
            syndrome=syndrome_text, principle=principle, herbs=herbs, formula=t.formula,
            packs=rng.choice((7, 7, 7, 5, 14, 10)),
            pathogenesis=pathogenesis if rng.random() < 0.65 else None,
            plain=self.b.is_plain(t.formula, herbs),
        )
        if rng.random() < 0.5:
            first.explanation = explanation(self.b, herbs, t.formula, original=first.plain and school == "jingfang")
        if rng.random() < 0.3:
            first.modifications = self.modifications(rng)
        visits = [first]
        pending: FollowUp | None = extra
        for index in range(2, n_visits + 1):
            visit, pending = self.follow_up(visits[-1], index, dates[index - 1], syndrome, chief, style, rng,
                                            patient, pending)
            visits.append(visit)
        last = visits[-1]
        if rng.random() < 0.55:
            extra = rng.choice(style.advice) if style else ""
            last.advice = syndrome.advice + extra
        disease = rng.choice(fitting(syndrome.diseases, patient))
        if master is not None and rng.random() < 0.92:
            last.commentary = self.commentary(master, style, syndrome_text, principle, t.formula, t.note,
                                              visits, disease, rng, patient, removed_for_pregnancy)
        return DemoCase(case_id, master, school, syndrome, disease, patient, visits)

    # ------------------------------------------------------------------ pieces
    def complaint(self, syndrome: Syndrome, chief: str, duration: str, rng: random.Random) -> str:
        text = f"{chief}{duration}"
        if not ACUTE_TAGS & set(syndrome.tags) and rng.random() < 0.5:
            text += f"，加重{rng.choice(('3天', '1周', '半月', '10天'))}"
        return text + "。"

    def present_illness(self, syndrome: Syndrome, chief: str, duration: str, patient: DemoPatient,
                        rng: random.Random, extra: FollowUp | None = None) -> str:
        trigger = rng.choice(syndrome.triggers or self.table.triggers)
        pool = fitting(syndrome.findings, patient)
        findings = rng.sample(pool, k=min(len(pool), rng.randint(3, 5)))
        others = [c for c in fitting(syndrome.chief, patient) if c != chief]
        if others and rng.random() < 0.5:
            findings.insert(0, rng.choice(others))
        acute = bool(ACUTE_TAGS & set(syndrome.tags))
        course = rng.choice(("自服药物未见好转", "未经系统治疗")) if acute else rng.choice(
            ("此后反复发作，时轻时重", "曾服西药治疗，效果欠佳", "多方求治，疗效不显", "劳累后加重"))
        if extra is not None:
            findings.insert(rng.randint(1, len(findings)), f"兼见{extra.symptom}")
        text = f"患者{duration}前{trigger}出现{chief}，{course}。刻下：{'，'.join(findings)}。"
        if patient.pregnant_weeks:
            text += f"现孕{patient.pregnant_weeks}周，胎动正常。"
        return text

    def history(self, rng: random.Random) -> str:
        text = rng.choice(self.table.history)
        return text + ("否认药物过敏史。" if rng.random() < 0.5 else "")

    def modifications(self, rng: random.Random) -> str:
        options = rng.sample(self.table.followups, k=2)
        parts = []
        for f in options:
            herbs = [f"{h.name}{h.dose:g}{h.unit}" for h in parse_herb_list(f.add)]
            parts.append(f"若{f.symptom}，加{_join(herbs)}")
        return "；".join(parts) + "。"

    def follow_up(self, prev: DemoVisit, index: int, when, syndrome: Syndrome, chief: str, style: Style | None,
                  rng: random.Random, patient: DemoPatient, pending: FollowUp | None
                  ) -> tuple[DemoVisit, FollowUp | None]:
        """The next visit, and the new symptom whose herbs were added (to drop them once it resolves)."""
        new = rng.choice(self.table.followups) if rng.random() < 0.6 else None
        if new is not None and pending is not None and new.symptom == pending.symptom:
            new = None
        pregnant = bool(patient.pregnant_weeks)
        herbs, added, removed, changed = self.b.follow_up(prev.herbs, style, rng, pregnant, pending, new)
        remaining = rng.choice(fitting(syndrome.findings, patient))
        better = rng.choice(BETTER)
        text = f"服上方{prev.packs}剂后，{chief}{better}"
        if pending is not None:
            text += f"，{pending.symptom}已除"
        text += f"，仍{remaining}。" if index < 3 or rng.random() < 0.5 else "，诸症基本消失。"
        principle = prev.principle.split("，佐以")[0]
        if new is not None:
            text += f"近日{new.symptom}。"
            principle = f"{principle}，{new.principle}"
        tongue = rng.choice(IMPROVED_TONGUE) if rng.random() < 0.5 else prev.tongue
        visit = DemoVisit(
            index=index, when=when, chief_complaint=f"{chief}{better}" + (f"，{new.symptom}" if new else "") + "。",
            present_illness=text, tongue=tongue, pulse=rng.choice(syndrome.pulse), syndrome=prev.syndrome,
            principle=principle, herbs=herbs, formula=prev.formula, packs=rng.choice((7, 7, 14)),
            added=added, removed=removed, doses_changed=changed,
            plain=prev.plain and not added and not removed,
        )
        return visit, (new if added else None)

    def commentary(self, master: Master, style: Style, syndrome_text: str, principle: str, formula: str | None,
                   note: str | None, visits: list[DemoVisit], disease: str, rng: random.Random,
                   patient: DemoPatient, removed_for_pregnancy: list[str]) -> str:
        used = {h.base: h.name for v in visits for h in v.herbs}
        sig = [used[b] for b in (self.b.kb.base_of(s) for s in master.signature_herbs) if b in used]
        if not sig:
            sig = [h.name for h in visits[0].herbs[:3]]
        text = rng.choice(style.commentary).format(
            master=master.name, syndrome=syndrome_text, formula=formula or "自拟方", sig_herbs=_join(sig[:4]),
            principle=principle, disease=disease, outcome=rng.choice(style.outcome),
            note=(note or "").strip(),
        )
        if patient.pregnant_weeks:
            text += f"患者妊娠{patient.pregnant_weeks}周，"
            if removed_for_pregnancy:
                text += f"{_join(removed_for_pregnancy)}等碍胎之品一概不用，"
            text += "加桑寄生以固肾安胎，中病即止。"
        return text
