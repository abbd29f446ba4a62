"""Offline composer: every section written, the master's answer untouched, the same text every time."""

from shicheng.curate.compose import assign_roles, compose_answer, compose_cases
from shicheng.curate.ledger import Ledger
from shicheng.domain import REQUIRED_OUTPUT_KEYS, Answer, Case, Master, Patient, Visit
from shicheng.prescription import parse_prescription
from shicheng.template import parse_answer, render_answer

SYNDROME = "脾肾阳虚，寒凝中焦"
PRINCIPLE = "温补脾肾，散寒止痛"
RX = "附子理中汤加减。制附子15g(先煎) 干姜10g 党参15g 炒白术12g 炙甘草6g，7剂，水煎服，日一剂。"
MASTER = Master(id="li", name="李守阳", school="温阳学派", signature_herbs=["附子"])


def make_case(rx: str = RX, pregnant: bool = False, complaint: str = "胃脘冷痛反复发作3年，伴恶心欲呕",
              **answer) -> Case:
    first = Visit(index=1, label="初诊", chief_complaint=complaint, tongue="舌淡胖，苔白滑", pulse="脉沉细",
                  commentary="此案重在温阳。",
                  answer=Answer(syndrome=SYNDROME, treatment_principle=PRINCIPLE, prescription=rx, **answer))
    return Case(id="FY-0001", master_id="li", disease="胃脘痛", visits=[first], source="cases.txt:1",
                patient=Patient(sex="female" if pregnant else "male", age=30, pregnant=pregnant))


def test_all_sections_present_and_parse_back():
    answer = compose_answer(make_case(), 0, MASTER)
    assert not answer.missing(("reasoning", *REQUIRED_OUTPUT_KEYS))
    parsed = parse_answer(render_answer(answer))
    assert parsed.well_formed
    assert parsed.answer.syndrome == SYNDROME and parsed.answer.prescription == RX
    assert parsed.answer.treatment_principle == PRINCIPLE
    assert answer.master_theory == "此案重在温阳。"


def test_reasoning_walks_from_findings_to_prescription():
    reasoning = compose_answer(make_case(), 0, None).reasoning
    order = [reasoning.index(x) for x in ("胃脘冷痛", "舌淡胖", "舌淡主阳气不足", "脉沉细", "沉主里", "病位在",
                                          "故辨为脾肾阳虚", "治当温补脾肾", "为君")]
    assert order == sorted(order)


def test_explanation_gives_each_herb_a_role_and_category():
    explanation = compose_answer(make_case(), 0, MASTER).prescription_explanation
    assert "本方以附子理中丸为基础" in explanation
    assert "制附子（温里药）为君" in explanation  # listed first and the heaviest (tied with 党参)
    assert "干姜（温里药）、党参（补虚药）为臣" in explanation  # same category as 君 first, then order
    assert "炙甘草（补虚药）为使，调和诸药" in explanation
    for herb in ("干姜", "炒白术"):
        assert herb in explanation
    assert "制附子为李守阳常用药" in explanation


def roles_of(text: str) -> dict[str, list[str]]:
    return {role: [h.base for h in group] for role, group in assign_roles(parse_prescription(text).herbs).items()}


def test_roles_first_herb_or_clearly_heaviest():
    roles = roles_of("柴胡10g 白芍10g 枳实10g 甘草6g 大枣3枚")
    assert roles["君"] == ["柴胡"] and roles["使"] == ["甘草", "大枣"]
    assert len(roles["臣"]) <= 2 and set(roles["臣"] + roles["佐"]) == {"白芍", "枳实"}
    assert roles_of("当归6g 黄芪30g")["君"] == ["黄芪"]


def test_prescription_and_syndrome_never_change():
    case = make_case()
    answer = compose_answer(case, 0, MASTER)
    assert (answer.syndrome, answer.treatment_principle, answer.prescription) == (SYNDROME, PRINCIPLE, RX)
    assert case.visits[0].answer.reasoning is None  # the input case is not modified


def test_masters_own_sections_are_kept():
    answer = compose_answer(make_case(prescription_explanation="名医方解。", advice="名医医嘱。"), 0, None)
    assert answer.prescription_explanation == "名医方解。" and answer.advice == "名医医嘱。"


def test_deterministic():
    assert compose_answer(make_case(), 0, MASTER) == compose_answer(make_case(), 0, MASTER)


def test_modifications_skip_unsafe_suggestions():
    modifications = compose_answer(make_case(), 0, None).modifications
    # 恶心欲呕 would suggest 姜半夏, but 半夏 with 附子 is 十八反: the suggestion is dropped.
    assert "半夏" not in modifications
    assert "制附子、干姜宜减量" in modifications
    safe = compose_answer(make_case(rx="党参15g 白术12g 茯苓12g 炙甘草6g"), 0, None).modifications
    assert "若恶心欲呕，加姜半夏、竹茹以和胃降逆" in safe


def test_pregnancy_advice_names_the_herbs():
    advice = compose_answer(make_case(pregnant=True), 0, None).advice
    assert "妊娠" in advice and "附子为孕妇慎用药" in advice
    assert advice.count("忌食生冷") == 1  # 阳虚 and 寒 advise the same, said once
    assert "7剂后复诊" in advice
    assert "妊娠" not in compose_answer(make_case(), 0, None).advice


def test_follow_up_that_modifies_the_previous_prescription():
    case = make_case()
    case.visits.append(Visit(index=2, label="二诊", chief_complaint="胃痛减轻",
                             answer=Answer(syndrome=SYNDROME, prescription="上方去干姜，加黄芪20g。")))
    answer = compose_answer(case, 1, None)
    assert answer.prescription == "上方去干姜，加黄芪20g。"
    explanation = answer.prescription_explanation
    assert "去干姜" in explanation and "加黄芪（补虚药）" in explanation and "加干姜" not in explanation
    assert "复诊" in answer.reasoning
    # Modifications and advice read the prescription in effect: the first visit's herbs minus 干姜 plus 黄芪.
    assert "制附子宜减量" in answer.modifications and "干姜" not in answer.modifications


def test_follow_up_pregnancy_advice_sees_the_inherited_herbs():
    case = make_case(pregnant=True)
    case.visits.append(Visit(index=2, label="二诊", answer=Answer(syndrome=SYNDROME, prescription="上方续服7剂。")))
    answer = compose_answer(case, 1, None)
    assert "原方续服" in answer.prescription_explanation
    assert "附子为孕妇慎用药" in answer.advice


def test_compose_cases_counts_and_rejects():
    unreadable = make_case(rx="自拟方，详见原件")
    unreadable = unreadable.model_copy(update={"id": "FY-0002", "source": "cases.txt:40"})
    done = make_case(reasoning="已有推理")
    ledger = Ledger()
    out = compose_cases([make_case(), unreadable, done], {"li": MASTER}, ledger)
    ledger.check()
    assert [c.id for c in out] == ["FY-0001", "FY-0001"]
    assert out[0].visits[0].answer.reasoning and out[1] == done
    (reject,) = ledger.rejects
    assert reject.step == "compose" and reject.source == "cases.txt:40"
    assert reject.reason.startswith("compose failed:") and "no recognisable herb" in reject.reason
