"""Exercise (notebook 07): top-k and top-p (nucleus) filtering of next-token logits.

Notebook 07 §1 writes top-k out in its sampling loop, one k for the whole batch; here
`top_k_filter` and `top_p_filter` are the two filters as functions, which the rest of the
course builds on. The new angle is `filter_rows`: a batch in which every row brings its own
temperature, top-k and top-p (as requests do in a server), all applied in the order
`tinylm.sampling.next_token` applies them.

Write the three functions, then check them with `make exercises` or `pytest exercises -k
sampling`. The checks compare them with `tinylm.sampling.top_k_filter`, `top_p_filter` and
`apply_temperature`.
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


def filter_rows(
    logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor
) -> torch.Tensor:
    """The logits a batch samples from when every row has its own temperature, top-k and top-p.

    logits (B, V) float32 (what next_logits returns); temperature (B,) float, each > 0; top_k
    (B,) int64, each >= 1 (k >= V: no top-k); top_p (B,) float, each in (0, 1] (1: no top-p);
    a setting out of range raises ValueError. Row b of the result is what
    tinylm.sampling.next_token hands to its softmax for row b alone with temperature[b],
    top_k[b] and top_p[b]: the row divided by its temperature, then top-k, then top-p on what
    top-k left (the nucleus of the survivors' renormalised distribution, not of the whole
    row's), each filter as top_k_filter and top_p_filter define it (ties with the k-th kept,
    the most likely token always kept). Kept logits are the tempered ones, the rest -inf;
    shape and dtype of logits, which is not modified. No Python loop over the rows: torch.topk
    takes one k for the whole batch, so find each row's k-th largest another way.
    """
    raise NotImplementedError("not implemented yet: write filter_rows in exercises/sampling.py")
