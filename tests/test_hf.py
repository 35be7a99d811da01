"""Export to transformers' GPT2LMHeadModel / MistralForCausalLM and back: same logits, text."""

from dataclasses import replace

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
)

from tinylm.config import MISTRAL, GPTConfig, preset
from tinylm.hf import from_hf, to_hf
from tinylm.model import GPT
from tinylm.sampling import generate

TINY = GPTConfig(vocab_size=96, block_size=32, n_layer=2, n_head=2, n_embd=32)
# Overrides that make TINY Mistral-style: 4 heads of 8, 2 key/value heads, an untied head.
TINY_MISTRAL = dict(MISTRAL, n_head=4, intermediate_size=48, n_kv_head=2)
TOLERANCE = 1e-4  # max abs logit difference allowed between our model and the export (fp32)


def random_model(**overrides) -> GPT:
    """A tiny GPT in eval mode whose every weight, LayerNorm scale and bias is random."""
    torch.manual_seed(0)
    model = GPT(replace(TINY, **overrides))
    with torch.no_grad():
        for param in model.parameters():  # biases start at 0 and scales at 1: make them count
            param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def mistral_model(**overrides) -> GPT:
    """random_model with TINY_MISTRAL's options, and fields overridden."""
    return random_model(**{**TINY_MISTRAL, **overrides})


def tokens(batch: int = 3, length: int = TINY.block_size) -> torch.Tensor:
    """Random token ids (batch, length), the same on every call."""
    return torch.randint(
        0, TINY.vocab_size, (batch, length), generator=torch.Generator().manual_seed(1)
    )


@torch.no_grad()
def max_diff(model: GPT, hf_model: PreTrainedModel, idx: torch.Tensor) -> float:
    """Largest absolute difference between our logits and the HF model's for idx."""
    return (model(idx)[0] - hf_model(idx).logits).abs().max().item()


@pytest.mark.parametrize("attention", ["manual", "sdpa"])
@pytest.mark.parametrize("bias", [False, True])
def test_export_gives_the_same_logits(bias, attention):
    model = random_model(bias=bias, attention=attention)
    hf_model = to_hf(model)
    assert hf_model.config.activation_function == "gelu"
    assert hf_model.config._attn_implementation == ("eager" if attention == "manual" else "sdpa")
    assert hf_model.lm_head.weight is hf_model.transformer.wte.weight
    assert max_diff(model, hf_model, tokens()) <= TOLERANCE


@pytest.mark.parametrize("bias", [False, True])
def test_round_trip_gives_identical_logits(bias):
    model = random_model(bias=bias)
    back = from_hf(to_hf(model))
    assert back.config == model.config
    assert back.lm_head.weight is back.transformer.wte.weight
    with torch.no_grad():
        assert torch.equal(back(tokens())[0], model(tokens())[0])


