"""Scoring a model on held-out text the same way everywhere: fixed batches, mean loss.

Training scores its model every `eval_interval` steps on batches drawn once with `EVAL_SEED`
(`fixed_batches`, `estimate_loss`), so two evaluations, or two runs, differ only by the model.
`validation_losses` adds the three figures the recipe and architecture benchmarks compare runs
by: 8 and 64 batches of random windows, and 64 of windows that start at a poem.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from tinylm.data import BatchSampler
from tinylm.model import GPT
from tinylm.runs import TrainConfig

EVAL_SEED = 1234  # one seed for the fixed eval batches, so every run is scored on the same text
JUDGED_POEMS = 200  # poems the benchmarks write and judge per run
POEM_METRICS = (  # the PoemJudge report fields the benchmarks record
    "finished",
    "regulated",
    "uniform_verses",
    "copied_verses",
    "rhymes",
    "tone_agreement",
)


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


def validation_losses(
    model: GPT, tokens: np.ndarray, eot_id: int, batch_size: int = 8
) -> dict[str, float]:
    """fp32 loss on fixed batches: 8 and 64 of random windows, and 64 of poem-start windows."""
    scored = {
        "val_random_8": TrainConfig("validation", batch_size=batch_size, eval_batches=8),
        "val_random_64": TrainConfig("validation", batch_size=batch_size, eval_batches=64),
        "val_documents_64": TrainConfig(
            "validation", batch_size=batch_size, eval_batches=64, windows="documents"
        ),
    }
    block_size = model.config.block_size
    return {
        key: estimate_loss(
            model, fixed_batches(tokens, cfg, block_size, "cpu", eot_id), nullcontext()
        )
        for key, cfg in scored.items()
    }
