"""Tests of tinylm.tokenizers on synthetic text: round trips, <unk>, EOT, save/load, GPT-2."""

import json
import random
import socket
import threading

import pytest
import tiktoken

from tinylm import tokenizers as tinylm_tokenizers
from tinylm.tokenizers import (
    EOT,
    UNK,
    BPETokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    Tokenizer,
    TokenizerUnavailable,
    get_tokenizer,
    load_tokenizer,
    optional_tiktoken,
)


def random_cjk(rng: random.Random, length: int) -> str:
    """Random code points from U+4E00-U+9FFF, with some punctuation, newlines and ASCII."""
    extras = "，。\n，。 ab1'"
    return "".join(
        chr(rng.randrange(0x4E00, 0xA000)) if rng.random() < 0.8 else rng.choice(extras)
        for _ in range(length)
    )


def random_poem(rng: random.Random, chars: str) -> str:
    """A fake poem, laid out like the corpus: title, author, then lines of 5 or 7 characters."""
    n = rng.choice([5, 7])
    words = ["".join(rng.choices(chars, k=k)) for k in (4, 2)]
    lines = ["".join(rng.choices(chars, k=n)) + rng.choice("，。") for _ in range(4)]
    return "\n".join([words[0], words[1], *lines])


POEM_CHARS = "床前明月光疑是地上霜举头望低思故乡春眠不觉晓处闻啼鸟夜来风雨声花落知多少"


@pytest.fixture(scope="module")
def texts() -> list[str]:
    rng = random.Random(0)
    return [random_poem(rng, POEM_CHARS) for _ in range(300)] + [random_cjk(rng, 80)]


@pytest.fixture(scope="module")
def char_tok(texts) -> CharTokenizer:
    return CharTokenizer.from_texts(texts)


@pytest.fixture(scope="module")
def bpe_tok(texts) -> BPETokenizer:
    return BPETokenizer.train(texts, 256 + 300 + 1)


@pytest.fixture(scope="module")
def gpt2_tok() -> GPT2Tokenizer:
    try:
        return GPT2Tokenizer()
    except TokenizerUnavailable as err:
        pytest.skip(f"GPT-2 BPE files not available offline (set TIKTOKEN_CACHE_DIR): {err}")


@pytest.fixture(params=["char", "bpe", "gpt2"])
def tok(request) -> Tokenizer:
    return request.getfixturevalue(f"{request.param}_tok")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No internet, an empty tiktoken cache, and tiktoken's loaded encodings forgotten."""

    def no_dns(*args, **kwargs):
        raise socket.gaierror("no network in this test")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})  # restored after the test


def test_round_trip(tok, texts):
    rng = random.Random(1)
    samples = texts[:20] if tok.name == "char" else [random_cjk(rng, 100) for _ in range(50)]
    for text in samples:
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
    assert tok.encode_batch(samples) == [tok.encode(t) for t in samples]


def test_eot_is_special_only_as_an_id(tok):
    assert tok.decode([tok.eot_id]) == EOT
    assert tok.eot_id == tok.vocab_size - 1 or tok.name == "char"
    assert tok.eot_id not in tok.encode("床前" + EOT + "明月")
    assert tok.name in {"char", "bpe", "gpt2"}


def test_save_load_round_trip(tok, texts, tmp_path):
    path = tmp_path / "tok.json"
    tok.save(path)
    assert json.loads(path.read_text(encoding="utf-8"))["type"] == tok.name
    loaded = load_tokenizer(path)
    assert type(loaded) is type(tok)
    assert (loaded.name, loaded.vocab_size, loaded.eot_id) == (tok.name, tok.vocab_size, tok.eot_id)
    text = texts[0] + "\n" + random_cjk(random.Random(2), 50)
    assert loaded.encode(text) == tok.encode(text)


def test_char_ids_and_unknown_characters(char_tok, texts):
    assert (char_tok.eot_id, char_tok.unk_id) == (0, 1)
    assert char_tok.decode([0, 1]) == EOT + UNK
    assert char_tok.chars == sorted(set("".join(texts)))
    assert char_tok.vocab_size == len(char_tok.chars) + 2
    ids = char_tok.encode("明月龘\U0001f600")
    assert ids[2:] == [char_tok.unk_id, char_tok.unk_id]
    assert char_tok.decode(ids) == "明月" + UNK + UNK
    assert char_tok.count_unknown("龘明龘月\U0001f600") == {"龘": 2, "\U0001f600": 1}


def test_char_rejects_repeated_characters():
    with pytest.raises(ValueError):
        CharTokenizer(["明", "明"])


def test_partial_utf8_decodes_to_replacement_character(bpe_tok):
    assert bpe_tok.decode([0xE4, 0xB8]) == "\ufffd"  # two of the three bytes of 中
    assert bpe_tok.decode([0xE4, 0xB8, 0xAD]) == "中"


def test_gpt2_has_50257_tokens(gpt2_tok):
    assert gpt2_tok.vocab_size == 50_257  # what tests/test_gpu_runs.py assumes offline


def test_gpt2_partial_utf8(gpt2_tok):
    ids = gpt2_tok.encode("龘")
    assert len(ids) > 1
    assert "\ufffd" in gpt2_tok.decode(ids[:1])


def test_bpe_layout_and_vocab_size(bpe_tok):
    assert bpe_tok.vocab_size == 557
    assert len(bpe_tok.merges) == 300
    assert bpe_tok.eot_id == 556
    assert len(bpe_tok.encode("床前明月光")) < len("床前明月光".encode())  # merges were learned


