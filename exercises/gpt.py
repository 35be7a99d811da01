"""Exercise (notebook 04): the transformer block and the whole GPT, built on your attention.

Write the three `forward` methods, then check them with `make exercises` or
`pytest exercises -k gpt`. The layers are made for you in each `__init__`, under the names
`tinylm.model.GPT` gives them, so `model.load_state_dict(tinylm_model.state_dict())` fills yours
with tinylm's weights and the checks compare the logits of the two.

The attention inside is yours from exercises/attention.py (`self_attention`), and the loss yours
from exercises/cross_entropy.py: write those first. `make exercises-train` then trains this model
with your optimizer, schedule and batches (exercises/train.py).

The model is GPT-2's layout as tinylm builds it by default: learned positions, LayerNorm, a GELU
MLP, the output layer tied to the token embeddings, and no dropout.
"""

import dataclasses

import torch
from torch import nn

from exercises.attention import self_attention
from exercises.cross_entropy import cross_entropy  # noqa: F401 (yours, for GPT.forward)
from tinylm.model import GPTConfig

# The GPTConfig options this model follows (notebook 10's Mistral options are not built here).
GPT2_LAYOUT = dict(norm="layernorm", position="learned", mlp="gelu", n_kv_head=None, dropout=0.0)


class SelfAttention(nn.Module):
    """Causal multi-head self-attention with tinylm's layer names; forward is your exercise 03."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self_attention(x, self)  # (B, T, C)


class MLP(nn.Module):
    """The position-wise feed-forward layer: c_fc widens C to hidden, c_proj brings it back."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.hidden_size, bias=config.bias)
        self.c_proj = nn.Linear(config.hidden_size, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) → (..., C): widen, the exact GELU (the erf form, not tanh's), project back.

        Every position is transformed on its own: the same result whatever the other positions
        hold. This is where a block thinks about each token after attention gathered context.
        """
        raise NotImplementedError("not implemented yet: write MLP.forward in exercises/gpt.py")


class Block(nn.Module):
    """One transformer block: attention, then the MLP, each on its own branch of the residual."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, C), the residual stream → the stream after this block, (B, T, C).

        Pre-norm, as GPT-2 and tinylm: each sub-layer (attention with ln_1, then the MLP with
        ln_2) reads a normalised copy of the stream and adds its output to the stream; the
        stream itself is never normalised here, so a block that outputs zeros passes x through
        unchanged. The MLP reads the stream after attention's addition.
        """
        raise NotImplementedError("not implemented yet: write Block.forward in exercises/gpt.py")


class GPT(nn.Module):
    """The decoder-only language model: embeddings, n_layer blocks, a final norm, tied output."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if config != dataclasses.replace(config, **GPT2_LAYOUT, tie_weights=True):
            raise ValueError(f"this exercise builds GPT-2's layout only: {GPT2_LAYOUT}, tied")
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),  # token → vector
                wpe=nn.Embedding(config.block_size, config.n_embd),  # position → vector
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied: one matrix, read and written

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids → (logits (B, T, V), loss or None), what tinylm's GPT returns.

        The vector of each token is its token embedding plus the embedding of its position
        (0 … T-1); the blocks run in order; the final norm ln_f; then lm_head turns each position
        into V logits for the token that follows it. With targets (B, T), the loss is the mean
        cross-entropy over all positions (your `cross_entropy`; targets of -100 are ignored);
        without, it is None. T may be anything from 1 to config.block_size; a longer idx raises
        ValueError saying the context is block_size tokens (there is no position embedding for
        more).
        """
        raise NotImplementedError("not implemented yet: write GPT.forward in exercises/gpt.py")
