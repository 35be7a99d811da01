"""Checks of exercises/sampling.py against tinylm.sampling (notebook 07)."""

import pytest
import torch
import torch.nn.functional as F

from exercises.tests.checks import at, call, check_tensor, expect, num
from tinylm import sampling

# --------------------------------------------------------------------------- the reference
# The only lines of this file that call tinylm: adapt them here if its API changes.


def reference_top_k(logits, k):
    return sampling.top_k_filter(logits, k)


def reference_top_p(logits, p):
    return sampling.top_p_filter(logits, p)


# --------------------------------------------------------------------------- diagnoses


def ordinal(n):
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def check_filtered(got, logits, expected, name, explain):
    """got keeps what expected keeps, unchanged, and sets the rest to -inf.

    explain(row, token, kept) says why the token should (not) be kept.
    """
    __tracebackhide__ = True
    check_tensor(got, name, logits.shape, logits.dtype)
    keep = expected != float("-inf")
    kept = got != float("-inf")
    wrong = kept != keep
    if wrong.any():
        index = tuple(int(i) for i in wrong.nonzero()[0])
        expect(False, explain(index[:-1], index[-1], bool(kept[index])))
    changed = keep & (got != logits)
    if changed.any():
        index = tuple(int(i) for i in changed.nonzero()[0])
        expect(
            False,
            f"{name} changed the kept logit at {at(index)} from {num(logits[index])} "
            f"to {num(got[index])}: keep the logits themselves (not probabilities), "
            "and set only the removed ones to -inf",
        )


def row_prefix(row):
    """ "row 2: " for the row of a (B, V) tensor, "" for a 1-D one."""
    if not row:
        return ""
    return f"row {row[0]}: " if len(row) == 1 else f"row {at(row)}: "


def rank_of(logits, row, token):
    """1 for the largest logit of the row, 2 for the next, … (ties share the best rank)."""
    return int((logits[row] > logits[row][token]).sum()) + 1


def explain_top_k(logits, k):
    def explain(row, token, kept):
        value, rank = logits[row][token], rank_of(logits, row, token)
        tied = int((logits[row] == value).sum())
        where = f"{row_prefix(row)}token {token} (logit {num(value)}, the {ordinal(rank)} largest"
        where += f", tied with {tied - 1} other{'s' * (tied > 2)})" if tied > 1 else ")"
        if kept:
            return (
                f"{where} was kept, but top_k={k} keeps only the {k} largest logits (and any "
                f"tied with the {ordinal(k)})"
            )
        if tied > 1:
            return (
                f"{where} was removed, but it ties with the {ordinal(k)} largest logit: "
                "ties are all kept (keep logits >= the k-th largest value)"
            )
        return f"{where} was removed, but top_k={k} keeps it"

    return explain


def explain_top_p(logits, p):
    probs = F.softmax(logits.float(), dim=-1)

    def explain(row, token, kept):
        prob = probs[row][token]
        ahead = probs[row][probs[row] > prob].sum()
        where = f"{row_prefix(row)}token {token} (probability {num(prob)})"
        if kept:
            rounding = " (up to float rounding: compare with p - 1e-6)" if ahead >= p - 1e-4 else ""
            return (
                f"{where} was kept, but the more likely tokens already hold {num(ahead)}"
                f"{rounding}, which reaches top_p={p}: it is outside the nucleus"
            )
        if ahead == 0:
            return (
                f"{where} was removed, but it is the most likely token, which is always "
                f"kept, even when top_p={p} is smaller than its probability"
            )
        return (
            f"{where} was removed, but the more likely tokens hold only {num(ahead)} < "
            f"top_p={p}, so the nucleus still needs it"
        )

    return explain


def check_untouched(logits, original, name):
    __tracebackhide__ = True
    expect(
        torch.equal(logits, original),
        f"{name} modified its input logits in place; return a "
        "new tensor (masked_fill, not masked_fill_)",
    )


# --------------------------------------------------------------------------- top-k


def check_top_k(got, logits, k):
    """got must be top_k_filter(logits, k): the reference's tokens kept, the rest -inf."""
    check_filtered(
        got,
        logits,
        reference_top_k(logits, k),
        f"top_k_filter(logits, k={k})",
        explain_top_k(logits, k),
    )


