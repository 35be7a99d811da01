"""Checks of exercises/sampling.py against tinylm.sampling (notebook 07)."""

import pytest
import torch
import torch.nn.functional as F

from exercises.tests.checks import at, call, check_close, check_tensor, close, expect, num
from tinylm import sampling

# --------------------------------------------------------------------------- the reference
# The only lines of this file that call tinylm: adapt them here if its API changes.


def reference_top_k(logits, k):
    return sampling.top_k_filter(logits, k)


def reference_top_p(logits, p):
    return sampling.top_p_filter(logits, p)


def reference_tempered(logits, temperature):
    return sampling.apply_temperature(logits, temperature)


def reference_rows(logits, temperature, top_k, top_p):
    """Row by row, what sampling.next_token does to the logits before its softmax."""
    rows = []
    for row, t, k, p in zip(
        logits, temperature.tolist(), top_k.tolist(), top_p.tolist(), strict=True
    ):
        rows.append(reference_top_p(reference_top_k(reference_tempered(row, t), k), p))
    return torch.stack(rows)  # (B, V)


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


# --------------------------------------------------------------------------- per-row settings


def rows_in_another_order(logits, temperature, top_k, top_p, order):
    """The likely wrong orders, built from the reference's own filters, row by row.

    "top-p first": the nucleus of the tempered distribution before top-k (the same as taking
    both filters of the same distribution and keeping what both keep); "temperature last": both
    filters on the raw logits, then the division.
    """
    rows = []
    for row, t, k, p in zip(
        logits, temperature.tolist(), top_k.tolist(), top_p.tolist(), strict=True
    ):
        if order == "top-p first":
            rows.append(reference_top_k(reference_top_p(reference_tempered(row, t), p), k))
        else:
            rows.append(reference_tempered(reference_top_p(reference_top_k(row, k), p), t))
    return torch.stack(rows)


def explain_row(logits, temperature, top_k, top_p):
    """Why token j of row b should (not) survive next_token's filters with the row's settings."""

    def explain(row, token, kept):
        b = row[0]
        t, k, p = float(temperature[b]), int(top_k[b]), float(top_p[b])
        where = f"row {b} (temperature {t:g}, top_k {k}, top_p {p:g}): token {token}"
        tempered = reference_tempered(logits[b], t)
        rank = rank_of(tempered, (), token)
        where += f" (the {ordinal(rank)} largest logit of the row)"
        after_k = reference_top_k(tempered, k)
        if after_k[token] == float("-inf"):
            return (
                f"{where} was kept, but this row's top_k={k} keeps only its {k} largest (and "
                f"any tied with the {ordinal(k)}); each row has its own k"
            )
        probs = F.softmax(after_k, dim=-1)
        ahead = probs[probs > probs[token]].sum()
        if kept:
            rounding = " (up to float rounding: compare with p - 1e-6)" if ahead >= p - 1e-4 else ""
            return (
                f"{where} was kept, but after the temperature and top-k, the more likely "
                f"tokens already hold {num(ahead)}{rounding} of the probability that remains, "
                f"which reaches this row's top_p={p:g}: it is outside the nucleus"
            )
        if int((tempered >= tempered[token]).sum()) > k:
            return (
                f"{where} was removed, but it ties with the row's {ordinal(k)} largest logit: "
                "ties are all kept (keep the logits >= each row's k-th largest value)"
            )
        if p == 1:
            return (
                f"{where} was removed, but it is within this row's top_k={k}, and top_p=1 "
                f"keeps every token top-k kept, however little probability it has "
                f"({num(probs[token])} here)"
            )
        return (
            f"{where} was removed, but it is within this row's top_k={k}, and after the "
            f"temperature and top-k the more likely tokens hold only {num(ahead)} < "
            f"top_p={p:g}, so the nucleus still needs it"
        )

    return explain


def check_filter_rows(exercise, logits, temperature, top_k, top_p):
    """filter_rows must keep, row by row, what next_token keeps, with the tempered logits."""
    __tracebackhide__ = True
    original = logits.clone()
    got = call(
        exercise.filter_rows,
        logits,
        temperature,
        top_k,
        top_p,
        hint="temperature, top_k and top_p are (B,), one value per row: make them (B, 1) "
        "(temperature[:, None]) to broadcast over each row's V logits",
    )
    check_untouched(logits, original, "filter_rows")
    name = "filter_rows(logits, temperature, top_k, top_p)"
    check_tensor(got, name, logits.shape, logits.dtype)
    expected = reference_rows(logits, temperature, top_k, top_p)
    kept, should_keep = got != float("-inf"), expected != float("-inf")
    if not torch.equal(kept, should_keep):
        settings = (logits, temperature, top_k, top_p)
        if torch.equal(kept, rows_in_another_order(*settings, "top-p first").isfinite()):
            expect(
                False,
                "top-p took the nucleus of the whole tempered distribution, as if top-k had "
                "not run first (or beside it, keeping what both keep); next_token applies "
                "top-p to what top-k left: the survivors' probabilities, renormalised "
                "(softmax of the top-k-filtered logits), and the nucleus of those",
            )
        multiplied = reference_rows(logits, 1 / temperature, top_k, top_p)
        if torch.equal(kept, multiplied.isfinite()) and close(
            got.masked_fill(~kept, 0), multiplied.masked_fill(~kept, 0)
        ):
            expect(
                False,
                "the logits were multiplied by the temperature: divide them by it (a "
                "temperature below 1 sharpens the distribution, above 1 flattens it)",
            )
        if torch.equal(kept, rows_in_another_order(*settings, "temperature last").isfinite()):
            expect(
                False,
                "the nucleus was taken before dividing by the temperature: divide each row "
                "by its temperature first; the temperature changes the probabilities, and "
                "so the nucleus (top-k alone would not care)",
            )
        row, token = (int(i) for i in (kept != should_keep).nonzero()[0])
        explain = explain_row(logits, temperature, top_k, top_p)
        expect(False, explain((row,), token, bool(kept[row, token])))
    got_kept = got.masked_fill(~should_keep, 0)  # the removed ones are -inf on both sides
    if not close(got_kept, expected.masked_fill(~should_keep, 0)) and close(
        got_kept, logits.masked_fill(~should_keep, 0)
    ):
        expect(
            False,
            "the kept logits are the raw ones: next_token divides each row by its "
            "temperature first, and the softmax gets the tempered logits",
        )
    times = (logits * temperature[:, None]).masked_fill(~should_keep, 0)
    if not close(got_kept, expected.masked_fill(~should_keep, 0)) and close(got_kept, times):
        expect(
            False,
            "the kept logits were multiplied by the temperature: divide them by it (a "
            "temperature below 1 sharpens the distribution, above 1 flattens it)",
        )
    check_close(
        got_kept,
        expected.masked_fill(~should_keep, 0),
        "the kept logits",
        hint="each kept logit is the original divided by its row's temperature, the rest -inf",
        describe=lambda i: f"row {i[0]} (temperature {float(temperature[i[0]]):g}), token {i[1]}",
    )


