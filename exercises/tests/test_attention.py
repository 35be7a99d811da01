"""Checks of exercises/attention.py against tinylm.attention (notebook 03)."""

import math

import pytest
import torch
import torch.nn.functional as F

from exercises.tests.checks import call, check_close, check_tensor, close, expect, num
from tinylm import attention
from tinylm.model import GPTConfig

# --------------------------------------------------------------------------- the reference
# The only lines of this file that call tinylm: adapt them here if its API changes.


def reference_split(x, n_head):
    return attention.split_heads(x, n_head)


def reference_merge(x):
    return attention.merge_heads(x)


def reference_attention(q, k, v):
    return attention.attention_by_hand(q, k, v)


def reference_cached_attention(q, k, v):
    """q (..., T, hs) for the last T of the S positions of k and v (..., S, hs)."""
    return attention.attention_by_hand(q, k, v)


def reference_module(n_embd, n_head):
    config = GPTConfig(n_embd=n_embd, n_head=n_head, attention="manual")
    return attention.CausalSelfAttention(config).eval()


def reference_self_attention(module, x):
    with torch.no_grad():
        return module(x)[0]


# --------------------------------------------------------------------------- diagnoses


def visible_keys(t, s):
    """(T, S) boolean, True where query i, at position S - T + i, may see key j (j <= S - T + i).

    S = T is the square causal mask; S > T when the first S - T keys come from a cache.
    """
    return torch.ones(t, s, dtype=torch.bool).tril(diagonal=s - t)


def check_causal(weights):
    """No row may give weight to a later position."""
    __tracebackhide__ = True
    t = weights.size(-1)
    future = torch.ones(t, t, dtype=torch.bool).triu(diagonal=1)
    leaks = (weights.detach() != 0) & future
    if leaks.any():
        index = tuple(int(i) for i in leaks.nonzero()[0])
        *batch, i, j = index
        where = {0: "", 1: " (batch {})", 2: " (batch {}, head {})"}.get(len(batch), " {}")
        allowed = f"keys 0 … {i}" if i else "key 0"
        expect(
            False,
            f"row {i}{where.format(*batch)} attends to future position {j} "
            f"(weight {num(weights[index])}): query {i} may only look at {allowed}; "
            "fill the scores above the diagonal with -inf before the softmax",
        )


def check_rows_sum_to_one(weights, scores):
    """Every row is a probability distribution over the keys it may see."""
    __tracebackhide__ = True
    sums = weights.detach().sum(dim=-1)
    bad = (sums - 1).abs() > 1e-4
    if not bad.any():
        return
    index = tuple(int(i) for i in bad.nonzero()[0])
    message = f"row {index[-1]} of the weights sums to {num(sums[index])}, not 1"
    if close(weights, F.softmax(scores, dim=-1) * visible_keys(*weights.shape[-2:])):
        message += (
            ": the mask was applied after the softmax, so the rows no longer sum to 1; "
            "mask the scores with -inf before the softmax instead"
        )
    elif close(weights.sum(dim=-2), torch.ones_like(sums)):
        message += ": the columns sum to 1, so the softmax ran over dim -2; run it over the "
        message += "last dim (the keys)"
    else:
        message += ": take the softmax of the masked scores over the last dim (the keys)"
    expect(False, message)


def masked_softmax(scores):
    return F.softmax(scores.masked_fill(~visible_keys(*scores.shape[-2:]), float("-inf")), dim=-1)


def scale_hint(weights, q, k):
    """Name a wrong scale of the scores, if the weights show one."""
    hs = q.size(-1)
    raw = q @ k.transpose(-2, -1)
    if close(weights, masked_softmax(raw)):
        return (
            f"the weights are softmax(q kᵀ) without the scale: divide the scores by "
            f"√hs = √{hs} ≈ {math.sqrt(hs):.3g} so their variance stays near 1"
        )
    if close(weights, masked_softmax(raw / hs)):
        return f"the scores were divided by hs = {hs}; divide them by √hs ≈ {math.sqrt(hs):.3g}"
    return "weights = softmax(masked(q kᵀ / √hs)) over the last dim"


# --------------------------------------------------------------------------- split and merge


@pytest.mark.parametrize(("n_head", "t"), [(1, 3), (2, 1), (2, 5), (4, 5)])
def test_split_heads_gives_each_head_its_slice(exercise, n_head, t):
    torch.manual_seed(0)
    x = torch.randn(2, t, 8)
    out = exercise.split_heads(x, n_head)
    hs = 8 // n_head
    check_tensor(out, f"split_heads(x of shape (2, {t}, 8), n_head={n_head})", (2, n_head, t, hs))

    def describe(index):
        b, h, pos, c = index
        return (
            f"out[{b}, {h}, {pos}, {c}] (head {h}, position {pos}, channel {c}), which "
            f"should equal x[{b}, {pos}, {h * hs + c}],"
        )

    check_close(
        out,
        reference_split(x, n_head),
        "split_heads",
        describe=describe,
        hint="view x as (B, T, nh, hs) first, then swap T and nh with transpose(1, 2); "
        "viewing it as (B, nh, T, hs) directly mixes positions",
    )


