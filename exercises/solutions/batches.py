"""Worked solution of exercises/batches.py: a batch of training windows from the packed tokens."""

import torch


def get_batch(
    data: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch (x, y) of training windows from the 1-D int64 token array `data`."""
    if len(data) <= block_size:
        raise ValueError(
            f"data has {len(data)} tokens: a window of {block_size} and the token after it "
            f"need at least {block_size + 1}"
        )
    # The last start that still leaves room for the target: len(data) - block_size - 1.
    # randint's upper bound is exclusive, so len(data) - block_size allows exactly that one.
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)  # (B,)
    offsets = torch.arange(block_size)  # (T,)
    x = data[starts[:, None] + offsets]  # (B, T): row b is data[start_b : start_b + T]
    y = data[starts[:, None] + offsets + 1]  # (B, T): the same windows, one token on
    return x, y
