"""The GPT: a nanoGPT-style decoder-only transformer, built from a `GPTConfig` (config.py).

Read `GPT.forward` top to bottom: token + position embeddings, `n_layer` pre-norm blocks
(attention then MLP, each added to the residual stream), a final LayerNorm, and the output layer,
which shares its weights with the token embedding. `save_pretrained` / `from_pretrained` store
``config.json`` + ``model.safetensors``, as Hugging Face models do (no pickle).

The talk's second family, Mistral, is the same model with five options switched (notebook 10):
RMSNorm for LayerNorm, rotary position embeddings (RoPE) for learned ones, a SwiGLU MLP for the
GELU one, grouped-query attention (n_kv_head < n_head), and an output layer of its own.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from tinylm.attention import (
    CAUSAL,
    AttentionContext,
    CausalSelfAttention,
    KVCache,
    document_mask,
    rope_angles,
)

# The config's names are this module's too: `from tinylm.model import GPTConfig, preset` works.
from tinylm.config import MISTRAL, PRESETS, GPTConfig, pad_vocab_size, preset  # noqa: F401

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's own cannot drop only the bias)."""

    def __init__(self, ndim: int, bias: bool, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """x / RMS(x) · weight: LayerNorm without the mean and the bias (Llama, Mistral).

    Computed in fp32 whatever the input's dtype, as transformers does, then cast back.
    """

    def __init__(self, ndim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # (B, T, C)
        return self.weight * x32.to(x.dtype)


def make_norm(config: GPTConfig) -> nn.Module:
    """The normalisation layer the config asks for."""
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd, config.norm_eps)
    return LayerNorm(config.n_embd, config.bias, config.norm_eps)


class MLP(nn.Module):
    """Position-wise feed-forward: widen (4x by default), GELU, project back."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.hidden_size, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(config.hidden_size, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class SwiGLU(nn.Module):
    """Gated feed-forward (Shazeer 2020): SiLU(x W_gate) gates x W_fc elementwise, project back.

    Three matrices instead of two, so the hidden width is usually 8/3 · n_embd instead of 4 ·
    n_embd to keep the parameter count (Llama, Mistral).
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_gate = nn.Linear(config.n_embd, config.hidden_size, bias=config.bias)
        self.c_fc = nn.Linear(config.n_embd, config.hidden_size, bias=config.bias)
        self.c_proj = nn.Linear(config.hidden_size, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.silu(self.c_gate(x)) * self.c_fc(x)  # (B, T, hidden): the gate in [-0.28, ∞)
        return self.dropout(self.c_proj(hidden))


class Block(nn.Module):
    """One transformer block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: GPTConfig, layer: int = 0) -> None:
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = make_norm(config)
        self.mlp = SwiGLU(config) if config.mlp == "swiglu" else MLP(config)

    def forward(
        self, x: torch.Tensor, context: AttentionContext = CAUSAL
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, C) → (x (B, T, C), this layer's attention weights or None)."""
        attended, weights = self.attn(self.ln_1(x), context)
        x = x + attended  # (B, T, C) residual stream
        x = x + self.mlp(self.ln_2(x))
        return x, weights


class GPT(nn.Module):
    """A decoder-only transformer language model (GPT-2 architecture, nanoGPT layout).

    The config's options turn it into a Mistral-style model; the layout stays the same.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        layers = dict(wte=nn.Embedding(config.vocab_size, config.n_embd))  # token embeddings
        if config.position == "learned":
            layers["wpe"] = nn.Embedding(config.block_size, config.n_embd)  # position embeddings
        self.transformer = nn.ModuleDict(
            dict(
                **layers,
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config, layer) for layer in range(config.n_layer)),
                ln_f=make_norm(config),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.transformer.wte.weight = self.lm_head.weight  # weight tying: one matrix, 2 uses
        self.apply(self._init_weights)
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: scale residual projections by 1/√(2L)
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        return_weights: bool = False,
        *,
        doc_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> tuple:
        """idx (B, T) → (logits (B, T, V), mean cross-entropy vs targets (B, T), or None).

        Targets equal to -100 are ignored in the loss (fine-tuning, notebook 06).
        doc_ids (B, T): packed examples; each token attends only within its own document and
        positions restart at every document, so each example is seen as if it were alone.
        cache: a KVCache holding earlier positions; idx then holds only the new tokens.
        last_only: compute logits for the last position only (B, 1, V), as generation needs.
        return_weights: also return every layer's attention weights, (logits, loss, maps) with
        maps a list of (B, nh, T, T) (see `attention_maps`).
        """
        pos, context = self._context(idx, doc_ids, cache, return_weights)
        x = self.transformer.wte(idx)  # (B, T, C)
        if self.config.position == "learned":  # (RoPE's enter every layer's q·k instead)
            x = x + self.transformer.wpe(pos)  # (B, T, C): where each token is, added in
        x = self.transformer.drop(x)
        maps = []
        for block in self.transformer.h:
            x, weights = block(x, context)
            maps.append(weights)
        x = self.transformer.ln_f(x)
        if last_only:
            x = x[:, [-1], :]  # (B, 1, C): the only position whose next token we need
        logits = self.lm_head(x)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.view(-1, logits.size(-1)).float(), targets.view(-1), ignore_index=-100
            )
        return (logits, loss, maps) if return_weights else (logits, loss)

    def _context(
        self,
        idx: torch.Tensor,
        doc_ids: torch.Tensor | None,
        cache: KVCache | None,
        return_weights: bool,
    ) -> tuple[torch.Tensor, AttentionContext]:
        """The positions of idx's tokens, (T,) or (B, T), and the context every layer attends in.

        Positions continue after the cached ones, or restart at every packed document (doc_ids),
        whose mask keeps attention inside each document. With RoPE, the positions become the
        angles every layer rotates q and k by.
        """
        t = idx.size(1)
        past = 0 if cache is None else cache.seq_len
        if past + t > self.config.block_size:
            raise ValueError(
                f"sequence of {past + t} tokens is longer than the context "
                f"(block_size={self.config.block_size}); crop it to the last "
                f"{self.config.block_size} tokens"
            )
        if doc_ids is not None:
            pos, mask = positions_in_documents(doc_ids), document_mask(doc_ids)  # (B, T), mask
        else:
            pos, mask = torch.arange(past, past + t, device=idx.device), None  # (T,)
        rope = None
        if self.config.position == "rope":
            rope = rope_angles(pos, self.config.head_size, self.config.rope_theta)
        context = AttentionContext(mask=mask, cache=cache, rope=rope, return_weights=return_weights)
        return pos, context

    def new_cache(self) -> KVCache:
        """An empty KV cache for this model, to pass to forward while generating."""
        return KVCache(self.config.n_layer)

    @torch.no_grad()
    def attention_maps(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """Attention weights of every layer for idx (B, T): a list of (B, nh, T, T)."""
        return self.forward(idx, return_weights=True)[2]

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without the lookup tables, as nanoGPT reports it.

        Left out: the position embeddings, and the token embedding unless it is tied to the
        output layer (then it does compute, as the output layer).
        """
        n = sum(p.numel() for p in self.parameters())
        if not non_embedding:
            return n
        if "wpe" in self.transformer:
            n -= self.transformer.wpe.weight.numel()
        if not self.config.tie_weights:
            n -= self.transformer.wte.weight.numel()
        return n

    def save_pretrained(self, directory: str | Path) -> None:
        """Write config.json and model.safetensors (each to a temporary name, then renamed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {
            k: v.detach().contiguous()
            for k, v in self.state_dict().items()
            if not (self.config.tie_weights and k == "lm_head.weight")
        }  # tied: once
        partial = directory / (WEIGHTS_FILE + ".part")
        save_file(state, str(partial), metadata={"format": "pt"})
        partial.replace(directory / WEIGHTS_FILE)
        partial = directory / (CONFIG_FILE + ".part")
        partial.write_text(json.dumps(asdict(self.config), indent=2) + "\n", encoding="utf-8")
        partial.replace(directory / CONFIG_FILE)

    @classmethod
    def from_pretrained(cls, directory: str | Path, **overrides) -> GPT:
        """Load a model saved by save_pretrained; overrides change e.g. dropout or attention."""
        directory = Path(directory)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(
                    f"{directory / name} is missing: not a model saved with save_pretrained "
                    f"(it needs {CONFIG_FILE} and {WEIGHTS_FILE})."
                )
        try:
            values = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        except ValueError as error:
            raise ValueError(
                f"{directory / CONFIG_FILE} is damaged or incomplete ({error})"
            ) from None
        if not isinstance(values, dict):
            raise ValueError(
                f"{directory / CONFIG_FILE} holds {type(values).__name__}, not a model's config"
            )
        config = replace(GPTConfig.from_dict(values), **overrides)
        _check_size(config, directory / WEIGHTS_FILE)  # before allocating what config.json says
        model = cls(config)
        try:
            state = load_file(str(directory / WEIGHTS_FILE))
        except SafetensorError as error:
            raise ValueError(
                f"{directory / WEIGHTS_FILE} is damaged or incomplete ({error})"
            ) from None
        expected = {
            k: v
            for k, v in model.state_dict().items()
            if not (config.tie_weights and k == "lm_head.weight")
        }
        _check_state(state, expected, directory / WEIGHTS_FILE)
        model.load_state_dict(state, strict=False)  # a tied lm_head.weight comes with wte
        return model


def _check_size(config: GPTConfig, weights: Path) -> None:
    """Refuse a config that describes a far bigger model than the weights file holds.

    config.json comes with a model folder, maybe from elsewhere: a wrong n_layer or block_size
    would allocate gigabytes before the weights are compared. The file's header says how many
    numbers it stores, without reading them.
    """
    try:
        with safe_open(str(weights), framework="pt") as f:
            stored = sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())
    except SafetensorError as error:
        raise ValueError(f"{weights} is damaged or incomplete ({error})") from None
    needed = count_parameters(config, non_embedding=False)
    # A real pair matches almost exactly. A config off by less than this allocates at most tens
    # of MB and is named tensor by tensor once the weights are compared (_check_state).
    if needed > 2 * stored + 10_000_000:
        raise ValueError(
            f"{weights.parent / CONFIG_FILE} describes a model of {needed:,} parameters, but "
            f"{weights.name} holds {stored:,} numbers: the config does not belong to these "
            "weights. Copy the model folder whole, or write it again from its run."
        )


def positions_in_documents(doc_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) document ids → (B, T) position of each token within its own document."""
    t = doc_ids.size(1)
    index = torch.arange(t, device=doc_ids.device).expand_as(doc_ids)  # (B, T)
    starts = torch.ones_like(doc_ids, dtype=torch.bool)
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]  # True where a document begins
    first = torch.where(starts, index, 0).cummax(dim=1).values  # start of each token's doc
    return index - first


def _check_state(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: Path
) -> None:
    """Raise an error naming the first tensor that is missing, unexpected, of another shape, or
    holding NaN or infinite numbers (they would make every sampled token an error)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit this model: missing tensors {missing[:5]}, "
            f"unexpected tensors {unexpected[:5]} (was it saved by another "
            "model or config?)"
        )
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise ValueError(
                f"{path}: tensor {key!r} has shape {tuple(state[key].shape)}, but "
                f"config.json implies {tuple(tensor.shape)}; the weights and the "
                "config come from different models"
            )
    for key, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(
                f"{path}: tensor {key!r} holds NaN or infinite numbers. A model that diverged "
                "was saved, or the file was changed: train the run again, or lower its lr."
            )


def count_parameters(config: GPTConfig, non_embedding: bool = True) -> int:
    """Parameters of a GPT with this config, from the formula (no model is built).

    GPT-2 defaults, per block: 12·C² weights (q, k, v, out: 4·C²; MLP: 8·C²), 2·C LayerNorm
    scales, and 11·C biases if enabled. Plus the output layer V·C (shared with the token
    embedding), the final norm, and, unless non_embedding, the position embedding T·C. With
    grouped-query attention k and v shrink to C·kv_dim each; SwiGLU has three C·H matrices
    instead of two; an untied head adds the token embedding V·C, left out as non_embedding.
    """
    c, h, kv = config.n_embd, config.hidden_size, config.kv_heads * config.head_size
    bias = config.bias
    norm = c * (2 if config.norm == "layernorm" and bias else 1)  # scale (+ bias)
    attention = 2 * c * c + 2 * c * kv + ((2 * c + 2 * kv) if bias else 0)  # q, k, v, out
    n_matrices = 3 if config.mlp == "swiglu" else 2
    mlp = n_matrices * c * h + (((n_matrices - 1) * h + c) if bias else 0)
    total = config.vocab_size * c + config.n_layer * (attention + mlp + 2 * norm) + norm
    if non_embedding:
        return total
    positions = config.block_size * c if config.position == "learned" else 0
    untied = 0 if config.tie_weights else config.vocab_size * c
    return total + positions + untied


def flops_per_token(config: GPTConfig, seq_len: int | None = None) -> int:
    """Training FLOPs per token: 6N for the matmuls plus 12·L·T·C for attention (PaLM, app. B).

    N leaves out the lookup tables (they cost no matmul), so an untied head counts once.
    """
    t = seq_len or config.block_size
    return 6 * count_parameters(config) + 12 * config.n_layer * t * config.n_embd


def training_memory_bytes(config: GPTConfig, batch_size: int, flash: bool = True) -> dict:
    """Rough memory to train with AdamW in mixed precision, in bytes, by component.

    Weights, gradients and AdamW's two moments in fp32: 16 bytes per parameter. Activations
    per layer from Korthikanti et al. 2022 (arXiv:2205.05198, eq. 2): s·b·h·(34 + 5·a·s/h)
    bytes in 16-bit, where the 5·a·s/h term (the T×T attention matrices) disappears with a
    fused (flash) attention kernel. Then the logits, b·s·V numbers (with GPT-2's 50,304-row
    output layer the largest part at the talk's sizes): 14 bytes each at the peak of an eager
    backward pass (bf16 logits kept by the caller, 2; the fp32 log-probabilities the
    cross-entropy saves, 4; their gradient going into and coming out of log-softmax, 4 + 4).
    torch.compile fuses the loss and needs less, so this is the budget of an eager run.
    """
    s, b, h, a = config.block_size, batch_size, config.n_embd, config.n_head
    per_layer = s * b * h * (34 + (0 if flash else 5 * a * s / h))
    return {
        "weights + grads + AdamW (fp32)": 16 * count_parameters(config, non_embedding=False),
        "activations": int(config.n_layer * per_layer),
        "logits (bf16, loss in fp32, grads)": (2 + 4 + 4 + 4) * b * s * config.vocab_size,
    }
