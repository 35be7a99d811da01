"""Exercise (notebook 01): a batch of training windows from the packed tokens.

Write `get_batch`, then check it with `make exercises` or `pytest exercises -k batches`. The checks
test what `tinylm.data.BatchSampler` promises (random windows) on a small synthetic token array.
"""

import torch


def get_batch(
    data: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch (x, y) of training windows from the 1-D int64 token array `data`.

    x and y are int64 tensors of shape (batch_size, block_size). Each row of x is a run of
    block_size consecutive tokens of data starting at a random place, drawn independently for
    each row from `generator` (so the same generator state gives the same batch); the row of y
    is the same run moved one token on: y[b, t] is the token that follows x[b, t] in data, the
    one the model must predict. Every start whose window and its target fit inside data must
    be possible, and no other. Raise ValueError, saying why, when data has too few tokens for
    one window and its target.
    """
    raise NotImplementedError("not implemented yet: write get_batch in exercises/batches.py")
