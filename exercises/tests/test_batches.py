"""Checks of exercises/batches.py: the promises of tinylm.data.BatchSampler (notebook 01)."""

import torch

from exercises.tests.checks import call, check_tensor, expect

# --------------------------------------------------------------------------- the data
# Token i of the synthetic array is 1000 + i, so a token's value says where it came from.

OFFSET = 1000


def numbered(length):
    return torch.arange(OFFSET, OFFSET + length, dtype=torch.long)


def draw(exercise, data, batch_size, block_size, seed=0):
    return call(
        exercise.get_batch,
        data,
        batch_size,
        block_size,
        torch.Generator().manual_seed(seed),
        hint="get_batch(data, batch_size, block_size, generator) returns (x, y)",
    )


# --------------------------------------------------------------------------- the checks


def test_get_batch_shapes_and_dtype(exercise):
    x, y = draw(exercise, numbered(50), batch_size=4, block_size=8)
    check_tensor(x, "x", (4, 8), torch.long)
    check_tensor(y, "y", (4, 8), torch.long)


def test_get_batch_rows_are_consecutive_tokens(exercise):
    x, _ = draw(exercise, numbered(50), batch_size=6, block_size=8)
    for b, row in enumerate(x.tolist()):
        expect(
            row == list(range(row[0], row[0] + 8)),
            f"row {b} of x is {row}: a row must be consecutive tokens of data "
            "(data[start : start + block_size]), not tokens picked one by one",
        )


def test_get_batch_targets_are_shifted_by_one(exercise):
    x, y = draw(exercise, numbered(50), batch_size=6, block_size=8)
    for b in range(6):
        expect(
            y[b].tolist() == (x[b] + 1).tolist(),
            f"row {b}: x is {x[b].tolist()} but y is {y[b].tolist()}; y[b, t] must be the "
            "token after x[b, t] in data (data[start + 1 : start + block_size + 1])",
        )


def test_get_batch_uses_every_start_and_only_those(exercise):
    length, block = 12, 4
    x, _ = draw(exercise, numbered(length), batch_size=2000, block_size=block)
    starts = set((x[:, 0] - OFFSET).tolist())
    last = length - block - 1
    expect(
        max(starts) <= last,
        f"a window starts at {max(starts)}: its target would run past the end of the "
        f"{length} tokens (the last start that fits is len(data) - block_size - 1 = {last})",
    )
    expect(min(starts) >= 0, f"a window starts at {min(starts)}: starts must not be negative")
    expect(
        starts == set(range(last + 1)),
        f"over 2,000 rows the starts were {sorted(starts)}, never "
        f"{sorted(set(range(last + 1)) - starts)}: "
        f"every start from 0 to {last} should be possible (an off-by-one in the random range "
        "leaves out the last window)",
    )


def test_get_batch_rows_are_drawn_independently(exercise):
    x, _ = draw(exercise, numbered(500), batch_size=16, block_size=8)
    expect(
        len(set(x[:, 0].tolist())) > 1,
        "every row of x starts at the same place: draw a separate start for each row",
    )


def test_get_batch_is_reproducible_from_the_generator(exercise):
    data = numbered(500)
    first, _ = draw(exercise, data, batch_size=4, block_size=8, seed=3)
    again, _ = draw(exercise, data, batch_size=4, block_size=8, seed=3)
    other, _ = draw(exercise, data, batch_size=4, block_size=8, seed=4)
    expect(
        torch.equal(first, again),
        "two calls with generators of the same seed gave different batches: draw the starts "
        "with generator=generator (torch.randint takes one), not from the global random state",
    )
    expect(not torch.equal(first, other), "generators of different seeds gave the same batch")


def test_get_batch_refuses_data_too_short(exercise):
    why = "a window of 8 needs a 9th token as its target: raise ValueError saying so"
    try:
        exercise.get_batch(numbered(8), 2, 8, torch.Generator().manual_seed(0))
    except ValueError:
        return
    except NotImplementedError:
        raise
    except Exception as error:
        raise AssertionError(
            f"8 tokens and block_size 8 raised {type(error).__name__}: {error}; {why}"
        ) from error
    raise AssertionError(f"8 tokens and block_size 8 gave a batch; {why}")
