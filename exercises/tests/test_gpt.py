"""Checks of exercises/gpt.py against tinylm.model (notebook 04): same weights, same logits.

The block and model checks first run with tinylm's attention and PyTorch's loss in place of
yours, so a mistake in the block or the model is named as such; the last check runs your
pieces together.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from exercises.tests.checks import call, check_close, check_tensor, close, expect
from tinylm import model as tinylm_model

# --------------------------------------------------------------------------- the reference
# The only lines of this file that call tinylm: adapt them here if its API changes.


def config_for(bias=False, n_layer=2, block_size=16):
    return tinylm_model.GPTConfig(
        vocab_size=32, block_size=block_size, n_layer=n_layer, n_head=4, n_embd=32, bias=bias
    )


def reference_gpt(config, seed=0):
    torch.manual_seed(seed)
    return tinylm_model.GPT(config).eval()


def reference_block(config, seed=0):
    torch.manual_seed(seed)
    block = tinylm_model.Block(config).eval()
    for param in block.parameters():  # LayerNorm starts at weight 1, bias 0: make it count
        torch.nn.init.normal_(param, mean=1.0 if param.dim() == 1 else 0.0, std=0.2)
    return block


def reference_mlp(config, seed=0):
    torch.manual_seed(seed)
    return tinylm_model.MLP(config).eval()


def block_output(block, x):
    with torch.no_grad():
        return block(x)[0]


def reference_attention(x, attn):
    """tinylm's attention with the exercise module's weights (q, k, v in one Linear)."""
    q, k, v = attn.c_attn(x).split(x.size(-1), dim=2)
    heads = [z.view(*x.shape[:2], attn.n_head, -1).transpose(1, 2) for z in (q, k, v)]
    y = F.scaled_dot_product_attention(*heads, is_causal=True)  # (B, nh, T, hs)
    return attn.c_proj(y.transpose(1, 2).reshape(x.shape))


def reference_loss(logits, targets, ignore_index=-100):
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=ignore_index
    )


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def library_pieces(exercise, monkeypatch):
    """Run the exercise with tinylm's attention and PyTorch's loss instead of the learner's."""
    monkeypatch.setattr(exercise, "self_attention", reference_attention)
    monkeypatch.setattr(exercise, "cross_entropy", reference_loss)
    return exercise


def loaded(module, reference):
    """module with reference's weights (the names match by construction: the __init__ is given)."""
    module.load_state_dict(reference.state_dict())
    return module.eval()


def tokens(batch=3, time=16, vocab=32, seed=1):
    return torch.randint(0, vocab, (batch, time), generator=torch.Generator().manual_seed(seed))


def gpt_logits(model, idx, targets=None):
    out = call(
        model.forward,
        idx,
        targets,
        hint="forward(idx, targets=None) → (logits, loss); wpe has rows 0 … block_size-1 "
        "for positions 0 … T-1",
    )
    expect(
        isinstance(out, tuple) and len(out) == 2,
        f"GPT.forward should return a pair (logits, loss), got {type(out).__name__}",
    )
    return out


def position_of(index):
    return f"logit {index[2]} at batch {index[0]}, position {index[1]}"


# --------------------------------------------------------------------------- the checks


def test_mlp_matches_tinylm(exercise):
    config = config_for()
    reference = reference_mlp(config)
    mlp = loaded(exercise.MLP(config), reference)
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(2))
    actual = call(mlp.forward, x, hint="x (..., C) → (..., C)")
    expected = reference(x)
    hint = "c_fc, then GELU, then c_proj"
    if close(actual, mlp.c_proj(F.gelu(mlp.c_fc(x), approximate="tanh")), atol=1e-6, rtol=0):
        hint = "this is the tanh approximation of GELU; tinylm (nn.GELU()) uses the exact one"
    elif close(actual, mlp.c_proj(mlp.c_fc(x))):
        hint = "no activation between c_fc and c_proj: two Linears in a row are one Linear"
    elif close(actual, mlp.c_proj(F.relu(mlp.c_fc(x)))):
        hint = "that is ReLU; GPT-2 and tinylm use GELU"
    with torch.no_grad():
        check_close(actual, expected, "MLP(x)", hint=hint)


def test_block_matches_tinylm(library_pieces):
    config = config_for(bias=True)
    reference = reference_block(config)
    block = loaded(library_pieces.Block(config), reference)
    x = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        actual = call(block.forward, x, hint="x (B, T, C) → (B, T, C)")
        check_tensor(actual, "Block(x)", x.shape)
        attn, mlp, ln_1, ln_2 = block.attn, block.mlp, block.ln_1, block.ln_2
        after_attention = x + attn(ln_1(x))
        mistakes = {
            "the residual stream is missing: add each sub-layer's output to x (x = x + ...)": (
                mlp(ln_2(attn(ln_1(x))))
            ),
            "that is post-norm (the original Transformer): normalise the sub-layer's input, "
            "not the sum; the stream itself is never normalised in GPT-2": _post_norm(block, x),
            "the MLP read the stream from before attention (a parallel block); it must read "
            "x after attention's output was added": x + attn(ln_1(x)) + mlp(ln_2(x)),
            "ln_1 went with the MLP too: attention uses ln_1, the MLP ln_2": (
                after_attention + mlp(ln_1(after_attention))
            ),
        }
        hint = next((text for text, wrong in mistakes.items() if close(actual, wrong)), "")
        if not close(mlp(x), reference.mlp(x)):
            hint = "MLP(x) does not match tinylm's yet: fix it first (test_mlp_matches_tinylm)"
        check_close(actual, block_output(reference, x), "Block(x)", hint=hint)


