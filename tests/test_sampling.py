"""Sampling: logits transforms, greedy, top-k/top-p, repetition penalty, beams, KV cache, poems."""

import math

import pytest
import torch
import torch.nn.functional as F

from tinylm import cli
from tinylm.attention import KVCache
from tinylm.config import MISTRAL, GPTConfig
from tinylm.model import GPT
from tinylm.run_files import TOKENIZER_FILE
from tinylm.sampling import (
    BeamHypotheses,
    apply_repetition_penalty,
    apply_temperature,
    beam_poems,
    beam_search,
    document_start,
    generate,
    next_logits,
    next_token,
    plain_greedy,
    sample_documents,
    sample_poems,
    top_k_filter,
    top_k_mask,
    top_p_filter,
    top_p_mask,
)
from tinylm.tokenizers import CharTokenizer

TINY = GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=32)
PROBS = torch.tensor([0.5, 0.3, 0.15, 0.05])  # a hand-made next-token distribution


class Markov(torch.nn.Module):
    """A stand-in model whose next-token logits depend on the last token only: table[last]."""

    def __init__(self, table: torch.Tensor, block_size: int) -> None:
        super().__init__()
        self.table = table  # (V, V) logits of the next token after each token
        self.config = GPTConfig(
            vocab_size=table.size(0), block_size=block_size, n_layer=1, n_head=1, n_embd=8
        )
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # so the model has a device
        self.calls: list[int] = []  # how many tokens each forward call was given
        self.rows: list[int] = []  # how many batch rows each forward call was given

    def new_cache(self) -> KVCache:
        return KVCache(1)

    def forward(
        self, idx: torch.Tensor, cache: KVCache | None = None, last_only: bool = False
    ) -> tuple[torch.Tensor, None]:
        past = 0 if cache is None else cache.seq_len
        assert past + idx.size(1) <= self.config.block_size, "generate must crop the context"
        if cache is not None:  # remember the positions, as a real cache would
            dummy = torch.zeros(idx.size(0), 1, idx.size(1), 1)  # (B, nh, T, hs)
            cache.update(0, dummy, dummy)
        self.calls.append(idx.size(1))
        self.rows.append(idx.size(0))
        logits = self.table[idx]  # (B, T, V)
        return (logits[:, [-1]] if last_only else logits), None


def counter() -> Markov:
    """Always predicts (last token + 1) mod 8, seeing at most 4 tokens."""
    return Markov(F.one_hot((torch.arange(8) + 1) % 8, 8).float() * 100, block_size=4)


def fork() -> Markov:
    """From token 1, greedy takes 2 (p 0.6) but 3 (p 0.4) leads to the likelier text.

    1 → 2 → 4 → end has probability 0.6 · 0.34 = 0.204; 1 → 3 → end has 0.4 · 0.9 = 0.36.
    """
    probs = torch.full((7, 7), 1e-9)
    probs[1, 2], probs[1, 3] = 0.6, 0.4
    probs[2, 4], probs[2, 5], probs[2, 6] = 0.34, 0.33, 0.33
    probs[3, 0], probs[3, 4] = 0.9, 0.1
    probs[4:, 0] = 1.0
    probs[0, 1] = 1.0
    return Markov(probs.log(), block_size=16)


@pytest.fixture
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(TINY)


def test_temperature_sharpens_and_flattens():
    logits = PROBS.log()
    assert torch.allclose(apply_temperature(logits, 1.0).softmax(-1), PROBS)
    assert apply_temperature(logits, 0.5).softmax(-1)[0] > 0.5  # sharper
    assert apply_temperature(logits, 2.0).softmax(-1)[0] < 0.5  # flatter
    with pytest.raises(ValueError, match="greedy"):
        apply_temperature(logits, 0)


def test_top_k_keeps_the_k_most_likely():
    logits = PROBS.log()
    assert top_k_mask(logits, 2).tolist() == [True, True, False, False]
    assert top_k_mask(logits, 10).all()
    kept = top_k_filter(logits, 3).softmax(-1)
    assert kept[3] == 0 and torch.allclose(kept[:3], PROBS[:3] / 0.95)


