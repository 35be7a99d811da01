"""tinylm.evaluate: fixed batches score the same text every time, with dropout off."""

import math

import numpy as np
import pytest
import torch

from tinylm.evaluate import estimate_loss, fixed_batches, window_start
from tinylm.model import GPT, GPTConfig
from tinylm.runs import TrainConfig

EOT = 0


@pytest.fixture
def tokens() -> np.ndarray:
    """Documents of 1-9 tokens from 1..15, each after end-of-text (id 0)."""
    rng = np.random.default_rng(0)
    docs = [[EOT, *rng.integers(1, 16, size=rng.integers(1, 10))] for _ in range(300)]
    return np.concatenate(docs).astype(np.uint16)


@pytest.fixture
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=16, block_size=16, n_layer=1, n_head=2, n_embd=16))


def test_fixed_batches_are_the_same_text_every_time(tokens):
    cfg = TrainConfig("eval", batch_size=4, eval_batches=3)
    first, again = (fixed_batches(tokens, cfg, 16, "cpu") for _ in range(2))
    assert len(first) == 3 and first[0][0].shape == (4, 16)
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_poem_start_windows_begin_at_end_of_text(tokens):
    cfg = TrainConfig("eval", batch_size=4, eval_batches=2, windows="documents")
    assert window_start(cfg, EOT) == EOT
    assert all((x[:, 0] == EOT).all() for x, _ in fixed_batches(tokens, cfg, 16, "cpu", EOT))
    with pytest.raises(ValueError, match="eot_id"):
        window_start(cfg, None)


def test_estimate_loss_is_the_mean_with_dropout_off_then_back_to_training(tokens, model):
    batches = fixed_batches(tokens, TrainConfig("eval", batch_size=4, eval_batches=2), 16, "cpu")
    model.train()
    loss = estimate_loss(model, batches, torch.autocast("cpu", enabled=False))
    assert model.training  # back in train mode for the next step
    model.eval()
    with torch.no_grad():
        mean = sum(model(x, y)[1].item() for x, y in batches) / len(batches)
    assert math.isclose(loss, mean, rel_tol=1e-6)
