"""The GPT: preset sizes, init loss, manual = sdpa, save/load and its errors, KV cache, packing.

Most tests run twice: on the GPT-2-style defaults and with every Mistral-style option on
(RMSNorm, RoPE, SwiGLU, grouped-query attention, an untied head).
"""

import ast
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import tinylm.attention
import tinylm.config
import tinylm.model
from tinylm.config import (
    MISTRAL,
    MLPS,
    NORMS,
    POSITIONS,
    PRESETS,
    GPTConfig,
    pad_vocab_size,
    preset,
)
from tinylm.model import (
    GPT,
    RMSNorm,
    count_parameters,
    flops_per_token,
    positions_in_documents,
    training_memory_bytes,
)

TINY = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32)
# The family switch: {} keeps GPT-2's choices, MODERN turns on all of Mistral's.
MODERN = dict(MISTRAL, intermediate_size=48, n_kv_head=1)
FAMILIES = pytest.mark.parametrize("family", [{}, MODERN], ids=["gpt2", "mistral"])


@pytest.mark.parametrize(("name", "millions"), [("30m", 29.94), ("124m", 123.59), ("757m", 756.82)])
def test_preset_parameter_counts_match_the_talk(name, millions):
    assert round(count_parameters(PRESETS[name]) / 1e6, 2) == millions


@pytest.mark.parametrize(
    ("name", "millions"), [("mymistral-0.4b", 401.12), ("mymistral-1b", 904.43)]
)
def test_mymistral_presets_match_the_talk(name, millions):
    # The talk's "MyMistral-1B (904M)" leaves out the input embedding, as we do when untied.
    assert round(count_parameters(PRESETS[name]) / 1e6, 2) == millions
    assert count_parameters(PRESETS[name], False) - count_parameters(PRESETS[name]) == 32000 * 2048


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("mlp", MLPS)
@pytest.mark.parametrize(("n_kv_head", "tie_weights"), [(None, True), (1, False)])
@pytest.mark.parametrize("bias", [False, True])
def test_formula_counts_what_the_module_holds(bias, norm, position, mlp, n_kv_head, tie_weights):
    config = replace(
        TINY,
        bias=bias,
        norm=norm,
        position=position,
        mlp=mlp,
        n_kv_head=n_kv_head,
        tie_weights=tie_weights,
        intermediate_size=48,
    )
    model = GPT(config)
    assert model.num_parameters() == count_parameters(config)
    assert model.num_parameters(non_embedding=False) == count_parameters(config, False)


def test_mistral_options_change_the_modules():
    model = GPT(replace(TINY, **MODERN))
    block = model.transformer.h[0]
    assert "wpe" not in model.transformer
    assert isinstance(block.ln_1, RMSNorm) and isinstance(model.transformer.ln_f, RMSNorm)
    assert block.mlp.c_gate.weight.shape == (48, 32)
    assert block.attn.c_attn.weight.shape == (32 + 2 * 16, 32)  # q: 2 heads, k and v: 1 head
    assert model.lm_head.weight is not model.transformer.wte.weight


def test_rmsnorm_divides_by_the_root_mean_square():
    x = torch.randn(2, 5, 8) * 3 + 1
    y = RMSNorm(8)(x)
    assert torch.allclose(y.pow(2).mean(-1), torch.ones(2, 5), atol=1e-4)
    assert torch.allclose(y * x.pow(2).mean(-1, keepdim=True).sqrt(), x, atol=1e-4)


def test_flops_per_token_of_124m():
    # 6 · 123,587,328 + 12 · 12 layers · 256 tokens · 768 channels
    assert flops_per_token(PRESETS["124m"]) == 6 * 123_587_328 + 12 * 12 * 256 * 768


