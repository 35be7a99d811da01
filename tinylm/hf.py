"""Export our GPT to Hugging Face's `GPT2LMHeadModel`, and import such a model back.

The two are the same architecture with the same parameter names (nanoGPT copied GPT-2's).
Two things differ: GPT-2 stores its Linear layers as `Conv1D`, whose weight is the transpose of
``nn.Linear``'s ((in, out) instead of (out, in)), and GPT-2 always has biases, which we fill
with zeros when our model was built with ``bias=False``.
"""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from tinylm.model import GPT, GPTConfig

# Parameter-name endings of GPT-2's Conv1D weights: transposed relative to our nn.Linear.
_CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight",
                   "mlp.c_proj.weight")


def _convert(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """Transpose a Conv1D / Linear weight (the layouts differ); pass anything else through."""
    return tensor.t() if name.endswith(_CONV1D_WEIGHTS) else tensor


def to_hf(model: GPT, eot_id: int | None = None) -> GPT2LMHeadModel:
    """Our GPT as a transformers GPT2LMHeadModel (eval mode), to use HF tools such as `generate`.

    eot_id, if given, becomes GPT-2's bos and eos token (generation stops at it). Our
    ``attention="manual"`` maps to HF's "eager" attention (which can return the weights),
    ``"sdpa"`` to "sdpa"; both match our logits in fp32.
    """
    ours = model.config
    config = GPT2Config(
        vocab_size=ours.vocab_size,
        n_positions=ours.block_size,
        n_embd=ours.n_embd,
        n_layer=ours.n_layer,
        n_head=ours.n_head,
        activation_function="gelu",  # exact erf GELU, as nn.GELU(); "gelu_new" is tanh-approximate
        resid_pdrop=ours.dropout,
        embd_pdrop=ours.dropout,
        attn_pdrop=ours.dropout,
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=True,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        attn_implementation="eager" if ours.attention == "manual" else "sdpa",
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
    return hf_model.eval()


def _incompatibilities(config: GPT2Config) -> list[str]:
    """The settings of a GPT-2 config that our GPT cannot reproduce, described one per item."""
    expected = {
        "activation_function": "gelu",
        "layer_norm_epsilon": 1e-5,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "add_cross_attention": False,
        "tie_word_embeddings": True,
    }
    problems = [f"{key}={getattr(config, key)!r} (our GPT needs {value!r})"
                for key, value in expected.items() if getattr(config, key) != value]
    if config.n_inner not in (None, 4 * config.n_embd):
        problems.append(f"n_inner={config.n_inner} (our GPT needs 4 * n_embd)")
    dropouts = {config.resid_pdrop, config.embd_pdrop, config.attn_pdrop}
    if len(dropouts) > 1:
        problems.append(f"resid/embd/attn_pdrop differ {sorted(dropouts)} (our GPT has one)")
    return problems


def from_hf(hf_model: GPT2LMHeadModel) -> GPT:
    """A transformers GPT2LMHeadModel as our GPT (eval mode), Conv1D weights transposed back.

    The result has bias=True if any bias in hf_model (Conv1D or LayerNorm) is non-zero, else
    bias=False: the export of a bias-free model carries all-zero biases, and dropping zeros
    changes nothing. Raises ValueError for GPT-2 variants our GPT cannot express, such as
    OpenAI's GPT-2 checkpoints, which use the tanh GELU ("gelu_new").
    """
    config = hf_model.config
    problems = _incompatibilities(config)
    if problems:
        raise ValueError("this GPT-2 cannot be imported exactly: " + "; ".join(problems))
    state = hf_model.state_dict()
    bias = any(bool(tensor.any()) for name, tensor in state.items() if name.endswith(".bias"))
    model = GPT(GPTConfig(vocab_size=config.vocab_size, block_size=config.n_positions,
                          n_layer=config.n_layer, n_head=config.n_head, n_embd=config.n_embd,
                          dropout=float(config.resid_pdrop), bias=bias))
    weight = hf_model.transformer.wte.weight
    model.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        for name, param in model.named_parameters():  # tied lm_head is listed once, as wte
            param.copy_(_convert(name, state[name]))
    return model.eval()
