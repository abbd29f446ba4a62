"""GRPO rewards on real-looking completions, scored through the real parser, lexicon and safety rules."""

from __future__ import annotations

import math
import random

import pytest

from shicheng.domain import Answer, Task
from shicheng.metrics import (
    SHARPNESS_GRID,
    MasterStyleModel,
    attribution,
    completion_herbs,
    format_score,
    herb_f1,
    syndrome_f1,
)
from shicheng.template import render_answer
from shicheng.train.rewards import (
    combined_reward,
    format_reward,
    herb_f1_reward,
    master_style_reward,
    reward_functions,
    safety_reward,
    syndrome_reward,
    zero_spread_fraction,
)

GOLD = Answer(
    reasoning="患者胃脘冷痛，喜温喜按，舌淡胖苔白滑，脉沉细，为脾肾阳虚、寒凝中焦之象。",
    etiology_pathogenesis="素体阳虚，复因饮食生冷，寒邪内生，中焦失于温煦，气机凝滞而痛。",
    syndrome="脾肾阳虚，寒凝中焦证。",
    treatment_principle="温补脾肾，散寒止痛。",
    prescription="附子理中汤加减。制附子10g(先煎) 干姜10g 党参15g 炒白术12g 炙甘草6g 茯苓15g，7剂，水煎服，日一剂。",
    prescription_explanation="附子、干姜温阳散寒为君；党参、白术益气健脾为臣；茯苓渗湿为佐；炙甘草调和诸药为使。",
    modifications="若腹胀加木香6g、砂仁6g；若泛酸加海螵蛸15g。",
    advice="忌食生冷，注意腹部保暖，七日后复诊。",
)
GOLD_HERBS = ["附子", "干姜", "党参", "白术", "甘草", "茯苓"]
PATIENT = {"sex": "male", "age": 45, "pregnant": False}
PERFECT = render_answer(GOLD)


def row(n: int = 1, **extra) -> dict:
    columns = {"gold": GOLD.model_dump(), "gold_herbs": GOLD_HERBS, "patient": PATIENT, "master_id": "li",
               "task": "full_chain", **extra}
    return {k: [v] * n for k, v in columns.items()}


def one(reward, completion, **extra) -> float | None:
    return reward(prompts=[[{"role": "user", "content": "…"}]], completions=[completion], **row(**extra))[0]


def with_prescription(text: str) -> str:
    return render_answer(GOLD.model_copy(update={"prescription": text}))


def test_perfect_gold_answer_scores_one_on_every_correctness_reward():
    assert one(format_reward, PERFECT) == pytest.approx(1.0)
    assert one(herb_f1_reward, PERFECT) == pytest.approx(1.0)
    assert one(syndrome_reward, PERFECT) == pytest.approx(1.0)
    assert one(safety_reward, PERFECT) == pytest.approx(1.0)


def test_conversational_completions_score_like_strings():
    chat = [{"role": "assistant", "content": PERFECT}]
    parts = [{"role": "assistant", "content": [{"type": "text", "text": PERFECT}]}]
    for reward in (format_reward, herb_f1_reward, syndrome_reward, safety_reward):
        assert one(reward, chat) == one(reward, PERFECT) == one(reward, parts)


def test_format_gives_partial_credit_for_missing_sections_and_tags():
    no_advice_no_rx = render_answer(GOLD.model_copy(update={"advice": None, "prescription": None}))
    assert format_score(no_advice_no_rx) == pytest.approx(0.4 + 0.5 * 5 / 7 + 0.1)
    unclosed = PERFECT.replace("</output>", "")
    assert format_score(unclosed) == pytest.approx(0.4 * 4 / 5 + 0.5 + 0.1)
    trailing = PERFECT + "\n以上仅供参考。"
    assert format_score(trailing) == pytest.approx(0.9)
    assert format_score("胃痛，建议服理中汤。") == 0.0
    assert format_score("") == 0.0


def test_format_requires_only_the_sections_the_task_asks_for():
    syndrome_only = render_answer(GOLD, sections=("syndrome",))
    assert format_score(syndrome_only, Task.syndrome) == pytest.approx(1.0)
    assert format_score(syndrome_only, "full_chain") < 0.7


