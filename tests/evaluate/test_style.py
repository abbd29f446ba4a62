"""Style fidelity: attribution and confusion matrices, JS divergence, signature herbs; values by hand."""

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from shicheng.domain import Answer, Case, Visit
from shicheng.evaluate.style import (
    attribute,
    attribution_matrix,
    case_prescriptions,
    herb_distribution,
    js_divergence,
    signature_herb_scores,
    signature_herbs,
    signature_recall,
    style_fidelity,
    switch_matrix,
)
from shicheng.metrics import UNATTRIBUTED, MasterStyleModel

A_RX = "黄芪30g 党参15g 白术10g"
B_RX = "柴胡10g 黄芩10g 半夏9g"
C_RX = "桃仁10g 红花6g 当归10g"


@pytest.fixture(scope="module")
def model() -> MasterStyleModel:
    train = []
    for i in range(4):
        train.append(("a", Answer(syndrome="脾气虚证", prescription=f"{A_RX} 炙甘草{i + 3}g")))
        train.append(("b", Answer(syndrome="少阳证", prescription=f"{B_RX} 甘草{i + 3}g")))
        train.append(("c", Answer(syndrome="血瘀证", prescription=f"{C_RX} 川芎6g")))
    return MasterStyleModel.fit(train)


def rx(text: str) -> str:
    return f"<output>\n## 处方\n{text}\n</output>"


def test_attribution_accuracy_and_confusion_matrix(model):
    pairs = [("a", rx(A_RX)), ("a", rx(B_RX)), ("b", rx("柴胡10g 黄芩10g")),
             ("b", "注意休息"),  # no feature the model knows: nobody's style, a miss
             ("c", rx("桃仁10g 红花6g"))]
    assert attribute("注意休息", model) is None
    out = attribution_matrix(pairs, model)
    # rows asked a, b, c; columns a, b, c, (none):
    # a: one answer attributed to a, one to b; b: one to b, one unattributed; c: one to c
    assert out["rows"] == ["a", "b", "c"] and out["columns"] == ["a", "b", "c", UNATTRIBUTED]
    assert out["matrix"] == [[1, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]]
    assert out["accuracy"] == pytest.approx(3 / 5) and out["n"] == 5 and out["n_unattributed"] == 1
    assert out["per_master"] == {"a": 0.5, "b": 0.5, "c": 1.0}


def test_attribution_of_a_master_unknown_to_the_model_is_a_row_that_never_hits(model):
    out = attribution_matrix([("z", rx(A_RX))], model)
    assert out["rows"] == ["a", "b", "c", "z"] and out["matrix"][-1] == [1, 0, 0, 0]
    assert out["accuracy"] == 0.0 and out["per_master"]["z"] == 0.0 and out["per_master"]["a"] is None


def test_counterfactual_switch_matrix(model):
    triples = [("a", "a", rx(A_RX)), ("b", "a", rx(B_RX)),  # asked b on a's case: switched
               ("c", "a", rx(A_RX)),  # asked c on a's case, still a's style: stayed
               ("b", "b", rx(B_RX))]
    out = switch_matrix(triples, model)
    # two answers asked as another master than the case's own: one switched, one stayed
    assert out["n_switch"] == 2 and out["switch_rate"] == 0.5 and out["stay_rate"] == 0.5
    assert out["matrix"] == [[1, 0, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0]]
    assert out["accuracy"] == pytest.approx(3 / 4)


def test_js_divergence_known_values():
    assert js_divergence({"甘草": 1, "茯苓": 1}, {"茯苓": 5, "甘草": 5}) == 0.0  # same after normalising
    assert js_divergence({"甘草": 1}, {"茯苓": 1}) == 1.0  # disjoint: 1 bit
    # p = (1, 0), q = (½, ½), m = (¾, ¼): KL(p‖m) = log2(4/3) = 0.415037,
    # KL(q‖m) = ½ log2(2/3) + ½ log2(2) = 0.207519 -> JS = (0.415037 + 0.207519)/2 = 0.311278
    assert js_divergence({"x": 1.0}, {"x": 0.5, "y": 0.5}) == pytest.approx(0.311278, abs=1e-6)
    assert js_divergence({}, {"x": 1.0}) is None
    with pytest.raises(ValueError, match="negative"):
        js_divergence({"x": -1.0}, {"x": 1.0})
    rng = np.random.default_rng(0)
    for _ in range(5):
        p, q = rng.dirichlet(np.ones(6)), rng.dirichlet(np.ones(6))
        mine = js_divergence(dict(enumerate(p)), dict(enumerate(q)))
        assert mine == pytest.approx(jensenshannon(p, q, base=2) ** 2)  # scipy gives the distance (√JS)


def test_herb_distribution_counts_base_herbs_once_per_answer():
    # answer 1: 甘草 茯苓 (炙甘草 and 生甘草 are one herb); answer 2: 甘草 茯苓 白术 -> 2, 2, 1 of 5 uses
    dist = herb_distribution(["炙甘草6g 生甘草3g 茯苓10g", "甘草6g 云苓15g 白术10g", ""])
    assert dist == pytest.approx({"甘草": 0.4, "茯苓": 0.4, "白术": 0.2})
    assert herb_distribution([]) == {}


