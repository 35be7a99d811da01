"""Poem structure: split a poem into verses and name its form (五绝, 七绝, 五律, 七律).

A Tang poem's lines come in couplets; each half of a couplet is a verse (句) of five or seven
characters. A quatrain (绝句, jueju) has four verses, a regulated verse (律诗, lüshi) eight.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import pairwise

import numpy as np
import torch

from tinylm.cleaning import Poem, load_strains
from tinylm.data import BatchSampler, PackedData
from tinylm.download import fetch
from tinylm.model import GPT
from tinylm.sampling import sample_documents
from tinylm.tokenizers import Tokenizer

# Poems judge_model writes at a time: its reports depend on it, as on the seed.
JUDGE_BATCH_SIZE = 50
VERSE_BREAKS = "，。！？；：、\n"  # the punctuation and line breaks that end a verse
_VERSE = re.compile(f"[^{VERSE_BREAKS}]+")  # a verse: a run between them

FORMS = ("五绝", "七绝", "五律", "七律")
FORM_NAMES = {
    "五绝": "five-character quatrain (五言绝句)",
    "七绝": "seven-character quatrain (七言绝句)",
    "五律": "five-character regulated verse (五言律诗)",
    "七律": "seven-character regulated verse (七言律诗)",
    "其他": "other forms (古体诗 old-style, 排律 long regulated, mixed lengths)",
}


def verses(content: str) -> list[str]:
    """Split a poem body into its verses (句) at punctuation and line breaks."""
    return _VERSE.findall(content)


def classify_form(content: str) -> str:
    """Name the form of a poem body: one of FORMS, or 其他 when it is none of them."""
    parts = verses(content)
    lengths = {len(v) for v in parts}
    if len(lengths) != 1 or len(parts) not in (4, 8):
        return "其他"
    size = {5: "五", 7: "七"}.get(lengths.pop())
    if size is None:
        return "其他"
    return size + ("绝" if len(parts) == 4 else "律")


def uniform_verses(content: str) -> bool:
    """True when the poem has at least two verses and every one has the same length."""
    parts = verses(content)
    return len(parts) >= 2 and len({len(v) for v in parts}) == 1


def parse_document(text: str) -> Poem | None:
    """A generated document ``title\\nauthor\\ncontent`` as a Poem, or None if a part is missing."""
    parts = text.split("\n", 2)
    if len(parts) < 3 or not all(p.strip() for p in parts):
        return None
    return Poem(parts[0].strip(), parts[1].strip(), parts[2].strip())


# --------------------------------------------------------------------------- rhyme

# The thirteen rhyme groups of modern Mandarin (十三辙, "thirteen tracks"), keyed by pypinyin
# finals (ü written v). Tang poets rhymed by the Middle Chinese rhyme books (平水韵 and
# earlier), and many characters have moved since: this is a modern approximation, which is why
# the corpus itself does not score 100 %.
RHYME_GROUPS: dict[str, str] = {
    **dict.fromkeys(("a", "ia", "ua"), "发花"),
    **dict.fromkeys(("o", "e", "uo"), "梭波"),
    **dict.fromkeys(("ie", "ve"), "乜斜"),
    **dict.fromkeys(("i", "v", "er"), "一七"),
    "u": "姑苏",
    **dict.fromkeys(("ai", "uai"), "怀来"),
    **dict.fromkeys(("ei", "uei", "ui"), "灰堆"),
    **dict.fromkeys(("ao", "iao"), "遥条"),
    **dict.fromkeys(("ou", "iou", "iu"), "油求"),
    **dict.fromkeys(("an", "ian", "uan", "van"), "言前"),
    **dict.fromkeys(("en", "in", "uen", "un", "vn"), "人辰"),
    **dict.fromkeys(("ang", "iang", "uang"), "江阳"),
    **dict.fromkeys(("eng", "ing", "ong", "iong"), "中东"),
}


def rhyme_group(char: str) -> str | None:
    """The 十三辙 group of a character's (most common modern) reading, or None if unknown."""
    from pypinyin import Style, lazy_pinyin

    final = lazy_pinyin(char, style=Style.FINALS, errors=lambda _: [""])[0]
    return RHYME_GROUPS.get(final)