@torch.no_grad()
def greedy(model: GPT, idx: torch.Tensor, steps: int) -> torch.Tensor:
    """Append the most likely next token `steps` times (no cache: the whole prefix each step)."""
    for _ in range(steps):
        logits, _ = model(idx)
        idx = torch.cat([idx, logits[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
    return idx


@pytest.mark.parametrize(
    "overrides",
    [{}, TINY_MISTRAL, dict(TINY_MISTRAL, n_kv_head=4)],
    ids=["gpt2", "mistral-gqa", "mistral-mha"],
)
def test_generate_matches_our_greedy_loop(overrides):
    model = random_model(**overrides)
    prompt = tokens(batch=2, length=5)
    generated = to_hf(model).generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=8,
        do_sample=False,
        pad_token_id=0,
    )
    assert torch.equal(generated, greedy(model, prompt, steps=8))
    assert torch.equal(generated, generate(model, prompt, max_new_tokens=8, temperature=0))


def test_eot_id_becomes_bos_and_eos():
    config = to_hf(random_model(), eot_id=7).config
    assert (config.bos_token_id, config.eos_token_id) == (7, 7)


def test_export_of_a_model_with_dropout_matches_in_eval_mode():
    model = random_model(dropout=0.2)
    hf_model = to_hf(model)
    config = hf_model.config
    assert (config.resid_pdrop, config.embd_pdrop, config.attn_pdrop) == (0.2, 0.2, 0.2)
    assert not hf_model.training
    assert max_diff(model, hf_model, tokens()) <= TOLERANCE
    assert from_hf(hf_model).config.dropout == 0.2


def test_save_pretrained_reloads_offline(tmp_path):
    model = random_model(bias=True)
    to_hf(model).save_pretrained(tmp_path)
    reloaded = GPT2LMHeadModel.from_pretrained(tmp_path, local_files_only=True)
    assert reloaded.lm_head.weight is reloaded.transformer.wte.weight
    assert max_diff(model, reloaded, tokens()) <= TOLERANCE


def test_import_refuses_tanh_gelu():
    config = GPT2Config(
        vocab_size=96,
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=2,
        activation_function="gelu_new",
    )
    with pytest.raises(ValueError, match="gelu_new"):
        from_hf(GPT2LMHeadModel(config))


def test_gpt2_style_options_gpt2_can_express_export():
    model = random_model(norm_eps=1e-6, intermediate_size=48, tie_weights=False)
    hf_model = to_hf(model)
    assert isinstance(hf_model, GPT2LMHeadModel)
    assert (hf_model.config.layer_norm_epsilon, hf_model.config.n_inner) == (1e-6, 48)
    assert hf_model.lm_head.weight is not hf_model.transformer.wte.weight
    assert max_diff(model, hf_model, tokens()) <= TOLERANCE
    assert from_hf(hf_model).config == model.config


@pytest.mark.parametrize("attention", ["manual", "sdpa"])
@pytest.mark.parametrize("tie_weights", [False, True])
@pytest.mark.parametrize("n_kv_head", [2, 4])
def test_mistral_export_gives_the_same_logits(n_kv_head, tie_weights, attention):
    model = mistral_model(
        n_kv_head=n_kv_head,
        tie_weights=tie_weights,
        attention=attention,
        rope_theta=500.0,
        norm_eps=1e-6,
    )
    hf_model = to_hf(model)
    config = hf_model.config
    assert isinstance(hf_model, MistralForCausalLM)
    assert (config.num_key_value_heads, config.head_dim, config.sliding_window) == (
        n_kv_head,
        8,
        None,
    )
    assert (config.rope_parameters["rope_theta"], config.rms_norm_eps) == (500.0, 1e-6)
    assert config._attn_implementation == ("eager" if attention == "manual" else "sdpa")
    assert (hf_model.lm_head.weight is hf_model.model.embed_tokens.weight) == tie_weights
    assert max_diff(model, hf_model, tokens()) <= TOLERANCE


@pytest.mark.parametrize("tie_weights", [False, True])
@pytest.mark.parametrize("n_kv_head", [2, 4])
def test_mistral_round_trip_gives_identical_logits(n_kv_head, tie_weights):
    model = mistral_model(
        n_kv_head=n_kv_head,
        tie_weights=tie_weights,
        attention="manual",
        rope_theta=500.0,
        norm_eps=1e-6,
        dropout=0.1,
    )
    back = from_hf(to_hf(model))
    assert back.config == model.config
    assert (back.lm_head.weight is back.transformer.wte.weight) == tie_weights
    with torch.no_grad():
        assert torch.equal(back(tokens())[0], model(tokens())[0])


def test_mistral_import_states_the_defaults():
    model = mistral_model(n_kv_head=None, intermediate_size=None)
    back = from_hf(to_hf(model))
    assert back.config == replace(model.config, n_kv_head=4, intermediate_size=128)


def test_mistral_save_pretrained_reloads_offline(tmp_path):
    model = mistral_model()
    to_hf(model, eot_id=7).save_pretrained(tmp_path)
    reloaded = MistralForCausalLM.from_pretrained(tmp_path, local_files_only=True)
    assert (reloaded.config.bos_token_id, reloaded.config.eos_token_id) == (7, 7)
    assert max_diff(model, reloaded, tokens()) <= TOLERANCE


def test_mistral_ci_preset_exports():
    model = GPT(preset("mistral-ci")).eval()
    hf_model = to_hf(model)
    assert isinstance(hf_model, MistralForCausalLM)
    assert hf_model.config.num_key_value_heads == 1
    assert max_diff(model, hf_model, tokens(batch=1, length=16)) <= TOLERANCE


@pytest.mark.parametrize(
    ("overrides", "needed"),
    [
        (dict(position="rope"), ["position='learned'", "norm='rmsnorm'", "mlp='swiglu'"]),
        (dict(TINY_MISTRAL, norm="layernorm"), ["norm='rmsnorm' (now 'layernorm')"]),
        (dict(TINY_MISTRAL, bias=True), ["bias=False (now True)"]),
        (
            dict(norm="rmsnorm", n_kv_head=1),
            ["norm='layernorm'", "n_kv_head=None (now 1", "position='rope'"],
        ),
    ],
)
def test_export_refuses_mixes_no_transformers_class_fits(overrides, needed):
    with pytest.raises(ValueError, match="fits no transformers class") as error:
        to_hf(GPT(replace(TINY, **overrides)))
    for text in needed:
        assert text in str(error.value)


def tiny_mistral_config(**overrides) -> MistralConfig:
    """A MistralConfig of TINY_MISTRAL's shape, with fields overridden."""
    values = dict(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        sliding_window=None,
    )
    return MistralConfig(**{**values, **overrides})


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        (dict(sliding_window=16), "sliding_window=16"),
        (dict(hidden_act="gelu"), "hidden_act='gelu'"),
        (dict(rope_parameters={"rope_type": "linear", "factor": 2.0}), "rope_type"),
        (dict(head_dim=16), "head_dim=16"),
        (dict(attention_bias=True), "attention_bias=True"),
    ],
)
def test_mistral_import_refuses_what_we_cannot_reproduce(overrides, problem):
    with pytest.raises(ValueError, match="cannot be imported exactly") as error:
        from_hf(MistralForCausalLM(tiny_mistral_config(**overrides)))
    assert problem in str(error.value)


def test_mistral_import_accepts_a_window_as_long_as_the_context():
    hf_model = MistralForCausalLM(tiny_mistral_config(sliding_window=32)).eval()
    assert max_diff(from_hf(hf_model), hf_model, tokens()) <= TOLERANCE


def test_import_refuses_other_classes():
    with pytest.raises(TypeError, match="GPT2LMHeadModel or a MistralForCausalLM"):
        from_hf(torch.nn.Linear(2, 2))