def test_signature_herbs_are_the_most_over_represented():
    examples = [("a", ["黄芪", "甘草", "党参"] if i < 3 else ["黄芪", "甘草"]) for i in range(5)]
    examples += [("b", ["柴胡", "甘草"]) for _ in range(5)]
    # a: 5 prescriptions; 黄芪 in 5 (others 0 of 5), 党参 in 3 (others 0), 甘草 in 5 (others 5 of 5).
    # z = [ln((y+½)/(n−y+½)) − ln((y'+½)/(n'−y'+½))] / √(Σ 1/cell), cells smoothed by ½:
    # 黄芪: (ln 11 − ln(1/11)) / √(2/5.5 + 2/0.5) = 4.795791 / 2.088932 = 2.295803
    # 党参: (ln(3.5/2.5) − ln(0.5/5.5)) / √(1/3.5 + 1/2.5 + 1/0.5 + 1/5.5) = 2.734367 / 1.693379 = 1.614739
    # 甘草: equal odds in both -> 0, not over-represented
    scores = signature_herb_scores(examples, top_k=8)
    assert [h for h, _ in scores["a"]] == ["黄芪", "党参"]
    assert scores["a"][0][1] == pytest.approx(2.295803, abs=1e-5)
    assert scores["a"][1][1] == pytest.approx(1.614739, abs=1e-5)
    assert signature_herbs(examples, top_k=1) == {"a": ["黄芪"], "b": ["柴胡"]}
    with pytest.raises(ValueError, match="at least two masters"):
        signature_herbs([("a", ["黄芪"])])


def test_signature_herbs_from_training_cases():
    cases = [Case(id=f"a{i}", master_id="a", visits=[Visit(answer=Answer(prescription=f"{A_RX} 甘草6g"))])
             for i in range(3)]
    cases += [Case(id=f"b{i}", master_id="b", visits=[Visit(answer=Answer(prescription=f"{B_RX} 甘草6g"))])
              for i in range(3)]
    cases.append(Case(id="general", visits=[Visit(answer=Answer(prescription="桃仁10g"))]))  # no master
    pairs = case_prescriptions(cases)
    assert len(pairs) == 6
    sig = signature_herbs(pairs, top_k=8)
    assert sorted(sig["a"]) == sorted(["黄芪", "党参", "白术"]) and "甘草" not in sig["a"]


def test_signature_recall():
    # signature 黄芪 党参; the answer prescribes 炙黄芪 (= 黄芪) and 白术 -> 1 of 2
    assert signature_recall("炙黄芪30g 白术10g", ["黄芪", "党参"]) == 0.5
    assert signature_recall(rx(A_RX), ["黄芪", "党参"]) == 1.0
    assert signature_recall(A_RX, []) is None


def test_style_fidelity_per_system(model):
    def row(system, case_id, master, output, task="prescription"):
        return {"system": system, "case_id": case_id, "visit": 1, "master": master, "task": task,
                "output": output}

    predictions = [
        row("gold", "c1", "a", rx(A_RX)), row("gold", "c2", "b", rx(B_RX)),
        row("s5", "c1", "a", rx("黄芪30g 党参15g")), row("s5", "c2", "b", rx(B_RX)),
        row("s5", "c1", "b", rx("柴胡10g 黄芩10g")),  # counterfactual, switched to b
        row("s5", "c2", "a", rx(B_RX)),  # counterfactual, stayed with b
        row("s5", "c1", "a", "多饮水", task="advice"),  # advice carries no style: not counted
    ]
    out = style_fidelity(predictions, model, {"c1": "a", "c2": "b"},
                         gold_by_master={"a": [A_RX], "b": [B_RX]},
                         signatures={"a": ["黄芪", "党参"], "b": ["柴胡", "半夏"]})
    gold, s5 = out["gold"], out["s5"]
    assert gold["attribution"]["accuracy"] == 1.0 and gold["counterfactual"] is None
    assert gold["herb_js"] == {"a": 0.0, "b": 0.0}
    assert s5["n"] == 4 and s5["attribution"]["accuracy"] == 1.0
    assert s5["counterfactual"]["switch_rate"] == 0.5 and s5["counterfactual"]["stay_rate"] == 0.5
    # a: gold (⅓ 黄芪, ⅓ 党参, ⅓ 白术) vs generated (½ 黄芪, ½ 党参); m = (5/12, 5/12, 1/6)
    # KL(gold‖m) = ⅔ log2(0.8) + ⅓ log2(2) = 0.118714; KL(gen‖m) = log2(1.2) = 0.263034 -> JS 0.190874
    assert s5["herb_js"]["a"] == pytest.approx(0.190874, abs=1e-6)
    assert s5["herb_js"]["b"] == 0.0
    # counterfactual: asked a, prescribed b's herbs (disjoint from a's gold) -> 1; asked b: 柴胡 黄芩 -> 0.190874
    assert s5["herb_js_counterfactual"]["a"] == 1.0
    assert s5["herb_js_counterfactual"]["b"] == pytest.approx(0.190874, abs=1e-6)
    assert s5["signature_recall"] == {"a": 1.0, "b": 1.0}
    assert s5["signature_recall_counterfactual"] == {"a": 0.0, "b": 0.5}
    assert s5["n_prescribing_counterfactual"] == {"a": 1, "b": 1}
    with pytest.raises(ValueError, match="case 'c9' has no known master"):
        style_fidelity([row("s5", "c9", "a", rx(A_RX))], model, {"c1": "a"})
