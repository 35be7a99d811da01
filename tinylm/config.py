"""The GPT's config: every number and option that decides the model's shape, and the presets.

Like a Hugging Face ``configuration_*.py`` file, it builds no model and imports no other tinylm
module, so `attention.py` and `model.py` both read it without importing each other. A
`GPTConfig` checks its fields when it is made, so a model is never built from a wrong one.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

ATTENTION_IMPLEMENTATIONS = ("manual", "sdpa")
NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rope")
MLPS = ("gelu", "swiglu")


def pad_vocab_size(vocab_size: int, multiple: int = 64) -> int:
    """Round a vocabulary up to a multiple of 64 (nanoGPT's 50257 → 50304) for faster matmuls."""
    return -(-vocab_size // multiple) * multiple


@dataclass(frozen=True)
class GPTConfig:
    """Every number that decides the model's shape, plus dropout and the attention path."""

    vocab_size: int = 50304  # GPT-2's 50,257 padded to a multiple of 64
    block_size: int = 256  # context length in tokens
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = False  # biases in Linear and LayerNorm (GPT-2 had them; the talk's runs did not)
    attention: str = "sdpa"  # "manual" (by hand, returns weights) or "sdpa" (fused kernel)
    # Modern decoder options (notebook 10). The defaults are GPT-2's; Mistral's are in brackets.
    norm: str = "layernorm"  # "layernorm" or ["rmsnorm"]
    norm_eps: float = 1e-5  # added to the variance (LayerNorm) or mean square (RMSNorm)
    position: str = "learned"  # absolute embeddings added to the input, or ["rope"] (rotary)
    rope_theta: float = 10000.0  # RoPE's base: channel pair i turns θ^(-2i/hs) rad per position
    mlp: str = "gelu"  # "gelu" (x → GELU(x W1) W2) or ["swiglu"] (x → (SiLU(x Wg) ⊙ x W1) W2)
    intermediate_size: int | None = None  # the MLP's hidden width; None: 4 · n_embd
    n_kv_head: int | None = None  # key/value heads; None: n_head; [fewer]: grouped-query
    tie_weights: bool = True  # output layer = token embedding matrix; [False]: one of its own

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            _check_positive(self, name)
        for name in ("intermediate_size", "n_kv_head"):
            if getattr(self, name) is not None:
                _check_positive(self, name)
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by "
                f"n_head ({self.n_head}): each head gets n_embd / n_head channels"
            )
        if self.n_head % self.kv_heads:
            raise ValueError(
                f"GPTConfig.n_head ({self.n_head}) must be a multiple of n_kv_head "
                f"({self.n_kv_head}): each key/value head serves a whole group of "
                "query heads"
            )
        if self.position == "rope" and self.head_size % 2:
            raise ValueError(
                f"GPTConfig: RoPE rotates channel pairs, so the head size "
                f"n_embd / n_head must be even, got {self.head_size}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")
        for name, valid in (
            ("attention", ATTENTION_IMPLEMENTATIONS),
            ("norm", NORMS),
            ("position", POSITIONS),
            ("mlp", MLPS),
        ):
            if getattr(self, name) not in valid:
                raise ValueError(
                    f"GPTConfig.{name} must be one of {valid}, got {getattr(self, name)!r}"
                )
        if not self.norm_eps > 0 or not self.rope_theta > 0:
            raise ValueError(
                f"GPTConfig.norm_eps and rope_theta must be positive, got "
                f"{self.norm_eps} and {self.rope_theta}"
            )

    @property
    def head_size(self) -> int:
        """Channels per attention head."""
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        """Key/value heads (n_head unless grouped-query attention is on)."""
        return self.n_kv_head or self.n_head

    @property
    def hidden_size(self) -> int:
        """The MLP's hidden width."""
        return self.intermediate_size or 4 * self.n_embd

    @classmethod
    def from_dict(cls, values: dict) -> GPTConfig:
        """Build a config from a dict (config.json), naming any field it does not know."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown GPTConfig field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**values)


def _check_positive(config: GPTConfig, name: str) -> None:
    """Raise ValueError unless the field is a positive int (True is an int to Python, not here)."""
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")


# Mistral-7B's choices (mistralai/Mistral-7B-v0.1 config.json), for the "mistral" presets.
MISTRAL = dict(
    norm="rmsnorm", position="rope", rope_theta=10000.0, mlp="swiglu", tie_weights=False, bias=False
)

# The talk's nanoGPT models (GPT-2 tokenizer, context 256, no biases), and small
# character-level models for laptops and CI (their vocab_size is set from the tokenizer).
PRESETS: dict[str, GPTConfig] = {
    "30m": GPTConfig(n_layer=6, n_head=6, n_embd=384),
    "124m": GPTConfig(n_layer=12, n_head=12, n_embd=768),
    "757m": GPTConfig(n_layer=24, n_head=24, n_embd=1536),
    "char-ci": GPTConfig(vocab_size=8768, block_size=64, n_layer=2, n_head=2, n_embd=64),
    "char-cpu": GPTConfig(vocab_size=8768, block_size=128, n_layer=4, n_head=4, n_embd=256),
    # char-cpu narrowed for CPUs that train in fp32 (tinylm.profiles.CPU_FP32): 3/4 of the width,
    # ~35 % fewer FLOPs per token, so it reads more of the poems in the same minutes.
    "char-cpu-fp32": GPTConfig(vocab_size=8768, block_size=128, n_layer=4, n_head=4, n_embd=192),
    # Notebook 08's scaling sweep: character models sharing a context of 64, growing in width and
    # depth (tinylm.profiles.Profile.scaling_sweep picks sizes and steps per profile).
    "sweep-xs": GPTConfig(vocab_size=8768, block_size=64, n_layer=2, n_head=2, n_embd=32),
    "sweep-s": GPTConfig(vocab_size=8768, block_size=64, n_layer=2, n_head=2, n_embd=64),
    "sweep-m": GPTConfig(vocab_size=8768, block_size=64, n_layer=3, n_head=3, n_embd=96),
    "sweep-l": GPTConfig(vocab_size=8768, block_size=64, n_layer=4, n_head=4, n_embd=128),
    # The talk's MyMistral: Mistral-7B cut to 8 layers of width 2048 (8 heads of 256), its
    # 32,000-token vocabulary. MLP width 4,096 makes the 0.4B model, Mistral-7B's 14,336 the
    # "904M" one (the talk's count leaves out the input embedding, as num_parameters does).
    # The context of 256 is the course's choice, as for the nanoGPT runs.
    "mymistral-0.4b": GPTConfig(
        vocab_size=32000, n_layer=8, n_head=8, n_embd=2048, intermediate_size=4096, **MISTRAL
    ),
    "mymistral-1b": GPTConfig(
        vocab_size=32000, n_layer=8, n_head=8, n_embd=2048, intermediate_size=14336, **MISTRAL
    ),
    # Mistral-style twins of the course's GPT-2-style models: same depth, width and context;
    # the SwiGLU width 8/3 · n_embd (rounded up to 16) keeps the MLP's parameters, and half as
    # many key/value heads as query heads (grouped-query attention, as Mistral-7B has 8 for 32).
    "mistral-ci": GPTConfig(
        vocab_size=8768,
        block_size=64,
        n_layer=2,
        n_head=2,
        n_embd=64,
        intermediate_size=176,
        n_kv_head=1,
        **MISTRAL,
    ),
    "mistral-cpu": GPTConfig(
        vocab_size=8768,
        block_size=128,
        n_layer=4,
        n_head=4,
        n_embd=256,
        intermediate_size=688,
        n_kv_head=2,
        **MISTRAL,
    ),
    "mistral-cpu-fp32": GPTConfig(
        vocab_size=8768,
        block_size=128,
        n_layer=4,
        n_head=4,
        n_embd=192,
        intermediate_size=512,
        n_kv_head=2,
        **MISTRAL,
    ),
    "mistral-30m": GPTConfig(
        n_layer=6, n_head=6, n_embd=384, intermediate_size=1024, n_kv_head=3, **MISTRAL
    ),
}
# The character models with one of Mistral's options alone, rotary positions (notebook 10's
# answer 1; bench/architecture_ablation.py switches the others too).
PRESETS.update(
    {
        f"{name}-rope": replace(PRESETS[name], position="rope")
        for name in ("char-ci", "char-cpu", "char-cpu-fp32", "30m")
    }
)


def preset(name: str, **overrides) -> GPTConfig:
    """A preset config by name, with fields overridden (e.g. vocab_size, dropout)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; presets are {sorted(PRESETS)}")
    if "vocab_size" in overrides:
        overrides["vocab_size"] = pad_vocab_size(overrides["vocab_size"])
    return replace(PRESETS[name], **overrides)
