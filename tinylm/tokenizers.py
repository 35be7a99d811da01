"""Three tokenizers behind one interface: characters, our own byte-level BPE, and GPT-2's BPE.

Every tokenizer turns text into a list of ids and back, has an end-of-text id (`eot_id`) used
to separate poems, and saves to one JSON file that `load_tokenizer` reads back.
`encode` treats its input as ordinary text: the string "<|endoftext|>" inside a poem is
tokenised like any other text, only `eot_id` stands for the end of a text.

Full corpus (57,607 poems, 4.57M characters) through `encode_batch` on a 2-core machine:
char 0.4 s; bpe (8,192 ids) 2.3 s on the fast path (HF tokenizers, Rust; the reference
`encode` takes 21 s and gives the same ids); gpt2 (tiktoken) 4.8 s.
"""

import json
import os
import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import regex
import tiktoken
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers

from tinylm.bpe import encode_chunk, pretokenize, train_bpe, vocab_bytes

EOT = "<|endoftext|>"
UNK = "<unk>"
TOKENIZER_NAMES = ("char", "bpe", "gpt2")
OPTIONAL_TIKTOKEN_NAMES = ("cl100k_base", "o200k_base")  # for optional_tiktoken (need a download)
DEFAULT_BPE_VOCAB_SIZE = 8192
GPT2_VOCAB_SIZE = 50_257  # tiktoken's gpt2: 50,000 merges, 256 bytes and <|endoftext|>
# The course's largest BPE: ids fit uint16, so packed data takes half the space of uint32, and it
# is above GPT-2's 50,257; past it, training the merges only gets slower.
MAX_BPE_VOCAB_SIZE = 2**16
TIKTOKEN_LOAD_TIMEOUT_S = 60.0  # longest wait for tiktoken to download an encoding's files


# The talk's table of tokens per Chinese character (中文:token), as reported there, for
# tokenizers whose files this course cannot download offline: (name, vocabulary size, ratio).
REPORTED_DENSITY: tuple[tuple[str, int, float], ...] = (
    ("Claude 3", 65_000, 1.41),
    ("GPT-4 / GPT-3.5 (cl100k_base)", 100_277, 1.48),
    ("GPT-3 (p50k_base)", 50_281, 2.16),
    ("GPT-2 (gpt2)", GPT2_VOCAB_SIZE, 2.16),
    ("Llama 2", 32_000, 1.47),
    ("Mistral-7B / Mixtral-8x7B", 32_000, 1.47),
    ("ChatGLM2", 64_794, 0.997),
    ("ChatGLM3", 64_798, 0.997),
    ("Baichuan", 64_000, 0.982),
    ("Baichuan2", 125_696, 0.911),
    ("Qwen1", 151_851, 0.918),
    ("Qwen1.5", 151_643, 0.918),
)


class TokenizerUnavailable(RuntimeError):
    """A pretrained tokenizer's files could not be loaded (no internet and no local cache)."""


class Tokenizer(ABC):
    """What the rest of tinylm needs from a tokenizer."""

    name: str  # "char", "bpe", "gpt2" (or a tiktoken encoding name)

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, end-of-text included: the model's embedding table has this many rows."""

    @property
    @abstractmethod
    def eot_id(self) -> int:
        """Id of the end-of-text token that separates documents."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Encode text as ordinary text ("<|endoftext|>" in it does not become eot_id)."""

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Encode many texts, the way the whole corpus is packed; subclasses may go faster."""
        return [self.encode(text) for text in texts]

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Decode ids; bytes that are not valid UTF-8 become U+FFFD instead of raising."""

    def check_ids(self, ids: Sequence[int]) -> list[int]:
        """ids as a list; a ValueError naming the first id outside 0 … vocab_size − 1."""
        ids = list(ids)
        bad = next((i for i in ids if not 0 <= i < self.vocab_size), None)
        if bad is not None:
            raise ValueError(
                f"token id {bad} is not in the {self.name} tokenizer's range 0 … "
                f"{self.vocab_size - 1}"
            )
        return ids

    def tokens_per_char(self, texts: Sequence[str]) -> float:
        """Tokens per character of texts (no end-of-text counted): how densely it encodes them."""
        chars = sum(map(len, texts))
        if chars == 0:
            raise ValueError("tokens_per_char needs some text: every text given is empty")
        return sum(map(len, self.encode_batch(list(texts)))) / chars

    def with_special_tokens(self, tokens: Sequence[str]) -> "Tokenizer":
        """This tokenizer plus special tokens (chat markers) given the next free ids.

        Existing ids keep their meaning, so a pretrained model still reads every old token;
        each new token is one id, recognised wherever its exact string appears in the text.
        """
        return SpecialTokensTokenizer(self, tokens)

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer to one JSON file; its "type" field tells load_tokenizer the class."""
        state = {"type": self.name, **self._state()}
        Path(path).write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")

    def _state(self) -> dict[str, Any]:
        """What save needs besides the type: nothing for a pretrained tokenizer."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size})"