def rhymes(content: str) -> bool | None:
    """Do the even verses (the rhyme positions) end in one rhyme group? None if < 2 of them."""
    ends = [v[-1] for v in verses(content)[1::2]]
    groups = [rhyme_group(ch) for ch in ends]
    if len(groups) < 2 or None in groups:
        return None
    return len(set(groups)) == 1


# --------------------------------------------------------------------------- 平仄 (tones)

LEVEL, OBLIQUE = "平", "仄"


class ToneTable:
    """Character → 平 (level) or 仄 (oblique), learned from the dataset's own `strains` labels.

    Each character gets the label it carries most often (a character read two ways, such as
    看 or 思, gets its majority reading). Characters never labelled are unknown. `votes` keeps
    how often each label was seen, when the table was learned.
    """

    def __init__(self, tones: dict[str, str], votes: dict[str, Counter] | None = None) -> None:
        self.tones = tones
        self.votes = votes or {}

    @classmethod
    def learn(cls, pairs: Sequence[tuple[str, str]]) -> ToneTable:
        """Majority vote over (text, labels) pairs aligned character by character."""
        votes: dict[str, Counter] = {}
        for text, labels in pairs:
            for char, label in zip(text, labels, strict=True):
                if label in (LEVEL, OBLIQUE):
                    votes.setdefault(char, Counter())[label] += 1
        return cls({char: count.most_common(1)[0][0] for char, count in votes.items()}, votes)

    def __len__(self) -> int:
        return len(self.tones)

    def tone(self, char: str) -> str | None:
        """平, 仄, or None when the character was never labelled."""
        return self.tones.get(char)

    def coverage(self, texts: Iterable[str]) -> float:
        """Share of the verse characters in texts that have a known tone."""
        chars = [ch for text in texts for verse in verses(text) for ch in verse]
        return sum(ch in self.tones for ch in chars) / max(len(chars), 1)

    def disagreements(self, pairs: Iterable[tuple[str, str]]) -> tuple[Counter, int]:
        """Where a poem's own label differs from the table's: (char → count, labels compared).

        The table gives one reading per character; a poem may use the other one (胜 "bear",
        level, in 浑欲不胜簪, against the majority's oblique 胜 "win").
        """
        differ: Counter = Counter()
        compared = 0
        for text, labels in pairs:
            for char, label in zip(text, labels, strict=True):
                if label in (LEVEL, OBLIQUE) and char in self.tones:
                    compared += 1
                    differ[char] += label != self.tones[char]
        return +differ, compared


def poem_labels(content: str, line_labels: dict[str, str]) -> str | None:
    """A poem's own 平仄 labels from the strains' {line: labels}; None if a line is missing."""
    lines = content.split("\n")
    if not all(line in line_labels for line in lines):
        return None
    return "\n".join(line_labels[line] for line in lines)


