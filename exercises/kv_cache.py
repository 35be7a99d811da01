"""Exercise (notebook 07): the KV cache, so that each new token costs one step, not a recount.

Write the two functions, then check them with `make exercises` or `pytest exercises -k kv_cache`.
The checks compare them with `tinylm.attention.KVCache.update`, `tinylm.sampling.next_logits`
and the forward pass of a tiny `tinylm.model.GPT` without a cache.
"""

import torch

from tinylm.attention import KVCache
from tinylm.model import GPT


def append_kv(
    cache: KVCache, layer: int, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append this step's keys and values to layer's cache; return all of them (past first).

    k, v: (B, nh, t, hs) for t new positions. cache.keys[layer] and cache.values[layer] hold
    (B, nh, T_past, hs), or None while the cache is empty. Afterwards they hold, and the call
    returns, (B, nh, T_past + t, hs) each, the past positions before the new ones (the time
    axis is dim 2). Other layers are left alone.
    """
    raise NotImplementedError("not implemented yet: write append_kv in exercises/kv_cache.py")


def decode_step(model: GPT, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Logits (B, V), in float32, for the token after idx (B, T), reusing the cache.

    The cache holds the keys and values of the first cache.seq_len tokens of idx (0 when it
    is empty, before the prefill); run only the tokens it has not seen through
    model(tokens, cache=cache), which stores theirs. The result equals the last position's
    logits of model(idx) without a cache. T <= model.config.block_size. No gradients needed.
    """
    raise NotImplementedError("not implemented yet: write decode_step in exercises/kv_cache.py")