def test_top_p_keeps_the_smallest_nucleus_reaching_p():
    logits = PROBS.log()
    assert top_p_mask(logits, 0.8).tolist() == [True, True, False, False]  # 0.5 + 0.3 reach 0.8
    assert top_p_mask(logits, 0.81).tolist() == [True, True, True, False]
    assert top_p_mask(logits, 0.5).tolist() == [True, False, False, False]
    assert top_p_mask(logits, 0.01).tolist() == [True, False, False, False]  # top always kept
    assert top_p_mask(logits, 1.0).all()
    rows = torch.stack([logits, logits.flip(0)])  # (2, 4): works per row, in any token order
    assert top_p_mask(rows, 0.8).tolist() == [
        [True, True, False, False],
        [False, False, True, True],
    ]
    assert torch.allclose(top_p_filter(logits, 0.8).softmax(-1), torch.tensor([5, 3, 0, 0]) / 8)


def test_repetition_penalty_direction():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    seen = torch.tensor([[0, 1, 1]])  # tokens 0 and 1 were written (1 twice: counted once)
    assert apply_repetition_penalty(logits, seen, 2.0).tolist() == [[1.0, -4.0, 1.0, 0.5]]
    assert apply_repetition_penalty(logits, seen, 0.5).tolist() == [[4.0, -1.0, 1.0, 0.5]]
    probs = apply_repetition_penalty(logits, seen, 1.5).softmax(-1)
    assert (probs[0, :2] < logits.softmax(-1)[0, :2]).all()  # seen tokens less likely
    assert (probs[0, 2:] > logits.softmax(-1)[0, 2:]).all()  # the others more likely


def test_shapes_and_prompt_kept(model):
    idx = torch.randint(64, (3, 5))
    out = generate(model, idx, max_new_tokens=20, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 25) and torch.equal(out[:, :5], idx)  # 25 > block_size: cropped


def test_greedy_is_deterministic_and_equals_top_k_1_and_tiny_temperature(model):
    idx = torch.randint(64, (2, 4))
    greedy = generate(model, idx, 10, temperature=0)
    assert torch.equal(greedy, generate(model, idx, 10, temperature=0))
    for kwargs in [
        dict(temperature=1.0, top_k=1),
        dict(temperature=1e-4),
        dict(temperature=1.0, top_p=1e-3),
    ]:
        sampled = generate(model, idx, 10, generator=torch.Generator().manual_seed(1), **kwargs)
        assert torch.equal(greedy, sampled), kwargs


def test_sampling_follows_the_generator_and_restores_train_mode(model):
    idx = torch.zeros(4, 1, dtype=torch.long)
    model.train()
    a = generate(
        model,
        idx,
        12,
        generator=torch.Generator().manual_seed(7),
        top_p=0.9,
        repetition_penalty=1.3,
    )
    b = generate(
        model,
        idx,
        12,
        generator=torch.Generator().manual_seed(7),
        top_p=0.9,
        repetition_penalty=1.3,
    )
    c = generate(
        model,
        idx,
        12,
        generator=torch.Generator().manual_seed(8),
        top_p=0.9,
        repetition_penalty=1.3,
    )
    assert torch.equal(a, b) and not torch.equal(a, c) and model.training


def test_kv_cache_gives_the_same_tokens_past_block_size(model):
    idx = torch.randint(64, (3, 5))
    cached = generate(model, idx, 40, temperature=0)  # 45 tokens > block_size 16
    assert torch.equal(cached, generate(model, idx, 40, temperature=0, use_cache=False))
    seed = torch.Generator().manual_seed(3)
    sampled = generate(model, idx, 40, generator=seed, top_k=20)
    seed = torch.Generator().manual_seed(3)
    assert torch.equal(sampled, generate(model, idx, 40, generator=seed, top_k=20, use_cache=False))


def test_kv_cache_with_rope_and_grouped_query_attention_gives_the_same_tokens():
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(
            vocab_size=64,
            block_size=16,
            n_layer=2,
            n_head=4,
            n_embd=32,
            intermediate_size=48,
            n_kv_head=2,
            **MISTRAL,
        )
    )
    idx = torch.randint(64, (3, 5))
    cached = generate(model, idx, 40, temperature=0)  # 45 tokens > block_size 16
    assert torch.equal(cached, generate(model, idx, 40, temperature=0, use_cache=False))
    beams = beam_search(model, idx[:1], 20, num_beams=3)
    assert torch.equal(beams, beam_search(model, idx[:1], 20, num_beams=3, use_cache=False))


