"""Rewards never crash GRPO: a parser that raises, or any text a small model may write, scores, never raises."""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shicheng.domain import Answer
from shicheng.knowledge import load_knowledge
from shicheng.metrics import MasterStyleModel, findings, reading
from shicheng.template import render_answer
from shicheng.train.rewards import (
    combined_reward,
    format_reward,
    herb_f1_reward,
    master_style_reward,
    safety_reward,
    syndrome_reward,
)

GOLD = Answer(reasoning="脾肾阳虚之象。", etiology_pathogenesis="阳虚寒凝。", syndrome="脾肾阳虚证",
              treatment_principle="温补脾肾", prescription="制附子10g 干姜10g 党参15g 炒白术12g 炙甘草6g",
              prescription_explanation="附子为君。", modifications="腹胀加木香。", advice="忌生冷。")
ROW = {"gold": GOLD.model_dump(exclude_none=True), "gold_herbs": ["附子", "干姜", "党参", "白术", "甘草"],
       "patient": {"sex": "female", "age": 30, "pregnant": True}, "master_id": "a", "task": "full_chain"}


def _style() -> MasterStyleModel:
    return MasterStyleModel.fit([("a", GOLD), ("b", GOLD.model_copy(update={"prescription": "黄连6g 黄芩10g",
                                                                             "syndrome": "湿热"}))], sharpness=4.0)


def _columns(n: int) -> dict:
    return {k: [v] * n for k, v in ROW.items()}


@pytest.fixture
def broken_parser(monkeypatch):
    """The prescription parser raising as the real one did on "柴胡10 白芍10 生" (IndexError)."""
    def boom(text, kb=None):
        raise IndexError("string index out of range")

    monkeypatch.setattr(reading, "parse_prescription", boom)
    reading.read_prescription.cache_clear()
    yield
    reading.read_prescription.cache_clear()


def test_a_raising_prescription_parser_scores_the_completion_as_unreadable(broken_parser, caplog):
    text = render_answer(GOLD.model_copy(update={"prescription": "柴胡10 白芍10 生"}))
    completions = [text, [{"role": "assistant", "content": text}]]
    with caplog.at_level(logging.WARNING, logger="shicheng.metrics"):
        herb = herb_f1_reward(None, completions, **_columns(2))
        safety = safety_reward(None, completions, **_columns(2))
        style = master_style_reward(_style())(None, completions, **_columns(2))
        total = combined_reward(style_model=_style())(None, completions, **_columns(2))
    assert herb == [0.0, 0.0]  # no herb could be read: as an answer whose 处方 is unreadable
    assert safety == [0.0, 0.0]  # a prescription that cannot be checked is not called safe
    assert all(0.0 <= s <= 1.0 for s in style)
    assert all(0.0 <= t < 1.0 for t in total)
    # format and syndrome do not parse the prescription: the rest of the answer still counts.
    assert format_reward(None, completions, **_columns(2))[0] > 0.9
    assert syndrome_reward(None, completions, **_columns(2)) == [1.0, 1.0]
    failures = [r.getMessage() for r in caplog.records if "柴胡10 白芍10 生" in r.getMessage()]
    assert len(failures) == 1  # logged once for the one distinct text, not once per reward and completion
    assert "prescription parser failed (IndexError" in failures[0]


def test_a_raising_answer_parser_gives_the_unreadable_answer_score(monkeypatch, caplog):
    def boom(text):
        raise ValueError("parser bug")

    monkeypatch.setattr(reading, "parse_answer", boom)
    reading.read_answer.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="shicheng.metrics"):
            text = render_answer(GOLD)
            assert format_reward(None, [text], task=["full_chain"]) == [0.0]
            assert herb_f1_reward(None, [text], **_columns(1)) == [0.0]
            assert safety_reward(None, [text], **_columns(1)) == [1.0]  # as any answer without a 处方 section
        assert any("answer parser failed (ValueError" in r.getMessage() for r in caplog.records)
    finally:
        reading.read_answer.cache_clear()


def test_a_raising_safety_check_scores_zero(monkeypatch):
    def boom(rx, patient=None, kb=None):
        raise KeyError("rule")

    monkeypatch.setattr(findings, "check_safety", boom)
    assert safety_reward(None, [render_answer(GOLD)], **_columns(1)) == [0.0]


_CHARS = sorted({c for row in load_knowledge().herbs.values() for c in row.name} | set("0123456789.克gG钱两片枚"))
_PIECES = st.sampled_from(["<think>", "</think>", "<output>", "</output>", "## 处方\n", "## 辨证\n", "处方：", "，", "。",
                           "、", " ", "\n", "生", "炒", "炙", "酒", "蜜", "盐", "南", "川", "各", "上方去", "加"])
_TEXT = st.lists(st.one_of(st.text(alphabet=_CHARS, min_size=1, max_size=6), _PIECES), max_size=40).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TEXT)
def test_every_reward_scores_any_text_without_raising(text):
    combined = combined_reward(style_model=_style())
    for fn in (format_reward, herb_f1_reward, syndrome_reward, safety_reward, master_style_reward(_style()),
               combined):
        for score in fn(None, [text], **_columns(1)):
            assert score is None or 0.0 <= score <= 1.0, (fn, text, score)
