"""Exercise (notebook 07): top-k and top-p (nucleus) filtering of next-token logits.

Write the two functions, then check them with `make exercises` or `pytest exercises -k sampling`.
The checks compare them with `tinylm.sampling.top_k_filter` and `top_p_filter`.
"""

import torch


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row and set the rest to -inf (softmax gives them 0).

    logits (..., V), any float dtype; the result has the same shape and dtype, kept logits
    unchanged, and logits itself is not modified. Ties: every logit equal to the k-th largest
    is kept too (so more than k may survive). k > V keeps everything; k < 1 raises ValueError.
    """
    raise NotImplementedError("not implemented yet: write top_k_filter in exercises/sampling.py")


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the nucleus of each row, the fewest most likely tokens holding mass >= p; -inf else.

    logits (..., V); same shape, dtype and untouched input as top_k_filter. Rule: sort the
    probabilities (softmax of the row) in descending order; keep a token if the tokens before
    it hold less than p - 1e-6 of the mass (the 1e-6 absorbs float rounding, so that 0.85 and
    0.1 do reach p = 0.95). The most likely token is always kept; p = 1 keeps every token;
    p outside (0, 1] raises ValueError.
    """
    raise NotImplementedError("not implemented yet: write top_p_filter in exercises/sampling.py")
