"""Poem forms on hand-made poems."""

import math
from collections import Counter
from pathlib import Path

import pytest

from tinylm import poetry
from tinylm.cleaning import Poem
from tinylm.poetry import classify_form, verses


@pytest.mark.parametrize(
    ("content", "form"),
    [
        ("床前明月光，疑是地上霜。\n举头望明月，低头思故乡。", "五绝"),
        ("朝辞白帝彩云间，千里江陵一日还。\n两岸猿声啼不住，轻舟已过万重山。", "七绝"),
        (
            "国破山河在，城春草木深。\n感时花溅泪，恨别鸟惊心。\n"
            "烽火连三月，家书抵万金。\n白头搔更短，浑欲不胜簪。",
            "五律",
        ),
        (
            "风急天高猿啸哀，渚清沙白鸟飞回。\n无边落木萧萧下，不尽长江滚滚来。\n"
            "万里悲秋常作客，百年多病独登台。\n艰难苦恨繁霜鬓，潦倒新停浊酒杯。",
            "七律",
        ),
        ("床前明月光，疑是地上霜。\n举头望明月，低头思故乡啊。", "其他"),  # a verse of six
        ("床前明月光，疑是地上霜。", "其他"),  # two verses only
        ("四言四句，四言四句。\n四言四句，四言四句。", "其他"),
    ],
)
def test_classify_form(content, form):
    assert classify_form(content) == form


def test_verses_split_at_punctuation_and_newlines():
    expected = ["床前明月光", "疑是地上霜", "举头望明月"]
    assert verses("床前明月光，疑是地上霜。\n举头望明月！") == expected


JINGYESI = "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。"
# A hand-made 平仄 table for the characters used below (their usual Tang tones).
TONES = poetry.ToneTable(
    {
        **dict.fromkeys("床前明光疑霜头低思乡", "平"),
        **dict.fromkeys("月是地上举望", "仄"),
    }
)


def test_uniform_verses():
    assert poetry.uniform_verses(JINGYESI)
    assert poetry.uniform_verses("四言四句，四言四句。")
    assert not poetry.uniform_verses("床前明月光，疑是地上霜啊。")  # a line of wrong length
    assert not poetry.uniform_verses("床前明月光。")


def test_parse_document():
    assert poetry.parse_document("静夜思\n李白\n" + JINGYESI) == Poem("静夜思", "李白", JINGYESI)
    assert poetry.parse_document("静夜思\n李白") is None
    assert poetry.parse_document("\n李白\n床前") is None


def test_rhyme_of_a_rhyming_and_a_non_rhyming_couplet():
    assert poetry.rhyme_group("霜") == poetry.rhyme_group("乡") == "江阳"
    assert poetry.rhymes(JINGYESI) is True  # 霜 shuang, 乡 xiang
    assert poetry.rhymes("床前明月光，疑是地上霜。\n举头望明月，低头思故人。") is False
    assert poetry.rhymes("床前明月光，疑是地上霜。") is None  # one rhyme position only


def test_tone_table_learns_the_majority_label():
    table = poetry.ToneTable.learn([("看山", "平仄"), ("看水", "仄仄"), ("看云", "平○")])
    assert table.tone("看") == "平" and table.tone("山") == "仄" and table.tone("云") is None
    assert len(table) == 3
    assert table.coverage(["看山云"]) == pytest.approx(2 / 3)


def test_tone_checks_on_jingyesi():
    # 床前明月光 平平平仄平 / 疑是地上霜 平仄仄仄平 / 举头望明月 仄平仄平仄 / 低头思故乡 平平平?平
    kept, checked = poetry.tone_checks(JINGYESI, TONES)
    assert checked == 4 + 2 + 1 + 2 - 1  # 4 alternations, 2 对, 1 粘, 2 rhymes; 故 unknown
    assert kept == 4
    assert poetry.tone_agreement(JINGYESI, TONES) == pytest.approx(4 / 8)
    assert poetry.tone_checks("床前明月光。", TONES) == (0, 0)
    assert poetry.tone_agreement("床前明月光。", TONES) is None


def test_tone_checks_on_a_perfect_pattern():
    # 仄仄平平仄 平平仄仄平 平平平仄仄 仄仄仄平平: the textbook 仄起 five-character quatrain.
    table = poetry.ToneTable({"平": "平", "仄": "仄"})
    poem = "仄仄平平仄，平平仄仄平。\n平平平仄仄，仄仄仄平平。"
    kept, checked = poetry.tone_checks(poem, table)
    assert kept == checked == 4 + 2 + 1 + 2


def test_copy_detector_finds_copied_verses_and_runs():
    detector = poetry.CopyDetector([JINGYESI, "白日依山尽，黄河入海流。"])
    assert detector.copied_verses("床前明月光，黄河入海流。\n新句子新句，") == (2, 3)
    runs = detector.longest_copied(["山尽黄河入海", "床前明月光，疑是", "无关", ""])
    assert runs == [4, 8, 0, 0]  # 黄河入海 (山尽 and 黄河 are not adjacent in the poem)