class CharTokenizer(Tokenizer):
    """One id per character: 0 is <|endoftext|>, 1 is <unk>, then the characters seen."""

    name = "char"
    unk_id = 1

    def __init__(self, chars: Iterable[str]):
        self.chars = list(chars)
        self._itos = [EOT, UNK, *self.chars]
        self._stoi = {ch: i for i, ch in enumerate(self._itos) if i >= 2}
        if len(self._stoi) != len(self.chars) or any(len(ch) != 1 for ch in self.chars):
            raise ValueError("chars must be distinct single characters")

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "CharTokenizer":
        """Build the vocabulary from every distinct character in texts, sorted by code point."""
        chars: set[str] = set()
        for text in texts:
            chars.update(text)
        return cls(sorted(chars))

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    @property
    def eot_id(self) -> int:
        return 0

    def encode(self, text: str) -> list[int]:
        stoi, unk_id = self._stoi, self.unk_id
        return [stoi.get(ch, unk_id) for ch in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self._itos[i] for i in self.check_ids(ids))

    def count_unknown(self, text: str) -> Counter[str]:
        """Count the characters of text that are not in the vocabulary (they encode as <unk>)."""
        return Counter(ch for ch in text if ch not in self._stoi)

    def _state(self) -> dict[str, Any]:
        return {"chars": self.chars}


