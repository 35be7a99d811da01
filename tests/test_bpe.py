"""Tests of the readable BPE in tinylm.bpe: pinned merges, and trainer == naive recount."""

import random

import pytest

from tinylm.bpe import (
    bpe_encode,
    get_pair_counts,
    merge,
    pretokenize,
    train_bpe,
    train_bpe_naive,
    vocab_bytes,
)


def random_text(rng: random.Random, alphabet: str, max_len: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(max_len)))


def test_helpers_minbpe_style():
    assert get_pair_counts([[1, 1, 1, 2], [1, 2]]) == {(1, 1): 2, (1, 2): 2}
    assert merge([1, 1, 1, 2], (1, 1), 9) == [9, 1, 2]  # left to right, no overlap
    assert merge([5, 6, 5, 6, 5], (5, 6), 7) == [7, 7, 5]


def test_pretokenize_splits_poem_at_punctuation():
    chunks = ["床前明月光", "，", "疑是地上霜", "。", "\n"]
    assert pretokenize("床前明月光，疑是地上霜。\n") == chunks
    assert pretokenize("I'm 12 ok") == ["I", "'m", " 12", " ok"]


def test_wikipedia_example_pins_merges():
    # https://en.wikipedia.org/wiki/Byte_pair_encoding : aaabdaaabac -> ZabdZabac -> ... -> XdXac
    merges = train_bpe("aaabdaaabac", 256 + 3)
    a, b = ord("a"), ord("b")
    assert merges == [(a, a), (a, b), (256, 257)]  # aa=4, then ab=2 beats Za=2 (lower pair)
    assert bpe_encode("aaabdaaabac", merges) == [258, ord("d"), 258, a, ord("c")]


def test_cjk_first_merges_build_characters():
    # 明 = e6 98 8e, 月 = e6 9c 88: four pairs tie at 3, the lowest ones go first
    merges = train_bpe(["明月明月", "月明"], 256 + 4)
    assert merges == [(0x98, 0x8E), (0x9C, 0x88), (0xE6, 256), (0xE6, 257)]
    assert train_bpe_naive(["明月明月", "月明"], 256 + 4) == merges
    assert vocab_bytes(merges)[258:] == ["明".encode(), "月".encode()]
    assert bpe_encode("明月", merges) == [258, 259]


@pytest.mark.parametrize("seed", range(12))
def test_incremental_trainer_equals_naive(seed):
    rng = random.Random(seed)
    # small alphabets give many ties and overlapping pairs ("aaa", "abab")
    alphabet = "aab  明月光，。\n12'é" if seed % 2 else "aaaabbc 明明月"
    texts = [random_text(rng, alphabet, 40) for _ in range(30)]
    vocab_size = 256 + rng.randrange(1, 150)  # large ones run out of pairs
    assert train_bpe(texts, vocab_size) == train_bpe_naive(texts, vocab_size)


def test_vocab_size_is_honoured_and_training_stops_when_done():
    rng = random.Random(0)
    texts = ["".join(chr(rng.randrange(0x4E00, 0x9FFF)) for _ in range(50)) for _ in range(20)]
    assert len(train_bpe(texts, 300)) == 300 - 256
    assert len(train_bpe("ab", 300)) == 1  # a single pair: nothing more to merge
    assert train_bpe(texts, 256) == []
    with pytest.raises(ValueError):
        train_bpe(texts, 255)


def test_encode_round_trips_and_matches_training():
    rng = random.Random(1)
    chars = "".join(chr(rng.randrange(0x4E00, 0x9FFF)) for _ in range(30)) + "，。\n ab1"
    texts = [random_text(rng, chars, 60) for _ in range(50)]
    merges = train_bpe(texts, 400)
    vocab = vocab_bytes(merges)
    assert len(vocab) == 400
    for text in texts + [random_text(rng, chars + "xyz中", 80) for _ in range(50)]:
        ids = bpe_encode(text, merges)
        assert max(ids, default=0) < 400
        assert b"".join(vocab[i] for i in ids).decode("utf-8") == text


def test_a_vocabulary_beyond_what_the_trainer_can_number_is_refused_at_once():
    with pytest.raises(ValueError, match="vocab_size must be at most 1,114,112"):
        train_bpe(["春眠不觉晓"], 10**9)
