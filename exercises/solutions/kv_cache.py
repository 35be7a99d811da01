"""Solution (notebook 07): the KV cache, so that each new token costs one step, not a recount."""

import torch

from tinylm.attention import KVCache
from tinylm.model import GPT


def append_kv(
    cache: KVCache, layer: int, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append this step's keys and values to layer's cache; return all of them (past first)."""
    if cache.keys[layer] is not None:  # the prefill stores; later steps append on the time axis
        k = torch.cat((cache.keys[layer], k), dim=2)  # (B, nh, T_past + t, hs)
        v = torch.cat((cache.values[layer], v), dim=2)
    cache.keys[layer], cache.values[layer] = k, v
    return k, v


@torch.no_grad()
def decode_step(model: GPT, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Logits (B, V), in float32, for the token after idx (B, T), reusing the cache."""
    new = idx[:, cache.seq_len :]  # (B, t): the whole prompt at the prefill, then one token
    logits, _ = model(new, cache=cache)  # (B, t, V); the model appends the new keys/values
    return logits[:, -1, :].float()  # (B, V): only the last position predicts the next token
