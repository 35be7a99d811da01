"""Exercise (notebook 02): one byte-pair-encoding merge step, a tiny BPE trainer built on it, and
encoding and decoding text with the merges it learns.

Notebook 02 §3 writes the trainer's loop out with the package's pair counting and merging;
here you write those two pieces yourself, put the loop together from them (`train_bpe`), and
then do what the notebook leaves to `tinylm`: encode new text with the learned merges and
decode it again.

Write the six functions, then check them with `make exercises` or `pytest exercises -k bpe`.
The checks compare your merges with `tinylm.bpe.train_bpe` and your token ids with
`tinylm.bpe.bpe_encode` on small texts.
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


def encode(text: str, merges: Sequence[tuple[int, int]]) -> list[int]:
    """The token ids of text under merges (merge i made token 256 + i), as the trainer would cut it.

    Cut text into chunks as `train_bpe` does, turn each chunk into its UTF-8 bytes, and apply
    the learned merges inside each chunk until none applies. When several merges could apply,
    the one learned first wins, wherever it stands in the chunk: encoding must give the ids
    training would have given this text, whatever pairs happen to be frequent in it. No merges:
    the bytes themselves.
    """
    raise NotImplementedError("not implemented yet: write encode in exercises/bpe.py")


def decode(ids: Sequence[int], merges: Sequence[tuple[int, int]]) -> str:
    """The text the token ids spell under merges: the inverse of encode.

    Ids whose bytes are not valid UTF-8 on their own (half of a Chinese character's three
    bytes, say) decode to the replacement character U+FFFD, as tiktoken does, never an error.
    """
    raise NotImplementedError("not implemented yet: write decode in exercises/bpe.py")
