"""Checks of exercises/bpe.py against tinylm.bpe (notebook 02)."""

from collections import Counter
from itertools import pairwise

import pytest

from exercises.tests.checks import expect
from tinylm import bpe

# --------------------------------------------------------------------------- the reference
# The only lines of this file that call tinylm: adapt them here if its API changes.


def reference_counts(chunks):
    return bpe.get_pair_counts(chunks)


def reference_merge(ids, pair, new_id):
    return bpe.merge(ids, pair, new_id)


def reference_train(text, vocab_size):
    return bpe.train_bpe(text, vocab_size)


def reference_chunks(text):
    return [list(chunk.encode("utf-8")) for chunk in bpe.pretokenize(text)]


def reference_vocab(merges):
    return bpe.vocab_bytes(merges)


def reference_encode(text, merges):
    return bpe.bpe_encode(text, merges)


def reference_best(counts):
    """train_bpe's rule (it has no function of its own): most frequent, then lowest pair."""
    return min(counts, key=lambda pair: (-counts[pair], pair)) if counts else None


# --------------------------------------------------------------------------- diagnoses


def check_counts(got, expected, chunks):
    """Name the first pair whose count is wrong, and why it is what it is."""
    __tracebackhide__ = True
    expect(
        isinstance(got, dict), f"get_pair_counts should return a Counter, got {type(got).__name__}"
    )
    got = {pair: n for pair, n in got.items() if n}
    for pair in sorted(set(got) | set(expected)):
        want, have = expected.get(pair, 0), got.get(pair, 0)
        if want == have:
            continue
        if want == 0:
            expect(
                False,
                f"pair {pair} is counted {have} times but never occurs inside one "
                "chunk: it spans the end of one chunk and the start of the next; "
                "count the pairs of each chunk on its own",
            )
        example = next(c for c in chunks if pair in pairwise(c))
        expect(
            False,
            f"pair {pair} should be counted {want} times, got {have} (e.g. chunk "
            f"{list(example)}; overlapping pairs count: [97, 97, 97] holds (97, 97) "
            "twice)",
        )


def shorten(items, n=6):
    """The first n items of a list for a message, and how many more there are."""
    items = list(items)
    return str(items) if len(items) <= n else f"{str(items[:n])[:-1]}, … ({len(items)} in all)]"


def describe_merges(merges):
    vocab = reference_vocab(merges)
    return [f"{pair} → {256 + i} ({vocab[256 + i]!r})" for i, pair in enumerate(merges)]


# --------------------------------------------------------------------------- pair counts

COUNT_CASES = {
    "overlaps": [[97, 97, 97]],
    "several chunks": [[97, 98], [98, 99], [97, 98, 97, 98]],
    "one-token and empty chunks": [[97], [], [98, 97]],
    "no chunks": [],
    "a poem": reference_chunks("床前明月光，疑是地上霜。举头望明月，低头思故乡。"),
}


@pytest.mark.parametrize("chunks", COUNT_CASES.values(), ids=COUNT_CASES.keys())
def test_pair_counts(exercise, chunks):
    check_counts(exercise.get_pair_counts(chunks), reference_counts(chunks), chunks)


def test_pairs_do_not_cross_chunks(exercise):
    chunks = [[1, 2], [3, 4]]
    check_counts(exercise.get_pair_counts(chunks), reference_counts(chunks), chunks)


# --------------------------------------------------------------------------- the best pair

BEST_CASES = {
    "clear winner": Counter({(1, 2): 1, (5, 6): 4, (3, 4): 2}),
    "tie": Counter({(98, 99): 3, (97, 98): 3, (97, 99): 2}),
    "tie on the second id": Counter({(97, 99): 2, (97, 98): 2}),
    "one pair": Counter({(7, 7): 1}),
}