def test_preset_pads_the_vocabulary():
    assert preset("char-ci", vocab_size=8733).vocab_size == 8768
    with pytest.raises(ValueError, match="presets are"):
        preset("1b")


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="n_embd .* divisible by n_head"):
        GPTConfig(n_embd=100, n_head=3)
    with pytest.raises(ValueError, match="GPTConfig.dropout"):
        GPTConfig(dropout=1.5)
    with pytest.raises(ValueError, match="unknown GPTConfig field.*n_heads"):
        GPTConfig.from_dict({"n_heads": 4})
    with pytest.raises(ValueError, match="n_head \\(6\\) must be a multiple of n_kv_head"):
        GPTConfig(n_kv_head=4)
    with pytest.raises(ValueError, match="RoPE .* must be even"):
        GPTConfig(n_embd=18, n_head=2, position="rope")
    with pytest.raises(ValueError, match="GPTConfig.norm must be one of"):
        GPTConfig(norm="batchnorm")
    with pytest.raises(ValueError, match="GPTConfig.intermediate_size must be a positive"):
        GPTConfig(intermediate_size=0)


def test_old_config_files_load_with_gpt2_defaults():
    old = {
        "vocab_size": 64,
        "block_size": 16,
        "n_layer": 2,
        "n_head": 2,
        "n_embd": 32,
        "dropout": 0.0,
        "bias": False,
        "attention": "sdpa",
    }  # saved before the options
    assert GPTConfig.from_dict(old) == TINY


def test_loss_at_init_is_about_ln_vocab():
    torch.manual_seed(0)
    config = replace(TINY, vocab_size=512)
    model = GPT(config)
    idx, targets = torch.randint(0, 512, (2, 8, 16)).unbind(0)
    _, loss = model(idx, targets)  # random targets: every token equally likely at init
    assert abs(loss.item() - math.log(512)) < 0.05


@FAMILIES
def test_manual_and_sdpa_give_identical_logits_in_fp32(family):
    torch.manual_seed(0)
    model = GPT(replace(TINY, **family)).eval()
    manual = GPT(replace(TINY, **family, attention="manual")).eval()
    manual.load_state_dict(model.state_dict())
    idx = torch.randint(0, 64, (2, 16))
    assert (model(idx)[0] - manual(idx)[0]).abs().max().item() <= 1e-5


def test_weights_are_tied_and_residual_projections_scaled():
    torch.manual_seed(0)
    model = GPT(replace(TINY, n_layer=8, n_embd=256, n_head=4))
    assert model.lm_head.weight is model.transformer.wte.weight
    proj = model.transformer.h[0].mlp.c_proj.weight.std().item()
    assert abs(proj - 0.02 / math.sqrt(16)) < 0.001


def test_attention_maps_shape_and_causality():
    model = GPT(TINY).eval()
    maps = model.attention_maps(torch.randint(0, 64, (1, 10)))
    assert len(maps) == 2 and maps[0].shape == (1, 2, 10, 10)
    assert torch.all(maps[1][0, :, 0, 1:] == 0)


def test_too_long_input_is_an_error():
    with pytest.raises(ValueError, match="block_size=16"):
        GPT(TINY)(torch.zeros(1, 17, dtype=torch.long))


@FAMILIES
def test_save_and_load_round_trip(tmp_path, family):
    torch.manual_seed(0)
    model = GPT(replace(TINY, **family)).eval()
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = GPT.from_pretrained(tmp_path).eval()
    assert loaded.config == model.config
    idx = torch.randint(0, 64, (2, 16))
    assert torch.equal(model(idx)[0], loaded(idx)[0])
    tied = loaded.lm_head.weight is loaded.transformer.wte.weight
    assert tied == model.config.tie_weights


def test_load_errors_name_the_file_or_field(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        GPT.from_pretrained(tmp_path)
    GPT(TINY).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "n_embd": 64}))
    with pytest.raises(ValueError, match="transformer.wte.weight.*different models"):
        GPT.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "n_layer": 3}))
    with pytest.raises(ValueError, match=r"missing tensors \['transformer.h.2"):
        GPT.from_pretrained(tmp_path)


def test_training_memory_components():
    memory = training_memory_bytes(PRESETS["124m"], batch_size=64)
    assert memory["weights + grads + AdamW (fp32)"] == 16 * count_parameters(PRESETS["124m"], False)
    # bf16 logits 2 + saved fp32 log-probabilities 4 + log-softmax's gradient in and out 4 + 4
    assert memory["logits (bf16, loss in fp32, grads)"] == 14 * 64 * 256 * 50304
    without_flash = training_memory_bytes(PRESETS["124m"], 64, flash=False)
    assert without_flash["activations"] > memory["activations"]


