"""Checks of exercises/training.py against tinylm.train (notebook 05)."""

import copy
import math
from contextlib import nullcontext

import pytest
import torch

from exercises.tests.checks import check_close, close, expect, num
from tinylm import train
from tinylm.model import GPT, GPTConfig

# --------------------------------------------------------------------------- the reference
# The only lines of this file that call tinylm: adapt them here if its API changes.


def reference_lr(step, **schedule):
    return train.lr_at(step, **schedule)


class OneBatch:
    """What tinylm.train.train_step draws its batch from: here always the same (x, y)."""

    def __init__(self, x, y):
        self.x, self.y, self.device = x, y, x.device

    def sample(self):
        return self.x, self.y


def reference_step(model, optimizer, x, y, grad_clip):
    loss, norm = train.train_step(
        model, optimizer, OneBatch(x, y), nullcontext(), grad_clip=grad_clip
    )
    return loss.item(), norm.item()


class MicroBatches:
    """What tinylm.train.train_step draws its micro-batches from: here a list, in order."""

    def __init__(self, batches):
        self.batches, self.device = iter(batches), batches[0][0].device

    def sample(self):
        return next(self.batches)


def reference_accumulated_step(model, optimizer, batches, grad_clip):
    loss, norm = train.train_step(
        model,
        optimizer,
        MicroBatches(batches),
        nullcontext(),
        grad_accum=len(batches),
        grad_clip=grad_clip,
    )
    return loss.item(), norm.item()


def tiny_model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=32, block_size=8, n_layer=1, n_head=2, n_embd=16)).train()


# --------------------------------------------------------------------------- learning rate

SCHEDULES = {
    "warmup 9 of 100": dict(lr=1e-3, min_lr=1e-4, warmup_steps=9, max_steps=100),
    "no warmup": dict(lr=6e-4, min_lr=6e-5, warmup_steps=0, max_steps=50),
    "min_lr 0": dict(lr=1e-2, min_lr=0.0, warmup_steps=3, max_steps=10),
    "all warmup": dict(lr=1e-3, min_lr=1e-4, warmup_steps=5, max_steps=5),
}


def explain_lr(step, got, expected, lr, min_lr, warmup_steps, max_steps):
    """Which phase step is in, the formula that gives its learning rate, and the likely slip."""

    def near(value):
        return math.isclose(got, value, rel_tol=1e-9, abs_tol=1e-12)

    if step < warmup_steps:
        why = (
            f"in the warmup it should be lr·(step+1)/(warmup+1) = {lr:.6g}·{step + 1}/"
            f"{warmup_steps + 1} = {expected:.6g}"
        )
        if near(0.0):
            return why + ": not 0, a step at learning rate 0 moves no weight and is wasted"
        if near(lr * (step + 1) / warmup_steps):
            return why + (
                ": that is lr·(step+1)/warmup, which reaches lr a step early; the peak is at "
                "step warmup_steps, the first step after the warmup"
            )
        return why
    if step >= max_steps:
        why = f"from max_steps = {max_steps} on it should stay at min_lr = {expected:.6g}"
        if warmup_steps == max_steps and near(lr):
            return why + ": with warmup_steps == max_steps there is no decay, and min_lr wins"
        return why
    progress = (step - warmup_steps) / (max_steps - warmup_steps)
    why = (
        f"in the cosine decay (progress = (step - warmup)/(max_steps - warmup) = "
        f"{progress:.4g}) it should be min_lr + ½(1 + cos(π·{progress:.4g}))·(lr - min_lr) = "
        f"{expected:.6g}"
    )
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    if step == warmup_steps:
        return why + ": the warmup has just ended, the peak is lr itself"
    if near(lr - progress * (lr - min_lr)):
        return why + (
            ": that is a straight line from lr to min_lr; the decay is half a cosine, slow at "
            "both ends and fastest halfway"
        )
    if near(cosine * lr):
        return why + ": that is a cosine from lr down to 0; it must end at min_lr instead"
    if near(
        min_lr + 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max_steps)) * (lr - min_lr)
    ):
        return why + (
            ": progress was counted over max_steps, not over the max_steps - warmup_steps "
            "steps of the decay, so it would not reach min_lr at max_steps"
        )
    return why


@pytest.mark.parametrize("schedule", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_lr_at_follows_warmup_then_cosine(exercise, schedule):
    """Every step of the schedule, from step 0 to past max_steps, equals the reference's."""
    for step in range(schedule["max_steps"] + 8):  # the whole curve, and a few steps beyond
        got = exercise.lr_at(step, **schedule)
        expected = reference_lr(step, **schedule)
        expect(
            isinstance(got, (int, float)),
            f"lr_at should return a Python float, got {type(got).__name__}",
        )
        expect(
            math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12),
            f"the learning rate at step {step} is {got:.6g}; "
            f"{explain_lr(step, got, expected, **schedule)}",
        )


# --------------------------------------------------------------------------- one step