def test_bpe_fast_path_equals_reference(bpe_tok):
    rng = random.Random(3)
    odd = ["", " ", "  a  b\n\n  ", "it's 12 o'clock", EOT, "明月，\n\n 光。", "abc  \n", "\t x"]
    samples = [random_cjk(rng, rng.randrange(60)) for _ in range(3000)]
    samples += [random_poem(rng, POEM_CHARS) for _ in range(300)] + odd
    assert bpe_tok._hf is not None  # the fast path is really used
    assert bpe_tok.encode_batch(samples) == [bpe_tok.encode(s) for s in samples]


def test_bpe_with_repeated_token_bytes_falls_back_to_reference():
    a, b, c = b"abc"
    tok = BPETokenizer([(a, b), (256, c), (b, c), (a, 258)])  # 257 and 259 both spell "abc"
    assert tok._hf is None
    samples = ["abc", "xabcabc bc ab"]
    expected = [[257], [ord("x"), 257, 257, ord(" "), 258, ord(" "), 256]]
    assert tok.encode_batch(samples) == [tok.encode(s) for s in samples] == expected


def test_gpt2_matches_tiktoken(gpt2_tok):
    enc = tiktoken.get_encoding("gpt2")
    samples = ["床前明月光，疑是地上霜。", "Hello world!\n", EOT, "  it's 12 o'clock"]
    assert [gpt2_tok.encode(s) for s in samples] == [enc.encode_ordinary(s) for s in samples]
    assert gpt2_tok.encode_batch(samples) == [enc.encode_ordinary(s) for s in samples]
    assert (gpt2_tok.vocab_size, gpt2_tok.eot_id) == (50257, 50256)


@pytest.mark.usefixtures("offline")
def test_gpt2_unavailable_offline():
    with pytest.raises(TokenizerUnavailable, match="TIKTOKEN_CACHE_DIR") as info:
        GPT2Tokenizer()
    assert "downloaded by tiktoken from OpenAI" in str(info.value)
    assert isinstance(info.value, RuntimeError)


@pytest.mark.usefixtures("offline")
def test_stuck_download_does_not_hang(monkeypatch):
    release = threading.Event()

    def stuck_dns(*args, **kwargs):  # like a firewall that drops packets: no answer at all
        release.wait(10)
        raise socket.gaierror("no network in this test")

    monkeypatch.setattr(socket, "getaddrinfo", stuck_dns)
    monkeypatch.setattr(tinylm_tokenizers, "TIKTOKEN_LOAD_TIMEOUT_S", 0.2)
    try:
        with pytest.raises(TokenizerUnavailable, match="no answer in 0.2 s"):
            GPT2Tokenizer()
    finally:
        release.set()


@pytest.mark.usefixtures("offline")
def test_optional_tiktoken_is_none_offline():
    assert optional_tiktoken("cl100k_base") is None
    with pytest.raises(ValueError):
        optional_tiktoken("no_such_encoding")


def test_get_tokenizer(texts):
    with pytest.raises(ValueError, match="'char', 'bpe', 'gpt2'"):
        get_tokenizer("word", texts)
    with pytest.raises(ValueError, match="train_texts"):
        get_tokenizer("bpe")
    assert isinstance(get_tokenizer("char", texts), CharTokenizer)
    bpe = get_tokenizer("bpe", texts, vocab_size=300)
    assert isinstance(bpe, BPETokenizer)
    assert bpe.vocab_size == 300


def test_tokens_per_char_counts_the_encoding_of_every_text(char_tok, bpe_tok, texts):
    assert char_tok.tokens_per_char(["春江", "花月夜"]) == 1.0  # one id per character
    sample = texts[:3]
    expected = sum(len(bpe_tok.encode(t)) for t in sample) / sum(map(len, sample))
    assert bpe_tok.tokens_per_char(sample) == pytest.approx(expected)
    with pytest.raises(ValueError, match="some text"):
        char_tok.tokens_per_char(["", ""])


@pytest.mark.parametrize("bad", [-1, "vocab_size"])
def test_decode_rejects_ids_outside_the_vocabulary(tok, bad):
    bad = tok.vocab_size if bad == "vocab_size" else bad
    with pytest.raises(
        ValueError,
        match=rf"token id {bad} is not in .* range 0 … "
        rf"{tok.vocab_size - 1}",
    ):
        tok.decode([tok.eot_id, bad])


def test_a_damaged_tokenizer_file_is_named(tmp_path):
    """Issue 14, case 9: a truncated tokenizer.json said only "Unterminated string"."""
    path = tmp_path / "tokenizer.json"
    CharTokenizer.from_texts(["春江花月夜"]).save(path)
    path.write_text(path.read_text(encoding="utf-8")[:20], encoding="utf-8")
    with pytest.raises(
        ValueError,
        match=rf"{path} is not a tokenizer file written by "
        r"Tokenizer.save: damaged, cut short or another file \(JSONDecodeError",
    ):
        load_tokenizer(path)


@pytest.mark.parametrize("state", [{"type": "char"}, {"type": "bpe"}, {"type": "char", "chars": 5}])
def test_a_tokenizer_file_without_its_vocabulary_is_named(tmp_path, state):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(state), encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{path} is not a whole {state['type']} tokenizer"):
        load_tokenizer(path)
