"""From upstream JSON to training batches: fetch, verify, 繁→简, clean, dedupe, split, pack, sample.

The corpus is the 全唐诗 (Complete Tang Poems) folder of the chinese-poetry repository at a pinned
commit. `fetch` downloads it (or copies it from a local mirror), checking every file against the
sha256 manifest committed in ``data/manifest.json``. `load_corpus` turns the JSON into clean,
simplified, de-duplicated poems split into train and validation sets. `prepare` encodes both
splits with one tokenizer and packs the ids into ``train.bin`` / ``val.bin`` memmaps, and
`BatchSampler` draws ``(x, y)`` next-token batches from them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from tinylm.progress import progress_bar
from tinylm.tokenizers import DEFAULT_BPE_VOCAB_SIZE as DEFAULT_BPE_VOCAB
from tinylm.tokenizers import Tokenizer, get_tokenizer, load_tokenizer

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MANIFEST_PATH = PROJECT_ROOT / "data" / "manifest.json"
MIRROR_ENV = "TINYLM_DATA_MIRROR"  # a folder laid out like upstream, e.g. <mirror>/chinese-poetry
DATA_DIR_ENV = "TINYLM_DATA_DIR"  # where downloads and packed data go (default: <project>/data)
PIPELINE_VERSION = 3  # bump when cleaning or packing changes, so cached .bin files are rebuilt
DOWNLOAD_TIMEOUT_S = 30
PACKED_FILES = ("train.bin", "val.bin", "tokenizer.json")  # a prepared tokenization's files

PLACEHOLDERS = "□■●○"  # characters the editors used for lost or unreadable characters
_NOTE = re.compile(r"（[^（）]*）|\([^()]*\)")  # editorial notes: variant readings, sources
_FOOTNOTE = re.compile(r"〖[^〖〗]*〗")  # footnote markers such as 〖1〗
_INSERTION = re.compile(r"\[([^\[\]]*)\]")  # [字]: a character the editors restored
_COMPOSED = re.compile(r"\{[^{}]*\}")  # {艹尔}: a rare character described by its parts
_OPEN_NOTE = re.compile(r"（[^）]*$")  # a note cut off at the end of a long title
_FOOTNOTE_NUMBER = re.compile(r"\[[一二三四五六七八九十○〇]+\]")  # [一], [二○]: footnote numbers
_HAN = re.compile(r"[\u3400-\u9fff\U00020000-\U0003ffff]")


class DataError(RuntimeError):
    """A problem with the course data, with a message that says what to do about it."""


# --------------------------------------------------------------------------- fetch and verify


@dataclass(frozen=True)
class ManifestFile:
    """One upstream file: its path in the repository, checksum, size and group."""

    path: str
    sha256: str
    bytes: int
    group: str


@dataclass(frozen=True)
class Manifest:
    """The pinned upstream commit and the files the course uses from it."""

    commit: str
    url_template: str
    mirror_subdir: str
    files: tuple[ManifestFile, ...]

    def group(self, name: str) -> list[ManifestFile]:
        """Files of one group (``tang`` for the poems, ``strains`` for the 平仄 labels)."""
        chosen = [f for f in self.files if f.group == name]
        if not chosen:
            groups = sorted({f.group for f in self.files})
            raise ValueError(f"No file group {name!r} in the manifest; groups are {groups}.")
        return chosen

    def url(self, file: ManifestFile) -> str:
        """Raw download address of a file at the pinned commit (the path percent-encoded)."""
        return self.url_template.format(commit=self.commit, path=urllib.parse.quote(file.path))


def load_manifest(path: Path = MANIFEST_PATH) -> Manifest:
    """Read the committed sha256 manifest of the upstream files."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    files = tuple(ManifestFile(**f) for f in raw["files"])
    return Manifest(raw["commit"], raw["url_template"], raw["mirror_subdir"], files)


def data_dir() -> Path:
    """Root folder for downloads and packed data (TINYLM_DATA_DIR, else ``<project>/data``)."""
    return Path(os.environ.get(DATA_DIR_ENV) or PROJECT_ROOT / "data")