def tone_checks(content: str, table: ToneTable, labels: str | None = None) -> tuple[int, int]:
    """(rules kept, rules checked) of the regulated tone pattern, for a 绝句 or 律诗.

    The rules, on the even positions that matter (「一三五不论，二四六分明」: the 1st, 3rd
    and 5th characters are free, the 2nd, 4th and 6th must be right): within a verse they
    alternate 平/仄; the two verses of a couplet are opposed (对) at the 2nd character; a
    couplet's second verse and the next couplet's first agree (粘) at the 2nd character; and
    the rhyming verses end on a level tone. A rule is checked only when both its characters
    have a known tone. Other forms return (0, 0).

    labels: the poem's own 平仄 labels, aligned with `content` character by character (the
    `strains` data), used instead of the table's one reading per character.
    """
    if classify_form(content) not in FORMS:
        return 0, 0
    if labels is not None and len(labels) != len(content):
        raise ValueError(
            f"labels must align with the poem: {len(labels)} labels for {len(content)} characters."
        )
    spans = list(_VERSE.finditer(content))  # the verses and where each starts in content
    lines = [m.group() for m in spans]
    keys = (1, 3) if len(lines[0]) == 5 else (1, 3, 5)  # 0-based: the 2nd, 4th (and 6th)

    def tone(verse: int, pos: int) -> str | None:
        if labels is None:
            return table.tone(lines[verse][pos])
        label = labels[spans[verse].start() + pos]
        return label if label in (LEVEL, OBLIQUE) else None

    pairs: list[tuple[str | None, str | None, bool]] = []  # (tone, tone, should they match?)
    for v in range(len(lines)):
        pairs += [(tone(v, a), tone(v, b), False) for a, b in pairwise(keys)]
    for v in range(0, len(lines), 2):
        pairs.append((tone(v, 1), tone(v + 1, 1), False))  # 对
        if v + 2 < len(lines):
            pairs.append((tone(v + 1, 1), tone(v + 2, 1), True))  # 粘
        pairs.append((tone(v + 1, len(lines[v + 1]) - 1), LEVEL, True))  # rhyme, level tone
    checked = [(a == b) == same for a, b, same in pairs if a is not None and b is not None]
    return sum(checked), len(checked)


def tone_agreement(content: str, table: ToneTable, labels: str | None = None) -> float | None:
    """Share of the regulated tone rules a poem keeps; None if it is not regulated."""
    kept, checked = tone_checks(content, table, labels)
    return kept / checked if checked else None


# --------------------------------------------------------------------------- novelty


class CopyDetector:
    """Finds what a generated poem copies from the training poems.

    `copied_verses`: verses that appear verbatim among the training verses. `longest_copied`:
    the longest run of characters also found somewhere in a training poem, by rolling hashes
    of every n-gram of the training text (numpy, sorted, searched), growing n until no poem
    has a match.
    """

    def __init__(self, training_texts: Sequence[str]) -> None:
        self.verses = {v for text in training_texts for v in verses(text)}
        self.codes = _code_points("\x00".join(training_texts))  # \x00 never occurs in a poem

    def copied_verses(self, content: str) -> tuple[int, int]:
        """(verses found verbatim in the training poems, verses)."""
        parts = verses(content)
        return sum(v in self.verses for v in parts), len(parts)

    def longest_copied(self, contents: Sequence[str]) -> list[int]:
        """For each text, the length of its longest substring found in the training text.

        Grows n one character at a time, keeping only the training positions whose n-gram
        occurs in some text: an (n+1)-gram can only match where its first n characters did.
        """
        texts = [_code_points(c) for c in contents]
        longest = [0] * len(texts)
        position = np.arange(len(self.codes))  # training n-grams that may still match
        corpus_hash = self.codes.copy()  # n = 1: a character's hash is its code point
        text_hash = {i: t.copy() for i, t in enumerate(texts) if len(t)}
        n = 1
        with np.errstate(over="ignore"):  # the hashes wrap around modulo 2**64 on purpose
            while text_hash:
                wanted = np.concatenate(list(text_hash.values()))  # every text's n-grams
                owner = np.repeat(list(text_hash), [len(h) for h in text_hash.values()])
                keep = np.isin(corpus_hash, wanted)
                position, corpus_hash = position[keep], corpus_hash[keep]
                for i in np.unique(owner[np.isin(wanted, corpus_hash)]):
                    longest[i] = n
                # A text with no copied n-gram has no copied (n+1)-gram either: drop it.
                alive = [i for i in text_hash if longest[i] == n and len(texts[i]) > n]
                position = position[position + n < len(self.codes)]
                corpus_hash = corpus_hash[: len(position)]
                # Extend every hash by one character: h(s + c) = h(s) · base + c.
                corpus_hash = corpus_hash * _HASH_BASE + self.codes[position + n]
                text_hash = {i: text_hash[i][:-1] * _HASH_BASE + texts[i][n:] for i in alive}
                n += 1
        return longest


