"""Attention by hand against PyTorch's fused kernel, and the mask's effect."""

import pytest
import torch
import torch.nn.functional as F

from tinylm.attention import (
    CausalSelfAttention,
    attention_by_hand,
    causal_mask,
    document_mask,
    merge_heads,
    sdpa_backend,
    split_heads,
)


def test_by_hand_matches_sdpa_in_fp32_at_t256():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 6, 256, 64).unbind(0)  # (B, nh, T, hs)
    by_hand, weights = attention_by_hand(q, k, v)
    fused = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert (by_hand - fused).abs().max().item() <= 1e-5
    assert torch.allclose(weights.sum(-1), torch.ones(2, 6, 256))


def test_causal_weights_never_look_ahead():
    q, k, v = torch.randn(3, 1, 1, 8, 4).unbind(0)
    _, weights = attention_by_hand(q, k, v)
    assert torch.all(weights[..., ~causal_mask(8)] == 0)
    v2 = v.clone()
    v2[..., -1, :] += 100.0  # changing the last value must not change earlier outputs
    out, _ = attention_by_hand(q, k, v)
    out2, _ = attention_by_hand(q, k, v2)
    assert torch.equal(out[..., :-1, :], out2[..., :-1, :])


def test_split_and_merge_heads_are_inverse():
    x = torch.randn(2, 5, 12)
    assert split_heads(x, 3).shape == (2, 3, 5, 4)
    assert torch.equal(merge_heads(split_heads(x, 3)), x)


@pytest.mark.parametrize("attention", ["manual", "sdpa"])
def test_module_paths_agree_and_weights_on_request(attention):
    torch.manual_seed(0)
    module = CausalSelfAttention(32, 4, attention=attention).eval()
    x = torch.randn(2, 10, 32)
    y, weights = module(x)
    assert y.shape == (2, 10, 32) and (weights is None) == (attention == "sdpa")
    y2, weights2 = module(x, return_weights=True)
    assert weights2.shape == (2, 4, 10, 10)
    assert (y - y2).abs().max().item() <= 1e-6


def test_unknown_attention_is_rejected():
    with pytest.raises(ValueError, match="manual"):
        CausalSelfAttention(8, 2, attention="flash")


def test_sdpa_backend_names_a_kernel():
    q = torch.randn(1, 2, 16, 8)
    assert sdpa_backend(q, q, q) in {"flash_attention", "cudnn_attention",
                                      "efficient_attention", "math"}


def test_offset_causal_mask_for_cached_keys():
    assert causal_mask(2, keys=4).tolist() == [[True, True, True, False], [True] * 4]


def test_document_mask_is_causal_and_block_diagonal():
    mask = document_mask(torch.tensor([[0, 0, 1]]))[0, 0]
    assert mask.tolist() == [[True, False, False], [True, True, False], [False, False, True]]
