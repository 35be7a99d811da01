"""Export our GPT to Hugging Face transformers, and import such a model back.

Which transformers class depends on the config's options (`to_hf`) or on the model's class
(`from_hf`):

* GPT-2 style (LayerNorm, learned positions, GELU MLP) ↔ `GPT2LMHeadModel`. The same
  architecture with the same parameter names (nanoGPT copied GPT-2's). Two things differ: GPT-2
  stores its Linear layers as `Conv1D`, whose weight is the transpose of ``nn.Linear``'s
  ((in, out) instead of (out, in)), and GPT-2 always has biases, which we fill with zeros when
  our model was built with ``bias=False``.
* Mistral style (RMSNorm, RoPE, SwiGLU MLP, no biases) ↔ `MistralForCausalLM`. The same
  computation under other names: our fused ``c_attn`` is split into q_proj, k_proj and v_proj
  (and fused again on import); the MLP's c_gate, c_fc, c_proj are gate_proj, up_proj,
  down_proj; ln_1, ln_2, ln_f are input_layernorm, post_attention_layernorm, norm. Both rotate
  queries and keys in transformers' rotate-half layout, so no weight needs permuting.

Other mixes of our options (RoPE with LayerNorm, say) fit neither class and are refused.
"""

from __future__ import annotations

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedConfig,
)

from tinylm.config import GPTConfig
from tinylm.model import GPT

# Parameter-name endings of GPT-2's Conv1D weights: transposed relative to our nn.Linear.
_CONV1D_WEIGHTS = (
    "attn.c_attn.weight",
    "attn.c_proj.weight",
    "mlp.c_fc.weight",
    "mlp.c_proj.weight",
)

# The options that make our GPT a GPT-2 or a Mistral (plus, for GPT-2, no grouped-query heads).
_GPT2_STYLE = {"norm": "layernorm", "position": "learned", "mlp": "gelu"}
_MISTRAL_STYLE = {"norm": "rmsnorm", "position": "rope", "mlp": "swiglu", "bias": False}

# Our name → MistralForCausalLM's, per block, for every weight but the fused c_attn.
_MISTRAL_BLOCK_NAMES = (
    ("ln_1", "input_layernorm"),
    ("attn.c_proj", "self_attn.o_proj"),
    ("ln_2", "post_attention_layernorm"),
    ("mlp.c_gate", "mlp.gate_proj"),
    ("mlp.c_fc", "mlp.up_proj"),
    ("mlp.c_proj", "mlp.down_proj"),
)


