"""Exercise (notebook 10): rotary position embeddings (RoPE), as in Llama and Mistral.

Write the three functions, then check them with `make exercises` or `pytest exercises -k rope`.
The checks compare them with `tinylm.attention.rope_angles`, `rotate_half` and `apply_rope`.
"""

import torch


def rope_angles(
    positions: torch.Tensor, head_size: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of RoPE's angles for positions (T,) (integers) → each (T, head_size), float32.

    The angles are RoPE's (Su et al. 2021; notebook 10 §3 gives the rule): a head's channel
    pair i (i = 0 … hs/2 - 1) turns by an angle proportional to the position, 1 radian per
    position for pair 0 and slower for every later pair, each by the same factor, down to
    θ^(-(hs-2)/hs) radians per position for the last (θ = theta). Position 0 does not turn
    (cos 1, sin 0). Channel c belongs to pair c mod hs/2, so the hs/2 angles appear twice, in
    two halves, [a_0 … a_{hs/2-1}, a_0 … a_{hs/2-1}], to go with rotate_half (the layout of
    Llama and Mistral in transformers). head_size is even.
    """
    raise NotImplementedError("not implemented yet: write rope_angles in exercises/rope.py")


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(..., hs) → (..., hs): every channel pair of every vector turned by 90°.

    Pairs (a convention, so stated here): pair i is channel i with channel i + hs/2, for i = 0
    … hs/2 - 1, the first half of the channels with the second. Each pair, a point (a, b) in
    its plane, turns a quarter turn counterclockwise, from its first channel towards its
    second (so (1, 0) becomes (0, 1)), and keeps its length. Applying rotate_half twice gives
    -x, four times x again. Any leading dims; hs is even.
    """
    raise NotImplementedError("not implemented yet: write rotate_half in exercises/rope.py")


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate every channel pair of q and of k by its angle; → (q, k) in their own dtypes.

    q (B, nh, T, hs) and k (B, n_kv, T, hs) (n_kv may be smaller: grouped-query attention);
    cos and sin (T, hs) from rope_angles, one row per position. Pair i of the vector at
    position t turns counterclockwise, the way rotate_half turns it, by that position's angle
    for the pair: angle 0 leaves it as it is, a right angle gives rotate_half's result, and
    no angle changes a pair's length. Both q and k turn, so that q·k depends only on how far
    apart the two positions are; v does not.
    """
    raise NotImplementedError("not implemented yet: write apply_rope in exercises/rope.py")
