"""Solution (notebook 07): top-k and top-p (nucleus) filtering of next-token logits."""

import torch
import torch.nn.functional as F


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row and set the rest to -inf (softmax gives them 0)."""
    if k < 1:
        raise ValueError(f"top_k must be a positive integer, got {k}")
    k = min(k, logits.size(-1))  # asking for more tokens than there are keeps them all
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1): the k-th largest logit
    return logits.masked_fill(logits < kth, float("-inf"))  # ties with the k-th survive


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the nucleus of each row, the fewest most likely tokens holding mass >= p; -inf else."""
    if not 0 < p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    if p == 1:
        return logits.clone()  # the whole distribution is the nucleus
    probs = F.softmax(logits.float(), dim=-1)  # (..., V), in fp32 for the sums
    sorted_probs, order = probs.sort(dim=-1, descending=True)  # most likely first
    before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the tokens ahead of each
    keep_sorted = before < p - 1e-6  # the 1e-6 absorbs rounding: 0.85 + 0.1 reaches 0.95
    keep_sorted[..., 0] = True  # the most likely token always stays, however small p is
    keep = keep_sorted.scatter(-1, order, keep_sorted)  # back to vocabulary order
    return logits.masked_fill(~keep, float("-inf"))


def filter_rows(
    logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor
) -> torch.Tensor:
    """The logits a batch samples from when every row has its own temperature, top-k and top-p."""
    if not (temperature > 0).all():
        raise ValueError(f"every temperature must be > 0, got {temperature.tolist()}")
    if not (top_k >= 1).all():
        raise ValueError(f"every top_k must be at least 1, got {top_k.tolist()}")
    if not ((top_p > 0) & (top_p <= 1)).all():
        raise ValueError(f"every top_p must be in (0, 1], got {top_p.tolist()}")
    logits = logits / temperature[:, None]  # (B, V) / (B, 1): each row by its own temperature
    # Top-k: the k-th largest logit of row b sits at index k_b - 1 of the row sorted in
    # descending order, so one sort and one gather serve every row's own k.
    descending = logits.sort(dim=-1, descending=True).values  # (B, V)
    k = top_k.clamp(max=logits.size(-1))  # (B,): asking for more than V keeps the whole row
    kth = descending.gather(-1, (k - 1)[:, None])  # (B, 1): each row's k-th largest logit
    logits = logits.masked_fill(logits < kth, float("-inf"))  # ties with the k-th survive
    # Top-p on what top-k left: the removed tokens now have probability 0, the survivors are
    # renormalised, and the nucleus is taken of that distribution.
    probs = F.softmax(logits, dim=-1)  # (B, V)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the tokens ahead of each
    keep_sorted = before < top_p[:, None] - 1e-6  # each row against its own p
    keep_sorted[:, 0] = True  # the most likely token always stays
    keep = keep_sorted.scatter(-1, order, keep_sorted)  # back to vocabulary order
    keep |= (top_p == 1)[:, None]  # p = 1 keeps every token, however little mass the tail has
    return logits.masked_fill(~keep, float("-inf"))