def run_step(exercise, grad_clip, optimizer_class=torch.optim.SGD):
    """The learner's step and the reference's on twin models.

    Returns (learner's (loss, norm), reference's (loss, norm), models), models being the
    learner's model, the reference's, one stepped without clipping, and one not stepped.
    """
    model = tiny_model()
    twin, unclipped, start = copy.deepcopy(model), copy.deepcopy(model), copy.deepcopy(model)
    torch.manual_seed(1)
    x, y = torch.randint(0, 32, (4, 8)), torch.randint(0, 32, (4, 8))
    got = exercise.train_step(model, optimizer_class(model.parameters(), lr=0.1), x, y, grad_clip)
    expected = reference_step(twin, optimizer_class(twin.parameters(), lr=0.1), x, y, grad_clip)
    reference_step(unclipped, optimizer_class(unclipped.parameters(), lr=0.1), x, y, 0.0)
    return got, expected, (model, twin, unclipped, start)


def check_parameters(models, grad_clip, norm):
    """The parameters after the step equal the reference's; else say what the step missed."""
    __tracebackhide__ = True
    model, twin, unclipped, start = (dict(m.named_parameters()) for m in models)
    if all(close(model[name], twin[name], atol=1e-6) for name in model):
        return
    if all(close(model[name], start[name], atol=0, rtol=0) for name in model):
        expect(False, "the parameters did not change: call optimizer.step() after backward")
    clipping = 0 < grad_clip < norm
    if clipping and all(close(model[name], unclipped[name], atol=1e-7) for name in model):
        expect(
            False,
            f"the parameters moved as if the gradients were not clipped: their norm "
            f"was {num(norm)} > grad_clip={grad_clip}; call torch.nn.utils."
            "clip_grad_norm_(model.parameters(), grad_clip) between backward and "
            "optimizer.step()",
        )
    hint = (
        "the step: loss = model(x, y)[1]; loss.backward(); clip_grad_norm_; "
        "optimizer.step(); optimizer.zero_grad()"
    )
    if grad_clip == 0:
        hint = (
            "grad_clip = 0 turns clipping off (clip_grad_norm_ with max_norm 0 would set "
            "every gradient to 0): skip the clipping, or clip to math.inf"
        )
    for name in model:
        check_close(
            model[name], twin[name], f"parameter {name!r} after the step", hint=hint, atol=1e-6
        )


@pytest.mark.parametrize("grad_clip", [0.01, 1e3, 0.0], ids=["clips", "no effect", "off"])
def test_train_step_updates_like_the_reference(exercise, grad_clip):
    (loss, norm), (want_loss, want_norm), models = run_step(exercise, grad_clip)
    expect(
        isinstance(loss, float) and isinstance(norm, float),
        f"train_step should return (loss, norm) as Python floats (use .item()), got "
        f"({type(loss).__name__}, {type(norm).__name__})",
    )
    expect(
        math.isclose(loss, want_loss, rel_tol=1e-5),
        f"the returned loss should be the model's loss on (x, y) before the step, "
        f"{num(want_loss)}, got {num(loss)}",
    )
    for name, p in models[0].named_parameters():
        expect(
            p.grad is None or not p.grad.any(),
            f"parameter {name!r} still holds a gradient after the step: call "
            "optimizer.zero_grad() at the end, or the next backward adds to it",
        )
    check_parameters(models, grad_clip, want_norm)
    expect(
        math.isclose(norm, want_norm, rel_tol=1e-4),
        f"the returned norm should be the global gradient norm before clipping, "
        f"{num(want_norm)} (what clip_grad_norm_ returns), got {num(norm)}",
    )


def test_train_step_with_adamw(exercise):
    (loss, _), (want_loss, _), models = run_step(exercise, 1.0, torch.optim.AdamW)
    expect(
        math.isclose(loss, want_loss, rel_tol=1e-5),
        f"the returned loss should be {num(want_loss)}, got {num(loss)}",
    )
    check_parameters(models, 1.0, 0.0)


# --------------------------------------------------------------------------- accumulation


def micro_batches(n):
    """n micro-batches (x, y) of 2 rows each, (2, 8) tokens of a vocabulary of 32."""
    torch.manual_seed(2)
    return [(torch.randint(0, 32, (2, 8)), torch.randint(0, 32, (2, 8))) for _ in range(n)]


def stepped(batches, grad_clip, lr=0.1, accumulate=True):
    """The tiny model after reference steps with SGD: one over all batches, or one per batch."""
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for group in [batches] if accumulate else [[batch] for batch in batches]:
        reference_accumulated_step(model, optimizer, group, grad_clip)
    return detached(model)


def detached(model):
    """The model's parameters by name, without their autograd history (to print them)."""
    return {name: p.detach() for name, p in model.named_parameters()}