@pytest.mark.parametrize("counts", BEST_CASES.values(), ids=BEST_CASES.keys())
def test_most_frequent_pair(exercise, counts):
    got = exercise.most_frequent_pair(Counter(counts))
    want = reference_best(counts)
    expect(isinstance(got, tuple), f"most_frequent_pair should return a tuple (a, b), got {got!r}")
    tied = sorted(pair for pair, n in counts.items() if n == counts[want])
    if len(tied) > 1:
        expect(
            got == want,
            f"pairs {', '.join(map(str, tied))} are all counted {counts[want]} "
            f"times; on a tie pick the lowest pair, {want}, so that training is "
            f"deterministic; got {got}",
        )
    expect(
        got == want,
        f"the most frequent pair is {want} ({counts[want]} times), got {got}"
        f"{f' ({counts[got]} times)' if got in counts else ''}",
    )


def test_most_frequent_pair_of_nothing_is_none(exercise):
    got = exercise.most_frequent_pair(Counter())
    expect(got is None, f"with no pairs at all most_frequent_pair should return None, got {got}")


# --------------------------------------------------------------------------- merge

MERGE_CASES = {
    "overlap": ([97, 97, 97], (97, 97), 256),
    "twice": ([1, 2, 3, 1, 2], (1, 2), 300),
    "at the end": ([5, 1, 2], (1, 2), 256),
    "four in a row": ([7, 7, 7, 7], (7, 7), 256),
    "absent": ([1, 3, 2], (1, 2), 256),
    "half a pair": ([1], (1, 2), 256),
    "empty": ([], (1, 2), 256),
}


@pytest.mark.parametrize(("ids", "pair", "new_id"), MERGE_CASES.values(), ids=MERGE_CASES.keys())
def test_merge(exercise, ids, pair, new_id):
    original = list(ids)
    got = exercise.merge(ids, pair, new_id)
    want = reference_merge(ids, pair, new_id)
    expect(ids == original, f"merge changed its input ids to {ids}; build and return a new list")
    call = f"merge({original}, {pair}, {new_id})"
    expect(isinstance(got, list), f"{call} should return a list, got {type(got).__name__}")
    expect(
        got == want,
        f"{call} should be {want}, got {got}: scan left to right; where ids[i], "
        "ids[i + 1] is the pair, write new_id and skip both (occurrences do not "
        "overlap), else copy ids[i]",
    )


# --------------------------------------------------------------------------- training

TEXTS = {
    "wikipedia's example": "aaabdaaabac",
    "words": "hello hello hello world, low lower lowest",
    "a poem": "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
}


@pytest.mark.parametrize("n_merges", [1, 6])
@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
def test_train_bpe_learns_the_reference_merges(exercise, text, n_merges):
    got = exercise.train_bpe(text, 256 + n_merges)
    want = reference_train(text, 256 + n_merges)
    expect(
        isinstance(got, list), f"train_bpe should return a list of pairs, got {type(got).__name__}"
    )
    got = [tuple(pair) for pair in got]
    for i, (mine, theirs) in enumerate(zip(got, want, strict=False)):  # lengths: below
        agree = f"the first {i} merges agree. " if i else ""
        expect(
            mine == theirs,
            f"merge {i} should be {describe_merges(want)[i]}, got {mine}; "
            f"{agree}Each step: count the pairs of every "
            "chunk (pretokenize the text first: merges never cross chunks), "
            "take the most frequent (lowest on ties), merge it everywhere "
            f"into id {256 + i}",
        )
    expect(
        len(got) == len(want),
        f"expected {len(want)} merges, got {len(got)}: learn "
        f"vocab_size - 256 = {n_merges} merges, stopping early only "
        "when no chunk has two tokens left",
    )


def test_train_bpe_stops_when_nothing_is_left(exercise):
    got = exercise.train_bpe("aaaa", 300)
    want = reference_train("aaaa", 300)
    expect(
        [tuple(p) for p in got] == want,
        f"'aaaa' allows only {len(want)} merges, {describe_merges(want)}, then it is one "
        f"token; got {shorten(got)}: stop when most_frequent_pair finds no pair",
    )


def test_train_bpe_with_no_merges(exercise):
    got = exercise.train_bpe("hello", 256)
    expect(list(got) == [], f"vocab_size=256 is the bytes alone: no merges, got {got}")


