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


def explain_lr(step, expected, lr, min_lr, warmup_steps, max_steps):
    """Which phase step is in, and the formula that gives its learning rate."""
    if step < warmup_steps:
        why = (
            f"(warmup) should be lr·(step+1)/(warmup+1) = {lr:.1e}·{step + 1}/"
            f"{warmup_steps + 1} = {expected:.1e}"
        )
        return why + (": not 0, a step at learning rate 0 is wasted" if step == 0 else "")
    if step >= max_steps:
        return f"(after max_steps={max_steps}) should stay at min_lr = {expected:.1e}"
    progress = (step - warmup_steps) / (max_steps - warmup_steps)
    peak = ": the warmup has just ended, the peak is lr itself" if step == warmup_steps else ""
    return (
        f"(cosine decay, progress = (step - warmup)/(max_steps - warmup) = {progress:.2f}) "
        f"should be min_lr + ½(1 + cos(π·{progress:.2f}))·(lr - min_lr) = {expected:.1e}"
        f"{peak}"
    )


@pytest.mark.parametrize("schedule", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_lr_at_follows_warmup_then_cosine(exercise, schedule):
    w, m = schedule["warmup_steps"], schedule["max_steps"]
    steps = sorted({0, 1, w - 1, w, w + 1, (w + m) // 2, m - 1, m, m + 7} - {-1})
    for step in steps:
        got = exercise.lr_at(step, **schedule)
        expected = reference_lr(step, **schedule)
        expect(
            isinstance(got, (int, float)),
            f"lr_at should return a Python float, got {type(got).__name__}",
        )
        expect(
            math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12),
            f"learning rate at step {step} {explain_lr(step, expected, **schedule)}, got {got:.1e}",
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