def check_top_p(got, logits, p):
    """got must be top_p_filter(logits, p): the reference's nucleus kept, the rest -inf."""
    check_filtered(
        got,
        logits,
        reference_top_p(logits, p),
        f"top_p_filter(logits, p={p})",
        explain_top_p(logits, p),
    )


def random_logits(*shape):
    torch.manual_seed(0)
    return torch.randn(*shape) * 2


@pytest.mark.parametrize("k", [1, 3, 9, 10])
def test_top_k_keeps_the_k_largest(exercise, k):
    logits = random_logits(3, 10)
    original = logits.clone()
    got = exercise.top_k_filter(logits, k)
    check_untouched(logits, original, "top_k_filter")
    check_top_k(got, logits, k)


def test_top_k_larger_than_the_vocabulary_keeps_everything(exercise):
    logits = random_logits(2, 10)
    got = call(
        exercise.top_k_filter,
        logits,
        25,
        hint="top_k=25 with a vocabulary of 10: keep every token (use min(k, V))",
    )
    check_top_k(got, logits, 25)


def test_top_k_keeps_ties_with_the_kth(exercise):
    logits = torch.tensor([[1.0, 3.0, 2.0, 2.0, 0.0], [0.5, 0.5, 0.5, -1.0, 0.5]])
    got = exercise.top_k_filter(logits, 2)
    check_top_k(got, logits, 2)


@pytest.mark.parametrize("shape", [(10,), (2, 3, 10)], ids=["1-D", "3-D"])
def test_top_k_works_on_any_leading_dims(exercise, shape):
    logits = random_logits(*shape)
    got = exercise.top_k_filter(logits, 4)
    check_top_k(got, logits, 4)


def test_top_k_below_one_is_an_error(exercise):
    try:
        exercise.top_k_filter(random_logits(2, 5), 0)
    except ValueError:
        return
    expect(False, "top_k_filter(logits, k=0) should raise ValueError: k must be at least 1")


# --------------------------------------------------------------------------- top-p


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.99])
def test_top_p_keeps_the_nucleus(exercise, p):
    logits = random_logits(4, 12)
    original = logits.clone()
    got = exercise.top_p_filter(logits, p)
    check_untouched(logits, original, "top_p_filter")
    check_top_p(got, logits, p)


def test_top_p_of_one_keeps_everything(exercise):
    logits = torch.tensor([[0.0, -30.0, -60.0, 5.0], [1.0, 1.0, 1.0, 1.0]])
    got = exercise.top_p_filter(logits, 1.0)
    check_top_p(got, logits, 1.0)


@pytest.mark.parametrize("p", [1e-9, 0.05])
def test_top_p_always_keeps_the_most_likely_token(exercise, p):
    logits = random_logits(3, 8)
    got = exercise.top_p_filter(logits, p)
    check_top_p(got, logits, p)


@pytest.mark.parametrize(
    ("probs", "p"),
    [([0.85, 0.1, 0.05], 0.85), ([0.85, 0.1, 0.05], 0.95), ([0.65, 0.3, 0.05], 0.95)],
)
def test_top_p_tolerates_float_rounding(exercise, probs, p):
    logits = torch.tensor([probs]).log()  # the most likely tokens hold exactly p (in decimal)
    got = exercise.top_p_filter(logits, p)
    check_top_p(got, logits, p)


def test_top_p_keeps_ties_inside_the_nucleus(exercise):
    logits = torch.tensor([[0.3, 0.2, 0.3, 0.2]]).log()
    got = exercise.top_p_filter(logits, 0.5)
    check_top_p(got, logits, 0.5)


@pytest.mark.parametrize("shape", [(12,), (2, 3, 12)], ids=["1-D", "3-D"])
def test_top_p_works_on_any_leading_dims(exercise, shape):
    logits = random_logits(*shape)
    got = exercise.top_p_filter(logits, 0.8)
    check_top_p(got, logits, 0.8)


@pytest.mark.parametrize("p", [0.0, 1.5])
def test_top_p_out_of_range_is_an_error(exercise, p):
    try:
        exercise.top_p_filter(random_logits(2, 5), p)
    except ValueError:
        return
    expect(False, f"top_p_filter(logits, p={p}) should raise ValueError: p must be in (0, 1]")
