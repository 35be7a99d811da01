"""From upstream JSON to clean poems: load, 繁→简, clean, dedupe and split.

`load_corpus` turns the fetched JSON into clean, simplified, de-duplicated poems split into
train and validation sets; each step is its own function so notebook 01 can show what it does.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinylm.download import DataError, Manifest, fetch, load_manifest, raw_dir

PLACEHOLDERS = "□■●○"  # characters the editors used for lost or unreadable characters
_NOTE = re.compile(r"（[^（）]*）|\([^()]*\)")  # editorial notes: variant readings, sources
_FOOTNOTE = re.compile(r"〖[^〖〗]*〗")  # footnote markers such as 〖1〗
_INSERTION = re.compile(r"\[([^\[\]]*)\]")  # [字]: a character the editors restored
_COMPOSED = re.compile(r"\{[^{}]*\}")  # {艹尔}: a rare character described by its parts
_OPEN_NOTE = re.compile(r"（[^）]*$")  # a note cut off at the end of a long title
_FOOTNOTE_NUMBER = re.compile(r"\[[一二三四五六七八九十○〇]+\]")  # [一], [二○]: footnote numbers
_HAN = re.compile(r"[\u3400-\u9fff\U00020000-\U0003ffff]")


@dataclass(frozen=True)
class Poem:
    """One poem: title, author, and its lines joined by newlines."""

    title: str
    author: str
    content: str

    @property
    def text(self) -> str:
        """The training text of the poem: ``title\\nauthor\\ncontent``, as in the talk."""
        return f"{self.title}\n{self.author}\n{self.content}"


def load_poems(root: Path | None = None, manifest: Manifest | None = None) -> list[Poem]:
    """Read the 58 ``poet.tang.*.json`` files in upstream order (traditional characters)."""
    root = Path(root) if root is not None else raw_dir()
    poems = []
    for file in (manifest or load_manifest()).group("tang"):
        if not Path(file.path).name.startswith("poet."):
            continue
        path = root / file.path
        records = _read_json(path)
        try:
            poems += [Poem(r["title"], r["author"], "\n".join(r["paragraphs"])) for r in records]
        except (KeyError, TypeError) as error:
            raise DataError(
                f"{path} is not a valid poem file ({type(error).__name__}: {error}). Delete it "
                f"and fetch again: `python -m tinylm data`."
            ) from error
    return poems


def load_strains(
    root: Path | None = None, manifest: Manifest | None = None
) -> list[tuple[str, str]]:
    """(line, 平仄 labels) pairs, aligned character by character, in simplified characters.

    The ``strains`` files label each character of a poem 平 (level), 仄 (oblique) or ○
    (unknown), line by line; records are matched to poems by their ``id``. Lines whose label
    string does not have the line's length (before or after 繁→简) are skipped.
    """
    root = Path(root) if root is not None else raw_dir()
    manifest = manifest or load_manifest()
    lines: dict[str, list[str]] = {}
    for file in manifest.group("tang"):
        if Path(file.path).name.startswith("poet."):
            records = _read_json(root / file.path)
            lines.update((r["id"], r["paragraphs"]) for r in records)
    pairs = []
    for file in manifest.group("strains"):
        for record in _read_json(root / file.path):
            for text, labels in zip(lines.get(record["id"], []), record["strains"], strict=False):
                if len(text) == len(labels):
                    pairs.append((text, labels))
    simplified = _t2s("\x00".join(text for text, _ in pairs)).split("\x00")
    return [
        (text, labels)
        for text, (_, labels) in zip(simplified, pairs, strict=True)
        if len(text) == len(labels)
    ]


def _read_json(path: Path) -> list[dict]:
    """A JSON file of the dataset, with a missing or broken file explained."""
    if not path.is_file():
        raise DataError(
            f"{path} is missing. Fetch the data first: `python -m tinylm data` (or "
            "`tinylm.download.fetch(group)` from Python)."
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(
            f"{path} is not a valid JSON file ({type(error).__name__}: {error}). "
            "Delete it and fetch again: `python -m tinylm data`."
        ) from error


def to_simplified(poems: Sequence[Poem]) -> list[Poem]:
    """Convert traditional to simplified characters with OpenCC's ``t2s`` table."""
    sep = "\x00"  # one OpenCC call over the whole corpus is much faster than 170k small ones
    fields = [s for p in poems for s in (p.title, p.author, p.content)]
    converted = _t2s(sep.join(fields)).split(sep)
    return [Poem(*converted[i : i + 3]) for i in range(0, len(converted), 3)]


def _t2s(text: str) -> str:
    """Traditional → simplified with OpenCC's ``t2s`` table."""
    import opencc

    return opencc.OpenCC("t2s").convert(text)


@dataclass
class CleaningReport:
    """What cleaning removed or changed, so the notebook can show it."""

    poems_in: int = 0
    notes_removed: int = 0  # （…） editorial notes and 〖…〗 footnote markers
    insertions_unwrapped: int = 0  # [字] brackets around restored characters
    placeholder_poems: int = 0  # poems dropped because they contain □ ● {…} for lost characters
    titles_cleaned: int = 0  # titles that lost notes (（…）, 京本 variants) or footnote numbers
    placeholder_titles: int = 0  # of the placeholder poems, those dropped for their title alone
    placeholder_chars: Counter = field(default_factory=Counter)
    empty_poems: int = 0
    duplicates: int = 0  # poems whose body repeats an earlier poem's body
    poems_out: int = 0


