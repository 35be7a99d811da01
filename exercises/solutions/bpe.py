"""Solution (notebook 02): one byte-pair-encoding merge step, and a tiny BPE trainer built on it."""

from collections import Counter
from collections.abc import Sequence
from itertools import pairwise

from tinylm.bpe import pretokenize


def get_pair_counts(chunks: Sequence[Sequence[int]]) -> Counter[tuple[int, int]]:
    """Count the adjacent pairs of token ids inside each chunk: BPE merges the most common."""
    counts: Counter[tuple[int, int]] = Counter()
    for ids in chunks:
        for pair in pairwise(ids):  # (ids[i], ids[i + 1]): overlaps count, chunk by chunk
            counts[pair] += 1
    return counts


def most_frequent_pair(counts: Counter[tuple[int, int]]) -> tuple[int, int] | None:
    """The pair with the highest count; on a tie the lowest pair, so training is deterministic."""
    if not counts:
        return None
    return min(counts, key=lambda pair: (-counts[pair], pair))  # most frequent, then lowest


def merge(ids: Sequence[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """A new list: ids with every occurrence of pair replaced by new_id, scanning left to right."""
    out = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2  # both tokens are used up: "aaa" becomes [Z, a], not [Z, Z]
        else:
            out.append(ids[i])
            i += 1
    return out


def train_bpe(text: str, vocab_size: int) -> list[tuple[int, int]]:
    """Learn vocab_size - 256 merges from text; merge i makes the new token id 256 + i."""
    if vocab_size < 256:
        raise ValueError(f"vocab_size must be at least 256 (the byte values), got {vocab_size}")
    chunks = [list(chunk.encode("utf-8")) for chunk in pretokenize(text)]  # bytes 0 … 255
    merges = []
    for new_id in range(256, vocab_size):
        pair = most_frequent_pair(get_pair_counts(chunks))
        if pair is None:  # every chunk is a single token: nothing left to merge
            break
        merges.append(pair)
        chunks = [merge(chunk, pair, new_id) for chunk in chunks]
    return merges


def encode(text: str, merges: Sequence[tuple[int, int]]) -> list[int]:
    """The token ids of text under merges (merge i made token 256 + i), cut as the trainer cuts."""
    rank = {pair: i for i, pair in enumerate(merges)}  # pair → its merge's index
    ids = []
    for chunk in pretokenize(text):
        chunk_ids = list(chunk.encode("utf-8"))
        while len(chunk_ids) >= 2:
            # The pair of this chunk learned first; pairs never learned rank after all others.
            pair = min(pairwise(chunk_ids), key=lambda p: rank.get(p, len(merges)))
            if pair not in rank:  # no learned pair left in the chunk
                break
            chunk_ids = merge(chunk_ids, pair, 256 + rank[pair])
        ids.extend(chunk_ids)
    return ids


def decode(ids: Sequence[int], merges: Sequence[tuple[int, int]]) -> str:
    """The text the token ids spell under merges: the inverse of encode."""
    spelled = [bytes([b]) for b in range(256)]  # token id → the bytes it stands for
    for a, b in merges:
        spelled.append(spelled[a] + spelled[b])
    return b"".join(spelled[i] for i in ids).decode("utf-8", errors="replace")