def test_herb_f1_exact_values():
    assert herb_f1(["附子", "干姜", "党参", "白术"], GOLD_HERBS) == pytest.approx(0.8)  # P 1, R 4/6
    assert herb_f1(["附子", "干姜", "黄芪"], ["附子", "干姜", "党参", "白术"]) == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert herb_f1([], GOLD_HERBS) == 0.0
    # Aliases and processed forms count as their base herb; doses and order are ignored.
    text = with_prescription("附片9g 干姜6g 党参20g 麸炒白术10g 甘草3g 黄芪30g")
    assert set(completion_herbs(text)) == {"附子", "干姜", "党参", "白术", "甘草", "黄芪"}
    assert one(herb_f1_reward, text) == pytest.approx(2 * (5 / 6) * (5 / 6) / (5 / 6 + 5 / 6))


def test_herb_f1_is_not_applicable_when_the_task_asks_for_no_prescription():
    assert one(herb_f1_reward, PERFECT, task="syndrome") is None
    assert one(herb_f1_reward, PERFECT, task="prescription") == pytest.approx(1.0)
    # Without gold_herbs the gold prescription is parsed instead.
    result = herb_f1_reward(prompts=["…"], completions=[PERFECT], gold=[GOLD.model_dump()])
    assert result == [pytest.approx(1.0)]


def test_syndrome_agreement_by_character_bigrams():
    assert syndrome_f1("辨证：脾肾阳虚证，寒凝中焦。", "脾肾阳虚，寒凝中焦证。") == pytest.approx(1.0)
    partial = syndrome_f1("脾阳虚", "脾肾阳虚")  # {脾阳, 阳虚} vs {脾肾, 肾阳, 阳虚}
    assert partial == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert syndrome_f1("肝阳上亢", "脾肾阳虚") == 0.0
    wrong = render_answer(GOLD.model_copy(update={"syndrome": "肝气郁结证"}))
    assert one(syndrome_reward, wrong) == 0.0
    assert one(syndrome_reward, PERFECT, task="advice") is None


def test_safety_penalises_incompatible_pairs_pregnancy_and_doses():
    # 甘草+海藻, with 海藻 inside its ChP range (6–12 g) so that only the pair is penalised.
    assert one(safety_reward, with_prescription(GOLD.prescription + " 海藻10g")) == pytest.approx(0.4)
    assert one(safety_reward, with_prescription(GOLD.prescription + " 海藻15g")) == pytest.approx(0.3)  # + dose
    pregnant = {"sex": "female", "age": 30, "pregnant": True}
    rx = with_prescription("党参15g 白术12g 茯苓15g 三棱10g")  # 三棱: 妊娠禁用
    assert one(safety_reward, rx, patient=pregnant) == pytest.approx(0.4)
    assert one(safety_reward, rx) == pytest.approx(1.0)
    overdose = with_prescription("制附子30g(先煎) 干姜10g 党参15g")  # 附子 3–15 g
    assert one(safety_reward, overdose) == pytest.approx(0.9)
    both = with_prescription("甘草6g 海藻15g 甘遂3g 三棱10g")
    assert one(safety_reward, both, patient=pregnant) == 0.0
    assert one(safety_reward, "<think>x</think><output>## 辨证\n脾虚</output>") == 1.0


# Synthetic masters: each draws half its herbs from its own signature set and half from a shared pool, and now
# and then borrows a colleague's herb, like real physicians of neighbouring schools.
MASTER_HERBS = {
    "li": ["黄芪", "升麻", "柴胡", "山药", "葛根", "太子参"],
    "wang": ["香附", "郁金", "枳壳", "佛手", "延胡索", "川楝子"],
    "zhao": ["附子", "干姜", "肉桂", "巴戟天", "淫羊藿", "补骨脂"],
}
SHARED_HERBS = ["甘草", "茯苓", "白术", "当归", "陈皮", "白芍", "川芎", "党参", "大枣", "生姜"]
MASTER_TERMS = {
    "li": (["脾胃气虚", "中气下陷", "脾虚湿困"], ["补中益气", "健脾升阳", "益气健脾"]),
    "wang": (["肝气郁结", "肝郁气滞", "肝胃不和"], ["疏肝理气", "解郁止痛", "疏肝和胃"]),
    "zhao": (["肾阳亏虚", "命门火衰", "脾肾阳虚"], ["温补肾阳", "填精益髓", "温阳散寒"]),
}


def synthetic_answer(master: str, rng: random.Random) -> Answer:
    herbs = rng.sample(MASTER_HERBS[master], 3) + rng.sample(SHARED_HERBS, 4)
    other = rng.choice([m for m in MASTER_HERBS if m != master])
    if rng.random() < 0.3:
        herbs.append(rng.choice(MASTER_HERBS[other]))
    syndromes, principles = MASTER_TERMS[master if rng.random() < 0.8 else other]
    return Answer(syndrome=rng.choice(syndromes) + "证", treatment_principle=rng.choice(principles) + "。",
                  prescription=" ".join(f"{h}{rng.choice([6, 9, 10, 12, 15])}g" for h in herbs) + "，7剂，水煎服。")


