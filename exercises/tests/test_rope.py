"""Checks of exercises/rope.py against tinylm.attention's RoPE (notebook 10)."""

import math

import pytest
import torch

from exercises.tests.checks import (
    at,
    check_close,
    check_tensor,
    close,
    expect,
    first_difference,
    num,
)
from tinylm import attention

# --------------------------------------------------------------------------- the reference
# The only lines of this file that call tinylm: adapt them here if its API changes.


def reference_angles(positions, head_size, theta=10000.0):
    return attention.rope_angles(positions, head_size, theta)


def reference_rotate_half(x):
    return attention.rotate_half(x)


def reference_rope(q, k, cos, sin):
    return attention.apply_rope(q, cos, sin), attention.apply_rope(k, cos, sin)


# --------------------------------------------------------------------------- diagnoses


def check_angles(cos, sin, positions, head_size, theta):
    """cos and sin equal the reference's; else say which rule of the layout is broken."""
    __tracebackhide__ = True
    t = positions.numel()
    for name, got in (("cos", cos), ("sin", sin)):
        check_tensor(got, f"rope_angles(...) {name}", (t, head_size), torch.float32)
    want_cos, want_sin = reference_angles(positions, head_size, theta)
    if close(cos, want_sin, atol=1e-5) and close(sin, want_cos, atol=1e-5):
        expect(False, "cos and sin are swapped: return (cos, sin), in that order")
    half = head_size // 2
    if not close(cos[:, :half], cos[:, half:]) and close(
        cos, want_cos.view(t, 2, half).transpose(1, 2).reshape(t, -1)
    ):
        expect(
            False,
            "the angles are interleaved [a_0, a_0, a_1, a_1, …]; rotate_half pairs "
            "channel i with i + hs/2, so lay them out in two halves [a_0 … "
            "a_{hs/2-1}, a_0 … a_{hs/2-1}] (torch.cat((angles, angles), dim=-1))",
        )
    zero = (positions == 0).nonzero()
    if len(zero) and not close(cos[zero[0, 0]], torch.ones(head_size)):
        row = cos[zero[0, 0]]
        c = first_difference(row, torch.ones(head_size))[0]
        expect(
            False,
            f"position 0 must not turn at all (cos 1, sin 0), but its cos at channel "
            f"{c} is {num(row[c])}: the angle is position · θ^(-2i/hs), 0 at "
            "position 0",
        )

    slow = positions.float()[:, None] * theta ** (-torch.arange(half).float() / head_size)
    slow_cos = torch.cat((slow, slow), dim=-1).cos()
    if not close(cos, want_cos, atol=1e-4) and close(cos, slow_cos, atol=1e-5):
        expect(
            False,
            f"the pairs' speeds fall by θ^(-1/hs) from one pair to the next, so the last pair "
            f"turns by θ^(-{half - 1}/{head_size}) rad per position; it should turn by "
            f"θ^(-{head_size - 2}/{head_size}): the factor from one pair to the next is "
            "θ^(-2/hs) (pair i turns by position · θ^(-2i/hs))",
        )

    def describe(index):
        row, c = index
        pair = c % half
        angle = float(positions[row]) * theta ** (-2 * pair / head_size)
        return (
            f"at position {int(positions[row])}, channel {c} (pair {pair}: the angle is "
            f"{int(positions[row])} · {theta:g}^(-2·{pair}/{head_size}) = {angle:.4g} rad)"
        )

    hint = "channel pair i turns by position · θ^(-2i/hs): compute θ^(-2i/hs) for i = 0 … hs/2-1"
    check_close(cos, want_cos, "cos", hint=hint, describe=describe, atol=1e-4)
    check_close(sin, want_sin, "sin", hint=hint, describe=describe, atol=1e-4)


def rotated_wrong(got, x, cos, sin):
    """Name how got was turned, if it is x turned a recognisably wrong way; else None."""
    if close(got, x):
        return "was not rotated"
    if close(got, x * cos - reference_rotate_half(x) * sin, atol=1e-5):
        return (
            "was rotated the wrong way (by minus the angle): x · cos + rotate_half(x) · sin, "
            "not minus"
        )
    return None


# --------------------------------------------------------------------------- angles


@pytest.mark.parametrize(
    ("t", "head_size", "theta"),
    [(6, 8, 10000.0), (1, 8, 10000.0), (5, 2, 10000.0), (16, 32, 100.0)],
)
def test_rope_angles(exercise, t, head_size, theta):
    positions = torch.arange(t)
    cos, sin = exercise.rope_angles(positions, head_size, theta)
    check_angles(cos, sin, positions, head_size, theta)


def test_rope_angles_of_later_positions(exercise):
    positions = torch.tensor([5, 6, 7])  # e.g. new tokens after 5 cached ones
    cos, sin = exercise.rope_angles(positions, 8)
    check_angles(cos, sin, positions, 8, 10000.0)


# --------------------------------------------------------------------------- rotate_half