def clean_line(line: str) -> str:
    """Remove whitespace inside a verse line (verse uses none; stray spaces are typos)."""
    return re.sub(r"\s+", "", line)


def clean_title(title: str) -> str:
    """Clean a title as bodies are cleaned: drop notes and footnote numbers, collapse spaces.

    （…） notes (variant readings such as 京本作…, manuscript numbers such as
    伯三九八六), one cut off at the end, 〖…〗 and [一] footnote markers go; [字]
    restorations are unwrapped; ○ used as the digit zero (一三○) becomes 〇; a stray ”
    goes; whitespace collapses to single spaces, so "帝京篇十首 一" keeps its space.
    Lost characters (□, {…}) are left for `clean_poems`.
    """
    title, _ = _remove_notes(title)
    title = _OPEN_NOTE.sub("", _FOOTNOTE.sub("", title))
    title = _INSERTION.sub(r"\1", _FOOTNOTE_NUMBER.sub("", title))
    if "“" not in title:
        title = title.replace("”", "")  # a stray closing quote left by the editors
    return collapse_spaces(title.replace("○", "〇"))


def collapse_spaces(text: str) -> str:
    """Collapse runs of whitespace to single spaces (authors' names; titles after cleaning)."""
    return " ".join(text.split())


def _lost_characters(text: str) -> list[str]:
    """The placeholders for lost characters in text: □ ● … and {…} descriptions."""
    return [c for c in text if c in PLACEHOLDERS] + _COMPOSED.findall(text)


def clean_poems(poems: Sequence[Poem]) -> tuple[list[Poem], CleaningReport]:
    """Remove editorial notes, drop poems with lost characters or no text, and report counts."""
    report = CleaningReport(poems_in=len(poems))
    kept = []
    for poem in poems:
        content, n_notes = _remove_notes(poem.content)
        content, n_fn = _FOOTNOTE.subn("", content)
        content, n_ins = _INSERTION.subn(r"\1", content)
        report.notes_removed += n_notes + n_fn
        report.insertions_unwrapped += n_ins
        lines = [clean_line(line) for line in content.split("\n")]
        content = "\n".join(line for line in lines if _HAN.search(line))
        title = clean_title(poem.title)
        report.titles_cleaned += title != collapse_spaces(poem.title)
        lost, lost_in_title = _lost_characters(content), _lost_characters(title)
        if lost or lost_in_title:
            report.placeholder_poems += 1
            report.placeholder_titles += not lost
            report.placeholder_chars.update(
                c if len(c) == 1 else "{…}" for c in lost + lost_in_title
            )
            continue
        if not content:
            report.empty_poems += 1
            continue
        kept.append(Poem(title, collapse_spaces(poem.author), content))
    report.poems_out = len(kept)
    return kept, report


def _remove_notes(text: str) -> tuple[str, int]:
    """Remove parenthesised notes, innermost first, so nested notes go too."""
    total = 0
    while True:
        text, n = _NOTE.subn("", text)
        total += n
        if n == 0:
            return text, total


def deduplicate(poems: Sequence[Poem]) -> tuple[list[Poem], int]:
    """Keep the first poem of each distinct body; return the kept poems and how many went."""
    seen: set[str] = set()
    kept = []
    for poem in poems:
        if poem.content not in seen:
            seen.add(poem.content)
            kept.append(poem)
    return kept, len(poems) - len(kept)


SPLIT_METHODS = ("random", "last")


def split_poems(
    poems: Sequence[Poem], val_fraction: float = 0.1, method: str = "random", seed: int = 1337
) -> tuple[list[Poem], list[Poem]]:
    """Split by poem: a seeded random split, or the talk's "last 10 %" of the file order."""
    if method not in SPLIT_METHODS:
        raise ValueError(f"Unknown split method {method!r}; choose one of {SPLIT_METHODS}.")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}.")
    n_val = max(1, round(len(poems) * val_fraction))
    if method == "last":
        order = np.arange(len(poems))
    else:
        order = np.random.default_rng(seed).permutation(len(poems))
    val_idx = set(order[-n_val:].tolist())
    train = [p for i, p in enumerate(poems) if i not in val_idx]
    val = [p for i, p in enumerate(poems) if i in val_idx]
    return train, val


@dataclass
class Corpus:
    """Clean simplified poems, split into train and validation, with the cleaning report."""

    train: list[Poem]
    val: list[Poem]
    report: CleaningReport
    split: str
    val_fraction: float
    seed: int


def clean_corpus() -> tuple[list[Poem], CleaningReport]:
    """Fetch if needed, then load, convert 繁→简, clean and dedupe the poems (upstream order)."""
    poems = to_simplified(load_poems(fetch("tang", progress=False)))
    poems, report = clean_poems(poems)
    poems, report.duplicates = deduplicate(poems)
    report.poems_out = len(poems)
    return poems, report


def load_corpus(split: str = "random", val_fraction: float = 0.1, seed: int = 1337) -> Corpus:
    """The clean corpus split into train and validation poems."""
    poems, report = clean_corpus()
    train, val = split_poems(poems, val_fraction, split, seed)
    return Corpus(train, val, report, split, val_fraction, seed)
