"""Exercise (notebook 03): causal multi-head self-attention, written out by hand.

Write the four functions, then check them with `make exercises` or `pytest exercises -k attention`.
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


def self_attention(x: torch.Tensor, attn: CausalSelfAttention) -> torch.Tensor:
    """Multi-head causal self-attention of x (B, T, C) with the weights of a tinylm module.

    Use attn.c_attn (a Linear C → 3C giving q, k and v side by side, in that order),
    attn.n_head and attn.c_proj (a Linear C → C applied to the merged heads); the module has no
    dropout and as many key/value heads as query heads. Returns y (B, T, C), what attn(x)[0]
    returns.
    """
    raise NotImplementedError("not implemented yet: write self_attention in exercises/attention.py")
