"""Offline composer: the eight-part answer written deterministically from a visit's structured fields.

Used when no teacher model is available (the demo's default). It never touches the master's syndrome,
treatment principle or prescription; it writes only the sections the master did not: reasoning that
walks from the findings through the pathogenesis to the prescription, an explanation that gives every
herb its role (君臣佐使) and lexicon category, modifications from a small rule table (filtered through
the safety checker), and advice. The rule tables are knowledge data (knowledge/data/composer_rules.yaml,
textbook commonplaces from 中医诊断学 and 中药学); they make plain, checkable text, not clinical judgement.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TypeVar

from shicheng.curate.ledger import Ledger
from shicheng.domain import Answer, Case, HerbItem, Master, Prescription, Visit
from shicheng.knowledge import Knowledge, load_knowledge
from shicheng.knowledge.composer_rules import Nature, Sign, load_composer_rules
from shicheng.prescription import apply_to_previous, refers_to_previous
from shicheng.records.prescriptions import UnreadablePrescription, read_prescription
from shicheng.safety import check_safety

STEP = "compose"
T = TypeVar("T")

_DOSES = re.compile(r"(\d+|[一二三四五六七八九十]+)\s*[剂付贴]")


class ComposeError(ValueError):
    """The visit lacks what the composer needs (the master's syndrome, or a prescription it can read)."""


def _match_table(text: str, table: Sequence[T], term: Callable[[T], str]) -> list[T]:
    """Rows of `table` whose `term` occurs in `text`, in the text's order; each match is blanked (same
    length, so positions hold) so that a shorter term inside it does not match again."""
    hits = []
    for row in table:
        word = term(row)
        pos = text.find(word)
        if pos >= 0:
            hits.append((pos, row))
            text = text.replace(word, "\u3000" * len(word))
    return [row for _, row in sorted(hits, key=lambda hit: hit[0])]


def _category(kb: Knowledge, herb: HerbItem) -> tuple[str, str]:
    """(top-level category for display, action phrase) from the lexicon; unknown herbs say so."""
    row = kb.herbs.get(herb.base or "")
    if row is None or not row.category:
        return "本库未收录药类", "辅助主药"
    action = next((a.action for a in load_composer_rules().category_actions if a.category in row.category),
                  "辅助主药")
    return row.category.split("/")[0], action


def assign_roles(herbs: list[HerbItem]) -> dict[str, list[HerbItem]]:
    """君臣佐使 by a plain rule: 君 is the first-listed herb unless one or two others are heavier;
    臣 up to two herbs sharing the sovereign's category, then the next listed; envoys (甘草, 大枣, 生姜 …)
    are 使; the rest are 佐. Records list the sovereign first by convention, hence the fallback."""
    kb = load_knowledge()
    envoy_roles = load_composer_rules().envoy_roles
    core = [h for h in herbs if h.base not in envoy_roles] or herbs[:1]
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
    envoy_roles = load_composer_rules().envoy_roles
    lines = [f"本方以{formula}为基础。"] if formula else []
    for role, group in roles.items():
        if not group:
            continue
        names = "、".join(_herb_label(kb, h) for h in group)
        actions = "、".join(dict.fromkeys(envoy_roles.get(h.base or "") if role == "使" else _category(kb, h)[1]
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


def _read_signs(text: str | None, table: Sequence[Sign]) -> str:
    return "，".join(s.meaning for s in _match_table(text or "", table, lambda s: s.sign))


def _pathogenesis(syndrome: str, disease: str | None) -> tuple[str, list[Nature]]:
    rules = load_composer_rules()
    natures = _match_table(syndrome, rules.natures, lambda n: n.term)
    places = _match_table(syndrome, rules.locations, str)
    parts = []
    if places:
        parts.append(f"病位在{'、'.join(dict.fromkeys(places))}")
    if natures:
        parts.append(f"病性属{'、'.join(n.term for n in natures)}")
        parts.append("，".join(n.pathogenesis for n in natures))
    else:
        parts.append(f"其病机为{syndrome}")
    if disease:
        parts.append(f"发为{disease}")
    return "；".join(parts) + "。", natures


def _modifications(kb: Knowledge, visit: Visit, rx: Prescription, natures: list[Nature], patient) -> str:
    rules = load_composer_rules()
    findings = " ".join(x for x in (visit.chief_complaint, visit.present_illness, visit.other_findings) if x)
    present = {h.base for h in rx.herbs if h.base}
    base_errors = len([f for f in check_safety(rx, patient, kb) if f.level == "error"])
    lines = []
    for rule in rules.symptom_rules:
        if not rule.matches(findings):
            continue
        added = [HerbItem(raw=n, name=r.name, base=r.base) for n in rule.add if (r := kb.resolve(n))]
        added = [h for h in added if h.base not in present]
        # A suggestion that would create an incompatible pair or a pregnancy contraindication is dropped.
        trial = Prescription(herbs=[*rx.herbs, *added])
        if not added or len([f for f in check_safety(trial, patient, kb) if f.level == "error"]) > base_errors:
            continue
        lines.append(f"若{rule.condition}，加{'、'.join(h.name for h in added)}以{rule.purpose}")
    for adjust in rules.category_rules:
        hit = [h.name or h.raw for h in rx.herbs if adjust.category in (
            kb.herbs[h.base].category if h.base in kb.herbs else "") and h.base not in rules.envoy_roles]
        if hit:
            lines.append(adjust.sentence.format(herbs="、".join(dict.fromkeys(hit))))
    if any(n.term in ("气虚", "阳虚", "血虚", "阴虚") for n in natures) and not any(
            "理气" in (kb.herbs[b].category if b in kb.herbs else "") for b in present):
        lines.append("若服后脘腹胀满，可加陈皮、砂仁理气醒脾，以防滋补壅滞")
    lines.append("病情明显变化时应复诊重新辨证，不宜自行加减")
    return "\n".join(f"{i}. {line}。" for i, line in enumerate(lines, start=1))


def _tips(natures: list[Nature]) -> str:
    """The natures' advice phrases without repeats: 忌食生冷 is dropped after 忌食生冷寒凉."""
    phrases: list[str] = []
    for n in natures:
        for phrase in n.advice.split("，"):
            if not any(phrase in kept for kept in phrases):
                phrases.append(phrase)
    return "，".join(phrases) or "饮食清淡，忌生冷油腻"


def _advice(kb: Knowledge, case: Case, rx: Prescription, natures: list[Nature]) -> str:
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
    parsed = read_prescription(text, kb)
    written = parsed.prescription
    if index == 0 or not refers_to_previous(text):
        return written, written.herbs, False
    previous, _, _ = _read_rx(case, index - 1, kb)
    before = set(previous.base_herbs())
    if before and len(set(written.base_herbs()) & before) * 2 >= len(before):
        return written, written.herbs, False
    return apply_to_previous(previous, parsed).model_copy(update={"raw": text}), written.herbs, True


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
    principle = gold.treatment_principle or "、".join(dict.fromkeys(n.treatment for n in natures)) or None
    explanation = _explain(kb, rx_text, herbs, parsed.formula_name, gold.syndrome, relative)
    explanation += _signature(master, parsed)
    findings = []
    if visit.chief_complaint:
        findings.append(f"患者以“{visit.chief_complaint.rstrip('。')}”为主诉")
    if visit_index > 0:
        findings.append("此为复诊，需结合前诊用药后的变化")
    rules = load_composer_rules()
    signs = (("舌象", visit.tongue, rules.tongue_signs), ("脉象", visit.pulse, rules.pulse_signs))
    for label, text, table in signs:
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


__all__ = ["ComposeError", "assign_roles", "compose_answer", "compose_cases"]
