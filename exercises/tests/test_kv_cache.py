"""Checks of exercises/kv_cache.py against tinylm's KV cache and model (notebook 07)."""

import pytest
import torch

from exercises.tests.checks import check_close, check_tensor, expect
from tinylm.attention import KVCache
from tinylm.model import GPT, GPTConfig
from tinylm.sampling import next_logits

# --------------------------------------------------------------------------- the reference
# The only lines of this file that call tinylm: adapt them here if its API changes.


def reference_cache(n_layer=2):
    return KVCache(n_layer)


def reference_update(cache, layer, k, v):
    return cache.update(layer, k, v)


def reference_logits(model, idx):
    """The next-token logits (B, V) of idx (B, T) without a cache: the whole sequence again."""
    return next_logits(model, idx, None)


def reference_cached_logits(model, idx, cache):
    return next_logits(model, idx, cache)


def tiny_model(**options):
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=16, **options)
    return GPT(config).eval()


def cached_positions(cache):
    return 0 if cache.keys[0] is None else cache.keys[0].size(2)


class LearnersCache(KVCache):
    """tinylm's cache with the learner's append_kv in place of its update."""

    def __init__(self, n_layer, append_kv):
        super().__init__(n_layer)
        self.append_kv = append_kv

    def update(self, layer, k, v):
        return self.append_kv(self, layer, k, v)


# --------------------------------------------------------------------------- append_kv


def kv(t, seed, b=2, nh=2, hs=4):
    torch.manual_seed(seed)
    return torch.randn(b, nh, t, hs), torch.randn(b, nh, t, hs)


def check_appended(got, cache, expected, layer, what):
    """The returned pair and the stored pair both equal the reference's keys and values."""
    __tracebackhide__ = True
    expect(
        isinstance(got, tuple) and len(got) == 2,
        f"append_kv should return (keys, values), got {type(got).__name__}",
    )
    exp_k, exp_v = expected
    b, nh, t, hs = exp_k.shape
    for name, tensor, want in (("keys", got[0], exp_k), ("values", got[1], exp_v)):
        expect(
            isinstance(tensor, torch.Tensor),
            f"{what}: the returned {name} should be a tensor, got {type(tensor).__name__}",
        )
        expect(
            tensor.shape == want.shape,
            f"{what}: the {name} should have shape {tuple(want.shape)} (B, nh, T_past + t, "
            f"hs), got {tuple(tensor.shape)}: concatenate along dim 2, the time axis",
        )
        check_close(
            tensor,
            want,
            f"{what}: the returned {name}",
            hint="the past positions come first, then the new ones: "
            "torch.cat((past, new), dim=2); keys with keys, values with values",
            describe=lambda i: f"position {i[2]} (batch {i[0]}, head {i[1]})",
        )
    stored = (cache.keys[layer], cache.values[layer])
    for name, tensor, want in (("keys", stored[0], exp_k), ("values", stored[1], exp_v)):
        expect(
            tensor is not None,
            f"{what}: cache.{name}[{layer}] is still None: store the "
            f"{name} in the cache, the next step needs them",
        )
        check_close(
            tensor,
            want,
            f"{what}: cache.{name}[{layer}]",
            hint="store what you return, so the next step appends to it",
        )


def test_append_to_an_empty_cache_stores_the_prefill(exercise):
    cache, ref = reference_cache(), reference_cache()
    k, v = kv(3, seed=0)
    got = exercise.append_kv(cache, 0, k, v)
    check_appended(got, cache, reference_update(ref, 0, k, v), 0, "the first append (3 positions)")
    expect(
        cache.keys[1] is None and cache.values[1] is None,
        "appending to layer 0 must leave layer 1 alone (it was empty and should stay None)",
    )


@pytest.mark.parametrize("t_new", [1, 2])
def test_append_after_the_past(exercise, t_new):
    cache, ref = reference_cache(), reference_cache()
    k0, v0 = kv(3, seed=0)
    exercise.append_kv(cache, 1, k0, v0)
    reference_update(ref, 1, k0, v0)
    k1, v1 = kv(t_new, seed=1)
    got = exercise.append_kv(cache, 1, k1, v1)
    check_appended(
        got,
        cache,
        reference_update(ref, 1, k1, v1),
        1,
        f"appending {t_new} position{'s' * (t_new > 1)} to 3",
    )


def test_layers_are_kept_apart(exercise):
    cache, ref = reference_cache(), reference_cache()
    for step, t in enumerate((3, 1, 1)):
        for layer in (0, 1):
            k, v = kv(t, seed=10 * step + layer)
            got = exercise.append_kv(cache, layer, k, v)
            check_appended(
                got, cache, reference_update(ref, layer, k, v), layer, f"step {step}, layer {layer}"
            )