def raw_dir() -> Path:
    """Where the verified upstream files live, laid out as in the upstream repository."""
    return data_dir() / "raw" / "chinese-poetry"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(
    group: str = "tang",
    dest: Path | None = None,
    mirror: Path | str | None = None,
    progress: bool = True,
    manifest: Manifest | None = None,
) -> Path:
    """Download (or copy from a mirror) and verify every file of a group; return the raw folder.

    Files already present with the right checksum are skipped. Each file is written to a
    temporary name, verified, then renamed, so an interrupted fetch never leaves a bad file.
    """
    manifest = manifest or load_manifest()
    dest = Path(dest) if dest is not None else raw_dir()
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    source_root = _mirror_root(Path(mirror), manifest) if mirror else None
    files = manifest.group(group)
    for file in progress_bar(files, desc=f"fetch {group}", unit="file", disable=not progress):
        target = dest / file.path
        if target.exists() and sha256_file(target) == file.sha256:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        try:
            if source_root is not None:
                _copy_from_mirror(source_root, file, partial)
            else:
                _download(manifest.url(file), partial)
            _verify(partial, file)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return dest


def _mirror_root(mirror: Path, manifest: Manifest) -> Path:
    """The folder inside a mirror that mirrors the upstream repository."""
    root = mirror / manifest.mirror_subdir
    if not root.is_dir():
        raise DataError(
            f"{MIRROR_ENV} points at {mirror}, but there is no '{manifest.mirror_subdir}' folder "
            f"inside it. The mirror must hold an exact copy of the upstream repository at "
            f"commit {manifest.commit[:12]} under {mirror / manifest.mirror_subdir}. Fix the "
            f"path, or unset {MIRROR_ENV} to download from upstream."
        )
    return root


def _copy_from_mirror(root: Path, file: ManifestFile, partial: Path) -> None:
    source = root / file.path
    if not source.is_file():
        raise DataError(
            f"The mirror {root} has no file {file.path}. Copy the complete upstream folder into "
            f"the mirror, or unset {MIRROR_ENV} to download from upstream."
        )
    shutil.copyfile(source, partial)


def _download(url: str, partial: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            with open(partial, "wb") as out:
                shutil.copyfileobj(response, out)
    except (urllib.error.URLError, OSError) as error:
        raise DataError(
            f"Could not download {url} ({error}). This machine seems to have no internet access "
            f"or the server is unreachable. Check your connection and run again (files already "
            f"verified are kept), or point {MIRROR_ENV} at a folder holding a copy of the "
            f"upstream files, e.g. `export {MIRROR_ENV}=/path/to/mirror`."
        ) from error


def _verify(path: Path, file: ManifestFile) -> None:
    actual = sha256_file(path)
    if actual != file.sha256:
        raise DataError(
            f"Checksum mismatch for {file.path}: expected sha256 {file.sha256[:16]}…, got "
            f"{actual[:16]}…. The copy is damaged or from another commit of the repository, so "
            f"it was not kept. Run the fetch again; if it persists, replace the file in your "
            f"mirror with the upstream file at the pinned commit."
        )


# --------------------------------------------------------------------------- poems


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
            "`tinylm.data.fetch(group)` from Python)."
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


# --------------------------------------------------------------------------- pack


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits in 16 bits (half the disk and memory), else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def pack(token_lists: Iterable[Sequence[int]], eot_id: int, dtype: np.dtype) -> np.ndarray:
    """Concatenate each document's ids followed by the end-of-text id into one flat array.

    One pass with preallocated output: linear time, unlike ``ids = ids + doc`` in a loop.
    """
    docs = [np.asarray(ids, dtype=dtype) for ids in token_lists]
    out = np.empty(sum(len(d) + 1 for d in docs), dtype=dtype)
    pos = 0
    for doc in docs:
        out[pos : pos + len(doc)] = doc
        out[pos + len(doc)] = eot_id
        pos += len(doc) + 1
    return out


def write_array(array: np.ndarray, path: Path) -> None:
    """Write raw array bytes to a temporary name, then rename (readable as a memmap)."""
    partial = path.with_name(path.name + ".part")
    array.tofile(partial)
    os.replace(partial, path)


def write_json(obj: dict, path: Path) -> None:
    """Write JSON to a temporary name, then rename."""
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)


