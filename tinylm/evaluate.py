"""Scoring a model on held-out text the same way everywhere: fixed batches, mean loss.

Training scores its model every `eval_interval` steps on batches drawn once with `EVAL_SEED`
(`fixed_batches`, `estimate_loss`), so two evaluations, or two runs, differ only by the model.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from tinylm.data import BatchSampler
from tinylm.runs import TrainConfig

EVAL_SEED = 1234  # one seed for the fixed eval batches, so every run is scored on the same text


def fixed_batches(
    tokens: np.ndarray,
    cfg: TrainConfig,
    block_size: int,
    device: torch.device,
    eot_id: int | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """eval_batches batches drawn once with EVAL_SEED: every evaluation scores the same text."""
    sampler = BatchSampler(
        tokens,
        cfg.batch_size,
        block_size,
        device,
        seed=EVAL_SEED,
        start_token=window_start(cfg, eot_id),
    )
    return [sampler.sample() for _ in range(cfg.eval_batches)]


def window_start(cfg: TrainConfig, eot_id: int | None) -> int | None:
    """The token every window starts at (end-of-text for windows="documents"), else None."""
    if cfg.windows == "random":
        return None
    if eot_id is None:
        raise ValueError('windows="documents" needs the tokenizer\'s end-of-text id (eot_id)')
    return eot_id


@torch.no_grad()
def estimate_loss(
    model: torch.nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    autocast: torch.autocast | nullcontext,
) -> float:
    """Mean loss over fixed batches with dropout off (eval mode), then back to train mode."""
    model.eval()
    total = torch.zeros((), device=batches[0][0].device)
    for x, y in batches:
        with autocast:
            _, loss = model(x, y)
        total += loss.float()
    model.train()
    return (total / len(batches)).item()