@FAMILIES
@pytest.mark.parametrize("attention", ["sdpa", "manual"])
def test_kv_cache_gives_the_same_logits_as_the_full_sequence(attention, family):
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(
            vocab_size=100,
            block_size=32,
            n_layer=2,
            n_head=2,
            n_embd=32,
            attention=attention,
            **family,
        )
    ).eval()
    idx = torch.randint(0, 100, (3, 20))
    full, _ = model(idx)
    cache = model.new_cache()
    chunks = [model(idx[:, :8], cache=cache)[0], model(idx[:, 8:12], cache=cache)[0]]
    chunks += [model(idx[:, i : i + 1], cache=cache)[0] for i in range(12, 20)]
    assert cache.seq_len == 20
    assert torch.allclose(torch.cat(chunks, dim=1), full, atol=1e-5)
    with pytest.raises(ValueError, match="crop it to the last 32"):
        model(idx[:, :13], cache=cache)


def test_grouped_query_cache_stores_only_the_key_value_heads():
    model = GPT(
        GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=4, n_embd=32, n_kv_head=2)
    ).eval()
    cache = model.new_cache()
    model(torch.randint(0, 50, (3, 5)), cache=cache)
    assert cache.keys[0].shape == cache.values[0].shape == (3, 2, 5, 8)  # (B, n_kv, T, hs)


def test_cache_select_keeps_and_reorders_rows():
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    cache = model.new_cache()
    model(torch.randint(0, 50, (3, 5)), cache=cache)
    keys = cache.keys[0].clone()
    cache.select(torch.tensor([2, 2, 0]))
    assert torch.equal(cache.keys[0], keys[[2, 2, 0]])


@FAMILIES
@pytest.mark.parametrize("attention", ["sdpa", "manual"])
def test_packed_documents_are_seen_as_if_alone(attention, family):
    torch.manual_seed(1)
    model = GPT(
        GPTConfig(
            vocab_size=100,
            block_size=32,
            n_layer=2,
            n_head=2,
            n_embd=32,
            attention=attention,
            **family,
        )
    ).eval()
    first, second = torch.randint(0, 100, (1, 7)), torch.randint(0, 100, (1, 13))
    doc_ids = torch.tensor([[0] * 7 + [1] * 13])
    packed, _ = model(torch.cat((first, second), dim=1), doc_ids=doc_ids)
    alone = torch.cat((model(first)[0], model(second)[0]), dim=1)
    assert torch.allclose(packed, alone, atol=1e-5)
    plain, _ = model(torch.cat((first, second), dim=1))  # no mask: the second sees the first
    assert not torch.allclose(plain[:, 7:], alone[:, 7:], atol=1e-3)


def test_positions_restart_in_every_document():
    doc_ids = torch.tensor([[0, 0, 0, 1, 1, 2], [5, 5, 5, 5, 5, 5]])
    assert positions_in_documents(doc_ids).tolist() == [[0, 1, 2, 0, 1, 0], list(range(6))]


def test_last_only_logits_are_the_last_row():
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    idx = torch.randint(0, 50, (2, 9))
    last, _ = model(idx, last_only=True)
    assert last.shape == (2, 1, 50)
    assert torch.allclose(last[:, 0], model(idx)[0][:, -1], atol=1e-6)


def test_pad_vocab_size_rounds_up_to_multiples_of_64():
    assert pad_vocab_size(50257) == 50304
    assert pad_vocab_size(8192) == 8192
    assert pad_vocab_size(1) == 64


def test_model_module_still_offers_the_config_names():
    for name in ("GPTConfig", "PRESETS", "MISTRAL", "preset", "pad_vocab_size"):
        assert getattr(tinylm.model, name) is getattr(tinylm.config, name)


def tinylm_imports(module) -> set[str]:
    """The tinylm modules a module's source imports anywhere (type-only imports included)."""
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name.split(".")[1] for name in names if name.startswith("tinylm.")}


def test_config_attention_and_model_import_in_one_direction():
    assert tinylm_imports(tinylm.config) == set()  # the config stands alone, as in transformers
    assert tinylm_imports(tinylm.attention) == {"config"}
    assert tinylm_imports(tinylm.model) == {"attention", "config"}
