"""Exercise (notebook 05): the training loss, cross-entropy, from logits by hand.

Write the function, then check it with `make exercises` or `pytest exercises -k cross_entropy`.
The checks compare it with `torch.nn.functional.cross_entropy`, the loss `tinylm.model.GPT`
returns, on random logits, on very large ones, and with targets to ignore.
"""

import torch


def cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100
) -> torch.Tensor:
    """Mean negative log-probability that the logits give the target tokens: a 0-d tensor.

    logits: (..., V) float scores, one row per position over a vocabulary of V tokens;
    targets: (...) integer token ids, the same leading shape. A position whose target is
    ignore_index counts neither in the sum nor in the number it is averaged over (SFT masks
    the prompt this way, notebook 06). The result must stay finite for logits in the
    thousands, where exp() of a logit overflows float32, and gradients must flow back to the
    logits (no .item(), no NumPy). Do not call torch.nn.functional.cross_entropy, log_softmax
    or logsumexp: build it from exp, log, sum, max and indexing.
    """
    raise NotImplementedError(
        "not implemented yet: write cross_entropy in exercises/cross_entropy.py"
    )
