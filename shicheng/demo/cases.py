"""Build the synthetic demo cases as structured objects (rendering to text and CSV lives in render.py).

A case is drawn from the syndrome table (syndromes.yaml): the master's school decides the formula and
his hallmark additions (styles.yaml), follow-up visits change symptoms and the prescription the way
his school would, and pregnancy removes every herb the pharmacopoeia lists as 禁用 or 慎用 plus the
blood-moving herbs of syndromes.yaml's pregnancy_avoid (the demo errs on the safe side). Every prescription is checked against the 十八反/十九畏 rules while it is
built: an addition that would form a forbidden pair is not made, and a base formula that contains one
is a data error.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta

from shicheng.demo.data import (
    NOTES,
    FollowUp,
    HerbDose,
    Style,
    Syndrome,
    SyndromeTable,
    Treatment,
    load_herb_info,
    parse_herb_list,
)
from shicheng.domain import Master
from shicheng.knowledge import Knowledge

ANTAI = HerbDose("桑寄生", 15.0)  # 安胎: added for pregnant patients after unsafe herbs are removed
# Doses a school writes above the pharmacopoeia range on purpose (documented practice); everyone else stays in
# it: 扶阳派 附子, and 王清任's 补阳还五汤 黄芪四两 (≈120 g) in 活血化瘀派 hands, whatever ChP 2020's 9–30 g.
SCHOOL_MAY_EXCEED = {"fuyang": {"附子"}, "huoxue": {"黄芪"}}
# Preparation the pharmacopoeia requires whatever the formula book says (附子 "先煎、久煎").
REQUIRED_NOTES = {"附子": "先煎", "川乌": "先煎", "草乌": "先煎"}


@dataclass
class RxHerb:
    name: str
    base: str
    dose: float
    unit: str = "g"
    note: str | None = None


@dataclass
class DemoVisit:
    index: int
    when: date
    chief_complaint: str
    present_illness: str
    tongue: str
    pulse: str
    syndrome: str
    principle: str
    herbs: list[RxHerb]
    formula: str | None
    packs: int
    history: str | None = None
    pathogenesis: str | None = None
    explanation: str | None = None
    modifications: str | None = None
    advice: str | None = None
    commentary: str | None = None
    plain: bool = False  # the formula exactly as written in the books (原方)
    added: list[RxHerb] = field(default_factory=list)  # vs the previous visit, for "上方去X加Y"
    removed: list[str] = field(default_factory=list)
    doses_changed: bool = False


@dataclass
class DemoPatient:
    name: str
    sex: str  # 男 / 女
    age: int
    pregnant_weeks: int | None = None
    personal: dict[str, str] = field(default_factory=dict)  # 病历号, 电话, 身份证, 住址 (all fictional)


@dataclass
class DemoCase:
    id: str
    master: Master | None
    school: str | None
    syndrome: Syndrome
    disease: str
    patient: DemoPatient
    visits: list[DemoVisit]


def nice_dose(value: float) -> float:
    """Round to the doses clinicians write: whole grams below 10, steps of 3 or 5 above."""
    if value < 10:
        return float(max(1, round(value)))
    if value < 20:
        return float(round(value))
    return float(5 * round(value / 5))


class CaseBuilder:
    def __init__(self, kb: Knowledge, table: SyndromeTable, styles: dict[str, Style]):
        self.kb, self.table, self.styles = kb, table, styles
        self.info = load_herb_info()
        self.pregnancy_avoid = {kb.base_of(h) for h in table.pregnancy_avoid}

    # ------------------------------------------------------------------ prescriptions
    def herb(self, name: str, dose: float, unit: str = "g", note: str | None = None) -> RxHerb:
        base = self.kb.base_of(name)
        if base is None:
            raise ValueError(f"demo data names herb {name!r}, which the lexicon does not know")
        return RxHerb(name, base, dose, unit, note or REQUIRED_NOTES.get(base))

    def conflicts(self, herbs: list[RxHerb], base: str) -> bool:
        present = {h.base for h in herbs}
        for rule in self.kb.rules:
            for mine, other in ((rule.a, rule.b), (rule.b, rule.a)):
                if base in mine and present.intersection(other):
                    return True
        return False

    def unsafe_in_pregnancy(self, base: str) -> bool:
        return base in self.kb.pregnancy or base in self.pregnancy_avoid

    def is_plain(self, formula: str | None, herbs: list[RxHerb]) -> bool:
        """True when the herbs are exactly the formula's (原方, no additions or removals)."""
        if not formula:
            return False
        return {self.kb.base_of(h.herb) for h in self.kb.formulas[formula].herbs} == {h.base for h in herbs}

    def clamp(self, h: RxHerb, school: str | None) -> None:
        rng = self.kb.dose_ranges.get(h.base)
        if h.unit != "g" or rng is None or h.base in SCHOOL_MAY_EXCEED.get(school or "", ()):
            return
        h.dose = min(max(h.dose, rng.min_g), rng.max_g)

    def formula_herbs(self, name: str, rng: random.Random, keep_doses: bool, skip: set[str]) -> list[RxHerb]:
        """A formula's herbs with doses: as written in formulas.yaml for 原方原量 schools, else a clinician's
        usual dose near it (formula doses of pills and powders are far below decoction doses)."""
        formula = self.kb.formulas.get(name)
        if formula is None:
            raise ValueError(f"demo data names formula {name!r}, which formulas.yaml does not have")
        # 原方原量 keeps the proportions; formulas the books give in pill-sized doses are scaled up as a whole.
        grams = sorted(h.dose for h in formula.herbs if h.dose is not None and (h.unit or "g") == "g")
        scale = next((f for f in (1, 1.5, 2, 3) if grams and grams[len(grams) // 2] * f >= 8), 1)
        out = []
        for fh in formula.herbs:
            base = self.kb.base_of(fh.herb)
            if base in skip:
                continue
            info = self.info.get(fh.herb) or self.info.get(base or "")
            unit = fh.unit or "g"
            counted = unit in self.kb.units.counts
            if info is None and (fh.dose is None or not (counted or unit == "g")):
                raise ValueError(f"formula {name}: herb {fh.herb} has no usable dose; add it to demo herbs.yaml")
            if counted and fh.dose is not None:
                dose = float(fh.dose)
            elif fh.dose is None or unit != "g":
                dose, unit = float(rng.randint(int(info.dose[0]), int(info.dose[1]))), "g"
            elif keep_doses:
                dose = float(fh.dose) * scale
                dose = nice_dose(dose) if dose >= 3 else dose
            else:
                dose = nice_dose(fh.dose * rng.choice((0.8, 1.0, 1.0, 1.2, 1.5)))
                if info is not None:
                    dose = min(max(dose, info.dose[0]), info.dose[1])
            note = next((n for n in NOTES if fh.note and n in fh.note), None)
            out.append(self.herb(fh.herb, dose, unit, note))
        return out

    def apply(self, herbs: list[RxHerb], items: list[HerbDose], *, guard: bool, pregnant: bool) -> list[RxHerb]:
        """Add herbs (a present base herb takes the new dose); with guard, skip forbidden pairs and pregnancy."""
        made = []
        for item in items:
            new = self.herb(item.name, item.dose, item.unit, item.note)
            old = next((h for h in herbs if h.base == new.base), None)
            if old is not None:
                old.dose, old.unit, old.note, old.name = new.dose, new.unit, new.note or old.note, new.name
                continue
            if guard and (self.conflicts(herbs, new.base) or (pregnant and self.unsafe_in_pregnancy(new.base))):
                continue
            herbs.append(new)
            made.append(new)
        return made

    def first_prescription(self, t: Treatment, style: Style | None, syndrome: Syndrome, rng: random.Random,
                           pregnant: bool) -> tuple[list[RxHerb], list[str]]:
        """The first visit's herbs, and the names left out because the patient is pregnant."""
        keep = bool(style and style.keep_formula_doses)
        removed = {self.kb.base_of(r) for r in t.remove}
        herbs = self.formula_herbs(t.formula, rng, keep, removed) if t.formula else []
        self.apply(herbs, parse_herb_list(t.herbs), guard=False, pregnant=False)
        self.apply(herbs, parse_herb_list(t.add), guard=False, pregnant=False)
        self.check_pairs(herbs, f"syndrome {syndrome.id}: {t.formula or 'herbs'}")
        if style is not None and not pregnant:
            for sig in style.signature_adds:
                if (sig.tags and not set(sig.tags) & set(syndrome.tags)) or rng.random() >= sig.probability:
                    continue
                dose = float(rng.choice(sig.doses))
                present = next((h for h in herbs if h.base == self.kb.base_of(sig.herb)), None)
                if present is None:
                    self.apply(herbs, [HerbDose(sig.herb, dose, "g", sig.note)], guard=True, pregnant=pregnant)
                else:
                    present.dose = max(present.dose, dose) if present.unit == "g" else present.dose
                    present.note = present.note or sig.note
            if style.lead_with_signature:
                order = [self.kb.base_of(sig.herb) for sig in style.signature_adds]
                herbs.sort(key=lambda h: order.index(h.base) if h.base in order else len(order))
        left_out = [h.name for h in herbs if pregnant and self.unsafe_in_pregnancy(h.base)]
        if pregnant:
            herbs = [h for h in herbs if not self.unsafe_in_pregnancy(h.base)]
            if not any(h.base == "桑寄生" for h in herbs):
                herbs.append(self.herb(ANTAI.name, ANTAI.dose))
        school = style.school if style else None
        for h in herbs:
            self.clamp(h, school)
        return herbs, left_out

    def check_pairs(self, herbs: list[RxHerb], where: str) -> None:
        for i, h in enumerate(herbs):
            if self.conflicts(herbs[:i], h.base):
                raise ValueError(f"{where}: {h.name} forms a 十八反/十九畏 pair with another herb of the formula")

    # ------------------------------------------------------------------ follow-ups
    def follow_up(self, prev: list[RxHerb], style: Style | None, rng: random.Random, pregnant: bool,
                  resolved: FollowUp | None, new: FollowUp | None) -> tuple[list[RxHerb], list[RxHerb], list[str], bool]:
        """Next visit's herbs: drop what the resolved symptom needed, add for the new one, let doses climb."""
        herbs = [RxHerb(h.name, h.base, h.dose, h.unit, h.note) for h in prev]
        removed: list[str] = []
        if resolved is not None and resolved.remove_when_resolved:
            gone = {self.kb.base_of(i.name) for i in parse_herb_list(resolved.add)}
            removed = [h.name for h in herbs if h.base in gone]
            herbs = [h for h in herbs if h.base not in gone]
        added: list[RxHerb] = []
        if new is not None:
            limit = style.max_followup_adds if style else 2
            added = self.apply(herbs, parse_herb_list(new.add)[:limit], guard=True, pregnant=pregnant)
        changed = False
        if style is not None:
            for name, ladder in style.grow.items():
                base = self.kb.base_of(name)
                h = next((x for x in herbs if x.base == base), None)
                higher = [d for d in ladder if h is not None and d > h.dose]
                if h is not None and higher and rng.random() < 0.7:
                    h.dose = float(higher[0])
                    changed = True
        for h in herbs:
            self.clamp(h, style.school if style else None)
        return herbs, added, removed, changed

    # ------------------------------------------------------------------ patients
    def patient(self, syndrome: Syndrome, rng: random.Random, pregnant: bool, personal: bool,
                year: int) -> DemoPatient:
        sex = "女" if pregnant or syndrome.sex == "female" else "男" if syndrome.sex == "male" else rng.choice("男女")
        lo, hi = syndrome.age
        age = rng.randint(max(lo, 22), min(hi, 38)) if pregnant else rng.randint(lo, hi)
        surname = rng.choice(SURNAMES)
        roll = rng.random()
        if roll < 0.15:
            name = surname + rng.choice(GIVEN_MALE if sex == "男" else GIVEN_FEMALE)
        else:
            name = surname + ("某某" if roll < 0.6 else "某")
        p = DemoPatient(name=name, sex=sex, age=age, pregnant_weeks=rng.randint(6, 30) if pregnant else None)
        if personal:
            p.personal = fictional_personal_data(rng, sex, age, year)
        return p


SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕苏卢蒋蔡贾丁魏薛叶阎"
GIVEN_MALE = ("建国", "志强", "国华", "明亮", "海涛", "建军", "德顺", "文斌", "立新", "振宇", "永福", "宏伟")
GIVEN_FEMALE = ("秀英", "丽华", "桂兰", "淑珍", "玉梅", "晓燕", "春梅", "美玲", "雪芳", "慧敏", "红霞", "亚琴")
# Region codes of the 18-digit ID are public administrative codes; every other digit is invented.
REGIONS = ("110101", "310104", "440106", "510107", "330106", "420102", "610113", "320102")
STREETS = ("青石路", "和平街", "东风路", "杏林巷", "建设大道", "长宁路", "百花巷", "新华路", "金水街", "滨河路")
CITIES = ("东川市长宁区", "南岭市青山区", "北湖市安平区", "西岳市望江区", "清河市明德区", "云州市桃源区")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def id_check_digit(first17: str) -> str:
    """ISO 7064 MOD 11-2 check digit of the Chinese resident ID (GB 11643), so fakes look valid to a scrubber."""
    total = sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True))
    return "10X98765432"[total % 11]


def fictional_personal_data(rng: random.Random, sex: str, age: int, year: int) -> dict[str, str]:
    born = date(year - age, rng.randint(1, 12), rng.randint(1, 28))
    seq = rng.randrange(0, 99, 2) + (1 if sex == "男" else 0)  # 17th digit: odd for men, even for women
    first17 = f"{rng.choice(REGIONS)}{born:%Y%m%d}{rng.randint(0, 9)}{seq:02d}"
    data = {
        "病历号": f"ZY{year}{rng.randint(0, 999999):06d}",
        "电话": f"1380000{rng.randint(0, 9999):04d}",
        "身份证": first17 + id_check_digit(first17),
        "住址": f"{rng.choice(CITIES)}{rng.choice(STREETS)}{rng.randint(1, 199)}号{rng.randint(1, 6)}单元"
                f"{rng.randint(1, 18)}0{rng.randint(1, 4)}室",
    }
    keep = rng.sample(sorted(data), rng.randint(2, 4))
    return {k: data[k] for k in ("病历号", "电话", "身份证", "住址") if k in keep}


def visit_dates(rng: random.Random, n: int) -> list[date]:
    first = date(2019, 1, 1) + timedelta(days=rng.randint(0, 5 * 365))
    out = [first]
    for _ in range(n - 1):
        out.append(out[-1] + timedelta(days=rng.choice((7, 7, 7, 14, 10))))
    return out
