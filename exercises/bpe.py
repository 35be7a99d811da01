"""Exercise (notebook 02): one byte-pair-encoding merge step, and a tiny BPE trainer built on it.

Write the four functions, then check them with `make exercises` or `pytest exercises -k bpe`.
The checks compare your merges with `tinylm.bpe.train_bpe` on small texts.
"""

from collections import Counter
from collections.abc import Sequence


def get_pair_counts(chunks: Sequence[Sequence[int]]) -> Counter[tuple[int, int]]:
    """Count the adjacent pairs of token ids inside each chunk: BPE merges the most common.

    Pairs never cross from one chunk to the next. Overlapping pairs count: [97, 97, 97] holds
    (97, 97) twice. Chunks of 0 or 1 token add nothing; no chunks give an empty Counter.
    """
    raise NotImplementedError("not implemented yet: write get_pair_counts in exercises/bpe.py")


def most_frequent_pair(counts: Counter[tuple[int, int]]) -> tuple[int, int] | None:
    """The pair with the highest count; on a tie the lowest pair, so training is deterministic.

    "Lowest" compares pairs as tuples: (97, 98) < (97, 99) < (98, 0). None if counts is empty.
    """
    raise NotImplementedError("not implemented yet: write most_frequent_pair in exercises/bpe.py")


def merge(ids: Sequence[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """A new list: ids with every occurrence of pair replaced by new_id, scanning left to right.

    Occurrences do not overlap: merge([97, 97, 97], (97, 97), 256) == [256, 97].
    ids itself is left unchanged; an empty ids gives [].
    """
    raise NotImplementedError("not implemented yet: write merge in exercises/bpe.py")


def train_bpe(text: str, vocab_size: int) -> list[tuple[int, int]]:
    """Learn vocab_size - 256 merges from text; merge i makes the new token id 256 + i.

    First cut text into chunks with `tinylm.bpe.pretokenize` (GPT-2's regex) and turn each
    chunk into its UTF-8 bytes (ids 0 … 255). Then repeat: count the pairs, take the most
    frequent, record it, merge it in every chunk. Stop early when no chunk has two tokens
    left. vocab_size = 256 learns nothing; vocab_size < 256 raises ValueError.
    """
    raise NotImplementedError("not implemented yet: write train_bpe in exercises/bpe.py")