def test_kv_cache_prefills_once_then_feeds_one_token_until_block_size():
    model = Markov(torch.randn(8, 8), block_size=6)
    generate(model, torch.zeros(1, 3, dtype=torch.long), 6, temperature=0)
    assert model.calls == [3, 1, 1, 1, 6, 6]  # lengths 3..6 fit; then the last 6, recomputed
    model.calls = []
    generate(model, torch.zeros(1, 3, dtype=torch.long), 6, temperature=0, use_cache=False)
    assert model.calls == [3, 4, 5, 6, 6, 6]


def test_rows_stop_at_end_of_text_and_crop_to_block_size():
    for use_cache in (True, False):
        out = generate(
            counter(),
            torch.tensor([[3], [5]]),
            max_new_tokens=20,
            temperature=0,
            eot_id=7,
            use_cache=use_cache,
        )
        assert out.tolist() == [[3, 4, 5, 6, 7], [5, 6, 7, 7, 7]]  # stops once every row ended
        long = generate(
            counter(), torch.tensor([[0]]), max_new_tokens=20, temperature=0, use_cache=use_cache
        )
        assert long.shape == (1, 21) and long[0, -1].item() == 20 % 8


def test_finished_rows_leave_the_batch():
    model = counter()
    out = generate(model, torch.tensor([[3], [5]]), max_new_tokens=20, temperature=0, eot_id=7)
    assert out.tolist() == [[3, 4, 5, 6, 7], [5, 6, 7, 7, 7]]
    assert model.rows == [2, 2, 1, 1]  # row 1 ended at the second step: only row 0 runs after


def generate_every_row(
    model: GPT, idx: torch.Tensor, max_new_tokens: int, *, eot_id: int, generator, **decoding
) -> torch.Tensor:
    """generate as it was before finished rows left the batch: the model runs on every row."""
    cache = model.new_cache()
    finished = torch.zeros(idx.size(0), dtype=torch.bool)
    for _ in range(max_new_tokens):
        cache = cache if idx.size(1) <= model.config.block_size else None
        logits = apply_repetition_penalty(next_logits(model, idx, cache), idx, 1.3)
        new = next_token(logits, generator=generator, **decoding).masked_fill(
            finished[:, None], eot_id
        )
        finished |= new[:, 0] == eot_id
        idx = torch.cat((idx, new), dim=1)
        if bool(finished.all()):
            break
    return idx


@pytest.mark.parametrize("use_cache", [True, False])
def test_dropping_finished_rows_keeps_every_rows_tokens(model, use_cache):
    idx = torch.randint(64, (16, 2), generator=torch.Generator().manual_seed(1))
    decoding = {"temperature": 1.0, "top_k": 40}
    model.eval()
    before = generate_every_row(
        model, idx, 40, eot_id=5, generator=torch.Generator().manual_seed(7), **decoding
    )
    after = generate(
        model,
        idx,
        40,  # past block_size 16, where the window is recomputed for the running rows
        eot_id=5,
        generator=torch.Generator().manual_seed(7),
        repetition_penalty=1.3,
        use_cache=use_cache,
        **decoding,
    )
    ended = (after[:, 2:] == 5).any(dim=1)
    assert 0 < int(ended.sum()) < 16  # some rows ended early, others ran to the end
    assert torch.equal(after, before)


def test_beam_width_1_is_greedy(model):
    idx = torch.randint(64, (2, 4))
    assert torch.equal(
        beam_search(model, idx, 20, num_beams=1), generate(model, idx, 20, temperature=0)
    )
    start = torch.tensor([[1]])
    greedy = generate(fork(), start, 10, temperature=0, eot_id=0)
    assert greedy.tolist() == [[1, 2, 4, 0]]
    assert torch.equal(beam_search(fork(), start, 10, num_beams=1, eot_id=0), greedy)