def test_master_style_model_attributes_synthetic_masters(tmp_path):
    rng = random.Random(7)
    train = [(m, synthetic_answer(m, rng)) for _ in range(20) for m in MASTER_HERBS]
    model = MasterStyleModel.fit(train)
    assert model.sharpness < max(SHARPNESS_GRID)  # calibrated: overlapping styles give graded probabilities
    tests = {m: [render_answer(synthetic_answer(m, rng)) for _ in range(10)] for m in MASTER_HERBS}
    result = attribution(tests, model)
    assert result["accuracy"] >= 0.9 and result["n"] == 30
    assert sum(result["confusion"]["li"].values()) == 10 and result["per_master"]["li"] >= 0.8
    text = render_answer(Answer(syndrome="肝气郁结证", treatment_principle="疏肝理气。",
                                prescription="香附10g 郁金10g 枳壳10g 白芍12g 甘草6g 当归10g"))
    probs = model.probabilities(text)
    assert math.isclose(sum(probs.values()), 1.0)
    assert probs["wang"] > 0.9 and model.predict(text) == "wang"
    # A completion asking for one master but written in another's style is rewarded low.
    reward = master_style_reward(model)
    scores = reward(prompts=["…"] * 2, completions=[text, [{"role": "assistant", "content": text}]],
                    master_id=["wang", "zhao"])
    assert scores[0] == pytest.approx(probs["wang"]) and scores[1] < 0.25
    assert reward(prompts=["…"], completions=[text], master_id=[None]) == [None]
    assert model.score("今天天气很好", "li") == pytest.approx(1 / 3)  # no known feature: uniform
    path = tmp_path / "style.json"
    model.save(path)
    again = MasterStyleModel.load(path)
    assert again.probabilities(text) == pytest.approx(probs)


def test_style_model_fits_stage5_rows_once_per_case():
    rng = random.Random(3)
    rows = []
    for m in MASTER_HERBS:
        for i in range(6):
            gold = synthetic_answer(m, rng).model_dump()
            rows += [{"master_id": m, "case_id": f"{m}-{i}", "gold": gold, "task": t} for t in ("syndrome", "advice")]
    model = MasterStyleModel.fit_rows(rows)
    twice = MasterStyleModel.fit([(r["master_id"], r["gold"]) for r in rows])
    assert model.masters == ["li", "wang", "zhao"]
    assert MasterStyleModel.fit(rows).counts == model.counts  # rows given to fit go to fit_rows
    assert sum(model.counts["li"].values()) * 2 == pytest.approx(sum(twice.counts["li"].values()))
    with pytest.raises(ValueError, match="two masters"):
        MasterStyleModel.fit([("li", GOLD)])


def test_combined_reward_and_named_functions():
    rng = random.Random(5)
    model = MasterStyleModel.fit([(m, synthetic_answer(m, rng)) for m in MASTER_HERBS for _ in range(5)])
    combined = combined_reward(None, model)
    bad = with_prescription("甘草6g 海藻15g")
    scores = combined(prompts=["…"] * 2, completions=[PERFECT, bad], **row(2))
    assert 0.0 <= scores[1] < scores[0] <= 1.0
    funcs, weights = reward_functions({"format": 1.0, "safety": 2.0})
    assert [f.__name__ for f in funcs] == ["format_reward", "safety_reward"] and weights == [1.0, 2.0]
    funcs, _ = reward_functions(None, model)
    assert "master_style_reward" in [f.__name__ for f in funcs]
    with pytest.raises(ValueError, match="MasterStyleModel"):
        reward_functions({"master_style": 1.0})
    with pytest.raises(ValueError, match="unknown rewards"):
        reward_functions({"fluency": 1.0})
    only_format = combined_reward({"format": 1.0, "herb_f1": 1.0})
    # herb_f1 does not apply to the syndrome task: the weight renormalises onto format alone.
    assert only_format(prompts=["…"], completions=[PERFECT], **row(task="syndrome")) == [pytest.approx(1.0)]


def test_zero_spread_fraction():
    assert zero_spread_fraction([1, 1, 0.5, 0.7, 0, 0], 2) == pytest.approx(2 / 3)
    assert zero_spread_fraction([0.2, None, 0.2, float("nan")], 2) == 1.0
    assert zero_spread_fraction([], 4) == 0.0
    with pytest.raises(ValueError):
        zero_spread_fraction([1, 2, 3], 2)