def test_bits_per_character():
    assert poetry.bits_per_character(math.log(2), tokens=10, chars=10) == pytest.approx(1.0)
    assert poetry.bits_per_character(2 * math.log(2), tokens=5, chars=10) == pytest.approx(1.0)


def test_judge_report_counts_only_finished_poems():
    judge = poetry.PoemJudge(TONES, poetry.CopyDetector([JINGYESI]))
    chunxiao = "春眠不觉晓，处处闻啼鸟。\n夜来风雨声，花落知多少。"
    report = judge.report([JINGYESI, chunxiao, "床前明月光，疑是"], finished=[True, True, False])
    assert report["poems"] == 3 and report["finished"] == pytest.approx(2 / 3)
    assert report["forms"]["五绝"] == 1.0 and report["regulated"] == 1.0
    assert report["copied_verses"] == pytest.approx(4 / 8)
    assert report["longest_copied_max"] == len(JINGYESI)
    assert report["rhymes"] == 1.0  # 霜/乡 and 鸟/少 both rhyme in modern Mandarin
    assert report["counts"] == {"finished": 2, "regulated": 2, "rhymes_checked": 2, "rhymes": 2}


def test_judge_model_on_a_tiny_model():
    import torch

    from tinylm.model import GPT, GPTConfig
    from tinylm.tokenizers import CharTokenizer

    tokenizer = CharTokenizer("静夜思李白床前明月光，疑是地上霜。\n")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=32, block_size=16, n_layer=1, n_head=1, n_embd=8)).eval()
    judge = poetry.PoemJudge(TONES, poetry.CopyDetector([JINGYESI]))
    report, documents = poetry.judge_model(model, tokenizer, judge, samples=4, max_new_tokens=20)
    assert len(documents) == 4 and report["poems"] == 4
    assert 0.0 <= report["ended_with_eot"] <= 1.0


def test_judge_model_samples_with_top_p():
    import torch

    from tinylm.model import GPT, GPTConfig
    from tinylm.tokenizers import CharTokenizer

    tokenizer = CharTokenizer("静夜思李白床前明月光，疑是地上霜。\n")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=32, block_size=16, n_layer=1, n_head=1, n_embd=8)).eval()
    judge = poetry.PoemJudge(TONES, poetry.CopyDetector([JINGYESI]))
    report, documents = poetry.judge_model(
        model, tokenizer, judge, samples=3, top_k=None, top_p=1e-6, max_new_tokens=12
    )
    assert report["sampling"]["top_p"] == 1e-6 and report["sampling"]["top_k"] is None
    assert len(set(documents)) == 1  # a nucleus of one token: every row writes the same text


def test_tone_checks_with_the_poems_own_labels():
    poem = "平仄平仄平，仄平仄平仄。\n仄平仄平仄，平仄平仄平。"
    table = poetry.ToneTable({"平": "平", "仄": "仄"})
    kept, checked = poetry.tone_checks(poem, table)
    assert poetry.tone_checks(poem, table, labels=poem) == (kept, checked)
    rhyme_end = poem.index("。") - 1  # the 2nd verse ends on 仄: read it 平 in this poem
    own = poem[:rhyme_end] + "平" + poem[rhyme_end + 1 :]
    assert poetry.tone_checks(poem, table, labels=own)[0] > kept
    unknown = "".join("○" if c in "平仄" else c for c in poem)
    assert poetry.tone_checks(poem, table, labels=unknown) == (0, 0)
    with pytest.raises(ValueError, match="align"):
        poetry.tone_checks(poem, table, labels="平仄")


def test_disagreements_name_the_characters_read_two_ways():
    pairs = [("不胜簪", "仄平平"), ("胜负", "仄仄"), ("胜败", "仄仄")]
    table = poetry.ToneTable.learn(pairs)
    assert table.votes["胜"] == {"仄": 2, "平": 1}
    differ, compared = table.disagreements(pairs)
    assert differ == {"胜": 1} and compared == 7


def test_poem_labels_align_with_the_body():
    labels = {"白日依山尽，": "仄仄平平仄，", "黄河入海流。": "平平仄仄平。"}
    poem = "白日依山尽，\n黄河入海流。"
    assert poetry.poem_labels(poem, labels) == "仄仄平平仄，\n平平仄仄平。"
    assert poetry.poem_labels("白日依山尽，\n欲穷千里目，", labels) is None


