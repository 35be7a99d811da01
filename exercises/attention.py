"""Exercise (notebook 03): causal multi-head self-attention, written out by hand.

Notebook 03 §2 writes attention out for one sequence, with a square causal mask; here
`causal_attention` is the same step for a batch of heads, and `self_attention` builds the whole
module from it. The new angle is `cached_causal_attention`: attention of the last few positions
of a sequence whose earlier keys and values come from a KV cache (notebook 07 §8), where the
mask is no longer square and no longer starts at the diagonal.

Write the five functions, then check them with `make exercises` or `pytest exercises -k attention`.
The checks compare your results with `tinylm.attention` on small random tensors.
"""

import torch

from tinylm.attention import CausalSelfAttention


def split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, C) → (B, nh, T, hs): give every head its own slice of the channels.

    hs = C / n_head (C is a multiple of n_head). Head h gets channels h·hs … (h+1)·hs - 1 of
    every position: out[b, h, t] == x[b, t, h*hs:(h+1)*hs]. n_head = 1 gives (B, 1, T, C).
    """
    raise NotImplementedError("not implemented yet: write split_heads in exercises/attention.py")


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, nh, T, hs) → (B, T, nh·hs): put the heads' outputs side by side again.

    The inverse of split_heads: merge_heads(split_heads(x, n)) equals x.
    """
    raise NotImplementedError("not implemented yet: write merge_heads in exercises/attention.py")


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q kᵀ / √hs) v, where each query sees itself and the past only; → (out, weights).

    q, k, v: float tensors (..., T, hs), usually (B, nh, T, hs). Query i may attend to keys
    0 … i, never to a later one. weights (..., T, T): every row sums to 1 and is 0 above the
    diagonal. out (..., T, hs) = weights @ v. T = 1 is allowed (its one weight is 1).
    """
    raise NotImplementedError(
        "not implemented yet: write causal_attention in exercises/attention.py"
    )


def cached_causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention for the T newest of S positions, the older ones cached; → (out, weights).

    q (..., T, hs): the queries of positions S - T … S - 1 only (the new tokens); k, v (..., S, hs):
    the keys and values of all S positions in order, the S - T cached ones first (S >= T). As in
    causal_attention, a query sees its own position and the past, never a later one: the query
    at position p attends to keys 0 … p, so every cached key is visible to every new query.
    weights (..., T, S): rows sum to 1, 0 on the keys a query may not see; out (..., T, hs).
    S = T (nothing cached) is causal_attention; T = 1 (one decoding step) sees all S keys.
    """
    raise NotImplementedError(
        "not implemented yet: write cached_causal_attention in exercises/attention.py"
    )


def self_attention(x: torch.Tensor, attn: CausalSelfAttention) -> torch.Tensor:
    """Multi-head causal self-attention of x (B, T, C) with the weights of a tinylm module.

    Use attn.c_attn (a Linear C → 3C giving q, k and v side by side, in that order),
    attn.n_head and attn.c_proj (a Linear C → C applied to the merged heads); the module has no
    dropout and as many key/value heads as query heads. Returns y (B, T, C), what attn(x)[0]
    returns.
    """
    raise NotImplementedError("not implemented yet: write self_attention in exercises/attention.py")
