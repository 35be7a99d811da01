"""Causal self-attention, written out by hand and through PyTorch's fused kernel.

`attention_by_hand` is the textbook formula, one line per step, and returns the attention
weights so they can be plotted. `CausalSelfAttention` is the module the GPT uses; its
``attention="manual"`` path calls `attention_by_hand`, its ``attention="sdpa"`` path calls
`F.scaled_dot_product_attention`, which picks a fused kernel (FlashAttention, memory-efficient,
or plain math) and never materialises the (T, T) weights when it can avoid it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

ATTENTION_IMPLEMENTATIONS = ("manual", "sdpa")


def causal_mask(t: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(T, T) boolean mask, True where query i may look at key j (j <= i)."""
    return torch.ones(t, t, dtype=torch.bool, device=device).tril()


def attention_by_hand(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      dropout_p: float = 0.0, causal: bool = True
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q kᵀ / √d, masked) v, step by step; returns (output, weights).

    q, k, v: (..., T, hs), usually (B, nh, T, hs). Output (..., T, hs), weights (..., T, T).
    """
    t, head_size = q.size(-2), q.size(-1)
    scores = q @ k.transpose(-2, -1)  # (..., T, T): how well each query matches each key
    scores = scores / math.sqrt(head_size)  # keep the variance ~1 so softmax does not saturate
    if causal:
        scores = scores.masked_fill(~causal_mask(t, q.device), float("-inf"))  # no peeking
    weights = F.softmax(scores, dim=-1)  # each row sums to 1
    weights = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    return weights @ v, weights  # (..., T, hs): a weighted average of the values


def split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, C) → (B, nh, T, hs): give every head its own slice of the channels."""
    b, t, c = x.shape
    return x.view(b, t, n_head, c // n_head).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, nh, T, hs) → (B, T, C): put the heads' outputs side by side again."""
    b, nh, t, hs = x.shape
    return x.transpose(1, 2).contiguous().view(b, t, nh * hs)


def sdpa_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True) -> str:
    """Name the fused kernel `scaled_dot_product_attention` runs for these inputs.

    PyTorch tries FlashAttention, then cuDNN, then memory-efficient attention, then the plain
    math implementation; we try them in that order and report the first that accepts the call.
    """
    order = [SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION,
             SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    for backend in order:
        try:
            with sdpa_kernel(backend), torch.no_grad():
                F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        except RuntimeError:
            continue
        return backend.name.lower()
    return "none"


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: one projection to q, k, v, attention, one out."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = False,
                 attention: str = "sdpa") -> None:
        super().__init__()
        if attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLEMENTATIONS}, "
                             f"got {attention!r}")
        self.n_head = n_head
        self.dropout = dropout
        self.attention = attention
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)  # q, k, v for all heads at once
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, return_weights: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, C) → (y (B, T, C), weights (B, nh, T, T) or None)."""
        q, k, v = self.c_attn(x).split(x.size(-1), dim=2)  # each (B, T, C)
        q, k, v = (split_heads(z, self.n_head) for z in (q, k, v))  # each (B, nh, T, hs)
        dropout_p = self.dropout if self.training else 0.0
        if self.attention == "manual" or return_weights:
            y, weights = attention_by_hand(q, k, v, dropout_p)
        else:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
            weights = None
        y = self.resid_dropout(self.c_proj(merge_heads(y)))  # (B, T, C)
        return y, weights