class BPETokenizer(Tokenizer):
    """Our byte-level BPE: ids 0-255 are bytes, 256.. the merges, and <|endoftext|> comes last."""

    name = "bpe"

    def __init__(self, merges: Iterable[tuple[int, int]]):
        self.merges = [(int(a), int(b)) for a, b in merges]
        self._merge_ranks = {pair: i for i, pair in enumerate(self.merges)}
        self._vocab = [*vocab_bytes(self.merges), EOT.encode("utf-8")]
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, progress: bool = False) -> "BPETokenizer":
        """Learn a vocabulary of vocab_size ids: 256 bytes, vocab_size - 257 merges and EOT."""
        if vocab_size < 257:
            raise ValueError(f"vocab_size must be at least 257 (bytes + EOT), got {vocab_size}")
        return cls(train_bpe(texts, vocab_size - 1, progress=progress))

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    @property
    def eot_id(self) -> int:
        return len(self._vocab) - 1

    def encode(self, text: str) -> list[int]:
        """The reference encoder (pure Python, tinylm.bpe), with a cache of encoded chunks."""
        ids = []
        for chunk in pretokenize(text):
            ids.extend(self._encode_chunk(chunk))
        return ids

    def _encode_chunk(self, chunk: str) -> list[int]:
        """Encode one chunk, remembering the answer: poems repeat words and punctuation a lot."""
        if chunk not in self._cache:
            if len(self._cache) >= 100_000:  # keep memory bounded on endless streams of text
                self._cache.clear()
            self._cache[chunk] = encode_chunk(chunk.encode("utf-8"), self._merge_ranks)
        return self._cache[chunk]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Fast path: the same merges run by HF tokenizers (Rust, all cores); same ids as encode."""
        if self._hf is None:
            return super().encode_batch(texts)
        return [enc.ids for enc in self._hf.encode_batch(texts, add_special_tokens=False)]

    @cached_property
    def _hf(self) -> HFTokenizer | None:
        """An HF tokenizer with exactly our merges, or None if two merges spell the same bytes.

        HF's byte-level BPE writes each byte as a printable character (GPT-2's byte-to-unicode
        table) and keys its vocabulary by the resulting strings, so a repeated byte string
        (possible, rarely, in a trained merge list) cannot be given two ids there.
        """
        byte_char = _bytes_to_unicode()
        strings = ["".join(byte_char[b] for b in token) for token in self._vocab[:-1]]
        vocab = {s: i for i, s in enumerate(strings)}
        if len(vocab) != len(strings):
            return None
        merges = [(strings[a], strings[b]) for a, b in self.merges]
        tokenizer = HFTokenizer(models.BPE(vocab=vocab, merges=merges))
        # ByteLevel splits with the GPT-2 regex (tinylm.bpe.GPT2_SPLIT_PATTERN), then maps bytes.
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        return tokenizer

    def decode(self, ids: Sequence[int]) -> str:
        vocab = self._vocab
        return b"".join(vocab[i] for i in self.check_ids(ids)).decode("utf-8", errors="replace")

    def _state(self) -> dict[str, Any]:
        return {"merges": self.merges}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from byte values to printable characters, as HF's ByteLevel uses it."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + n) for n, b in enumerate(others)})
    return table


def _check_special_tokens(tokens: Sequence[str], existing: Sequence[str] = ()) -> list[str]:
    """The new special tokens as a list, refusing empty, repeated or already-present ones."""
    tokens = list(tokens)
    if not tokens or any(not isinstance(t, str) or not t for t in tokens):
        raise ValueError(f"special tokens must be non-empty strings, got {tokens!r}")
    repeated = sorted({t for t in [*existing, *tokens] if [*existing, *tokens].count(t) > 1})
    if repeated or EOT in tokens:
        raise ValueError(f"special tokens {repeated or [EOT]} are already in the tokenizer")
    return tokens


class SpecialTokensTokenizer(Tokenizer):
    """A char or BPE tokenizer with special tokens appended after its vocabulary."""

    def __init__(self, base: Tokenizer, tokens: Sequence[str]):
        if isinstance(base, SpecialTokensTokenizer):  # adding more: extend the same list
            base, tokens = base.base, [*base.special_tokens, *tokens]
        self.base = base
        self.name = base.name
        self.special_tokens = _check_special_tokens(tokens)
        self.special_ids = {t: base.vocab_size + i for i, t in enumerate(self.special_tokens)}
        self._id_to_special = {i: t for t, i in self.special_ids.items()}
        # Longest first, so a token that contains another one wins.
        alternatives = sorted(self.special_tokens, key=len, reverse=True)
        self._split = regex.compile("(" + "|".join(map(regex.escape, alternatives)) + ")")

    def with_special_tokens(self, tokens: Sequence[str]) -> Tokenizer:
        return SpecialTokensTokenizer(self, tokens)

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size + len(self.special_tokens)

    @property
    def eot_id(self) -> int:
        return self.base.eot_id

    def encode(self, text: str) -> list[int]:
        ids = []
        for i, piece in enumerate(self._split.split(text)):  # odd pieces are special tokens
            ids.extend([self.special_ids[piece]] if i % 2 else self.base.encode(piece))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        parts, run = [], []
        for i in self.check_ids(ids):
            if i in self._id_to_special:
                parts += [self.base.decode(run), self._id_to_special[i]]
                run = []
            else:
                run.append(i)
        return "".join(parts) + self.base.decode(run)

    def save(self, path: str | os.PathLike) -> None:
        state = {
            "type": self.base.name,
            **self.base._state(),
            "special_tokens": self.special_tokens,
        }
        Path(path).write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")


class TiktokenTokenizer(Tokenizer):
    """A pretrained OpenAI encoding from tiktoken (its files are downloaded on first use).

    Special tokens added with `with_special_tokens` go through tiktoken's own special-token
    support: a new `tiktoken.Encoding` with the same merges and the extra tokens.
    """

    def __init__(self, encoding_name: str, special_tokens: Sequence[str] = ()):
        self.name = encoding_name
        self._enc = _load_tiktoken(encoding_name)
        self.special_tokens = list(special_tokens)
        if self.special_tokens:
            _check_special_tokens(self.special_tokens, list(self._enc.special_tokens_set))
            base = self._enc
            first = base.n_vocab
            self._enc = tiktoken.Encoding(
                name=f"{encoding_name}+{len(self.special_tokens)}",
                pat_str=base._pat_str,
                mergeable_ranks=base._mergeable_ranks,
                special_tokens={
                    **base._special_tokens,
                    **{t: first + i for i, t in enumerate(self.special_tokens)},
                },
            )

    def with_special_tokens(self, tokens: Sequence[str]) -> Tokenizer:
        return type(self)(*self._init_args(), [*self.special_tokens, *tokens])

    def _init_args(self) -> tuple:
        return (self.name,)

    @property
    def vocab_size(self) -> int:
        return self._enc.n_vocab

    @property
    def eot_id(self) -> int:
        return self._enc.eot_token

    def encode(self, text: str) -> list[int]:
        if not self.special_tokens:
            return self._enc.encode_ordinary(text)
        return self._enc.encode(
            text, allowed_special=set(self.special_tokens), disallowed_special=()
        )

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if not self.special_tokens:
            return self._enc.encode_ordinary_batch(texts)
        return self._enc.encode_batch(
            texts, allowed_special=set(self.special_tokens), disallowed_special=()
        )

    def decode(self, ids: Sequence[int]) -> str:
        return self._enc.decode(self.check_ids(ids), errors="replace")

    def _state(self) -> dict[str, Any]:
        return {"special_tokens": self.special_tokens} if self.special_tokens else {}


class GPT2Tokenizer(TiktokenTokenizer):
    """GPT-2's byte-level BPE (50,257 ids, <|endoftext|> = 50256), through tiktoken."""

    def __init__(self, special_tokens: Sequence[str] = ()):
        super().__init__("gpt2", special_tokens)

    def _init_args(self) -> tuple:
        return ()


