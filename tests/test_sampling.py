"""Sampling: shapes, greedy determinism, top-k=1 = greedy, cropping, end-of-text, whole poems."""

import pytest
import torch
import torch.nn.functional as F

from tinylm.model import GPT, GPTConfig
from tinylm.sampling import generate, sample_poems
from tinylm.tokenizers import CharTokenizer

TINY = GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=32)


class Counter(torch.nn.Module):
    """A stand-in model that always predicts (last token + 1) mod 8, seeing at most 4 tokens."""

    config = GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=1, n_embd=8)

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # so the model has a device

    def forward(self, idx: torch.Tensor) -> tuple[torch.Tensor, None]:
        assert idx.size(1) <= self.config.block_size, "generate must crop the context"
        return F.one_hot((idx + 1) % 8, 8).float() * 100, None  # (B, T, 8)


@pytest.fixture
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(TINY)


def test_shapes_and_prompt_kept(model):
    idx = torch.randint(64, (3, 5))
    out = generate(model, idx, max_new_tokens=20, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 25) and torch.equal(out[:, :5], idx)  # 25 > block_size: cropped


def test_greedy_is_deterministic_and_equals_top_k_1(model):
    idx = torch.randint(64, (2, 4))
    greedy = generate(model, idx, 10, temperature=0)
    assert torch.equal(greedy, generate(model, idx, 10, temperature=0))
    top1 = generate(model, idx, 10, temperature=1.0, top_k=1,
                    generator=torch.Generator().manual_seed(1))
    assert torch.equal(greedy, top1)


def test_sampling_follows_the_generator_and_restores_train_mode(model):
    idx = torch.zeros(4, 1, dtype=torch.long)
    model.train()
    a = generate(model, idx, 12, generator=torch.Generator().manual_seed(7))
    b = generate(model, idx, 12, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and model.training


def test_rows_stop_at_end_of_text_and_crop_to_block_size():
    out = generate(Counter(), torch.tensor([[3], [5]]), max_new_tokens=20, temperature=0,
                   eot_id=7)
    assert out.tolist() == [[3, 4, 5, 6, 7], [5, 6, 7, 7, 7]]  # stops once every row ended
    long = generate(Counter(), torch.tensor([[0]]), max_new_tokens=20, temperature=0)
    assert long.shape == (1, 21) and long[0, -1].item() == 20 % 8


def test_bad_arguments_are_errors(model):
    with pytest.raises(ValueError, match="temperature"):
        generate(model, torch.zeros(1, 1, dtype=torch.long), 1, temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        generate(model, torch.zeros(1, 1, dtype=torch.long), 1, top_k=0)


def test_sample_poems_starts_a_document_and_cuts_at_end_of_text():
    tokenizer = CharTokenizer("春江花月夜")  # ids: 0 <|endoftext|>, 1 <unk>, 2 春 … 6 夜
    # from <|endoftext|> the counter writes 1 2 … 6, then 7 (a padding id, dropped), then 0
    assert sample_poems(Counter(), tokenizer, n=2, temperature=0) == ["<unk>春江花月夜"] * 2
    assert sample_poems(Counter(), tokenizer, ["花"], n=1) == ["花月夜"]


def test_sample_poems_with_a_real_model_is_seeded(model):
    tokenizer = CharTokenizer([chr(0x4E00 + i) for i in range(62)])
    poems = sample_poems(model, tokenizer, ["一丁", "七"], n=3, max_new_tokens=10, seed=3)
    assert len(poems) == 6 and all(p.startswith("一丁") for p in poems[:3])
    assert "<|endoftext|>" not in "".join(poems)
    assert poems == sample_poems(model, tokenizer, ["一丁", "七"], n=3, max_new_tokens=10,
                                 seed=3)