@pytest.mark.parametrize(("n_head", "t"), [(1, 3), (2, 1), (4, 5)])
def test_merge_heads_undoes_split_heads(exercise, n_head, t):
    torch.manual_seed(0)
    y = torch.randn(2, n_head, t, 8 // n_head)
    out = exercise.merge_heads(y)
    check_tensor(out, f"merge_heads(y of shape {tuple(y.shape)})", (2, t, 8))
    hs = 8 // n_head

    def describe(index):
        b, pos, c = index
        return (
            f"out[{b}, {pos}, {c}], which should equal y[{b}, {c // hs}, {pos}, {c % hs}] "
            f"(head {c // hs}, channel {c % hs}),"
        )

    check_close(
        out,
        reference_merge(y),
        "merge_heads",
        describe=describe,
        hint="transpose(1, 2) back to (B, T, nh, hs), then .contiguous().view(B, T, C)",
    )


# --------------------------------------------------------------------------- attention


SHAPES = {
    "batch and heads": (2, 2, 5, 8),
    "one head": (1, 1, 6, 8),
    "T = 1": (2, 2, 1, 4),
    "no head dim": (3, 7, 4),
}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_causal_attention_weights(exercise, shape):
    torch.manual_seed(0)
    q, k, v = (torch.randn(shape) for _ in range(3))
    _, weights = exercise.causal_attention(q, k, v)
    t = shape[-2]
    check_tensor(weights, "the attention weights", (*shape[:-1], t))
    check_causal(weights)
    check_rows_sum_to_one(weights, q @ k.transpose(-2, -1) / math.sqrt(shape[-1]))
    _, expected_weights = reference_attention(q, k, v)
    check_close(
        weights,
        expected_weights,
        "the attention weights",
        hint=scale_hint(weights, q, k),
        describe=lambda i: f"the weight of query {i[-2]} on key {i[-1]}",
    )


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_causal_attention_output(exercise, shape):
    torch.manual_seed(1)
    q, k, v = (torch.randn(shape) for _ in range(3))
    out, _ = exercise.causal_attention(q, k, v)
    expected_out, _ = reference_attention(q, k, v)
    check_close(
        out,
        expected_out,
        "the attention output",
        hint="out = weights @ v: each position's output is the weighted average of the "
        "values it attends to (check the weights first: test_causal_attention_"
        "weights)",
        describe=lambda i: f"position {i[-2]}, channel {i[-1]}",
    )


def test_causal_attention_first_position_sees_only_itself(exercise):
    torch.manual_seed(2)
    q, k, v = (torch.randn(1, 1, 4, 8) for _ in range(3))
    out, _ = exercise.causal_attention(q, k, v)
    check_close(
        out[..., 0, :],
        v[..., 0, :],
        "the output at position 0",
        hint="position 0 sees only itself: its weight on key 0 is 1, so its output is "
        "v at position 0",
    )


# --------------------------------------------------------------------------- over a cache


def where_query(i, t, s):
    """'query 1 (position 5, after 4 cached keys)' for new query i of T over S keys."""
    return f"query {i} (position {s - t + i}, " + (
        f"after {s - t} cached keys)" if s > t else "nothing cached)"
    )


def check_sees_the_cache(weights, q, k):
    """Each new query gives weight to exactly the keys up to its own position; else say how."""
    __tracebackhide__ = True
    t, s = q.size(-2), k.size(-2)
    visible = visible_keys(t, s)
    weights = weights.detach()
    if weights.isnan().any():
        *_, i, _ = (int(n) for n in weights.isnan().nonzero()[0])
        expect(
            False,
            f"the weights of {where_query(i, t, s)} are nan: its mask hid every key, and a "
            f"softmax over nothing but -inf is 0/0; it must see keys 0 … {s - t + i}",
        )
    leaks = (weights != 0) & ~visible
    if leaks.any():
        *_, i, j = (int(n) for n in leaks.nonzero()[0])
        expect(
            False,
            f"{where_query(i, t, s)} attends to future key {j} (weight "
            f"{num(weights[leaks][0])}): it may look at keys 0 … {s - t + i} only; mask the "
            "scores of later keys with -inf",
        )
    blind = (weights == 0) & visible
    if blind.any():
        *_, i, j = (int(n) for n in blind.nonzero()[0])
        message = f"{where_query(i, t, s)} gives weight 0 to key {j}, which it may see"
        scaled = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        from_first_key = torch.ones(t, s, dtype=torch.bool).tril()  # (T, S), no offset
        if close(weights, F.softmax(scaled.masked_fill(~from_first_key, float("-inf")), dim=-1)):
            message += (
                f": the mask is causal_attention's, counted from the first key, so new query "
                f"i sees only keys 0 … i; its diagonal must move right by the {s - t} cached "
                f"keys (query i sees keys 0 … {s - t} + i)"
            )
        expect(False, message)


def cached_attention(exercise, q, k, v):
    """exercise.cached_causal_attention(q, k, v), with a hint if it cannot even run."""
    __tracebackhide__ = True
    t, s = q.size(-2), k.size(-2)
    return call(
        exercise.cached_causal_attention,
        q,
        k,
        v,
        hint=f"q has the T = {t} new positions, k and v all S = {s}: the scores are (…, T, S), "
        "one column per key, cached ones included, so the mask must be (T, S) too, not (T, T)",
    )


CACHED = {
    "3 new after 4 cached": (2, 2, 3, 7, 8),
    "one decoding step": (1, 2, 1, 5, 8),
    "nothing cached": (2, 1, 4, 4, 4),
    "no head dim": (3, 2, 6, 4),
}


@pytest.mark.parametrize("shape", CACHED.values(), ids=CACHED.keys())
def test_cached_attention_weights(exercise, shape):
    *batch, t, s, hs = shape
    torch.manual_seed(4)
    q, k, v = torch.randn(*batch, t, hs), torch.randn(*batch, s, hs), torch.randn(*batch, s, hs)
    _, weights = cached_attention(exercise, q, k, v)
    check_tensor(weights, "the attention weights", (*batch, t, s))
    check_sees_the_cache(weights, q, k)
    check_rows_sum_to_one(weights, q @ k.transpose(-2, -1) / math.sqrt(hs))
    _, expected = reference_cached_attention(q, k, v)
    check_close(
        weights,
        expected,
        "the attention weights",
        hint=scale_hint(weights, q, k),
        describe=lambda i: (
            f"the weight of new query {i[-2]} (position {s - t + i[-2]}) on key {i[-1]}"
        ),
    )


@pytest.mark.parametrize("shape", CACHED.values(), ids=CACHED.keys())
def test_cached_attention_output(exercise, shape):
    *batch, t, s, hs = shape
    torch.manual_seed(5)
    q, k, v = torch.randn(*batch, t, hs), torch.randn(*batch, s, hs), torch.randn(*batch, s, hs)
    out, _ = cached_attention(exercise, q, k, v)
    expected, _ = reference_cached_attention(q, k, v)
    check_close(
        out,
        expected,
        "the attention output",
        hint="out = weights @ v, the values of all S positions (check the weights first: "
        "test_cached_attention_weights)",
        describe=lambda i: f"new position {i[-2]}, channel {i[-1]}",
    )


def test_cached_attention_equals_the_full_sequence(exercise):
    """The point of a KV cache: the new rows come out as in attention over the whole sequence."""
    torch.manual_seed(6)
    q, k, v = (torch.randn(2, 2, 7, 8) for _ in range(3))
    full, _ = reference_attention(q, k, v)  # every position's query, the square causal mask
    for t in (1, 3):
        out, _ = cached_attention(exercise, q[..., -t:, :], k, v)
        check_close(
            out,
            full[..., -t:, :],
            f"the last {t} of 7 positions, attending over a cache of {7 - t}",
            hint="the new queries must see what they would see if the whole sequence ran "
            "again: their own key, the keys before it, all cached ones included",
            describe=lambda i: f"new position {i[-2]}, channel {i[-1]}",
        )


# --------------------------------------------------------------------------- the module


@pytest.mark.parametrize(("n_head", "t"), [(1, 4), (2, 1), (4, 6)])
def test_self_attention_matches_the_module(exercise, n_head, t):
    torch.manual_seed(3)
    module = reference_module(16, n_head)
    x = torch.randn(2, t, 16)
    with torch.no_grad():
        y = exercise.self_attention(x, module)
    expected = reference_self_attention(module, x)
    check_tensor(y, "self_attention(x, attn)", x.shape)
    with torch.no_grad():
        q, k, v = module.c_attn(x).split(16, dim=2)
        heads = [reference_split(z, n_head) for z in (q, k, v)]
        before_proj = reference_merge(reference_attention(*heads)[0])
    hint = (
        "the steps: q, k, v = attn.c_attn(x).split(C, dim=2); split each into heads; "
        "causal attention per head; merge the heads; attn.c_proj"
    )
    if close(y, before_proj):
        hint = "that is the merged heads before the output projection: apply attn.c_proj to them"
    check_close(
        y,
        expected,
        "self_attention",
        hint=hint,
        describe=lambda i: f"batch {i[0]}, position {i[1]}, channel {i[2]}",
    )
