"""Exercise (notebook 05): the learning-rate schedule, and training steps with clipping.

Notebook 05 §1 writes the loop out by hand, one batch a step: `train_step` is that step as a
function, which the rest of the course builds on. The new angle is `accumulated_train_step`:
one optimizer step over several micro-batches (gradient accumulation, what `tinylm.train` does
when a batch does not fit in memory), which must move the weights as the whole batch would.

Write the three functions, then check them with `make exercises` or `pytest exercises -k
training`. The checks compare them with `tinylm.train.lr_at` and `tinylm.train.train_step` on a
tiny GPT.
"""

from collections.abc import Sequence

import torch


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup, then cosine decay.

    The schedule notebook 05 §2 plots; its decay is the cosine annealing of SGDR (Loshchilov &
    Hutter, 2017), without the restarts. Returns a Python float with these properties:
    - warmup, steps 0 … warmup_steps - 1: a straight line, the same rise every step, from
      lr / (warmup_steps + 1) at step 0 (not 0: a step at learning rate 0 moves no weight and
      is wasted) to lr at step warmup_steps, the first step after the warmup;
    - decay, steps warmup_steps … max_steps: half a period of a cosine, from lr, the peak, down
      to min_lr; it falls slowly at first, fastest halfway (where it is at (lr + min_lr) / 2)
      and slowly again at the end, and it never rises;
    - from step max_steps on: min_lr for good, also when warmup_steps == max_steps (no decay).
    warmup_steps = 0 starts at lr.
    """
    raise NotImplementedError("not implemented yet: write lr_at in exercises/training.py")


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    grad_clip: float,
) -> tuple[float, float]:
    """One optimizer step on the batch x, y (B, T); returns (loss, gradient norm) as floats.

    model(x, y) returns (logits, loss), the mean cross-entropy; the model is in training mode.
    The step: forward, backward, clip the gradients' global norm (all parameters together) to
    grad_clip (0 turns clipping off), optimizer step, then clear the gradients so the next step
    does not add to them. The norm returned is the one before clipping (what
    `torch.nn.utils.clip_grad_norm_` returns); the loss is the one computed before the step.
    """
    raise NotImplementedError("not implemented yet: write train_step in exercises/training.py")


def accumulated_train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    grad_clip: float,
) -> tuple[float, float]:
    """One optimizer step over n micro-batches, as if they were one batch; → (loss, norm).

    batches: n >= 1 pairs (x, y), each (B, T), all of the same shape, every target counted (no
    ignored labels, so the micro-batches weigh the same). The step must move the weights as one
    train_step on all n·B rows at once would (the x's and the y's concatenated along the batch
    dim), yet only one micro-batch may be in the model at a time, so that a batch too large for
    memory still fits: a forward and a backward for each in turn, then one clip of the global
    gradient norm (0: off), one optimizer step, and the gradients cleared. Returns, as floats,
    the loss of all n·B rows before the step (what train_step on the whole batch would return)
    and the gradient norm before clipping. n = 1 is train_step.
    """
    raise NotImplementedError(
        "not implemented yet: write accumulated_train_step in exercises/training.py"
    )
