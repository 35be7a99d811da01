"""From clean poems to training batches: encode, pack, cache and sample.

`prepare` encodes both splits of the corpus with one tokenizer and packs the ids into
``train.bin`` / ``val.bin`` memmaps (cached, checked against the sizes and checksums in
``meta.json``), and `BatchSampler` draws ``(x, y)`` next-token batches from them.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tinylm.cleaning import Corpus, load_corpus
from tinylm.download import DATA_DIR_ENV, DataError, data_dir, load_manifest, sha256_file
from tinylm.tokenizers import DEFAULT_BPE_VOCAB_SIZE as DEFAULT_BPE_VOCAB
from tinylm.tokenizers import Tokenizer, get_tokenizer, load_tokenizer

PIPELINE_VERSION = 3  # bump when cleaning or packing changes, so cached .bin files are rebuilt
PACKED_FILES = ("train.bin", "val.bin", "tokenizer.json")  # a prepared tokenization's files


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


def replace_file(partial: Path, path: Path) -> None:
    """Rename a finished temporary file onto path, which must not be a device or a pipe.

    A rename replaces whatever stands at path: /dev/null itself, had a user named it.
    """
    if path.exists() and not path.is_file():
        partial.unlink(missing_ok=True)
        raise ValueError(f"{path} is not a file (a folder, device or pipe): name a file instead")
    os.replace(partial, path)


def write_array(array: np.ndarray, path: Path) -> None:
    """Write raw array bytes to a temporary name, then rename (readable as a memmap).

    Written through a Python file, not ndarray.tofile: a full disk then raises OSError with
    errno ENOSPC, where tofile says only "N requested and 0 written".
    """
    partial = path.with_name(path.name + ".part")
    try:
        with open(partial, "wb") as f:
            f.write(memoryview(np.ascontiguousarray(array)).cast("B"))
    except OSError:
        partial.unlink(missing_ok=True)  # a half-written file only fills the disk
        raise
    replace_file(partial, path)


def write_json(obj: dict, path: Path) -> None:
    """Write JSON to a temporary name, then rename."""
    partial = path.with_name(path.name + ".part")
    try:
        partial.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    except OSError:
        partial.unlink(missing_ok=True)
        raise
    replace_file(partial, path)


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
    try:
        write_array(train_ids, out / "train.bin")
        write_array(val_ids, out / "val.bin")
        tok.save(out / "tokenizer.json")
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        megabytes = (train_ids.nbytes + val_ids.nbytes) / 1e6
        raise OSError(
            f"could not write the packed data into {out}: its disk is full. It needs about "
            f"{megabytes:,.0f} MB: free that much there, or set {DATA_DIR_ENV} to a folder on "
            "another disk, and run again."
        ) from error
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
    if not isinstance(recorded, dict) or not all(
        isinstance(recorded.get(name), dict) and {"bytes", "sha256"} <= set(recorded[name])
        for name in PACKED_FILES
    ):
        return f"{folder / 'meta.json'} records no file checksums (written by an older tinylm)"
    vocab_size, dtype = meta.get("vocab_size"), meta.get("dtype")
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 1:
        return f"{folder / 'meta.json'} records no vocabulary size (vocab_size: {vocab_size!r})"
    if dtype != token_dtype(vocab_size).name:  # the only dtype prepare writes for this size
        return (
            f"{folder / 'meta.json'} says the tokens are {dtype!r}, but a vocabulary of "
            f"{vocab_size:,} is packed as {token_dtype(vocab_size).name}"
        )
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