def test_beam_search_finds_the_likelier_text_and_pads_with_end_of_text():
    start = torch.tensor([[1], [2]])
    out = beam_search(fork(), start, 10, num_beams=2, length_penalty=0.0, eot_id=0)
    assert out.tolist() == [[1, 3, 0], [2, 4, 0]]  # 0.36 beats greedy's 0.204
    same = beam_search(
        fork(), start, 10, num_beams=2, eot_id=0, use_cache=False, length_penalty=0.0
    )
    assert torch.equal(out, same)


def test_length_penalty_favours_longer_texts():
    probs = torch.full((6, 6), 1e-9)  # from 1: end now (p 0.5) or 2 → 3 → 4 → end (p 0.45)
    probs[1, 0], probs[1, 2] = 0.5, 0.45
    probs[2, 3] = probs[3, 4] = probs[4, 0] = probs[0, 1] = probs[5, 0] = 1.0
    model = Markov(probs.log(), block_size=16)
    start = torch.tensor([[1]])
    assert beam_search(model, start, 10, 2, length_penalty=0.0, eot_id=0).tolist() == [[1, 0]]
    assert beam_search(model, start, 10, 2, length_penalty=1.0, eot_id=0).tolist() == [
        [1, 2, 3, 4, 0]
    ]


def test_beam_search_matches_transformers(model):
    hf = pytest.importorskip("tinylm.hf")
    idx = torch.randint(64, (2, 4))
    ours = beam_search(model, idx, 8, num_beams=3)
    theirs = hf.to_hf(model).generate(
        idx,
        attention_mask=torch.ones_like(idx),
        num_beams=3,
        max_new_tokens=8,
        do_sample=False,
        pad_token_id=0,
        eos_token_id=None,
    )
    assert torch.equal(ours, theirs)


def test_beam_hypotheses_keep_the_best_finished_beams_and_know_when_done():
    finished = BeamHypotheses(num_beams=2, length_penalty=1.0)
    for logprob, ids in ((-4.0, [1, 2]), (-1.0, [3]), (-9.0, [4, 5, 6])):
        finished.add(logprob, ids, len(ids))
    assert finished.best == [(-1.0, [3]), (-2.0, [1, 2])]  # sum log-prob / length, best first
    top = [(-10.0, 0, 7), (-11.0, 1, 0), (-12.0, 1, 3)]  # (sum log-prob, beam, token), eot = 0
    kept = finished.process(top, torch.tensor([[8], [9]]), eot_id=0, length=2)
    assert kept == [(0, 7, -10.0), (1, 3, -12.0)]  # the finished [9, 0] scored -5.5: not kept
    assert finished.done  # the best running beam, -10 / 2, cannot beat the worst finished, -2


def test_beam_search_with_the_cache_past_block_size(model):
    idx = torch.randint(64, (2, 4))
    model.train()
    out = beam_search(model, idx, 30, num_beams=3)
    assert out.shape == (2, 34) and model.training
    assert torch.equal(out, beam_search(model, idx, 30, num_beams=3, use_cache=False))


def test_bad_arguments_are_errors(model):
    one = torch.zeros(1, 1, dtype=torch.long)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, one, 1, temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        generate(model, one, 1, top_k=0)
    for top_p in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="top_p"):
            generate(model, one, 1, top_p=top_p)
        with pytest.raises(ValueError, match="top_p"):
            next_token(torch.zeros(1, 4), temperature=0, top_p=top_p)
    for penalty in (0.0, -1.0):
        with pytest.raises(ValueError, match="repetition_penalty"):
            generate(model, one, 1, repetition_penalty=penalty)
    with pytest.raises(ValueError, match="num_beams"):
        beam_search(model, one, 1, num_beams=0)


def test_document_start_is_end_of_text_then_the_prompt():
    tokenizer = CharTokenizer("春江花月夜")  # ids: 0 <|endoftext|>, 1 <unk>, 2 春 … 6 夜
    assert document_start(tokenizer, "花月", n=2).tolist() == [[0, 4, 5]] * 2
    assert document_start(tokenizer).tolist() == [[0]]
    assert document_start(tokenizer, "春").dtype == torch.long


