"""Exercise (notebook 10): rotary position embeddings (RoPE), as in Llama and Mistral.

Write the three functions, then check them with `make exercises` or `pytest exercises -k rope`.
The checks compare them with `tinylm.attention.rope_angles`, `rotate_half` and `apply_rope`.
"""

import torch


def rope_angles(
    positions: torch.Tensor, head_size: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of RoPE's angles for positions (T,) (integers) → each (T, head_size), float32.

    Channel pair i (i = 0 … hs/2 - 1) of a head turns by position · θ^(-2i/hs) radians: fast
    for the first pairs, slow for the last; position 0 does not turn (cos 1, sin 0). The
    angles are laid out in two halves, [a_0 … a_{hs/2-1}, a_0 … a_{hs/2-1}], to go with
    rotate_half (the layout of Llama and Mistral in transformers). head_size is even.
    """
    raise NotImplementedError("not implemented yet: write rope_angles in exercises/rope.py")


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(..., hs) → (..., hs): the halves [x1, x2] become [-x2, x1], a 90° turn of each pair.

    Pair i is (x[..., i], x[..., i + hs/2]); turning (a, b) by 90° gives (-b, a).
    """
    raise NotImplementedError("not implemented yet: write rotate_half in exercises/rope.py")


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate every channel pair of q and of k by its angle; → (q, k) in their own dtypes.

    q (B, nh, T, hs) and k (B, n_kv, T, hs) (n_kv may be smaller: grouped-query attention);
    cos and sin (T, hs) from rope_angles. Each is x · cos + rotate_half(x) · sin, which turns
    pair (a, b) into (a cos - b sin, b cos + a sin). Both q and k turn, so that q·k depends
    only on how far apart the two positions are.
    """
    raise NotImplementedError("not implemented yet: write apply_rope in exercises/rope.py")