def accumulation_hint(params, batches, grad_clip):
    """Name the usual mistake of gradient accumulation that params show, if one fits."""
    n = len(batches)

    def matches(other):
        return all(close(params[name], other[name], atol=1e-6) for name in params)

    if n > 1 and matches(stepped(batches, grad_clip, lr=0.1 * n)):  # unless clipping hides it
        return (
            f"the weights moved {n} times as far as they should: backward adds each "
            f"micro-batch's gradient to .grad, so the {n} gradients were summed; divide each "
            f"micro-batch's loss by {n} before backward, so the sum is the gradient of the "
            "whole batch's mean loss"
        )
    # Each mistake with and without the division by n (with SGD, dividing the gradient by n
    # is dividing the learning rate by n; clipping to a small norm hides either).
    rates = (0.1, 0.1 / n)
    if n > 1 and any(matches(stepped(batches, grad_clip, lr, accumulate=False)) for lr in rates):
        return (
            f"the weights took {n} optimizer steps, one per micro-batch: accumulate the "
            "gradients of all of them, then clip and step once"
        )
    if n > 1 and any(matches(stepped(batches[-1:], grad_clip, lr)) for lr in rates):
        return (
            "the weights moved as if only the last micro-batch counted: the gradients of the "
            "earlier ones were cleared (zero_grad inside the loop?); clear them only after "
            "the optimizer step"
        )
    return (
        "the step: for each micro-batch, forward and backward of its loss / n; then one "
        "clip_grad_norm_, one optimizer.step() and one optimizer.zero_grad()"
    )


def check_accumulated_loss(loss, want, batches):
    """The returned loss is the whole batch's mean; else say which other number it is."""
    __tracebackhide__ = True
    expect(
        isinstance(loss, float),
        f"accumulated_train_step should return the loss as a Python float (.item()), got "
        f"{type(loss).__name__}",
    )
    if math.isclose(loss, want, rel_tol=1e-5):
        return
    model = tiny_model()
    with torch.no_grad():
        losses = [model(x, y)[1].item() for x, y in batches]
    message = (
        f"the returned loss should be the mean loss over all {len(batches)} micro-batches "
        f"before the step, {num(want)}, got {num(loss)}"
    )
    if math.isclose(loss, sum(losses), rel_tol=1e-5):
        message += ": that is their sum; divide by the number of micro-batches"
    elif math.isclose(loss, losses[-1], rel_tol=1e-5) or math.isclose(
        loss, losses[-1] / len(batches), rel_tol=1e-5
    ):
        message += ": that is the last micro-batch's alone; add up every micro-batch's share"
    expect(False, message)


@pytest.mark.parametrize(
    ("n", "grad_clip"),
    [(3, 0.0), (3, 0.01), (4, 1e3), (1, 0.01)],
    ids=["3 no clipping", "3 clips", "4 no effect", "1 is train_step"],
)
def test_accumulated_step_updates_like_the_reference(exercise, n, grad_clip):
    batches = micro_batches(n)
    model = tiny_model()
    loss, norm = exercise.accumulated_train_step(
        model, torch.optim.SGD(model.parameters(), lr=0.1), batches, grad_clip
    )
    twin = tiny_model()
    want_loss, want_norm = reference_accumulated_step(
        twin, torch.optim.SGD(twin.parameters(), lr=0.1), batches, grad_clip
    )
    for name, p in model.named_parameters():
        expect(
            p.grad is None or not p.grad.any(),
            f"parameter {name!r} still holds a gradient after the step: call "
            "optimizer.zero_grad() after optimizer.step(), or the next step adds to it",
        )
    params, expected = detached(model), detached(twin)
    hint = accumulation_hint(params, batches, grad_clip)
    for name in params:
        check_close(
            params[name], expected[name], f"parameter {name!r} after the step", hint, atol=1e-6
        )
    check_accumulated_loss(loss, want_loss, batches)
    expect(
        isinstance(norm, float),
        f"accumulated_train_step should return the norm as a Python float (.item()), got "
        f"{type(norm).__name__}",
    )
    message = (
        f"the returned norm should be the global norm of the accumulated gradients before "
        f"clipping, {num(want_norm)}, got {num(norm)}"
    )
    if n > 1 and math.isclose(norm, n * want_norm, rel_tol=1e-4):
        message += (
            f": {n} times too large, the norm of the summed gradients; divide each "
            f"micro-batch's loss by {n} before backward"
        )
    expect(math.isclose(norm, want_norm, rel_tol=1e-4), message)


def test_accumulation_equals_one_big_batch(exercise):
    """The point of accumulation: 4 micro-batches of 2 rows make the step of one batch of 8."""
    batches = micro_batches(4)
    model = tiny_model()
    exercise.accumulated_train_step(
        model, torch.optim.SGD(model.parameters(), lr=0.1), batches, 0.0
    )
    big = tiny_model()
    x, y = (torch.cat(parts) for parts in zip(*batches, strict=True))  # (8, T) each
    reference_step(big, torch.optim.SGD(big.parameters(), lr=0.1), x, y, 0.0)
    params, expected = detached(model), detached(big)
    hint = accumulation_hint(params, batches, 0.0)
    for name in params:
        check_close(
            params[name],
            expected[name],
            f"parameter {name!r} after 4 micro-batches of 2 rows, against one batch of 8",
            hint,
            atol=1e-6,
        )
