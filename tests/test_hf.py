"""Export to transformers' GPT2LMHeadModel and back: same logits, same greedy text."""

from dataclasses import replace

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from tinylm.hf import from_hf, to_hf
from tinylm.model import GPT, GPTConfig

TINY = GPTConfig(vocab_size=96, block_size=32, n_layer=2, n_head=2, n_embd=32)
TOLERANCE = 1e-4  # max abs logit difference allowed between our model and the export (fp32)


def random_model(**overrides) -> GPT:
    """A tiny GPT in eval mode whose every weight, LayerNorm scale and bias is random."""
    torch.manual_seed(0)
    model = GPT(replace(TINY, **overrides))
    with torch.no_grad():
        for param in model.parameters():  # biases start at 0 and scales at 1: make them count
            param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def tokens(batch: int = 3, length: int = TINY.block_size) -> torch.Tensor:
    """Random token ids (batch, length), the same on every call."""
    return torch.randint(0, TINY.vocab_size, (batch, length),
                         generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def max_diff(model: GPT, hf_model: GPT2LMHeadModel, idx: torch.Tensor) -> float:
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


def test_generate_matches_our_greedy_loop():
    model = random_model()
    prompt = tokens(batch=2, length=5)
    generated = to_hf(model).generate(prompt, attention_mask=torch.ones_like(prompt),
                                      max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(generated, greedy(model, prompt, steps=8))


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
    config = GPT2Config(vocab_size=96, n_positions=32, n_embd=32, n_layer=2, n_head=2,
                        activation_function="gelu_new")
    with pytest.raises(ValueError, match="gelu_new"):
        from_hf(GPT2LMHeadModel(config))