_HASH_BASE = np.uint64(1_000_003)


def _code_points(text: str) -> np.ndarray:
    """The text's Unicode code points as uint64, ready for hashing."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)


def bits_per_character(loss_nats: float, tokens: int, chars: int) -> float:
    """Bits per character from a loss in nats per token: fair across tokenizers.

    A BPE model predicts fewer, bigger tokens than a character model, so its loss per token is
    not comparable; the total information per character of text is.
    """
    return loss_nats * tokens / chars / math.log(2)


# --------------------------------------------------------------------------- a batch of poems


class PoemJudge:
    """Scores a batch of poem bodies on every metric above, against one training split."""

    def __init__(self, tones: ToneTable, copies: CopyDetector) -> None:
        self.tones = tones
        self.copies = copies

    @classmethod
    def from_training(cls, training_poems: Sequence[Poem]) -> PoemJudge:
        """Tones from the dataset's strains labels; copies checked against training_poems."""
        fetch("strains", progress=False)
        return cls(
            ToneTable.learn(load_strains()), CopyDetector([p.content for p in training_poems])
        )

    def report(self, contents: Sequence[str], finished: Sequence[bool] | None = None) -> dict:
        """Every metric over the finished poems (a poem cut by the token limit does not count).

        Shares are fractions in [0, 1]; rhyme and tone scores are over the regulated poems.
        "counts" holds the numbers of poems behind the shares, for their confidence intervals
        (`tinylm.stats`).
        """
        finished = [True] * len(contents) if finished is None else list(finished)
        done = [c for c, f in zip(contents, finished, strict=True) if f and verses(c)]
        forms = Counter(classify_form(c) for c in done)
        regulated = [c for c in done if classify_form(c) in FORMS]
        rhyme = [r for r in map(rhymes, regulated) if r is not None]
        tone = [t for c in regulated if (t := tone_agreement(c, self.tones)) is not None]
        copied = [self.copies.copied_verses(c) for c in done]
        runs = self.copies.longest_copied(done)
        return {
            "poems": len(contents),
            "finished": _share(len(done), len(contents)),
            "forms": {form: _share(forms[form], len(done)) for form in (*FORMS, "其他")},
            "regulated": _share(len(regulated), len(done)),
            "uniform_verses": _share(sum(map(uniform_verses, done)), len(done)),
            "rhymes": _share(sum(rhyme), len(rhyme)),
            "tone_agreement": sum(tone) / len(tone) if tone else None,
            "tone_coverage": self.tones.coverage(done),
            "copied_verses": _share(sum(k for k, _ in copied), sum(n for _, n in copied)),
            "longest_copied_mean": sum(runs) / len(runs) if runs else None,
            "longest_copied_max": max(runs, default=None),
            "counts": {
                "finished": len(done),
                "regulated": len(regulated),
                "rhymes_checked": len(rhyme),
                "rhymes": sum(rhyme),
            },
        }


def _share(part: int, whole: int) -> float | None:
    """part / whole, or None when there is nothing to divide."""
    return part / whole if whole else None


# --------------------------------------------------------------------------- a model's poems


def judge_model(
    model: GPT,
    tokenizer: Tokenizer,
    judge: PoemJudge,
    samples: int,
    temperature: float = 0.8,
    top_k: int | None = 200,
    max_new_tokens: int = 256,
    seed: int = 0,
    *,
    top_p: float | None = None,
) -> tuple[dict, list[str]]:
    """The judge's report on samples poems the model writes, and the documents themselves.

    A document counts as finished only if it ended with end-of-text and has the
    ``title\\nauthor\\ncontent`` layout; its body is what the metrics score.
    """
    documents = sample_documents(
        model,
        tokenizer,
        n=samples,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        seed=seed,
        top_p=top_p,
        batch_size=JUDGE_BATCH_SIZE,
    )
    poems = [parse_document(text) for text, _ in documents]
    report = judge.report(
        [p.content if p else "" for p in poems],
        [done and p is not None for (_, done), p in zip(documents, poems, strict=True)],
    )
    report["ended_with_eot"] = sum(done for _, done in documents) / max(len(documents), 1)
    report["sampling"] = {
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
    }
    return report, [text for text, _ in documents]


