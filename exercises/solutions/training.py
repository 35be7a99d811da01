"""Solution (notebook 05): the learning-rate schedule, and training steps with clipping."""

import math
from collections.abc import Sequence

import torch


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup, then cosine decay."""
    if step < warmup_steps:
        return lr * (step + 1) / (warmup_steps + 1)  # lr/(w+1), 2·lr/(w+1), … up to near lr
    if step >= max_steps:
        return min_lr  # past the schedule: stay at the floor
    progress = (step - warmup_steps) / (max_steps - warmup_steps)  # 0 → 1 over the decay
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (lr - min_lr)  # lr → min_lr


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    grad_clip: float,
) -> tuple[float, float]:
    """One optimizer step on the batch x, y (B, T); returns (loss, gradient norm) as floats."""
    _, loss = model(x, y)  # logits (B, T, V) are not needed, only the mean cross-entropy
    loss.backward()  # every parameter's .grad now holds d loss / d parameter
    # One norm over all gradients together; if it exceeds grad_clip every gradient is scaled
    # by the same factor, so the direction of the step is kept and only its length is capped.
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)  # gradients accumulate otherwise
    return loss.item(), norm.item()


def accumulated_train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    grad_clip: float,
) -> tuple[float, float]:
    """One optimizer step over n micro-batches, as if they were one batch; → (loss, norm)."""
    n = len(batches)
    total = 0.0
    for x, y in batches:  # each (B, T); only this micro-batch's activations are in memory
        _, loss = model(x, y)  # the mean over this micro-batch's B·T tokens
        # backward adds to .grad rather than replacing it. The whole batch's loss is the mean of
        # the n micro-batch means (they have the same number of tokens), so each contributes
        # loss / n: after the loop .grad holds the gradient of the whole batch's loss.
        (loss / n).backward()
        total += loss.item() / n
    # Clip and step once, on the summed gradients: clipping each micro-batch on its own would
    # clip a different vector than the whole batch's gradient.
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total, norm.item()
