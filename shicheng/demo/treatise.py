"""Stage-1 reading for the demo: one short treatise per master and a page on the classical formulas.

The prose is assembled from the same data the cases come from (master YAML, styles, syndrome table,
formulas.yaml), so the pre-training corpus and the cases agree about every master: his lineage, his
thought, how he writes his formulas and doses. Treatises stop adding worked examples at
TREATISE_MAX characters.
"""

from __future__ import annotations

from shicheng.demo.data import Style, SyndromeTable, Treatment, load_herb_info, parse_herb_list
from shicheng.demo.render import HEADER
from shicheng.domain import Master
from shicheng.knowledge import Knowledge

TREATISE_MAX = 2750  # characters of body, so that a whole treatise stays within 1,500–3,000


def _formula_text(kb: Knowledge, name: str) -> str:
    f = kb.formulas[name]
    herbs = "、".join(f"{h.herb}{h.dose:g}{'g' if h.unit in (None, 'g') else h.unit}" if h.dose else h.herb
                     for h in f.herbs)
    return f"{name}（{f.source or '方书'}）由{herbs}组成"


def _treatment_text(t: Treatment, kb: Knowledge) -> str:
    parts = [f"方用{t.formula}" if t.formula else "方用自拟方"]
    in_formula = {kb.base_of(h.herb) for h in kb.formulas[t.formula].herbs} if t.formula else set()
    items = parse_herb_list(t.herbs) + parse_herb_list(t.add)
    heavier = [f"{h.name}至{h.dose:g}g" for h in items if kb.base_of(h.name) in in_formula]
    extra = [h.name for h in items if kb.base_of(h.name) not in in_formula]
    if t.remove:
        parts.append(f"去{'、'.join(t.remove)}")
    if extra:
        parts.append(f"加{'、'.join(extra)}")
    if heavier:
        parts.append(f"，{'、'.join(heavier)}")
    return "".join(parts)


def master_treatise(master: Master, style: Style, table: SyndromeTable, kb: Knowledge) -> str:
    school = style.school
    treated = [(s, s.schools[school]) for s in table.syndromes if school in s.schools]
    lines = [
        HEADER, "",
        f"# {master.name}学术思想与临证经验",
        "",
        f"（{master.name}为虚构医家，本文为根据流派公开文献编写的合成演示文本。）",
        "",
        "## 一、学术渊源",
        "",
        f"{master.name}，{master.school}医家，擅治{'、'.join(master.specialties)}。{style.lineage}"
        f"{master.name}私淑其说，临证以此为宗。",
        "",
        "## 二、学术思想",
        "",
        style.teaching,
        "",
        "## 三、常用方剂",
        "",
    ]
    for name in master.signature_formulas:
        canonical = kb.formulas[name].name
        uses = [s.name for s, t in treated if t.formula and kb.formulas[t.formula].name == canonical]
        text = _formula_text(kb, name) + "。"
        if uses:
            text += f"{master.name}用治{'、'.join(uses[:4])}。"
        notes = [t.note for _, t in treated if t.formula and kb.formulas[t.formula].name == canonical and t.note]
        if notes:
            text += notes[0]
        lines += [text, ""]
    lines += ["## 四、用药特色", ""]
    doses = {kb.base_of(a.herb): a for a in style.signature_adds}
    for herb in master.signature_herbs:
        base = kb.base_of(herb)
        row = kb.herbs[base]
        info = load_herb_info().get(herb) or load_herb_info().get(base)
        text = f"{herb}，{row.category.split('/')[0]}，{info.action if info else row.category}。"
        add = doses.get(base)
        if add is not None:
            text += f"{master.name}常用{min(add.doses):g}～{max(add.doses):g}g" + (f"，{add.note}" if add.note else "") + "。"
        if base in style.grow or herb in style.grow:
            ladder = style.grow.get(herb) or style.grow.get(base)
            text += f"复诊时视病情逐步加量，自{ladder[0]:g}g渐加至{ladder[-1]:g}g。"
        lines += [text, ""]
    if style.keep_formula_doses:
        lines += [f"{master.name}用经方，守原方原量比例，加减不过一二味，方证不变则效不更方。", ""]
    lines += ["## 五、辨治举隅", ""]
    length = sum(len(x) for x in lines)
    for s, t in treated:
        para = (f"{s.name}：症见{'、'.join(s.chief[:2])}，{'、'.join(s.findings[:3])}，{s.tongue[0]}，{s.pulse[0]}。"
                f"{master.name}辨为{t.syndrome or s.name}，{s.pathogenesis}治以{t.principle or s.principle.rstrip('。')}，"
                f"{_treatment_text(t, kb)}。{t.note or ''}")
        if length + len(para) > TREATISE_MAX:
            break
        lines += [para, ""]
        length += len(para)
    return "\n".join(lines).rstrip() + "\n"


def classics_page(table: SyndromeTable, kb: Knowledge) -> str:
    """One paragraph per formula the demo uses: source, category, composition, the syndromes it serves."""
    used: dict[str, tuple[list[str], list[str]]] = {}  # formula -> (textbook syndromes, school syndromes)
    for s in table.syndromes:
        for k, t in enumerate((s.textbook, *s.schools.values())):
            if t.formula:
                names = used.setdefault(kb.formulas[t.formula].name, ([], []))[min(k, 1)]
                if s.name not in names:
                    names.append(s.name)
    lines = [HEADER, "", "# 常用方剂简编（演示语料）", "",
             "本篇据《方剂学》教材及原著条文，简述演示语料中出现的方剂组成与主治，供领域预训练之用。", ""]
    for name in sorted(used, key=lambda n: (kb.formulas[n].category or "", n)):
        f = kb.formulas[name]
        textbook, schools = used[name]
        text = f"{_formula_text(kb, name)}，属{f.category or '方剂'}。"
        if textbook:
            text += f"教材用治{'、'.join(textbook)}。"
        others = [n for n in schools if n not in textbook]
        if others:
            text += f"各家化裁亦用于{'、'.join(others)}。"
        if f.aliases:
            text += f"又名{'、'.join(f.aliases)}。"
        lines += [text, ""]
    return "\n".join(lines).rstrip() + "\n"
