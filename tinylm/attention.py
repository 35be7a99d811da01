"""Causal self-attention, written out by hand and through PyTorch's fused kernel.

`attention_by_hand` is the textbook formula, one line per step, and returns the attention
weights so they can be plotted. `CausalSelfAttention` is the module the GPT uses; its
``attention="manual"`` path calls `attention_by_hand`, its ``attention="sdpa"`` path calls
`F.scaled_dot_product_attention`, which picks a fused kernel (FlashAttention, memory-efficient,
or plain math) and never materialises the (T, T) weights when it can avoid it.

Two options of modern decoders (notebook 10) live here too: rotary position embeddings (RoPE),
which rotate queries and keys by an angle proportional to their position, and grouped-query
attention (GQA), where several query heads share one key/value head.

What one forward pass tells every layer besides x (a packed-documents mask, the KV cache, RoPE's
angles, whether to return the weights) travels in one `AttentionContext`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from tinylm.config import GPTConfig


def causal_mask(
    t: int, device: torch.device | str | None = None, keys: int | None = None
) -> torch.Tensor:
    """(T, keys) boolean mask, True where query i may look at key j.

    Without a cache keys == T and the rule is j <= i. With a KV cache the T queries are the
    last T of `keys` positions, so query i sits at position keys - T + i and sees j <= that.
    """
    keys = t if keys is None else keys
    return torch.ones(t, keys, dtype=torch.bool, device=device).tril(diagonal=keys - t)


def document_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) document ids → (B, 1, T, T) mask: causal, and only within the same document.

    Used when several examples are packed into one sequence (notebook 06): each token then
    attends to its own example only, as if the examples had been fed one by one.
    """
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]  # (B, T, T)
    return (same_doc & causal_mask(doc_ids.size(1), doc_ids.device))[:, None]  # (B, 1, T, T)


class KVCache:
    """The keys and values every layer has computed so far, so a new token costs one step.

    Generation first runs the prompt through the model once (the prefill), storing each
    layer's keys and values, (B, n_kv_head, T, hs); every later step feeds one token, computes its
    q, k, v only, and attends over the stored keys plus its own.
    """

    def __init__(self, n_layer: int) -> None:
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer

    @property
    def seq_len(self) -> int:
        """How many positions are cached (0 before the prefill)."""
        return 0 if self.keys[0] is None else self.keys[0].size(2)

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's k, v (B, nh, t, hs) to the layer's; return all of them."""
        if self.keys[layer] is not None:
            k = torch.cat((self.keys[layer], k), dim=2)  # (B, nh, T_past + t, hs)
            v = torch.cat((self.values[layer], v), dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def select(self, rows: torch.Tensor) -> None:
        """Keep (and reorder) the batch rows given by index (beam search reshuffles beams)."""
        self.keys = [None if k is None else k[rows] for k in self.keys]
        self.values = [None if v is None else v[rows] for v in self.values]


@dataclass(frozen=True)
class AttentionContext:
    """What one forward pass tells all layers besides x; the defaults: plain causal attention."""

    mask: torch.Tensor | None = None  # (B, 1, T, T), True = may attend; None: causal
    cache: KVCache | None = None  # earlier positions' keys and values; None: x is all there is
    rope: tuple[torch.Tensor, torch.Tensor] | None = None  # (cos, sin) to rotate q, k by
    return_weights: bool = False  # also return the weights (then computed by hand)


CAUSAL = AttentionContext()  # no mask, no cache, no rotation (learned positions), no weights


def attention_by_hand(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout_p: float = 0.0,
    causal: bool = True,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q kᵀ / √d, masked) v, step by step; returns (output, weights).

    q: (..., T, hs), k and v: (..., S, hs) with S >= T (S > T when earlier keys are cached),
    usually (B, nh, T, hs). mask, if given, replaces the causal mask: True = may attend.
    Output (..., T, hs), weights (..., T, S).
    """
    t, head_size = q.size(-2), q.size(-1)
    scores = q @ k.transpose(-2, -1)  # (..., T, S): how well each query matches each key
    scores = scores / math.sqrt(head_size)  # keep the variance ~1 so softmax does not saturate
    if mask is None and causal:
        mask = causal_mask(t, q.device, keys=k.size(-2))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # no peeking
    weights = F.softmax(scores, dim=-1)  # each row sums to 1
    weights = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    return weights @ v, weights  # (..., T, hs): a weighted average of the values