def diagnose_logits(model, reference, idx, logits):
    """The likely mistake when the model's logits differ from tinylm's, in words ('' if none)."""
    t = idx.size(1)
    x = model.transformer.wte(idx)
    if not close(model.transformer.h[0](x), block_output(reference.transformer.h[0], x)):
        return "Block(x) does not match tinylm's yet: fix it first (test_block_matches_tinylm)"
    wpe = model.transformer.wpe
    if close(logits, _head(model, x)):
        return "the position embeddings are missing: add wpe(0 … T-1) to the token embeddings"
    if t < model.config.block_size and close(logits, _head(model, x + wpe(torch.arange(1, t + 1)))):
        return "positions start at 0, not 1"
    if close(logits, model.lm_head(_blocks(model, x + wpe(torch.arange(t))))):
        return "the final LayerNorm ln_f is missing, between the last block and lm_head"
    return ""


def _post_norm(block, x):
    """The original Transformer's order: add, then normalise the stream."""
    x = block.ln_1(x + block.attn(x))
    return block.ln_2(x + block.mlp(x))


def _blocks(model, x):
    for block in model.transformer.h:
        x = block(x)
    return x


def _head(model, x):
    return model.lm_head(model.transformer.ln_f(_blocks(model, x)))


@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
def test_gpt_logits_match_tinylm(library_pieces, bias):
    config = config_for(bias=bias)
    reference = reference_gpt(config)
    model = loaded(library_pieces.GPT(config), reference)
    idx = tokens()
    with torch.no_grad():
        logits, loss = gpt_logits(model, idx)
        expected = reference(idx)[0]
        check_tensor(logits, "the logits", expected.shape)
        expect(loss is None, f"without targets the loss should be None, got {loss!r}")
        hint = "" if close(logits, expected) else diagnose_logits(model, reference, idx, logits)
        check_close(logits, expected, "the logits", hint=hint, describe=position_of)


def test_gpt_runs_on_a_shorter_context(library_pieces):
    config = config_for()
    reference = reference_gpt(config)
    model = loaded(library_pieces.GPT(config), reference)
    idx = tokens(batch=2, time=5)
    with torch.no_grad():
        logits, _ = gpt_logits(model, idx)
        expected = reference(idx)[0]
        check_tensor(logits, "the logits of 5 tokens", expected.shape)
        hint = "" if close(logits, expected) else diagnose_logits(model, reference, idx, logits)
        check_close(logits, expected, "the logits of 5 tokens", hint=hint, describe=position_of)


def test_gpt_refuses_more_than_block_size_tokens(library_pieces):
    model = library_pieces.GPT(config_for(block_size=8))
    with pytest.raises(ValueError, match=r"(?i)block_size|context") as error:
        model(tokens(time=9))
    expect("8" in str(error.value), f"say how long the context is (8): {error.value}")


def test_gpt_loss_matches_tinylm(library_pieces):
    config = config_for()
    reference = reference_gpt(config)
    model = loaded(library_pieces.GPT(config), reference)
    idx, targets = tokens(seed=1), tokens(seed=2)
    targets[0, :4] = -100  # prompt positions that do not count (notebook 06)
    with torch.no_grad():
        logits, loss = gpt_logits(model, idx, targets)
        expect(isinstance(loss, torch.Tensor), f"with targets the loss is a tensor, got {loss!r}")
        expected_logits, expected = reference(idx, targets)
        hint = (
            "the mean cross-entropy of the logits against targets (-100 ignored); "
            f"a model that knows nothing scores ln V = {math.log(32):.3f}"
        )
        if not close(logits, expected_logits):
            hint = "the logits differ from tinylm's already (test_gpt_logits_match_tinylm)"
        check_close(loss.reshape(()), expected, "the loss", hint=hint)


def test_gpt_gradients_reach_every_weight(library_pieces):
    config = config_for()
    model = loaded(library_pieces.GPT(config), reference_gpt(config)).train()
    _, loss = gpt_logits(model, tokens(), tokens(seed=2))
    loss.backward()
    for name, param in model.named_parameters():
        expect(
            param.grad is not None and bool(param.grad.abs().sum() > 0),
            f"no gradient reached {name}: is it used in forward, and nothing detached?",
        )


def test_gpt_with_your_attention_and_loss(exercise):
    config = config_for(bias=True)
    reference = reference_gpt(config)
    model = loaded(exercise.GPT(config), reference)
    idx, targets = tokens(), tokens(seed=2)
    with torch.no_grad():
        logits, loss = gpt_logits(model, idx, targets)
        expected_logits, expected_loss = reference(idx, targets)
        hint = (
            "the model passes with tinylm's attention and PyTorch's loss, so look at your "
            "exercises/attention.py and exercises/cross_entropy.py "
            "(`pytest exercises -k 'attention or cross_entropy'`)"
        )
        check_close(logits, expected_logits, "the logits", hint=hint, describe=position_of)
        check_close(loss.reshape(()), expected_loss, "the loss", hint=hint)