def test_sample_poems_starts_a_document_and_cuts_at_end_of_text():
    tokenizer = CharTokenizer("春江花月夜")  # ids: 0 <|endoftext|>, 1 <unk>, 2 春 … 6 夜
    # from <|endoftext|> the counter writes 1 2 … 6, then 7 (a padding id, dropped), then 0
    assert sample_poems(counter(), tokenizer, n=2, temperature=0) == ["<unk>春江花月夜"] * 2
    assert sample_poems(counter(), tokenizer, ["花"], n=1) == ["花月夜"]
    assert beam_poems(counter(), tokenizer, ["花", "江"], num_beams=2) == ["花月夜", "江花月夜"]


def test_sample_documents_say_which_poems_the_model_ended():
    tokenizer = CharTokenizer("春江花月夜")  # ids: 0 <|endoftext|>, 1 <unk>, 2 春 … 6 夜
    # the counter needs 8 tokens to reach end-of-text from <|endoftext|>: 7 are too few
    assert (
        sample_documents(counter(), tokenizer, n=2, max_new_tokens=8)
        == [("<unk>春江花月夜", True)] * 2
    )
    assert (
        sample_documents(counter(), tokenizer, n=3, max_new_tokens=7, batch_size=2)
        == [("<unk>春江花月夜", False)] * 3
    )


def test_sample_documents_batches_rows_from_one_generator(model):
    tokenizer = CharTokenizer([chr(0x4E00 + i) for i in range(62)])
    kwargs = dict(n=5, max_new_tokens=8, seed=3)
    whole = sample_documents(model, tokenizer, **kwargs)
    assert [text for text, _ in whole] == sample_poems(model, tokenizer, **kwargs)
    assert sample_documents(model, tokenizer, **kwargs, batch_size=2) == sample_documents(
        model, tokenizer, **kwargs, batch_size=2
    )
    assert len(sample_documents(model, tokenizer, **kwargs, batch_size=2)) == 5


def test_sample_poems_with_a_real_model_is_seeded(model):
    tokenizer = CharTokenizer([chr(0x4E00 + i) for i in range(62)])
    poems = sample_poems(model, tokenizer, ["一丁", "七"], n=3, max_new_tokens=10, seed=3)
    assert len(poems) == 6 and all(p.startswith("一丁") for p in poems[:3])
    assert "<|endoftext|>" not in "".join(poems)
    assert poems == sample_poems(model, tokenizer, ["一丁", "七"], n=3, max_new_tokens=10, seed=3)
    nucleus = sample_poems(
        model, tokenizer, n=2, max_new_tokens=10, top_p=0.9, repetition_penalty=1.2
    )
    assert len(nucleus) == 2


def test_cli_sample_with_top_p_repetition_penalty_and_beams(model, tmp_path, capsys):
    model.save_pretrained(tmp_path)
    CharTokenizer([chr(0x4E00 + i) for i in range(62)]).save(tmp_path / TOKENIZER_FILE)
    common = ["sample", "--model", str(tmp_path), "--prompt", "一丁", "--max-new-tokens", "6"]
    assert cli.main([*common, "-n", "2", "--top-p", "0.9", "--repetition-penalty", "1.2"]) == 0
    assert capsys.readouterr().out.count("一丁") >= 2
    assert cli.main([*common, "--beams", "3"]) == 0
    assert capsys.readouterr().out.startswith("一丁")
    with pytest.raises(SystemExit) as exit_info:  # refused before the model is loaded
        cli.main([*common, "--top-p", "1.5"])
    assert exit_info.value.code == 2 and "--top-p: 1.5 is out of range" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [{"temperature": float("nan")}, {"repetition_penalty": math.inf}])
def test_decoding_numbers_must_be_finite(model, bad):
    with pytest.raises(ValueError, match="must be a finite number"):
        generate(model, torch.zeros(1, 1, dtype=torch.long), 2, **bad)


def test_plain_greedy_writes_what_generate_writes_at_temperature_0(model):
    idx = torch.zeros(2, 3, dtype=torch.long)
    assert torch.equal(plain_greedy(model, idx, 20), generate(model, idx, 20, temperature=0))