def test_filter_rows_matches_next_token_row_by_row(exercise):
    logits = random_logits(4, 12)
    # Row 0 keeps everything, row 1 is cut by top-k alone, row 2 by both (where their order
    # matters), row 3 by top-p alone (its k is larger than the vocabulary).
    temperature = torch.tensor([1.0, 0.5, 2.0, 0.7])
    top_k = torch.tensor([12, 3, 5, 20])
    top_p = torch.tensor([1.0, 1.0, 0.7, 0.9])
    check_filter_rows(exercise, logits, temperature, top_k, top_p)


ORDERS = {
    # probabilities 0.5, 0.3, 0.2: after top-k 2 they are 0.625, 0.375, and 0.625 reaches 0.6
    "top-p after top-k": ([0.5, 0.3, 0.2], 1.0, 2, 0.6),
    # at temperature 0.5 the probabilities 0.6, 0.3, 0.1 become 0.78, 0.2, 0.02: 0.78 reaches 0.7
    "top-p after the temperature": ([0.6, 0.3, 0.1], 0.5, 3, 0.7),
}


@pytest.mark.parametrize(("probs", "t", "k", "p"), ORDERS.values(), ids=ORDERS.keys())
def test_filter_rows_applies_next_tokens_order(exercise, probs, t, k, p):
    logits = torch.tensor([probs, [0.25, 0.25, 0.5]]).log()  # row 1: no filter at all
    temperature, top_k, top_p = torch.tensor([t, 1.0]), torch.tensor([k, 3]), torch.tensor([p, 1.0])
    check_filter_rows(exercise, logits, temperature, top_k, top_p)


def test_filter_rows_edge_cases(exercise):
    logits = torch.tensor(
        [
            [1.0, 3.0, 2.0, 2.0, 0.0],  # top_k 2: the tie with the 2nd largest is kept
            [0.0, -30.0, -60.0, 5.0, 1.0],  # top_p 1: the tail stays, however unlikely
            [0.5, 0.5, 0.5, -1.0, 0.5],  # top_k 9 > V: every token
        ]
    )
    temperature = torch.tensor([1.0, 1.0, 0.9])
    check_filter_rows(exercise, logits, temperature, torch.tensor([2, 5, 9]), torch.ones(3))
    # 0.85 + 0.1 reach p = 0.95 in decimal, but their float32 sum falls just short of it
    rounding = torch.tensor([[0.85, 0.1, 0.03, 0.01, 0.01]]).log()
    ones = torch.ones(1)
    check_filter_rows(exercise, rounding, ones, torch.tensor([5]), torch.tensor([0.95]))


SETTINGS_OUT_OF_RANGE = {
    "temperature 0": ([1.0, 0.0], [3, 3], [0.9, 0.9]),
    "top_k 0": ([1.0, 1.0], [3, 0], [0.9, 0.9]),
    "top_p 0": ([1.0, 1.0], [3, 3], [0.0, 0.9]),
    "top_p 1.5": ([1.0, 1.0], [3, 3], [0.9, 1.5]),
}


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"),
    SETTINGS_OUT_OF_RANGE.values(),
    ids=SETTINGS_OUT_OF_RANGE.keys(),
)
def test_filter_rows_out_of_range_is_an_error(exercise, temperature, top_k, top_p):
    settings = torch.tensor(temperature), torch.tensor(top_k), torch.tensor(top_p)
    message = (
        f"filter_rows with temperature {temperature}, top_k {top_k}, top_p {top_p} should "
        "raise ValueError: every temperature must be > 0, every top_k >= 1 and every "
        "top_p in (0, 1]; check the settings before using them"
    )
    try:
        exercise.filter_rows(random_logits(2, 5), *settings)
    except ValueError:
        return
    except NotImplementedError:
        raise
    except Exception as error:
        expect(False, f"{message} (it raised {type(error).__name__}: {error})")
    expect(False, message)