def test_unigram_documents_draw_the_training_characters_and_end():
    texts = ["甲\n乙", "甲甲"]  # 甲 ×3, 乙 ×1, newline ×1, end-of-document ×2: 7 draws' worth
    documents = poetry.unigram_documents(texts, n=2000, seed=0, max_chars=50)
    assert documents == poetry.unigram_documents(texts, n=2000, seed=0, max_chars=50)
    assert documents != poetry.unigram_documents(texts, n=2000, seed=1, max_chars=50)
    assert all(set(text) <= set("甲乙\n") and len(text) <= 50 for text, _ in documents)
    ended = [text for text, done in documents if done]
    assert len(ended) > 1900  # P(no end in 50 draws) = (5/7)**50, about 5e-8 per document
    assert all(len(text) == 50 for text, done in documents if not done)
    # The length before the end is geometric: mean (1 - p) / p with p = 2/7.
    assert sum(map(len, ended)) / len(ended) == pytest.approx(2.5, rel=0.1)
    drawn = Counter("".join(ended))
    assert drawn["甲"] / sum(drawn.values()) == pytest.approx(3 / 5, abs=0.03)
    assert drawn["\n"] / sum(drawn.values()) == pytest.approx(1 / 5, abs=0.03)


def test_unigram_documents_never_stop_without_an_end_and_reject_bad_input():
    documents = poetry.unigram_documents(["甲乙"], n=3, seed=0, max_chars=4)
    assert all(len(text) <= 4 for text, _ in documents)
    with pytest.raises(ValueError, match="at least one text"):
        poetry.unigram_documents([], n=1)
    with pytest.raises(ValueError, match="reserved"):
        poetry.unigram_documents(["甲" + poetry.END_OF_DOCUMENT], n=1)


def test_shuffle_within_poems_keeps_the_form_and_the_characters():
    chunwang = (
        "国破山河在，城春草木深。\n感时花溅泪，恨别鸟惊心。\n"
        "烽火连三月，家书抵万金。\n白头搔更短，浑欲不胜簪。"
    )
    poems = [JINGYESI, chunwang, "一二三四五六七八九十，甲乙丙丁戊己庚辛壬癸。"]
    shuffled = poetry.shuffle_within_poems(poems, seed=0)
    assert shuffled == poetry.shuffle_within_poems(poems, seed=0)
    assert shuffled != poetry.shuffle_within_poems(poems, seed=1)
    for poem, new in zip(poems, shuffled, strict=True):
        assert new != poem and sorted(new) == sorted(poem)  # the same characters, moved
        assert [len(v) for v in verses(new)] == [len(v) for v in verses(poem)]
        assert classify_form(new) == classify_form(poem)
        assert [c for c in new if c in "，。\n"] == [c for c in poem if c in "，。\n"]
        assert all((a in "，。\n") == (b in "，。\n") for a, b in zip(poem, new, strict=True))
    assert poetry.shuffle_within_poems(["，。\n", ""]) == ["，。\n", ""]


def test_the_floors_score_below_real_poems():
    table = poetry.ToneTable({**dict.fromkeys("平", "平"), **dict.fromkeys("仄", "仄")})
    perfect = "仄仄平平仄，平平仄仄平。\n平平平仄仄，仄仄仄平平。"
    judge = poetry.PoemJudge(table, poetry.CopyDetector([perfect]))
    real = judge.report([perfect])
    shuffled = judge.report(poetry.shuffle_within_poems([perfect] * 20, seed=0))
    assert shuffled["regulated"] == real["regulated"] == 1.0  # the form survives
    assert shuffled["tone_agreement"] < real["tone_agreement"] == 1.0  # the tones do not
    assert shuffled["longest_copied_mean"] < real["longest_copied_mean"]
    documents = poetry.unigram_documents([f"题\n某\n{perfect}"], n=50, seed=0)
    poems = [poetry.parse_document(text) for text, _ in documents]
    unigram = judge.report(
        [p.content if p else "" for p in poems],
        [done and p is not None for (_, done), p in zip(documents, poems, strict=True)],
    )
    assert unigram["regulated"] < real["regulated"]


def test_validation_bits_by_batch_average_to_the_mean():
    import numpy as np
    import torch

    from tinylm.data import PackedData
    from tinylm.model import GPT, GPTConfig
    from tinylm.tokenizers import CharTokenizer

    tokenizer = CharTokenizer("静夜思李白床前明月光，疑是地上霜。\n")
    ids = np.array(tokenizer.encode(JINGYESI * 8), dtype=np.uint16)
    meta = {"counts": {"val_tokens": len(ids), "val_chars": len(ids) // 2}}  # 2 tokens a char
    packed = PackedData(Path("."), ids, ids, tokenizer, meta)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=32, block_size=16, n_layer=1, n_head=1, n_embd=8)).eval()
    by_batch = poetry.validation_bits_by_batch(model, packed, batches=5, batch_size=2)
    mean = poetry.validation_bits_per_character(model, packed, batches=5, batch_size=2)
    assert len(by_batch) == 5 and len(set(by_batch)) > 1  # different windows, different losses
    assert mean == pytest.approx(sum(by_batch) / 5)
    assert mean > math.log2(32)  # an untrained model: about 2 × log2(32) bits per character
