"""Solution (notebook 03): causal multi-head self-attention, written out by hand."""

import math

import torch
import torch.nn.functional as F

from tinylm.attention import CausalSelfAttention


def split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, C) → (B, nh, T, hs): give every head its own slice of the channels."""
    b, t, c = x.shape
    x = x.view(b, t, n_head, c // n_head)  # (B, T, nh, hs): cut each position's channels
    return x.transpose(1, 2)  # (B, nh, T, hs): heads first, so each head is a (T, hs) matrix


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, nh, T, hs) → (B, T, nh·hs): put the heads' outputs side by side again."""
    b, nh, t, hs = x.shape
    x = x.transpose(1, 2)  # (B, T, nh, hs)
    return x.contiguous().view(b, t, nh * hs)  # (B, T, C); view needs contiguous memory


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q kᵀ / √hs) v, where each query sees itself and the past only; → (out, weights)."""
    t, hs = q.size(-2), q.size(-1)
    scores = q @ k.transpose(-2, -1)  # (..., T, T): how well query i matches key j
    scores = scores / math.sqrt(hs)  # variance ~1 again, so the softmax does not saturate
    future = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(diagonal=1)  # j > i
    scores = scores.masked_fill(future, float("-inf"))  # exp(-inf) = 0: no peeking ahead
    weights = F.softmax(scores, dim=-1)  # (..., T, T): each row sums to 1 over the keys
    return weights @ v, weights  # (..., T, hs): a weighted average of the values


def cached_causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention for the T newest of S positions, the older ones cached; → (out, weights)."""
    t, s, hs = q.size(-2), k.size(-2), q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)  # (..., T, S): one column per key, cached too
    # Query i is at position S - T + i, so it sees keys 0 … S - T + i: the square causal mask
    # with its diagonal moved S - T columns to the right (S = T gives causal_attention's mask).
    visible = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(diagonal=s - t)  # (T, S)
    scores = scores.masked_fill(~visible, float("-inf"))
    weights = F.softmax(scores, dim=-1)  # (..., T, S): each row sums to 1 over what it sees
    return weights @ v, weights  # (..., T, hs)


def self_attention(x: torch.Tensor, attn: CausalSelfAttention) -> torch.Tensor:
    """Multi-head causal self-attention of x (B, T, C) with the weights of a tinylm module."""
    c = x.size(-1)
    q, k, v = attn.c_attn(x).split(c, dim=2)  # each (B, T, C)
    q, k, v = (split_heads(z, attn.n_head) for z in (q, k, v))  # each (B, nh, T, hs)
    y, _ = causal_attention(q, k, v)  # (B, nh, T, hs): every head attends on its own
    return attn.c_proj(merge_heads(y))  # (B, T, C): heads side by side, then mixed