def rope_angles(
    positions: torch.Tensor, head_size: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of RoPE's angles for positions (T,) or (B, T) → each (T, hs) or (B, 1, T, hs).

    Channel pair i of a head turns by position · θ^(-2i/hs) radians: fast for the first pairs,
    slow for the last. The angles are laid out in two halves, [a_0 … a_{hs/2-1}, a_0 …], to go
    with `rotate_half` (the layout of Llama and Mistral in transformers).
    """
    inv_freq = 1.0 / theta ** (
        torch.arange(0, head_size, 2, device=positions.device).float() / head_size
    )  # (hs/2,)
    angles = positions.float()[..., None] * inv_freq  # (..., T, hs/2)
    angles = torch.cat((angles, angles), dim=-1)  # (..., T, hs)
    if angles.dim() == 3:
        angles = angles[:, None]  # (B, 1, T, hs): one row of positions per sequence
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(..., hs) → (..., hs): the halves [x1, x2] become [-x2, x1], a 90° turn of each pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate every channel pair (x_i, x_{i+hs/2}) of x (B, nh, T, hs) by its angle."""
    return (x * cos + rotate_half(x) * sin).to(x.dtype)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, n_kv, S, hs) → (B, n_kv · n_rep, S, hs): each key/value head serves n_rep query heads."""
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)


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
    order = [
        SDPBackend.FLASH_ATTENTION,
        SDPBackend.CUDNN_ATTENTION,
        SDPBackend.EFFICIENT_ATTENTION,
        SDPBackend.MATH,
    ]
    for backend in order:
        try:
            with sdpa_kernel(backend), torch.no_grad():
                F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        except RuntimeError:
            continue
        return backend.name.lower()
    return "none"


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: one projection to q, k, v, attention, one out.

    With n_kv_head < n_head it is grouped-query attention: keys and values have n_kv_head heads,
    each shared by n_head / n_kv_head query heads, and a KV cache stores that many fewer numbers.
    """

    def __init__(self, config: GPTConfig, layer: int = 0) -> None:
        """Reads n_embd, n_head, n_kv_head, dropout, bias and attention (GPTConfig checks them)."""
        super().__init__()
        self.n_head = config.n_head
        self.n_kv_head = config.kv_heads
        self.dropout = config.dropout
        self.attention = config.attention
        self.layer = layer  # which slot of a KVCache is ours
        self.kv_dim = config.kv_heads * config.head_size  # channels of k (and of v)
        n_embd = config.n_embd
        self.c_attn = nn.Linear(n_embd, n_embd + 2 * self.kv_dim, bias=config.bias)  # q, k, v
        self.c_proj = nn.Linear(n_embd, n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, context: AttentionContext = CAUSAL
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, C) → (y (B, T, C), weights (B, nh, T, S) or None; S = cached + T keys).

        context.mask (packed documents) replaces the causal mask; context.cache supplies and
        keeps the keys and values of earlier positions; context.rope rotates q and k.
        """
        q, k, v = self.c_attn(x).split([x.size(-1), self.kv_dim, self.kv_dim], dim=2)
        q = split_heads(q, self.n_head)  # (B, nh, T, hs)
        k, v = split_heads(k, self.n_kv_head), split_heads(v, self.n_kv_head)  # (B, nkv, T, hs)
        if context.rope is not None:  # position enters q·k here only
            q, k = apply_rope(q, *context.rope), apply_rope(k, *context.rope)
        if context.cache is not None:
            k, v = context.cache.update(self.layer, k, v)  # each (B, nkv, S, hs): the small ones
        n_rep = self.n_head // self.n_kv_head
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # each (B, nh, S, hs)
        t, s, mask = q.size(2), k.size(2), context.mask
        if mask is None and s > t > 1:  # a chunk after cached positions: offset causal mask
            mask = causal_mask(t, x.device, keys=s)
        dropout_p = self.dropout if self.training else 0.0
        if self.attention == "manual" or context.return_weights:
            y, weights = attention_by_hand(q, k, v, dropout_p, causal=s == t, mask=mask)
        else:  # one new token (t == 1) may see every cached key: no mask at all
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=mask is None and s == t
            )
            weights = None
        y = self.resid_dropout(self.c_proj(merge_heads(y)))  # (B, T, C)
        return y, weights
