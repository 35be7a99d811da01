"""Checks of exercises/cross_entropy.py against torch.nn.functional.cross_entropy (notebook 05)."""

import torch
import torch.nn.functional as F

from exercises.tests.checks import call, check_close, check_tensor, expect, num

# --------------------------------------------------------------------------- the reference
# The only lines of this file that call the library's loss: adapt them here if it changes.


def reference(logits, targets, ignore_index=-100):
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=ignore_index
    )


def example(batch=3, time=5, vocab=11, scale=1.0, seed=0):
    """Random logits (B, T, V) and targets (B, T), reproducible."""
    generator = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(batch, time, vocab, generator=generator)
    targets = torch.randint(0, vocab, (batch, time), generator=generator)
    return logits, targets


def the_loss(index):
    """How a message names the one element of a 0-d loss."""
    return "the value"


def loss_of(exercise, logits, targets, **kwargs):
    """The learner's loss, checked to be a 0-d tensor."""
    loss = call(
        exercise.cross_entropy,
        logits,
        targets,
        hint="logits are (B, T, V), targets (B, T); flatten both to one row per position",
        **kwargs,
    )
    check_tensor(loss, "cross_entropy(...)", ())
    return loss


# --------------------------------------------------------------------------- the checks


def test_cross_entropy_equals_pytorchs_on_random_logits(exercise):
    logits, targets = example()
    check_close(
        loss_of(exercise, logits, targets),
        reference(logits, targets),
        "the mean loss over 3 × 5 positions",
        describe=the_loss,
        hint="per position: log of the sum of exp over the whole row, minus the target's own "
        "logit; then the mean over positions (not the sum)",
    )


def test_cross_entropy_of_uniform_logits_is_log_vocab(exercise):
    logits, targets = torch.zeros(2, 4, 50), torch.zeros(2, 4, dtype=torch.long)
    check_close(
        loss_of(exercise, logits, targets),
        torch.tensor(torch.log(torch.tensor(50.0)).item()),
        "the loss of all-zero logits over 50 tokens",
        describe=the_loss,
        hint="equal logits give every token probability 1/50, so the loss is ln 50",
    )


def test_cross_entropy_stays_finite_for_huge_logits(exercise):
    logits, targets = example(scale=3000.0, seed=1)
    loss = loss_of(exercise, logits, targets)
    expect(
        bool(torch.isfinite(loss)),
        f"with logits in the thousands the loss is {num(loss)}: exp(3000) overflows float32 to "
        "inf. Subtract each row's largest logit before exp() and add it back after the log: "
        "log Σ exp(z) = m + log Σ exp(z − m)",
    )
    check_close(
        loss, reference(logits, targets), "the loss of huge logits", describe=the_loss, atol=1e-2
    )


def test_cross_entropy_skips_ignored_targets(exercise):
    logits, targets = example(seed=2)
    targets[0, :3] = -100
    targets[2, 4] = -100
    expected = reference(logits, targets)
    loss = loss_of(exercise, logits, targets)
    expect(
        bool(torch.isfinite(loss)),
        f"with targets of -100 the loss is {num(loss)}: -100 is not a token id. Leave those "
        "positions out before indexing the logits with the targets",
    )
    per_position = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    )  # 0 where ignored
    over_all = per_position.sum() / targets.numel()
    check_close(
        loss,
        expected,
        "the loss with 4 of 15 targets ignored",
        describe=the_loss,
        hint=(
            "average over the 11 counted positions only, not over all 15"
            if torch.isclose(loss, over_all)
            else "positions whose target is ignore_index must count neither in the sum nor in "
            "the number of positions"
        ),
    )


def test_cross_entropy_honours_another_ignore_index(exercise):
    logits, targets = example(seed=3)
    targets[1, 1] = 7
    check_close(
        loss_of(exercise, logits, targets, ignore_index=7),
        reference(logits, targets, ignore_index=7),
        "the loss with ignore_index=7",
        describe=the_loss,
        hint="use the ignore_index argument, not a fixed -100",
    )


def test_cross_entropy_gradient_equals_pytorchs(exercise):
    logits, targets = example(seed=4)
    targets[0, 0] = -100
    mine = logits.clone().requires_grad_(True)
    theirs = logits.clone().requires_grad_(True)
    loss = loss_of(exercise, mine, targets)
    expect(
        loss.requires_grad,
        "the loss has no gradient: build it from tensor operations on the logits (no .item(), "
        "no NumPy, no torch.no_grad())",
    )
    loss.backward()
    reference(theirs, targets).backward()
    check_close(
        mine.grad,
        theirs.grad,
        "the gradient of the loss with respect to the logits",
        hint="it should be (softmax − one-hot of the target) / counted positions, and 0 on "
        "ignored positions",
    )
