"""Worked solution of exercises/cross_entropy.py: cross-entropy from logits by hand."""

import torch


def cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100
) -> torch.Tensor:
    """Mean negative log-probability that the logits give the target tokens: a 0-d tensor."""
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab)  # (N, V)
    flat_targets = targets.reshape(-1)  # (N,)
    counted = flat_targets != ignore_index  # (N,) positions that count
    rows = flat_logits[counted]  # (n, V)
    wanted = flat_targets[counted]  # (n,)
    # log Σ exp(z) = m + log Σ exp(z − m): with m the row's largest logit every exp() is at most
    # 1, so nothing overflows, and at least one term is exactly 1, so the log never sees 0.
    top = rows.max(dim=-1, keepdim=True).values.detach()  # (n, 1); a constant for the gradient
    log_normaliser = top.squeeze(-1) + torch.log(torch.exp(rows - top).sum(dim=-1))  # (n,)
    target_logit = rows[torch.arange(len(wanted)), wanted]  # (n,)
    # −log p(target) = log Σ exp(z) − z_target, averaged over the counted positions only.
    return (log_normaliser - target_logit).mean()