def _convert(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """Transpose a Conv1D / Linear weight (the layouts differ); pass anything else through."""
    return tensor.t() if name.endswith(_CONV1D_WEIGHTS) else tensor


def _hf_attention(config: GPTConfig) -> str:
    """transformers' attention implementation for ours: "manual" → "eager", "sdpa" → "sdpa"."""
    return "eager" if config.attention == "manual" else "sdpa"


def _our_attention(config: PreTrainedConfig) -> str:
    """Our attention implementation for transformers': "eager" → "manual", any other → "sdpa"."""
    return "manual" if config._attn_implementation == "eager" else "sdpa"


def _style_mismatches(config: GPTConfig, style: dict[str, object]) -> list[str]:
    """The settings `style` needs that config lacks, each as "field=needed (now current)"."""
    return [
        f"{key}={value!r} (now {getattr(config, key)!r})"
        for key, value in style.items()
        if getattr(config, key) != value
    ]


def _gpt2_mismatches(config: GPTConfig) -> list[str]:
    """What config would need to change to become a GPT2LMHeadModel."""
    problems = _style_mismatches(config, _GPT2_STYLE)
    if config.kv_heads != config.n_head:
        problems.append(
            f"n_kv_head=None (now {config.n_kv_head}: GPT-2 has no grouped-query attention)"
        )
    return problems


def to_hf(model: GPT, eot_id: int | None = None) -> GPT2LMHeadModel | MistralForCausalLM:
    """Our GPT as a transformers model (eval mode), to use HF tools such as `generate`.

    A GPT-2-style config (LayerNorm, learned positions, GELU) gives a GPT2LMHeadModel, a
    Mistral-style one (RMSNorm, RoPE, SwiGLU, bias=False) a MistralForCausalLM; any other mix
    raises ValueError naming what to change for either. eot_id, if given, becomes the bos and
    eos token (generation stops at it). Our ``attention="manual"`` maps to HF's "eager"
    attention (which can return the weights), ``"sdpa"`` to "sdpa"; both match our logits in
    fp32. Only the attention dropout has a Mistral counterpart, which matters in training only.
    """
    config = model.config
    as_gpt2, as_mistral = _gpt2_mismatches(config), _style_mismatches(config, _MISTRAL_STYLE)
    if not as_gpt2:
        hf_model = _to_gpt2(model, eot_id)
    elif not as_mistral:
        hf_model = _to_mistral(model, eot_id)
    else:
        raise ValueError(
            "this GPT fits no transformers class: to export it as GPT2LMHeadModel "
            "set " + ", ".join(as_gpt2) + "; as MistralForCausalLM set " + ", ".join(as_mistral)
        )
    return hf_model.eval()


def _to_gpt2(model: GPT, eot_id: int | None) -> GPT2LMHeadModel:
    """Our GPT-2-style GPT as a GPT2LMHeadModel: same names, Conv1D weights transposed."""
    ours = model.config
    config = GPT2Config(
        vocab_size=ours.vocab_size,
        n_positions=ours.block_size,
        n_embd=ours.n_embd,
        n_layer=ours.n_layer,
        n_head=ours.n_head,
        n_inner=ours.intermediate_size,  # None means 4 * n_embd to both
        activation_function="gelu",  # exact erf GELU, as nn.GELU(); "gelu_new" is tanh-approximate
        resid_pdrop=ours.dropout,
        embd_pdrop=ours.dropout,
        attn_pdrop=ours.dropout,
        layer_norm_epsilon=ours.norm_eps,
        tie_word_embeddings=ours.tie_weights,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        attn_implementation=_hf_attention(ours),
    )
    weight = model.transformer.wte.weight
    hf_model = GPT2LMHeadModel(config).to(device=weight.device, dtype=weight.dtype)
    state = model.state_dict()
    with torch.no_grad():
        for name, param in hf_model.named_parameters():  # tied lm_head is listed once, as wte
            if name in state:
                param.copy_(_convert(name, state[name]))
            else:  # a bias that our bias=False model does not have: zero adds nothing
                param.zero_()
    return hf_model


def _mistral_names(n_layer: int) -> list[tuple[str, str]]:
    """(our name, MistralForCausalLM's name) of every weight except the fused c_attn."""
    names = [
        ("transformer.wte", "model.embed_tokens"),
        ("transformer.ln_f", "model.norm"),
        ("lm_head", "lm_head"),
    ]  # a tied lm_head is in both state dicts, as the embedding
    names += [
        (f"transformer.h.{i}.{ours}", f"model.layers.{i}.{theirs}")
        for i in range(n_layer)
        for ours, theirs in _MISTRAL_BLOCK_NAMES
    ]
    return [(f"{ours}.weight", f"{theirs}.weight") for ours, theirs in names]


def _qkv_names(layer: int) -> tuple[str, list[str]]:
    """Our fused c_attn weight's name in a block, and the names of Mistral's q, k, v parts."""
    return (
        f"transformer.h.{layer}.attn.c_attn.weight",
        [f"model.layers.{layer}.self_attn.{part}_proj.weight" for part in "qkv"],
    )


def _to_mistral(model: GPT, eot_id: int | None) -> MistralForCausalLM:
    """Our Mistral-style GPT as a MistralForCausalLM, c_attn split into q_proj, k_proj, v_proj."""
    ours = model.config
    config = MistralConfig(
        vocab_size=ours.vocab_size,
        hidden_size=ours.n_embd,
        intermediate_size=ours.hidden_size,
        num_hidden_layers=ours.n_layer,
        num_attention_heads=ours.n_head,
        num_key_value_heads=ours.kv_heads,
        head_dim=ours.head_size,
        max_position_embeddings=ours.block_size,
        rms_norm_eps=ours.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": ours.rope_theta},
        hidden_act="silu",
        tie_word_embeddings=ours.tie_weights,
        sliding_window=None,  # every token sees the whole context, as ours does
        attention_dropout=ours.dropout,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        attn_implementation=_hf_attention(ours),
    )
    weight = model.transformer.wte.weight
    hf_model = MistralForCausalLM(config).to(device=weight.device, dtype=weight.dtype)
    state = model.state_dict()
    hf_state = {theirs: state[name] for name, theirs in _mistral_names(ours.n_layer)}
    kv_dim = ours.kv_heads * ours.head_size
    for layer in range(ours.n_layer):
        fused, parts = _qkv_names(layer)
        # (C + 2 kv_dim, C) → q (C, C), k (kv_dim, C), v (kv_dim, C): rows are output channels
        hf_state.update(zip(parts, state[fused].split([ours.n_embd, kv_dim, kv_dim]), strict=True))
    hf_model.load_state_dict(hf_state)
    return hf_model


def from_hf(hf_model: GPT2LMHeadModel | MistralForCausalLM) -> GPT:
    """A transformers GPT2LMHeadModel or MistralForCausalLM as our GPT (eval mode).

    HF's "eager" attention becomes our "manual", any other "sdpa". Raises ValueError for
    variants our GPT cannot express, such as OpenAI's GPT-2 checkpoints, which use the tanh
    GELU ("gelu_new"), or a Mistral with a sliding window shorter than its context; TypeError
    for any other class.
    """
    if isinstance(hf_model, GPT2LMHeadModel):
        model = _from_gpt2(hf_model)
    elif isinstance(hf_model, MistralForCausalLM):
        model = _from_mistral(hf_model)
    else:
        raise TypeError(
            f"from_hf imports a GPT2LMHeadModel or a MistralForCausalLM, got "
            f"{type(hf_model).__name__}"
        )
    return model.eval()


def _gpt2_incompatibilities(config: GPT2Config) -> list[str]:
    """The settings of a GPT-2 config that our GPT cannot reproduce, described one per item."""
    expected = {
        "activation_function": "gelu",
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "add_cross_attention": False,
    }
    problems = [
        f"{key}={getattr(config, key)!r} (our GPT needs {value!r})"
        for key, value in expected.items()
        if getattr(config, key) != value
    ]
    dropouts = {config.resid_pdrop, config.embd_pdrop, config.attn_pdrop}
    if len(dropouts) > 1:
        problems.append(f"resid/embd/attn_pdrop differ {sorted(dropouts)} (our GPT has one)")
    return problems


def _from_gpt2(hf_model: GPT2LMHeadModel) -> GPT:
    """A GPT2LMHeadModel as our GPT, Conv1D weights transposed back.

    The result has bias=True if any bias in hf_model (Conv1D or LayerNorm) is non-zero, else
    bias=False: the export of a bias-free model carries all-zero biases, and dropping zeros
    changes nothing.
    """
    config = hf_model.config
    problems = _gpt2_incompatibilities(config)
    if problems:
        raise ValueError("this GPT-2 cannot be imported exactly: " + "; ".join(problems))
    state = hf_model.state_dict()
    bias = any(bool(tensor.any()) for name, tensor in state.items() if name.endswith(".bias"))
    model = GPT(
        GPTConfig(
            vocab_size=config.vocab_size,
            block_size=config.n_positions,
            n_layer=config.n_layer,
            n_head=config.n_head,
            n_embd=config.n_embd,
            dropout=float(config.resid_pdrop),
            bias=bias,
            attention=_our_attention(config),
            norm_eps=float(config.layer_norm_epsilon),
            intermediate_size=config.n_inner,
            tie_weights=config.tie_word_embeddings,
        )
    )
    weight = hf_model.transformer.wte.weight
    model.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        for name, param in model.named_parameters():  # tied lm_head is listed once, as wte
            param.copy_(_convert(name, state[name]))
    return model


def _mistral_incompatibilities(config: MistralConfig) -> list[str]:
    """The settings of a Mistral config that our GPT cannot reproduce, described one per item."""
    problems = []
    if config.hidden_act != "silu":
        problems.append(f"hidden_act={config.hidden_act!r} (our SwiGLU needs 'silu')")
    window = config.sliding_window
    if window is not None and window < config.max_position_embeddings:
        problems.append(
            f"sliding_window={window} is shorter than max_position_embeddings="
            f"{config.max_position_embeddings} (our GPT attends to the whole "
            "context: needs None)"
        )
    rope = config.rope_parameters or {}
    if rope.get("rope_type") != "default":
        problems.append(
            f"rope_parameters={rope!r} (our GPT needs rope_type 'default': plain RoPE, no scaling)"
        )
    head_size = config.hidden_size // config.num_attention_heads
    if config.head_dim != head_size:
        problems.append(
            f"head_dim={config.head_dim} (our GPT needs hidden_size / "
            f"num_attention_heads = {head_size})"
        )
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(config, flag, False):  # not a MistralConfig field, but config.json may set it
            problems.append(
                f"{flag}=True (MistralForCausalLM has no biases and drops the "
                "checkpoint's, and our Mistral style has none either)"
            )
    return problems


def _from_mistral(hf_model: MistralForCausalLM) -> GPT:
    """A MistralForCausalLM as our GPT, q_proj, k_proj, v_proj fused into c_attn.

    n_kv_head and intermediate_size come back as numbers even where ours were None (the
    defaults n_head and 4 * n_embd), as a Mistral config always states them.
    """
    config = hf_model.config
    problems = _mistral_incompatibilities(config)
    if problems:
        raise ValueError("this Mistral cannot be imported exactly: " + "; ".join(problems))
    model = GPT(
        GPTConfig(
            vocab_size=config.vocab_size,
            block_size=config.max_position_embeddings,
            n_layer=config.num_hidden_layers,
            n_head=config.num_attention_heads,
            n_embd=config.hidden_size,
            dropout=float(config.attention_dropout),
            attention=_our_attention(config),
            norm_eps=float(config.rms_norm_eps),
            rope_theta=float(config.rope_parameters["rope_theta"]),
            intermediate_size=config.intermediate_size,
            n_kv_head=config.num_key_value_heads,
            tie_weights=config.tie_word_embeddings,
            **_MISTRAL_STYLE,
        )
    )
    weight = hf_model.model.embed_tokens.weight
    model.to(device=weight.device, dtype=weight.dtype)
    hf_state = hf_model.state_dict()
    state = {name: hf_state[theirs] for name, theirs in _mistral_names(config.num_hidden_layers)}
    for layer in range(config.num_hidden_layers):
        fused, parts = _qkv_names(layer)
        state[fused] = torch.cat([hf_state[part] for part in parts])  # (C + 2 kv_dim, C)
    model.load_state_dict(state)
    return model
