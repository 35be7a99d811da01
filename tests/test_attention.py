"""Attention by hand against PyTorch's fused kernel, the mask's effect, RoPE and GQA."""

import pytest
import torch
import torch.nn.functional as F

from tinylm.attention import (
    AttentionContext,
    CausalSelfAttention,
    KVCache,
    apply_rope,
    attention_by_hand,
    causal_mask,
    document_mask,
    merge_heads,
    repeat_kv,
    rope_angles,
    sdpa_backend,
    split_heads,
)
from tinylm.config import GPTConfig


def rotated(x: torch.Tensor, position: int) -> torch.Tensor:
    """x (..., hs) rotated by RoPE as if it stood at this position."""
    return apply_rope(x, *rope_angles(torch.tensor([position]), x.size(-1)))


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
    module = CausalSelfAttention(GPTConfig(n_embd=32, n_head=4, attention=attention)).eval()
    x = torch.randn(2, 10, 32)
    y, weights = module(x)
    assert y.shape == (2, 10, 32) and (weights is None) == (attention == "sdpa")
    y2, weights2 = module(x, AttentionContext(return_weights=True))
    assert weights2.shape == (2, 4, 10, 10)
    assert (y - y2).abs().max().item() <= 1e-6


@pytest.mark.parametrize("attention", ["manual", "sdpa"])
def test_module_context_carries_mask_and_cache(attention):
    torch.manual_seed(0)
    module = CausalSelfAttention(GPTConfig(n_embd=32, n_head=4, attention=attention)).eval()
    x = torch.randn(2, 10, 32)
    y, _ = module(x)
    masked, _ = module(x, AttentionContext(mask=causal_mask(10)[None, None]))  # (1, 1, T, T)
    assert torch.allclose(masked, y, atol=1e-6)
    cache = KVCache(n_layer=1)
    chunks = [module(x[:, :6], AttentionContext(cache=cache))[0]]
    chunks += [module(x[:, i : i + 1], AttentionContext(cache=cache))[0] for i in range(6, 10)]
    assert cache.seq_len == 10
    assert torch.allclose(torch.cat(chunks, dim=1), y, atol=1e-6)


def test_unknown_attention_is_rejected():
    with pytest.raises(ValueError, match="manual"):
        GPTConfig(n_embd=8, n_head=2, attention="flash")


def test_sdpa_backend_names_a_kernel():
    q = torch.randn(1, 2, 16, 8)
    assert sdpa_backend(q, q, q) in {
        "flash_attention",
        "cudnn_attention",
        "efficient_attention",
        "math",
    }


def test_offset_causal_mask_for_cached_keys():
    assert causal_mask(2, keys=4).tolist() == [[True, True, True, False], [True] * 4]


def test_document_mask_is_causal_and_block_diagonal():
    mask = document_mask(torch.tensor([[0, 0, 1]]))[0, 0]
    assert mask.tolist() == [[True, False, False], [True, True, False], [False, False, True]]


def test_rope_score_depends_only_on_the_distance():
    torch.manual_seed(0)
    q, k = torch.randn(2, 64, dtype=torch.float64).unbind(0)
    score = (rotated(q, 7) * rotated(k, 3)).sum()  # query at 7, key at 3: 4 apart
    for shift in (1, 50, 200):
        shifted = (rotated(q, 7 + shift) * rotated(k, 3 + shift)).sum()
        assert torch.allclose(score, shifted, atol=1e-9)
    assert not torch.allclose(score, (rotated(q, 7) * rotated(k, 5)).sum())


def test_rope_keeps_lengths_and_position_zero_is_the_identity():
    x = torch.randn(3, 16, dtype=torch.float64)
    assert torch.allclose(rotated(x, 123).norm(dim=-1), x.norm(dim=-1))
    assert torch.equal(rotated(x, 0), x)


def test_rope_angles_for_a_batch_of_position_rows():
    cos, sin = rope_angles(torch.tensor([[0, 1, 2], [0, 1, 0]]), 8)
    assert cos.shape == sin.shape == (2, 1, 3, 8)  # (B, 1, T, hs): broadcast over heads
    assert torch.equal(cos[1, 0, 2], cos[0, 0, 0])


def test_gqa_with_as_many_key_value_heads_is_multi_head_attention():
    torch.manual_seed(0)
    mha = CausalSelfAttention(GPTConfig(n_embd=32, n_head=4)).eval()
    gqa = CausalSelfAttention(GPTConfig(n_embd=32, n_head=4, n_kv_head=4)).eval()
    gqa.load_state_dict(mha.state_dict())
    x = torch.randn(2, 10, 32)
    assert torch.equal(mha(x)[0], gqa(x)[0])


@pytest.mark.parametrize("attention", ["manual", "sdpa"])
def test_gqa_equals_multi_head_attention_with_shared_key_value_weights(attention):
    torch.manual_seed(0)
    gqa = CausalSelfAttention(GPTConfig(n_embd=32, n_head=4, attention=attention, n_kv_head=2))
    mha = CausalSelfAttention(GPTConfig(n_embd=32, n_head=4, attention=attention))
    gqa.eval(), mha.eval()
    q, k, v = gqa.c_attn.weight.split([32, 16, 16])  # k, v: 2 heads of 8 channels
    shared = [w.view(2, 8, 32).repeat_interleave(2, dim=0).reshape(32, 32) for w in (k, v)]
    with torch.no_grad():
        mha.c_attn.weight.copy_(torch.cat([q, *shared]))
        mha.c_proj.weight.copy_(gqa.c_proj.weight)
    x = torch.randn(2, 10, 32)
    assert (gqa(x)[0] - mha(x)[0]).abs().max().item() <= 1e-6


def test_repeat_kv_serves_neighbouring_query_heads():
    kv = torch.arange(2.0).view(1, 2, 1, 1)  # heads 0 and 1
    assert repeat_kv(kv, 3).flatten().tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="n_kv_head"):
        GPTConfig(n_embd=32, n_head=4, n_kv_head=3)
