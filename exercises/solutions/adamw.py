"""Worked solution of exercises/adamw.py: the AdamW optimizer step by hand."""

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
        self.state: dict[torch.nn.Parameter, dict] = {}

    @torch.no_grad()
    def step(self) -> None:
        """Update every parameter that has a gradient in place, exactly as torch.optim.AdamW."""
        beta1, beta2 = self.betas
        for param in self.params:
            if param.grad is None:
                continue
            state = self.state.setdefault(
                param,
                {"step": 0, "mean": torch.zeros_like(param), "square": torch.zeros_like(param)},
            )
            state["step"] += 1
            t = state["step"]
            # Decoupled weight decay: shrink the weight itself, before and apart from the
            # gradient step, so the decay never enters the moment estimates (that is Adam + L2).
            param.mul_(1 - self.lr * self.weight_decay)
            # Running means of the gradient and of its square (both start at zero) ...
            state["mean"].mul_(beta1).add_(param.grad, alpha=1 - beta1)
            state["square"].mul_(beta2).addcmul_(param.grad, param.grad, value=1 - beta2)
            # ... and their bias corrections: after t steps the zeros still weigh beta^t.
            mean_hat = state["mean"] / (1 - beta1**t)
            square_hat = state["square"] / (1 - beta2**t)
            # eps is added to the root, outside it, as PyTorch does.
            param.sub_(self.lr * mean_hat / (square_hat.sqrt() + self.eps))