def test_single_sequence_single_head(exercise):
    cache, ref = reference_cache(1), reference_cache(1)
    for seed in range(3):
        k, v = kv(1, seed=seed, b=1, nh=1, hs=2)
        got = exercise.append_kv(cache, 0, k, v)
        check_appended(got, cache, reference_update(ref, 0, k, v), 0, f"append {seed}")


# --------------------------------------------------------------------------- decode_step


HINT = (
    "feed only the tokens the cache has not seen, new = idx[:, cache.seq_len:], and return "
    "model(new, cache=cache)[0][:, -1, :].float()"
)


def check_cache_holds(cache, t, before, what):
    """After a decode step the cache holds every one of the t positions of idx."""
    __tracebackhide__ = True
    held = cached_positions(cache)
    if held == t:
        return
    if held == before:
        why = "pass cache=cache to the model, which stores the new keys and values"
    elif held > t:
        why = "did you feed the whole sequence again instead of only the new tokens?"
    else:
        why = "feed every token the cache has not seen yet"
    expect(
        False,
        f"{what}: after the call the cache should hold all {t} position(s) of idx "
        f"(it held {before} before), it holds {held}: {why} ({HINT})",
    )


def check_step(exercise, model, idx, cache, what):
    """One decode_step: the logits equal the uncached forward's, the cache holds all of idx."""
    __tracebackhide__ = True
    before = cached_positions(cache)
    logits = exercise.decode_step(model, idx, cache)
    b, t = idx.shape
    check_tensor(logits, f"{what}: the logits", (b, model.config.vocab_size), torch.float32)
    check_cache_holds(cache, t, before, what)
    check_close(
        logits.detach(),
        reference_logits(model, idx),
        f"{what}: the logits (vs. the forward without a cache)",
        hint=HINT,
        describe=lambda i: f"batch {i[0]}, token {i[1]}",
        atol=1e-4,
    )


def test_prefill_from_an_empty_cache(exercise):
    model = tiny_model()
    idx = torch.randint(0, 32, (2, 5))
    check_step(exercise, model, idx, reference_cache(), "the prefill of 5 tokens")


def test_prefill_of_a_single_token(exercise):
    model = tiny_model()
    idx = torch.randint(0, 32, (1, 1))
    check_step(exercise, model, idx, reference_cache(), "the prefill of 1 token")


@pytest.mark.parametrize(
    "options", [{}, {"position": "rope", "n_kv_head": 1}], ids=["gpt-2", "rope + gqa"]
)
def test_steps_equal_the_forward_without_a_cache(exercise, options):
    model = tiny_model(**options)
    torch.manual_seed(1)
    idx = torch.randint(0, 32, (2, 3))
    cache = reference_cache()
    check_step(exercise, model, idx, cache, "the prefill of 3 tokens")
    for step in range(1, 5):
        idx = torch.cat((idx, torch.randint(0, 32, (2, 1))), dim=1)
        check_step(exercise, model, idx, cache, f"step {step} ({idx.size(1)} tokens)")


def test_decode_step_agrees_with_next_logits(exercise):
    model = tiny_model()
    torch.manual_seed(2)
    idx = torch.randint(0, 32, (3, 4))
    mine, theirs = reference_cache(), reference_cache()
    for step in range(3):
        before = cached_positions(mine)
        got = exercise.decode_step(model, idx, mine)
        check_cache_holds(mine, idx.size(1), before, f"step {step}")
        check_close(
            got.detach(),
            reference_cached_logits(model, idx, theirs),
            f"step {step}: decode_step vs. tinylm.sampling.next_logits",
            hint=HINT,
            atol=1e-5,
        )
        idx = torch.cat((idx, got.argmax(dim=-1, keepdim=True)), dim=1)


# --------------------------------------------------------------------------- both together


def test_your_cache_inside_the_model(exercise):
    model = tiny_model()
    torch.manual_seed(3)
    idx = torch.randint(0, 32, (2, 4))
    cache = LearnersCache(model.config.n_layer, exercise.append_kv)
    for step in range(4):
        with torch.no_grad():
            got = reference_cached_logits(model, idx, cache)
        check_close(
            got,
            reference_logits(model, idx),
            f"with your append_kv as the model's cache, step {step} ({idx.size(1)} "
            "tokens): the logits",
            atol=1e-4,
            hint="the model attends over what append_kv returns: the past keys and "
            "values first, then this step's, along dim 2",
        )
        idx = torch.cat((idx, got.argmax(dim=-1, keepdim=True)), dim=1)
