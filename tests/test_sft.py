"""SFT: templates pinned to their reference layouts, answer-only labels, packing, fine-tuning."""

import pytest
import torch
import torch.nn.functional as F
from synthetic import synthetic_corpus

from tinylm import sft
from tinylm.model import GPT, GPTConfig
from tinylm.tokenizers import (
    CharTokenizer,
    GPT2Tokenizer,
    SpecialTokensTokenizer,
    TiktokenTokenizer,
    TokenizerUnavailable,
    load_tokenizer,
)

TALK_DIALOG = [
    {"role": "system", "content": "system1"},
    {"role": "user", "content": "user1"},
    {"role": "assistant", "content": "assistant1"},
    {"role": "user", "content": "user1"},
]
POEM = [
    {"role": "user", "content": "以《春》为题，写一首五言绝句。"},
    {"role": "assistant", "content": "春江花月夜，风山水云天。"},
]


@pytest.fixture(scope="module")
def corpus():
    return synthetic_corpus()


@pytest.fixture(scope="module")
def char_tok(corpus):
    base = CharTokenizer.from_texts(p.text for p in corpus.train)
    return sft.add_chat_tokens(base, "chatml", [sft.render(POEM)])


def test_llama2_layout_is_the_talks():
    text = sft.render(TALK_DIALOG, "llama2").replace("</s>", "eos").replace("<s>", "bos")
    assert text == (
        "bos[INST] <<SYS>>\nsystem1\n<</SYS>>\n\nuser1 [/INST] assistant1eos"
        "bos[INST] user1 [/INST] "
    )


def test_chatml_layout_with_generation_prompt():
    assert sft.render(TALK_DIALOG[:2], "chatml", add_generation_prompt=True) == (
        "<|im_start|>system\nsystem1<|im_end|>\n<|im_start|>user\nuser1<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "assistant", "content": "a"}],
        [{"role": "user", "content": "u"}, {"role": "user", "content": "u"}],
        [{"role": "bot", "content": "b"}],
        [],
    ],
)
def test_bad_conversations_are_rejected(messages):
    with pytest.raises(ValueError, match="role"):
        sft.render(messages)


def test_unknown_template_is_rejected():
    with pytest.raises(ValueError, match="llama2"):
        sft.render(POEM, "alpaca")


@pytest.mark.parametrize(("template", "end"), [("chatml", "<|im_end|>"), ("llama2", "</s>")])
def test_only_the_answer_and_its_end_token_count(template, end, corpus):
    base = CharTokenizer.from_texts(p.text for p in corpus.train)
    tok = sft.add_chat_tokens(base, template, [sft.render(POEM, template)])
    example = sft.encode_chat(POEM, tok, template)
    assert tok.decode(example.ids) == sft.render(POEM, template)
    counted = [
        i for i, label in zip(example.ids, example.labels, strict=True) if label != sft.IGNORE_INDEX
    ]
    assert tok.decode(counted) == POEM[1]["content"] + end
    assert example.unmasked().labels == example.ids


def test_new_tokens_keep_existing_ids(corpus):
    base = CharTokenizer.from_texts(p.text for p in corpus.train)
    tok = sft.add_chat_tokens(base, "chatml", ["user"])
    text = corpus.train[0].text
    assert tok.encode(text) == base.encode(text)
    e, r, s, u = range(base.vocab_size, base.vocab_size + 4)  # new letters, sorted
    assert tok.encode("<|im_start|>user") == [base.vocab_size + 4, u, s, e, r]
    assert tok.vocab_size == base.vocab_size + 4 + 2  # 4 new letters (e, r, s, u), 2 specials
    again = sft.add_chat_tokens(tok, "chatml")  # adding twice changes nothing
    assert again.vocab_size == tok.vocab_size


def test_special_tokens_survive_save_and_load(char_tok, tmp_path):
    char_tok.save(tmp_path / "tok.json")
    loaded = load_tokenizer(tmp_path / "tok.json")
    assert isinstance(loaded, SpecialTokensTokenizer)
    text = sft.render(POEM)
    assert loaded.encode(text) == char_tok.encode(text)


def test_special_tokens_must_be_new(char_tok):
    with pytest.raises(ValueError, match="already"):
        char_tok.with_special_tokens(["<|im_end|>"])


def test_gpt2_uses_tiktoken_special_tokens_and_matches_the_generic_wrapper():
    try:
        gpt2 = GPT2Tokenizer()
    except TokenizerUnavailable as err:
        pytest.skip(f"GPT-2 BPE files not available offline: {err}")
    tok = sft.add_chat_tokens(gpt2, "chatml")
    assert isinstance(tok, TiktokenTokenizer)
    text = sft.render(POEM) + "<|endoftext|>"
    ids = tok.encode(text)
    assert ids[0] == 50257 and 50258 in ids and 50256 not in ids  # EOT stays ordinary text
    assert ids == SpecialTokensTokenizer(gpt2, sft.SPECIAL_TOKENS["chatml"]).encode(text)
    assert tok.decode(ids) == text
    assert tok.encode_batch([text]) == [ids]


