"""Tokenizers: the real Qwen2.5 vocabulary offline, TCM term mining and extension, the demo BPE, chat tokens."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
from trl.chat_template_utils import get_training_chat_template, is_chat_template_stop_token_trained

from shicheng.knowledge import load_knowledge
from shicheng.train.tokenizer import (
    ENDOFTEXT,
    IM_END,
    IM_START,
    TAG_TOKENS,
    compression,
    extend_tokenizer,
    knowledge_terms,
    load_qwen25_vocab_tokenizer,
    mine_terms,
    train_demo_tokenizer,
)

# Mining corpus: case records and a textbook passage. The held-out text below is other cases, other wording.
MINING = [
    "医案一：患者男，52岁。主诉：胃脘隐痛反复发作三年，加重一周。现病史：患者三年前因饮食不节出现胃脘隐痛，喜温喜按，"
    "空腹痛甚，得食痛减，泛吐清水，神疲乏力，手足不温，大便溏薄。舌淡胖，边有齿痕，苔白滑，脉沉细无力。辨证：脾胃虚寒证。"
    "病机：脾胃阳气不足，中焦虚寒，运化失司，胃络失于温养。治法：温中健脾，和胃止痛。处方：黄芪建中汤合理中汤加减。"
    "黄芪30g 桂枝10g 白芍20g 炙甘草6g 干姜10g 党参15g 炒白术12g 茯苓15g 陈皮10g 木香6g 砂仁6g(后下) 大枣5枚，"
    "7剂，水煎服，日一剂。方解：方中黄芪、党参益气健脾为君；桂枝、干姜温中散寒为臣；白芍缓急止痛，白术、茯苓健脾渗湿，"
    "陈皮、木香、砂仁理气和胃为佐；炙甘草调和诸药为使。二诊：服药后胃脘疼痛明显减轻，仍感乏力，大便成形。舌淡，苔薄白，"
    "脉沉细。守上方加山药15g，续服14剂。按语：本案脾胃虚寒，治以温中健脾，方证相应，故获良效。",
    "医案二：患者女，38岁。主诉：失眠多梦半年。现病史：入睡困难，多梦易醒，心悸健忘，神疲食少，面色萎黄，月经量少色淡。"
    "舌淡，苔薄白，脉细弱。辨证：心脾两虚证。病机：思虑过度，劳伤心脾，气血生化不足，心神失养。治法：益气补血，健脾养心安神。"
    "处方：归脾汤加减。黄芪20g 党参15g 炒白术12g 当归10g 茯神15g 炒酸枣仁30g 远志6g 龙眼肉10g 木香6g 炙甘草6g "
    "夜交藤30g 合欢皮15g，7剂，水煎服，日一剂。医嘱：调畅情志，睡前勿饮浓茶咖啡，饮食宜清淡。二诊：服药后睡眠改善，"
    "每晚可睡五小时，心悸减轻。舌淡红，苔薄白，脉细。上方加五味子6g，续服14剂。",
    "医案三：患者男，45岁。主诉：头晕头痛两月。现病史：头晕胀痛，面红目赤，急躁易怒，口苦口干，失眠多梦，腰膝酸软。"
    "舌红，苔薄黄，脉弦细数。辨证：肝阳上亢证，兼肝肾阴虚。病机：肝肾阴虚，水不涵木，肝阳偏亢，上扰清窍。"
    "治法：平肝潜阳，滋养肝肾。处方：天麻钩藤饮加减。天麻10g 钩藤15g(后下) 石决明30g(先煎) 栀子10g 黄芩10g "
    "川牛膝15g 杜仲15g 桑寄生15g 益母草15g 夜交藤30g 茯神15g 白芍15g，7剂，水煎服，日一剂。医嘱：低盐饮食，戒烟限酒，"
    "保持情绪稳定。二诊：头晕头痛减轻，仍口干，舌红少苔，脉弦细。上方加生地黄15g、麦冬12g，续服7剂。",
    "医案四：患者女，60岁。主诉：咳嗽咳痰一月。现病史：咳嗽痰多，色白而黏，胸闷脘痞，纳呆，神疲乏力，大便溏。舌淡胖，"
    "苔白腻，脉濡滑。辨证：痰湿蕴肺证，兼脾虚。病机：脾失健运，聚湿生痰，上渍于肺，肺失宣降。治法：燥湿化痰，健脾理气。"
    "处方：二陈汤合三子养亲汤加减。法半夏10g 陈皮10g 茯苓15g 炙甘草6g 紫苏子10g 白芥子6g 莱菔子10g 苦杏仁10g "
    "厚朴10g 炒白术12g 党参15g，7剂，水煎服，日一剂。医嘱：忌食生冷油腻，注意保暖。二诊：咳嗽减轻，痰量减少，胸闷改善。"
    "舌淡，苔薄白腻，脉滑。守方续服7剂。",
    "医案五：患者男，35岁。主诉：胁肋胀痛一月。现病史：胁肋胀痛，走窜不定，情志不舒则加重，嗳气频作，胸闷善太息，纳差。"
    "舌淡红，苔薄白，脉弦。辨证：肝气郁结证。病机：情志不遂，肝失疏泄，气机郁滞，经脉不利。治法：疏肝理气，解郁止痛。"
    "处方：柴胡疏肝散加减。柴胡10g 白芍15g 枳壳10g 炙甘草6g 川芎10g 香附10g 陈皮10g 郁金10g 延胡索10g 川楝子10g，"
    "7剂，水煎服，日一剂。医嘱：调畅情志，适当运动。二诊：胁痛减轻，嗳气减少，舌淡红，苔薄白，脉弦。上方去川楝子，"
    "加佛手10g，续服7剂。",
    "医案六：患者女，28岁。主诉：月经后期伴痛经一年。现病史：经行小腹冷痛，得热痛减，经色暗有血块，畏寒肢冷，面色青白。"
    "舌暗，苔白，脉沉紧。辨证：寒凝血瘀证。病机：寒邪客于胞宫，血为寒凝，瘀阻冲任，不通则痛。治法：温经散寒，化瘀止痛。"
    "处方：少腹逐瘀汤加减。小茴香6g 干姜6g 延胡索10g 当归10g 川芎10g 肉桂3g(后下) 赤芍10g 蒲黄10g(包煎) "
    "五灵脂10g 没药6g 乌药10g，经前7天开始服，7剂，水煎服，日一剂。医嘱：经期注意保暖，忌食生冷。二诊：本次经行腹痛"
    "明显减轻，血块减少。舌暗红，苔薄白，脉沉。守方续服，下次经前再服7剂。",
    "脾胃为后天之本，气血生化之源。脾主运化，胃主受纳，脾气主升，胃气主降。脾胃虚弱，则运化失司，气血生化不足，可见神疲乏力、"
    "食少纳呆、大便溏薄等症。治疗当以健脾益气为主，常用四君子汤、参苓白术散、补中益气汤等方。肝主疏泄，喜条达而恶抑郁。"
    "肝气郁结，则胁肋胀痛，善太息；肝郁乘脾，则腹胀便溏。治宜疏肝健脾，方用逍遥散、柴胡疏肝散、痛泻要方等。肾为先天之本，"
    "藏精，主水，主纳气。肾阳虚则畏寒肢冷，腰膝酸软，小便清长；肾阴虚则五心烦热，潮热盗汗，舌红少苔，脉细数。"
    "补肾阳用金匮肾气丸、右归丸，滋肾阴用六味地黄丸、左归丸。",
]
HELDOUT = [
    "医案甲：患者女，47岁。主诉：胃脘胀满两月。现病史：胃脘胀满，食后尤甚，嗳气不舒，神疲乏力，纳少便溏，情志不畅时加重。"
    "舌淡，边有齿痕，苔薄白，脉弦细。辨证：肝郁脾虚证。病机：肝气郁结，横逆犯脾，脾失健运，气机阻滞。治法：疏肝健脾，"
    "理气消胀。处方：逍遥散合四君子汤加减。柴胡10g 当归10g 白芍15g 炒白术12g 茯苓15g 炙甘草6g 党参15g 陈皮10g "
    "香附10g 枳壳10g 砂仁6g(后下)，7剂，水煎服，日一剂。医嘱：调畅情志，饮食有节，忌食生冷油腻。二诊：胃脘胀满减轻，"
    "嗳气减少，大便成形，舌淡红，苔薄白，脉弦。守方续服7剂。",
    "医案乙：患者男，66岁。主诉：腰膝酸软，畏寒肢冷一年。现病史：腰膝酸软，畏寒肢冷，夜尿频多，小便清长，神疲乏力，耳鸣。"
    "舌淡胖，苔白，脉沉细无力。辨证：肾阳虚证。病机：年老体衰，肾阳不足，命门火衰，温煦失职。治法：温补肾阳，填精益髓。"
    "处方：金匮肾气丸加减。熟地黄20g 山药15g 山茱萸12g 茯苓12g 泽泻10g 牡丹皮10g 肉桂3g(后下) 制附子9g(先煎) "
    "杜仲15g 菟丝子15g 益智仁10g，14剂，水煎服，日一剂。医嘱：注意保暖，节制房事，适当锻炼。",
    "医案丙：患者女，33岁。主诉：心悸失眠三月。现病史：心悸怔忡，失眠多梦，头晕目眩，面色少华，神疲乏力，纳差。舌淡，"
    "苔薄白，脉细弱。辨证：心脾两虚，气血不足证。病机：脾虚气血生化乏源，心失所养，神不守舍。治法：健脾养心，益气补血安神。"
    "处方：归脾汤加减。黄芪20g 党参15g 炒白术10g 茯神15g 炒酸枣仁20g 远志6g 当归10g 龙眼肉10g 木香6g 炙甘草6g "
    "大枣5枚，7剂，水煎服，日一剂。医嘱：调畅情志，规律作息。",
]

# A syndrome vocabulary (textbook 证候 names) passed in besides the shipped herb and formula lexicon.
SYNDROMES = [
    "脾胃虚寒", "脾胃气虚", "脾气虚", "脾阳虚", "脾虚湿困", "湿热蕴脾", "寒湿困脾", "胃阴虚", "胃热炽盛", "食滞胃脘",
    "肝气郁结", "肝郁脾虚", "肝胃不和", "肝火上炎", "肝阳上亢", "肝风内动", "肝血虚", "肝胆湿热", "肝肾阴虚",
    "心脾两虚", "心血虚", "心阴虚", "心气虚", "心阳虚", "心火亢盛", "心肾不交", "痰火扰心", "心血瘀阻", "肺气虚",
    "肺阴虚", "风寒束肺", "风热犯肺", "痰湿蕴肺", "痰热壅肺", "燥邪犯肺", "肾阳虚", "肾阴虚", "肾气不固", "肾精不足",
    "脾肾阳虚", "肺肾阴虚", "气血两虚", "气滞血瘀", "气阴两虚", "寒凝血瘀", "痰瘀互结", "阴虚火旺", "湿热下注",
    "冲任不调", "中气下陷",
]


@pytest.fixture(scope="module")
def qwen():
    return load_qwen25_vocab_tokenizer()


@pytest.fixture(scope="module")
def mined(qwen):
    return mine_terms(qwen, [*knowledge_terms(load_knowledge()), *SYNDROMES], MINING, min_freq=2, max_new=3000)


def tiny_model(vocab_size: int, tie: bool) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie)
    return Qwen2ForCausalLM(config)


def test_real_qwen25_vocabulary_matches_known_ids(qwen):
    assert len(qwen) == 151665
    assert qwen.encode("Hello world") == [9707, 1879]
    assert qwen.encode("你好") == [108386]
    assert qwen.convert_tokens_to_ids([ENDOFTEXT, IM_START, IM_END]) == [151643, 151644, 151645]
    text = "患者胃脘冷痛，舌淡胖，苔白滑，脉沉细。处方：制附子15g(先煎) 干姜10g。"
    assert qwen.decode(qwen.encode(text)) == text
    # Qwen2.5 reads TCM text at about one token per character: the room the extension works in.
    assert 900 < compression(qwen, HELDOUT) < 1100


def test_chat_template_marks_the_assistant_turn_and_its_end(qwen):
    messages = [{"role": "system", "content": "你是中医助手。"}, {"role": "user", "content": "胃痛三年。"},
                {"role": "assistant", "content": "<think>\n脾胃虚寒\n</think>\n<output>\n## 辨证\n脾胃虚寒\n</output>"}]
    text = qwen.apply_chat_template(messages, tokenize=False)
    assert text == ("<|im_start|>system\n你是中医助手。<|im_end|>\n<|im_start|>user\n胃痛三年。<|im_end|>\n"
                    f"<|im_start|>assistant\n{messages[2]['content']}<|im_end|>\n")
    assert qwen.encode(IM_END) == [151645] and qwen.eos_token == IM_END and qwen.pad_token == ENDOFTEXT
    out = qwen.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    trained = [i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert qwen.decode(trained) == messages[2]["content"] + IM_END
    assert is_chat_template_stop_token_trained(qwen) and get_training_chat_template(qwen) is None
    prompt = qwen.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")


def test_mining_is_deterministic_and_keeps_multi_piece_terms(qwen, mined):
    assert mined == mine_terms(qwen, [*knowledge_terms(load_knowledge()), *SYNDROMES], MINING, min_freq=2,
                               max_new=3000)
    assert len(mined) == len(set(mined)) and len(mined) <= 3000
    assert {"炙甘草", "黄芪", "脾胃虚寒"} <= set(mined)
    pieces = dict(zip(mined, qwen(mined, add_special_tokens=False)["input_ids"], strict=True))
    assert all(len(p) >= 2 for p in pieces.values())
    assert "你好" not in mine_terms(qwen, ["你好", "黄芪"], [])  # already one token
    # "弦细" occurs only inside "脉弦细" here: the shorter n-gram is absorbed by the longer one.
    corpus = ["脉弦细。"] * 5 + ["舌淡，脉弦细数。"] * 3
    grams = mine_terms(qwen, [], corpus, min_freq=2)
    assert "脉弦细" in grams and "弦细" not in grams


def test_extension_compresses_heldout_tcm_text_on_the_real_vocabulary(qwen, mined, tmp_path):
    tokenizer = copy.deepcopy(qwen)
    report = extend_tokenizer(tokenizer, None, mined, heldout_texts=HELDOUT)
    print("\nQwen2.5 + TCM terms:", report.to_dict())
    assert report.added == len(mined) and report.vocab_after == 151665 + len(mined)
    assert report.tokens_per_1k_after < report.tokens_per_1k_before
    assert report.reduction_pct >= 25.0
    assert compression(tokenizer, HELDOUT) == pytest.approx(report.tokens_per_1k_after, abs=0.01)
    for text in HELDOUT:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    ids = tokenizer.encode("炙甘草6g")
    assert tokenizer.convert_ids_to_tokens(ids)[0] == "炙甘草" and ids[0] >= 151665
    tokenizer.save_pretrained(tmp_path)  # what the runner hands to the next stage
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert len(again) == len(tokenizer) and again.eos_token == IM_END
    assert again(HELDOUT)["input_ids"] == tokenizer(HELDOUT)["input_ids"]


@pytest.mark.parametrize("tie", [True, False])
def test_new_embedding_rows_are_the_mean_of_their_old_pieces(qwen, tie):
    tokenizer = copy.deepcopy(qwen)
    model = tiny_model(len(tokenizer), tie)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    terms = ["炙甘草", "脾肾阳虚", "黄芪建中汤", "你好", *TAG_TOKENS]
    pieces = {t: qwen.encode(t) for t in terms}
    report = extend_tokenizer(tokenizer, model, terms)
    assert report.added == 7 and report.skipped == 1  # 你好 is one token already
    assert report.tied_embeddings is tie and report.embedding_rows % 64 == 0
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert emb.shape[0] >= len(tokenizer) and head.shape[0] == emb.shape[0]
    assert (emb.data_ptr() == head.data_ptr()) is tie
    assert torch.equal(emb[:151665], old_in)
    for term in terms[:3] + list(TAG_TOKENS):
        new_id = tokenizer.convert_tokens_to_ids(term)
        assert new_id >= 151665
        torch.testing.assert_close(emb[new_id], old_in[pieces[term]].mean(0))
        torch.testing.assert_close(head[new_id], old_out[pieces[term]].mean(0))
    assert model.generation_config.eos_token_id == [151645, 151643]
    assert model.config.pad_token_id == 151643 and tokenizer.eos_token_id == 151645
    text = "<think>脾肾阳虚</think><output>## 处方\n黄芪建中汤加减，炙甘草6g</output>"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text == tokenizer.decode(ids, skip_special_tokens=True)
    assert len(ids) < len(qwen.encode(text))
    logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), emb.shape[0])


def test_demo_tokenizer_is_qwen_shaped_and_round_trips(tmp_path):
    tokenizer = train_demo_tokenizer(MINING * 3, vocab_size=600)
    assert tokenizer.convert_tokens_to_ids([ENDOFTEXT, IM_START, IM_END]) == [0, 1, 2]
    assert all(len(tokenizer.encode(t)) == 1 for t in TAG_TOKENS)
    text = "<think>脾胃虚寒</think><output>\n## 处方\n黄芪30g 炙甘草6g，English too ✓</output>"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.decode(tokenizer.encode(text + IM_END), skip_special_tokens=True) == text
    messages = [{"role": "user", "content": "胃痛"}, {"role": "assistant", "content": "<think>寒</think>"}]
    assert is_chat_template_stop_token_trained(tokenizer)
    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.apply_chat_template(messages, tokenize=False) == tokenizer.apply_chat_template(messages,
                                                                                                 tokenize=False)
    assert again.eos_token == IM_END and again.encode(text) == tokenizer.encode(text)
    model = tiny_model(len(tokenizer), tie=True)
    report = extend_tokenizer(tokenizer, model, mine_terms(tokenizer, ["黄芪建中汤"], MINING, max_new=50),
                              heldout_texts=HELDOUT)
    assert 0 < report.added <= 50 and report.reduction_pct > 0
