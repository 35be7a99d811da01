"""Exercise (notebook 05): the AdamW optimizer step, by hand.

Write `AdamW.step`, then check it with `make exercises` or `pytest exercises -k adamw`. The checks
compare it with `torch.optim.AdamW`, the optimizer `tinylm.train` uses, step by step on a few
tensors and on a tiny GPT.
"""

import torch


class AdamW:
    """Adam with decoupled weight decay, for a list of parameters (no parameter groups)."""

    def __init__(
        self,
        params: list[torch.nn.Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        """Keep the parameters and settings; the per-parameter state starts empty."""
        self.params = list(params)
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.state: dict[torch.nn.Parameter, dict] = {}  # your moment estimates, step counts

    @torch.no_grad()
    def step(self) -> None:
        """Update every parameter that has a gradient in place, exactly as torch.optim.AdamW.

        The contract, not the formula (the AdamW paper, Loshchilov & Hutter 2019, and the
        documentation of torch.optim.AdamW have that): keep for each parameter a running mean of
        its gradients and of their squares (decay rates betas), correct both for starting at
        zero, step each weight against the mean gradient scaled by the root of the mean square
        (eps keeps the division finite), and shrink the weight itself by the weight decay, apart
        from the gradient: the decay must not pass through the moment estimates. A parameter
        whose .grad is None is left alone and its state untouched.
        """
        raise NotImplementedError("not implemented yet: write step in exercises/adamw.py")