@torch.no_grad()
def validation_bits_per_character(
    model: GPT, packed: PackedData, batches: int = 20, batch_size: int = 16, seed: int = 1234
) -> float:
    """Bits per character of the validation split: the loss on fixed windows, per character."""
    by_batch = validation_bits_by_batch(model, packed, batches, batch_size, seed)
    return sum(by_batch) / len(by_batch)


@torch.no_grad()
def validation_bits_by_batch(
    model: GPT, packed: PackedData, batches: int = 20, batch_size: int = 16, seed: int = 1234
) -> list[float]:
    """Bits per character of each fixed validation batch: their spread says how sure the mean is."""
    sampler = BatchSampler(
        packed.val, batch_size, model.config.block_size, next(model.parameters()).device, seed
    )
    counts = packed.meta["counts"]
    return [
        bits_per_character(
            model(*sampler.sample())[1].item(), counts["val_tokens"], counts["val_chars"]
        )
        for _ in range(batches)
    ]


# --------------------------------------------------------------------------- floors

END_OF_DOCUMENT = "\x03"  # stands for end-of-document in unigram_documents' character counts


def unigram_documents(
    texts: Sequence[str], n: int, seed: int = 0, max_chars: int = 256
) -> list[tuple[str, bool]]:
    """n documents from a model that knows each character's frequency and nothing else.

    Counts every character of texts (newlines included) plus one end-of-document per text,
    then draws characters independently from those frequencies until end-of-document comes up
    or max_chars are drawn. Returns (document, ended) pairs, as `sampling.sample_documents`
    does: scored with the same judge, these documents are the floor of a "model" that has
    learned the alphabet but no form, no rhyme and no tones.
    """
    if not texts:
        raise ValueError("unigram_documents needs at least one text to count characters in.")
    counts = Counter("".join(texts))
    if END_OF_DOCUMENT in counts:
        raise ValueError(
            f"{END_OF_DOCUMENT!r} occurs in texts: it is reserved for end-of-document."
        )
    counts[END_OF_DOCUMENT] = len(texts)
    alphabet = list(counts)
    weights = np.array([counts[ch] for ch in alphabet], dtype=np.float64)
    draws = np.random.default_rng(seed).choice(
        len(alphabet), size=(n, max_chars), p=weights / weights.sum()
    )
    end = alphabet.index(END_OF_DOCUMENT)
    documents = []
    for row in draws:
        stops = np.flatnonzero(row == end)
        cut = int(stops[0]) if len(stops) else max_chars
        documents.append(("".join(alphabet[i] for i in row[:cut]), bool(len(stops))))
    return documents


def _keeps_its_place(char: str) -> bool:
    """Punctuation and whitespace (line breaks included): the form of a poem, not its words."""
    return char.isspace() or unicodedata.category(char).startswith("P")


def shuffle_within_poems(contents: Sequence[str], seed: int = 0) -> list[str]:
    """Each poem body with its characters permuted among themselves, form kept.

    Punctuation and line breaks stay where they are, so every verse keeps its length and the
    poem its form (绝句, 律诗, ...); the other characters are shuffled within the poem, so
    rhyme, tones and every copied phrase are left to chance. One seeded generator for all
    poems: the same seed gives the same shuffles.
    """
    rng = np.random.default_rng(seed)
    shuffled = []
    for content in contents:
        chars = list(content)
        movable = [i for i, ch in enumerate(chars) if not _keeps_its_place(ch)]
        for i, j in zip(movable, rng.permutation(movable), strict=True):
            chars[i] = content[j]
        shuffled.append("".join(chars))
    return shuffled