@dataclass
class PackedData:
    """A prepared tokenization: memmapped train/val ids, the tokenizer, and meta.json."""

    path: Path
    train: np.ndarray
    val: np.ndarray
    tokenizer: Tokenizer
    meta: dict


def packed_name(
    tokenizer: str, split: str = "random", bpe_vocab_size: int = DEFAULT_BPE_VOCAB
) -> str:
    """Folder name of a prepared tokenization, e.g. ``char``, ``bpe8192``, ``gpt2-last``."""
    name = f"bpe{bpe_vocab_size}" if tokenizer == "bpe" else tokenizer
    return name if split == "random" else f"{name}-{split}"


def packed_dir(
    tokenizer: str, split: str = "random", bpe_vocab_size: int = DEFAULT_BPE_VOCAB
) -> Path:
    """Folder holding train.bin, val.bin, tokenizer.json and meta.json of one tokenization."""
    return data_dir() / "processed" / packed_name(tokenizer, split, bpe_vocab_size)


def inputs_hash(
    tokenizer: str, split: str, val_fraction: float, seed: int, bpe_vocab_size: int
) -> str:
    """Hash of everything a packed tokenization depends on, so a stale cache is rebuilt."""
    manifest = load_manifest()
    key = {
        "pipeline": PIPELINE_VERSION,
        "files": [f.sha256 for f in manifest.group("tang")],
        "tokenizer": tokenizer,
        "bpe_vocab_size": bpe_vocab_size if tokenizer == "bpe" else None,
        "split": split,
        "val_fraction": val_fraction,
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def prepare(
    tokenizer: str = "char",
    split: str = "random",
    val_fraction: float = 0.1,
    seed: int = 1337,
    bpe_vocab_size: int = DEFAULT_BPE_VOCAB,
    force: bool = False,
    corpus: Corpus | None = None,
    repair: bool = True,
) -> PackedData:
    """Encode the corpus with one tokenizer and pack it into train.bin / val.bin (cached).

    The result is reused only when ``meta.json`` carries the same inputs hash and every file
    still has the size and sha256 recorded there; meta.json is written last, so a run killed
    half-way is simply rebuilt next time. Damaged files (cut short, changed) are rebuilt, or
    with repair=False an error that names them (training refuses to guess what happened).
    """
    out = packed_dir(tokenizer, split, bpe_vocab_size)
    digest = inputs_hash(tokenizer, split, val_fraction, seed, bpe_vocab_size)
    meta = _current_meta(out, digest)
    if meta is not None and not force:
        damage = packed_damage(out, meta)
        if damage is None:
            return _open_packed(out, meta)
        if not repair:
            raise DataError(_rebuild_hint(damage, tokenizer, split, bpe_vocab_size))
    if corpus is None or (corpus.split, corpus.val_fraction, corpus.seed) != (
        split,
        val_fraction,
        seed,
    ):
        corpus = load_corpus(split, val_fraction, seed)
    train_texts = [p.text for p in corpus.train]
    val_texts = [p.text for p in corpus.val]
    tok = get_tokenizer(tokenizer, train_texts=train_texts, vocab_size=bpe_vocab_size)
    dtype = token_dtype(tok.vocab_size)
    train_ids = pack(tok.encode_batch(train_texts), tok.eot_id, dtype)
    val_ids = pack(tok.encode_batch(val_texts), tok.eot_id, dtype)
    out.mkdir(parents=True, exist_ok=True)
    write_array(train_ids, out / "train.bin")
    write_array(val_ids, out / "val.bin")
    tok.save(out / "tokenizer.json")
    unk_id = getattr(tok, "unk_id", None)
    meta = {
        "tokenizer": tokenizer,
        "vocab_size": tok.vocab_size,
        "eot_id": tok.eot_id,
        "dtype": dtype.name,
        "split": split,
        "val_fraction": val_fraction,
        "seed": seed,
        "inputs_hash": digest,
        "pipeline_version": PIPELINE_VERSION,
        "counts": {
            "train_poems": len(train_texts),
            "val_poems": len(val_texts),
            "train_chars": sum(map(len, train_texts)),
            "val_chars": sum(map(len, val_texts)),
            "train_tokens": int(train_ids.size),
            "val_tokens": int(val_ids.size),
            "val_unknown_tokens": int((val_ids == unk_id).sum()) if unk_id is not None else 0,
        },
        "cleaning": {k: v for k, v in asdict(corpus.report).items() if k != "placeholder_chars"},
        "files": {name: file_record(out / name) for name in PACKED_FILES},
    }
    write_json(meta, out / "meta.json")
    return _open_packed(out, meta)


def file_record(path: Path) -> dict:
    """A file's size and sha256, as meta.json records them to find damaged files later."""
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def packed_damage(folder: Path, meta: dict) -> str | None:
    """What is wrong with a prepared folder's files (missing, cut short, changed), or None.

    Compares each file with the size and sha256 in meta.json: 6-13 ms for each of the course's
    tokenizations (8-18 MB) on a 2-core Xeon VM.
    """
    recorded = meta.get("files")
    if not isinstance(recorded, dict):
        return f"{folder / 'meta.json'} records no file checksums (written by an older tinylm)"
    for name in PACKED_FILES:
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        size, want = path.stat().st_size, recorded[name]["bytes"]
        if size != want:
            return f"{path} has {size:,} bytes where meta.json records {want:,} (cut short?)"
        if sha256_file(path) != recorded[name]["sha256"]:
            return f"{path} has changed since it was written (its sha256 differs from meta.json's)"
    return None


def _current_meta(folder: Path, digest: str) -> dict | None:
    """meta.json if it is readable, matches this inputs hash and records checksums; else None."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("inputs_hash") != digest or "files" not in meta:
        return None  # missing, stale or from an older tinylm: rebuilt without a word
    return meta


def _rebuild_hint(damage: str, tokenizer: str, split: str, bpe_vocab_size: int) -> str:
    """A damage report with the command that rebuilds this tokenization."""
    command = f"python -m tinylm data --tokenizer {tokenizer}"
    if split != "random":
        command += f" --split {split}"
    if tokenizer == "bpe" and bpe_vocab_size != DEFAULT_BPE_VOCAB:
        command += f" --bpe-vocab {bpe_vocab_size}"
    return f"The prepared data is damaged: {damage}. Rebuild it with `{command}`."


def is_prepared(
    tokenizer: str,
    split: str = "random",
    val_fraction: float = 0.1,
    seed: int = 1337,
    bpe_vocab_size: int = DEFAULT_BPE_VOCAB,
) -> bool:
    """True when meta.json matches the current inputs hash and every packed file is intact."""
    folder = packed_dir(tokenizer, split, bpe_vocab_size)
    digest = inputs_hash(tokenizer, split, val_fraction, seed, bpe_vocab_size)
    meta = _current_meta(folder, digest)
    return meta is not None and packed_damage(folder, meta) is None


def prepare_all(
    tokenizers: Sequence[str],
    split: str = "random",
    bpe_vocab_size: int = DEFAULT_BPE_VOCAB,
    force: bool = False,
) -> dict[str, PackedData]:
    """Prepare several tokenizations, loading and cleaning the corpus at most once."""
    corpus = None
    packed = {}
    for name in tokenizers:
        if corpus is None and (
            force or not is_prepared(name, split, bpe_vocab_size=bpe_vocab_size)
        ):
            corpus = load_corpus(split)
        packed[name] = prepare(
            name, split, bpe_vocab_size=bpe_vocab_size, force=force, corpus=corpus
        )
    return packed


def load_packed(
    tokenizer: str = "char", split: str = "random", bpe_vocab_size: int = DEFAULT_BPE_VOCAB
) -> PackedData:
    """Open a prepared tokenization as read-only memmaps (prepare it first)."""
    folder = packed_dir(tokenizer, split, bpe_vocab_size)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise DataError(
            f"No prepared data in {folder}. Prepare it first: "
            f"`python -m tinylm data --tokenizer {tokenizer}` (or `make data`)."
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise DataError(
            _rebuild_hint(f"{meta_path} is unreadable ({error})", tokenizer, split, bpe_vocab_size)
        ) from None
    damage = packed_damage(folder, meta)
    if damage is not None:
        raise DataError(_rebuild_hint(damage, tokenizer, split, bpe_vocab_size))
    return _open_packed(folder, meta)


def _open_packed(folder: Path, meta: dict) -> PackedData:
    """The memmaps and tokenizer of a prepared folder whose files were checked against meta."""
    dtype = np.dtype(meta["dtype"])
    return PackedData(
        path=folder,
        train=np.memmap(folder / "train.bin", dtype=dtype, mode="r"),
        val=np.memmap(folder / "val.bin", dtype=dtype, mode="r"),
        tokenizer=load_tokenizer(folder / "tokenizer.json"),
        meta=meta,
    )


# --------------------------------------------------------------------------- batches


class BatchSampler:
    """Random ``(x, y)`` windows of a packed token array, y shifted one token to the right.

    With resident=True (what training on a GPU asks for) the whole token array is copied to the
    device once, tens of MB, and every batch is cut out there: no host work and no copy per
    step. Otherwise, on CUDA, each batch is copied from pinned memory without blocking, so the
    copy overlaps with the previous step's compute. Either way the window starts come from the
    same CPU generator, so the batches are the same on every device and a run resumes exactly.

    With start_token set (the end-of-text id), every window starts at one of those tokens
    instead of anywhere: position 0 is then where a document begins, as when the model writes a
    poem after end-of-text. A model with learned absolute positions then sees each verse at the
    positions where it will write it, instead of at every shift a random crop gives.
    """

    def __init__(
        self,
        data: np.ndarray,
        batch_size: int,
        block_size: int,
        device: str | torch.device = "cpu",
        seed: int = 0,
        resident: bool = False,
        start_token: int | None = None,
    ) -> None:
        if len(data) <= block_size:
            raise ValueError(
                f"The token array has {len(data)} tokens, too few for block_size={block_size}; "
                "use a smaller block_size or more data."
            )
        self.data = data
        self.batch_size = batch_size
        self.block_size = block_size
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        self.starts = None  # where windows may start, when start_token is set
        if start_token is not None:
            starts = np.flatnonzero(np.asarray(data[: len(data) - block_size]) == start_token)
            if len(starts) == 0:
                raise ValueError(
                    f"No token {start_token} (start_token) is followed by "
                    f"{block_size} more tokens: nowhere to start a window."
                )
            self.starts = torch.from_numpy(starts.astype(np.int64))  # (n_starts,)
        self.tokens = None  # the token array on the device, when resident
        if resident:  # int32: indexable on every device, half the memory of int64
            self.tokens = torch.from_numpy(np.asarray(data).astype(np.int32)).to(self.device)
            self.window = torch.arange(block_size + 1, device=self.device)  # (T+1,)

    def __iter__(self) -> BatchSampler:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sample()

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw one batch: x and y of shape (B, T), int64, on the sampler's device."""
        if self.starts is None:
            starts = torch.randint(
                len(self.data) - self.block_size, (self.batch_size,), generator=self.generator
            )  # (B,), on the host
        else:
            starts = self.starts[
                torch.randint(len(self.starts), (self.batch_size,), generator=self.generator)
            ]  # (B,)
        if self.tokens is not None:
            starts = starts.to(self.device, non_blocking=True)
            chunk = self.tokens[starts[:, None] + self.window].long()  # (B, T+1), on the device
            # Contiguous, as the host path's: the slices alone are strided views, which the
            # model's targets.view(-1) cannot flatten.
            return chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()
        window = np.arange(self.block_size + 1)
        chunk = torch.from_numpy(
            self.data[starts.numpy()[:, None] + window].astype(np.int64)
        )  # (B, T+1)
        x, y = chunk[:, :-1], chunk[:, 1:]  # (B, T) each; y[t] is the token after x[t]
        if self.device.type == "cuda":
            return (
                x.pin_memory().to(self.device, non_blocking=True),
                y.pin_memory().to(self.device, non_blocking=True),
            )
        return x.contiguous(), y.contiguous()
