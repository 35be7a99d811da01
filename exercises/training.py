"""Exercise (notebook 05): the learning-rate schedule, and one training step with clipping.

Write the two functions, then check them with `make exercises` or `pytest exercises -k training`.
The checks compare them with `tinylm.train.lr_at` and `tinylm.train.train_step` on a tiny GPT.
"""

import torch


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup, then cosine decay.

    - step < warmup_steps: rise linearly, lr · (step + 1) / (warmup_steps + 1), so that step 0
      already moves the weights (a step at learning rate 0 would be wasted);
    - warmup_steps <= step < max_steps: with progress = (step - warmup_steps) /
      (max_steps - warmup_steps), going from 0 to 1, min_lr + ½ (1 + cos(π · progress)) ·
      (lr - min_lr): lr at the end of the warmup, falling slowly, then fast, then slowly;
    - step >= max_steps: min_lr.
    warmup_steps = 0 starts at lr. Returns a Python float.
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