@pytest.mark.parametrize("shape", [(2, 3, 8), (1, 1, 1, 2)], ids=["hs 8", "hs 2"])
def test_rotate_half(exercise, shape):
    torch.manual_seed(0)
    x = torch.randn(shape)
    got = exercise.rotate_half(x)
    half = shape[-1] // 2
    if close(got, torch.cat((x[..., half:], -x[..., :half]), dim=-1)):
        expect(
            False,
            "each pair turned clockwise, (a, b) → (b, -a): the minus sign is on the wrong "
            "half; counterclockwise, (1, 0) becomes (0, 1), so [x1, x2] becomes [-x2, x1]",
        )
    if close(got, torch.cat((x[..., half:], x[..., :half]), dim=-1)):
        expect(
            False,
            "you swapped the halves without a minus sign: that mirrors each pair, (a, b) → "
            "(b, a), instead of turning it; a quarter turn counterclockwise takes (1, 0) to "
            "(0, 1) and (0, 1) to (-1, 0)",
        )
    even, odd = x[..., 0::2], x[..., 1::2]  # neighbouring channels (2j, 2j + 1)
    for sign in (1, -1):
        neighbours = torch.stack((-sign * odd, sign * even), dim=-1).flatten(-2)
        if half > 1 and close(got, neighbours):
            expect(
                False,
                "you turned neighbouring channels together, (0, 1), (2, 3), …, the layout of "
                "the RoPE paper and of Meta's original Llama code; here pair i is channel i "
                "with channel i + hs/2 (transformers' Llama and Mistral), the layout "
                "rope_angles' two halves go with",
            )
    check_close(
        got,
        reference_rotate_half(x),
        "rotate_half(x)",
        hint="split the last dim into halves x1, x2 (x.chunk(2, dim=-1)) and return "
        "torch.cat((-x2, x1), dim=-1)",
        describe=lambda i: f"channel {i[-1]} of row {at(i[:-1])}",
    )


# --------------------------------------------------------------------------- apply_rope


@pytest.mark.parametrize(
    ("t", "head_size", "n_kv"),
    [(5, 8, 2), (1, 8, 2), (4, 2, 1), (6, 8, 1)],
    ids=["T 5", "T 1", "hs 2", "gqa"],
)
def test_apply_rope_rotates_q_and_k(exercise, t, head_size, n_kv):
    torch.manual_seed(1)
    q, k = torch.randn(2, 2, t, head_size), torch.randn(2, n_kv, t, head_size)
    cos, sin = reference_angles(torch.arange(t) + 1, head_size)  # + 1: no position is at 0
    got = exercise.apply_rope(q, k, cos, sin)
    expect(
        isinstance(got, tuple) and len(got) == 2,
        f"apply_rope should return the pair (q, k), got {type(got).__name__}",
    )
    got_q, got_k = got
    want_q, want_k = reference_rope(q, k, cos, sin)
    check_tensor(got_q, "the rotated q", q.shape)
    check_tensor(got_k, "the rotated k", k.shape)
    if close(got_q, want_k) and close(got_k, want_q):
        expect(False, "q and k are swapped: return (rotated q, rotated k)")
    q_wrong, k_wrong = rotated_wrong(got_q, q, cos, sin), rotated_wrong(got_k, k, cos, sin)
    if q_wrong == "was not rotated" and close(got_k, want_k):
        expect(False, "k was rotated but q was not: rotate both, so that q·k sees the distance")
    if k_wrong == "was not rotated" and close(got_q, want_q):
        expect(False, "q was rotated but k was not: rotate both, so that q·k sees the distance")
    for name, wrong in (("q", q_wrong), ("k", k_wrong)):
        expect(wrong is None, f"{name} {wrong}")
    for name, have, want in (("q", got_q, want_q), ("k", got_k, want_k)):
        check_close(
            have,
            want,
            f"the rotated {name}",
            hint="each is x · cos + rotate_half(x) · sin",
            describe=lambda i: f"batch {i[0]}, head {i[1]}, position {i[2]}, channel {i[3]}",
        )


def test_apply_rope_keeps_the_dtype(exercise):
    torch.manual_seed(2)
    q, k = torch.randn(1, 2, 3, 8).bfloat16(), torch.randn(1, 2, 3, 8).bfloat16()
    cos, sin = reference_angles(torch.arange(3), 8)
    got_q, got_k = exercise.apply_rope(q, k, cos, sin)
    for name, tensor in (("q", got_q), ("k", got_k)):
        expect(
            tensor.dtype == torch.bfloat16,
            f"apply_rope should return {name} in its own dtype (torch.bfloat16), got "
            f"{tensor.dtype}: cos and sin are float32, so cast back with .to({name}.dtype)",
        )


def test_scores_depend_only_on_the_distance(exercise):
    """The point of RoPE: after it, q·k sees how far apart two tokens are, not where they are."""
    torch.manual_seed(3)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    scores = {}
    for m, n in ((3, 1), (7, 5), (12, 10)):
        cos, sin = exercise.rope_angles(torch.tensor([m, n]), 8)
        q_m, _ = exercise.apply_rope(q, k, cos[:1], sin[:1])
        _, k_n = exercise.apply_rope(q, k, cos[1:], sin[1:])
        scores[m, n] = float((q_m * k_n).sum())
    first, *rest = scores.items()
    for (m, n), score in rest:
        expect(
            math.isclose(score, first[1], rel_tol=1e-4, abs_tol=1e-5),
            f"after RoPE, q·k for positions {first[0]} and ({m}, {n}) should be equal (only "
            f"the distance 2 matters), got {num(first[1])} and {num(score)}",
        )