def test_train_bpe_rejects_a_vocabulary_smaller_than_the_bytes(exercise):
    try:
        got = exercise.train_bpe("hello", 255)
    except ValueError:
        return
    expect(
        False,
        f"train_bpe('hello', vocab_size=255) should raise ValueError (the 256 byte "
        f"values are always in the vocabulary), but returned {got}",
    )


# --------------------------------------------------------------------------- encode and decode

POEM = "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。\n"
TRAINING_TEXT = POEM * 3 + "国破山河在，城春草木深。感时花溅泪，恨别鸟惊心。 moon, moonlight 明月"
ENCODE_TEXTS = {  # the training poem, then texts it never saw
    "the poem": POEM,
    "unseen": "明月几时有？把酒问青天。",
    "ascii": "the moon 月 and 12 frosts\n",
    "empty": "",
    "one": "霜",
}


@pytest.fixture(scope="module")
def learned():
    return reference_train(TRAINING_TEXT, 256 + 40)


@pytest.mark.parametrize("text", ENCODE_TEXTS.values(), ids=ENCODE_TEXTS.keys())
def test_encode_equals_tinylms(exercise, learned, text):
    got, expected = exercise.encode(text, learned), reference_encode(text, learned)
    if got == expected:
        return
    index = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), None)
    where = (
        f"id {index} is {got[index]}, expected {expected[index]}"
        if index is not None
        else f"got {len(got)} ids, expected {len(expected)}"
    )
    bytes_only = [b for chunk in reference_chunks(text) for b in chunk]
    hint = (
        "no merge was applied: look up each adjacent pair in the learned merges"
        if got == bytes_only and got != expected
        else "apply, again and again, the learned merge of lowest index (learned first) present "
        "in the chunk, not the most frequent pair of this text; and never merge across chunks"
    )
    expect(False, f"encode({text!r}): {where}. {hint}")


def test_encode_without_merges_gives_the_bytes(exercise):
    expect(
        exercise.encode("月 moon", []) == list("月 moon".encode()),
        "with no merges every token is one UTF-8 byte: 月 is the three bytes 230, 156, 136",
    )


@pytest.mark.parametrize("text", ENCODE_TEXTS.values(), ids=ENCODE_TEXTS.keys())
def test_decode_inverts_encode(exercise, learned, text):
    ids = reference_encode(text, learned)
    got = exercise.decode(ids, learned)
    expect(
        got == text,
        f"decode(encode({text!r})) gave {got!r}: spell each id as its bytes (a merge's bytes "
        "are its two parts' bytes joined), join all of them, then decode the UTF-8 once",
    )


def test_decode_replaces_broken_characters(exercise):
    half = list("月".encode())[:2]  # two of the character's three bytes
    try:
        got = exercise.decode(half + [ord("a")], [])
    except NotImplementedError:
        raise
    except Exception as error:
        raise AssertionError(
            f"decoding half a character raised {type(error).__name__}: {error}; decode the "
            'bytes with errors="replace", as tiktoken does'
        ) from error
    expect(
        got.endswith("a") and "\ufffd" in got,
        f"half a character and 'a' decoded to {got!r}: the broken bytes should become U+FFFD "
        "(�) and the 'a' stay",
    )


def test_encode_applies_merges_in_the_order_learned(exercise):
    merges = [(98, 99), (97, 98)]  # "bc" learned first (id 256), then "ab" (id 257)
    got, expected = exercise.encode("abc", merges), reference_encode("abc", merges)
    expect(
        got == expected,
        f"encode('abc') with 'bc' learned before 'ab' gave {got}, expected {expected}: both "
        "pairs occur once, and the merge learned first (lowest index) must win",
    )


def test_encode_never_merges_across_chunks(exercise):
    merges = [(98, 32)]  # "b" + " ": a pair that only occurs where two chunks meet
    got, expected = exercise.encode("ab cd", merges), reference_encode("ab cd", merges)
    expect(
        got == expected,
        f"encode('ab cd') with the merge ('b', ' ') gave {got}, expected {expected}: 'ab' and "
        "' cd' are separate chunks (tinylm.bpe.pretokenize), and no merge crosses from one "
        "to the next",
    )