def _load_tiktoken(name: str) -> tiktoken.Encoding:
    """tiktoken.get_encoding(name), with a failed or stuck download as TokenizerUnavailable."""
    if name not in tiktoken.list_encoding_names():
        raise ValueError(f"unknown tiktoken encoding {name!r}")
    # tiktoken downloads with requests and no timeout. Loading in a daemon thread lets us stop
    # waiting when a firewall swallows the connection instead of refusing it.
    result: dict[str, Any] = {}

    def load() -> None:
        try:
            result["encoding"] = tiktoken.get_encoding(name)
        except Exception as err:  # requests, urllib3, OSError, a hash mismatch...
            result["error"] = err

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(TIKTOKEN_LOAD_TIMEOUT_S)
    if "encoding" in result:
        return result["encoding"]
    error = result.get("error")
    reason = type(error).__name__ if error else f"no answer in {TIKTOKEN_LOAD_TIMEOUT_S:g} s"
    raise TokenizerUnavailable(_unavailable_message(name, reason)) from error


def _unavailable_message(name: str, reason: str) -> str:
    """Explain why a tiktoken encoding cannot be loaded, and the two ways to fix it."""
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR")
    now = f"now {cache_dir!r}" if cache_dir is not None else "not set now"
    if name == "gpt2":
        where = "the course's offline mirror keeps them in its `tiktoken/` folder"
    else:
        where = "the course's offline mirror only has GPT-2's files"
    return (
        f"The {name} BPE files are downloaded by tiktoken from OpenAI on first use, and this "
        f"machine could not download them ({reason}). Set TIKTOKEN_CACHE_DIR ({now}) to a folder "
        f"holding the cached files ({where}), or connect to the internet."
    )


def optional_tiktoken(name: str) -> Tokenizer | None:
    """An extra tiktoken encoding (see OPTIONAL_TIKTOKEN_NAMES), or None if it can't be loaded."""
    try:
        return TiktokenTokenizer(name)
    except TokenizerUnavailable:
        return None


def get_tokenizer(
    name: str, train_texts: list[str] | None = None, vocab_size: int | None = None
) -> Tokenizer:
    """Build a tokenizer by name: char and bpe learn from train_texts, gpt2 is pretrained.

    vocab_size is the bpe target (default 8,192, <|endoftext|> included); char and gpt2 have
    the vocabulary they have and ignore it.
    """
    if name not in TOKENIZER_NAMES:
        valid = ", ".join(repr(n) for n in TOKENIZER_NAMES)
        raise ValueError(f"unknown tokenizer {name!r}: valid names are {valid}")
    if name == "gpt2":
        return GPT2Tokenizer()
    if train_texts is None:
        raise ValueError(f"the {name!r} tokenizer is learned from text: pass train_texts")
    if name == "char":
        return CharTokenizer.from_texts(train_texts)
    return BPETokenizer.train(train_texts, vocab_size or DEFAULT_BPE_VOCAB_SIZE)


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Read a tokenizer written by Tokenizer.save, choosing the class from its "type" field."""
    try:
        state = json.loads(Path(path).read_text(encoding="utf-8"))
        kind, special = state["type"], state.get("special_tokens", [])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{path} is not a tokenizer file written by Tokenizer.save: damaged, "
            f"cut short or another file ({type(error).__name__}: {error})"
        ) from None
    if kind == "gpt2":
        return GPT2Tokenizer(special)
    if kind in tiktoken.list_encoding_names():
        return TiktokenTokenizer(kind, special)
    if kind not in ("char", "bpe"):
        raise ValueError(f"{path}: unknown tokenizer type {kind!r}")
    try:
        tokenizer: Tokenizer = (
            CharTokenizer(state["chars"]) if kind == "char" else BPETokenizer(state["merges"])
        )
    except (KeyError, TypeError) as error:
        raise ValueError(
            f"{path} is not a whole {kind} tokenizer ({type(error).__name__}: {error} is missing "
            "or malformed): copy the model folder whole, or write it again from its run"
        ) from None
    return tokenizer.with_special_tokens(special) if special else tokenizer