def test_loss_by_hand_equals_ignore_index(char_tok):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=64, n_layer=1, n_head=2, n_embd=16))
    batch = sft.pad_batch([sft.encode_chat(POEM, char_tok)], pad_id=0)
    logits, loss = model(batch.x, batch.y)
    log_probs = F.log_softmax(logits[0], dim=-1)  # (T, V)
    counted = (batch.y[0] != sft.IGNORE_INDEX).nonzero()[:, 0]
    by_hand = -log_probs[counted, batch.y[0, counted]].mean()
    assert torch.allclose(loss, by_hand, atol=1e-6)


def test_pad_batch_shifts_each_example_and_pads_with_ignore():
    examples = [sft.Example([5, 6, 7], [-100, 6, 7]), sft.Example([8, 9], [8, 9])]
    batch = sft.pad_batch(examples, pad_id=0)
    assert batch.x.tolist() == [[5, 6], [8, 0]]
    assert batch.y.tolist() == [[6, 7], [9, -100]]
    assert batch.padding_share == pytest.approx(0.25)
    with pytest.raises(ValueError, match="length=1"):
        sft.pad_batch(examples, pad_id=0, length=1)


def test_pack_rows_fill_in_order():
    assert sft.pack_rows([3, 3, 2, 4], length=6) == [[0, 1], [2, 3]]
    assert sft.pack_rows([4, 4, 2], length=6) == [[0, 2], [1]]  # first fit fills gaps
    with pytest.raises(ValueError, match="example 0"):
        sft.pack_rows([7], length=6)


def test_packed_batch_is_the_padded_one_with_less_padding(char_tok):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=256, n_layer=2, n_head=2, n_embd=16)).eval()
    short = [{"role": "user", "content": "春"}, {"role": "assistant", "content": "江花。"}]
    examples = [sft.encode_chat(m, char_tok) for m in (POEM, short, short, POEM)]
    padded = sft.pad_batch(examples, pad_id=0)
    packed = sft.pack_batch(examples, pad_id=0, length=int(padded.real.sum()))
    assert packed.x.size(0) == 1 and packed.padding_share == 0 < padded.padding_share
    assert packed.real.sum() == padded.real.sum()
    _, loss_padded = model(padded.x, padded.y)
    _, loss_packed = model(packed.x, packed.y, doc_ids=packed.doc_ids)
    assert torch.allclose(loss_padded, loss_packed, atol=1e-5)
    _, loss_leaky = model(packed.x, packed.y)  # no document mask: examples see each other
    assert not torch.allclose(loss_padded, loss_leaky, atol=1e-4)


def test_poem_instructions_read_the_form_and_title(corpus):
    instructions = sft.poem_instructions(corpus.train)
    assert len(instructions) == len(corpus.train)
    first = instructions[0]
    assert first.form == "五绝"
    assert first.prompt == f"以《{corpus.train[0].title}》为题，写一首五言绝句。"
    assert first.messages()[1] == {"role": "assistant", "content": corpus.train[0].content}
    assert sft.poem_instructions(corpus.train, forms=["七律"]) == []
    with pytest.raises(ValueError, match="unknown forms"):
        sft.poem_instructions(corpus.train, forms=["词"])


def test_encode_instructions_drops_what_does_not_fit(corpus, char_tok):
    instructions = sft.poem_instructions(corpus.train[:5])
    examples = sft.encode_instructions(instructions, char_tok)
    longest = max(len(e) for e in examples)
    assert len(sft.encode_instructions(instructions, char_tok, max_tokens=longest - 1)) < 5


def test_finetune_lowers_the_answer_loss_and_answers(corpus, char_tok):
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(vocab_size=64, block_size=64, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    )
    sft.check_vocabulary(model, char_tok)
    instructions = sft.poem_instructions(corpus.train)
    examples = sft.encode_instructions(instructions, char_tok, max_tokens=65)
    before = sft.mean_loss(model, examples)
    losses = sft.finetune(model, examples, steps=30, batch_size=8, lr=3e-3, progress=False)
    assert len(losses) == 30 and not model.training
    assert sft.mean_loss(model, examples) < before - 1.0
    accuracy, answers = sft.form_accuracy(model, char_tok, instructions[:3], progress=False)
    assert 0.0 <= accuracy <= 1.0 and len(answers) == 3
    assert all("<|im_end|>" not in a for a in answers)


def test_check_vocabulary_names_the_fix(char_tok):
    model = GPT(GPTConfig(vocab_size=8, block_size=8, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(ValueError, match="resize"):
        sft.check_vocabulary(model, char_tok)


def test_prompt_longer_than_the_context_is_an_error(char_tok, corpus):
    model = GPT(GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(ValueError, match="no room"):
        sft.answer(model, char_tok, sft.poem_instructions(corpus.train)[0])
