"""Solution (notebook 10): rotary position embeddings (RoPE), as in Llama and Mistral."""

import torch


def rope_angles(
    positions: torch.Tensor, head_size: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of RoPE's angles for positions (T,) (integers) → each (T, head_size), float32."""
    pairs = torch.arange(0, head_size, 2, device=positions.device).float()  # 0, 2, …: 2i
    inv_freq = theta ** (-pairs / head_size)  # (hs/2,): θ^(-2i/hs), 1 down to ~1/θ
    angles = positions.float()[:, None] * inv_freq[None, :]  # (T, hs/2): position · frequency
    angles = torch.cat((angles, angles), dim=-1)  # (T, hs): both halves of a pair share it
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(..., hs) → (..., hs): every channel pair of every vector turned by 90°."""
    x1, x2 = x.chunk(2, dim=-1)  # (..., hs/2) each: the first and second member of every pair
    return torch.cat((-x2, x1), dim=-1)  # (a, b) → (-b, a): a quarter turn counterclockwise


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate every channel pair of q and of k by its angle; → (q, k) in their own dtypes."""
    # (a, b) → (a cos - b sin, b cos + a sin): cos, sin (T, hs) broadcast over batch and heads.
    q_rot = q * cos + rotate_half(q) * sin  # (B, nh, T, hs), float32 from the angles
    k_rot = k * cos + rotate_half(k) * sin  # (B, n_kv, T, hs)
    return q_rot.to(q.dtype), k_rot.to(k.dtype)
