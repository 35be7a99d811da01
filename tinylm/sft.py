"""Supervised fine-tuning (SFT): chat templates, answer-only labels, packing, poem instructions.

Pretraining and SFT share the data flow and the loss function: tokens in, next-token
cross-entropy out, the same `tinylm.train.train_step`. They differ only in which tokens count.
Pretraining scores every token; SFT scores the assistant's answer and its end marker, and
gives every other position the label -100, which `F.cross_entropy(..., ignore_index=-100)`
skips. A conversation is rendered as a list of `Segment`s, each tokenised on its own, so the
boundary between "does not count" and "counts" falls exactly between two tokens.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tinylm import hardware, train
from tinylm.cleaning import Poem
from tinylm.model import GPT
from tinylm.poetry import classify_form
from tinylm.progress import progress_bar
from tinylm.sampling import generate
from tinylm.tokenizers import CharTokenizer, SpecialTokensTokenizer, Tokenizer

IGNORE_INDEX = -100  # the label F.cross_entropy skips (its default ignore_index)
TEMPLATES = ("llama2", "chatml")
ROLES = ("system", "user", "assistant")

# Llama 2's chat layout (convert_dialog_to_input_prompt): the system prompt is folded into the
# first user turn; each finished exchange is wrapped in <s> … </s>.
LLAMA2_BOS, LLAMA2_EOS = "<s>", "</s>"
B_INST, E_INST = "[INST] ", " [/INST] "
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
# ChatML (OpenAI, Qwen): every message is <|im_start|>role\ncontent<|im_end|>\n.
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = {"llama2": (LLAMA2_BOS, LLAMA2_EOS), "chatml": (IM_START, IM_END)}
END_TOKEN = {"llama2": LLAMA2_EOS, "chatml": IM_END}  # what ends an answer


@dataclass(frozen=True)
class Segment:
    """A piece of rendered conversation and whether the loss counts its tokens."""

    text: str
    trained: bool = False


def check_messages(messages: Sequence[dict]) -> None:
    """Messages must be an optional system message, then user and assistant turns in turn."""
    for i, message in enumerate(messages):
        if set(message) != {"role", "content"} or message["role"] not in ROLES:
            raise ValueError(
                f"message {i} must be {{'role': one of {ROLES}, 'content': str}}, got {message!r}"
            )
    turns = messages[1:] if messages and messages[0]["role"] == "system" else messages
    expected = ["user", "assistant"] * len(turns)
    if not turns or [m["role"] for m in turns] != expected[: len(turns)]:
        raise ValueError(
            "after an optional system message, the roles must alternate user, "
            f"assistant, user, …; got {[m['role'] for m in messages]}"
        )


def llama2_segments(messages: Sequence[dict]) -> list[Segment]:
    """Llama 2's layout: <s>[INST] (<<SYS>>…<</SYS>>) user [/INST] answer</s> per exchange."""
    check_messages(messages)
    turns = [dict(m) for m in messages]
    if turns[0]["role"] == "system":  # Llama 2 has no system turn: it joins the first user's
        system, turns = turns[0], turns[1:]
        turns[0]["content"] = B_SYS + system["content"] + E_SYS + turns[0]["content"]
    segments = []
    for message in turns:
        if message["role"] == "user":
            text = LLAMA2_BOS + B_INST + message["content"].strip() + E_INST
            segments.append(Segment(text))
        else:
            segments.append(Segment(message["content"].strip() + LLAMA2_EOS, trained=True))
    return segments


def chatml_segments(messages: Sequence[dict], add_generation_prompt: bool = False) -> list[Segment]:
    """ChatML: <|im_start|>role\\ncontent<|im_end|>\\n; the answer and its <|im_end|> count."""
    check_messages(messages)
    segments = []
    for message in messages:
        header = f"{IM_START}{message['role']}\n"
        if message["role"] == "assistant":
            segments += [
                Segment(header),
                Segment(message["content"] + IM_END, trained=True),
                Segment("\n"),
            ]
        else:
            segments.append(Segment(header + message["content"] + IM_END + "\n"))
    if add_generation_prompt:
        segments.append(Segment(f"{IM_START}assistant\n"))
    return segments


def render_segments(
    messages: Sequence[dict], template: str = "chatml", add_generation_prompt: bool = False
) -> list[Segment]:
    """The conversation as segments in the named template ("llama2" or "chatml").

    add_generation_prompt ends the text where the assistant's answer should begin (ChatML's
    "<|im_start|>assistant\\n"); Llama 2 needs nothing extra after a user turn.
    """
    if template == "llama2":
        return llama2_segments(messages)
    if template == "chatml":
        return chatml_segments(messages, add_generation_prompt)
    raise ValueError(f"unknown chat template {template!r}; templates are {TEMPLATES}")


def render(
    messages: Sequence[dict], template: str = "chatml", add_generation_prompt: bool = False
) -> str:
    """The conversation as one string in the named template."""
    return "".join(s.text for s in render_segments(messages, template, add_generation_prompt))


def add_chat_tokens(
    tokenizer: Tokenizer, template: str = "chatml", texts: Sequence[str] = ()
) -> Tokenizer:
    """The tokenizer plus the template's special tokens, existing ids unchanged.

    A character tokenizer also learns the characters of texts it has never seen (ChatML's
    role names are English; the poems are not), appended after its current ids.
    """
    if template not in SPECIAL_TOKENS:
        raise ValueError(f"unknown chat template {template!r}; templates are {TEMPLATES}")
    specials = SPECIAL_TOKENS[template]
    if isinstance(tokenizer, SpecialTokensTokenizer):
        specials = tuple(t for t in specials if t not in tokenizer.special_ids)
    elif isinstance(tokenizer, CharTokenizer):
        known = set(tokenizer.chars)
        plain = [t.replace(specials[0], "").replace(specials[1], "") for t in texts]
        new = sorted({ch for text in plain for ch in text if ch not in known})
        tokenizer = CharTokenizer([*tokenizer.chars, *new]) if new else tokenizer
    return tokenizer.with_special_tokens(specials) if specials else tokenizer


def check_vocabulary(model: GPT, tokenizer: Tokenizer) -> None:
    """The model's embedding table must have a row for every id of the tokenizer."""
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.vocab_size} ids but the model only "
            f"{model.config.vocab_size} embedding rows; use fewer new tokens or resize the "
            "model's embeddings before fine-tuning"
        )


# --------------------------------------------------------------------------- examples


@dataclass(frozen=True)
class Example:
    """One tokenised conversation: ids, and labels = ids where the loss counts, else -100."""

    ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.ids)

    def unmasked(self) -> Example:
        """The same tokens with every one counted, as pretraining would."""
        return Example(self.ids, list(self.ids))


def encode_chat(
    messages: Sequence[dict], tokenizer: Tokenizer, template: str = "chatml"
) -> Example:
    """Tokenise a conversation segment by segment; only trained segments keep their labels."""
    ids: list[int] = []
    labels: list[int] = []
    for segment in render_segments(messages, template):
        piece = tokenizer.encode(segment.text)
        ids += piece
        labels += piece if segment.trained else [IGNORE_INDEX] * len(piece)
    return Example(ids, labels)


@dataclass
class Batch:
    """Inputs x and targets y (B, T); doc_ids (B, T) when examples are packed, else None.

    real marks the positions that hold text rather than padding.
    """

    x: torch.Tensor
    y: torch.Tensor
    real: torch.Tensor
    doc_ids: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        """The batch on another device."""
        doc_ids = None if self.doc_ids is None else self.doc_ids.to(device)
        return Batch(self.x.to(device), self.y.to(device), self.real.to(device), doc_ids)

    @property
    def padding_share(self) -> float:
        """The share of positions spent on padding: compute that teaches nothing."""
        return 1.0 - self.real.float().mean().item()


def _shifted(example: Example) -> tuple[list[int], list[int]]:
    """(inputs, targets) of one example: the target at position t is the label of token t+1."""
    return example.ids[:-1], example.labels[1:]


def pad_batch(examples: Sequence[Example], pad_id: int, length: int | None = None) -> Batch:
    """One example per row, padded at the end to length (default: the longest, minus one)."""
    length = length or max(len(e) for e in examples) - 1
    x = torch.full((len(examples), length), pad_id, dtype=torch.long)  # (B, T)
    y = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    real = torch.zeros((len(examples), length), dtype=torch.bool)
    for row, example in enumerate(examples):
        inputs, targets = _shifted(example)
        if len(inputs) > length:
            raise ValueError(f"example {row} has {len(inputs)} inputs, more than length={length}")
        x[row, : len(inputs)] = torch.tensor(inputs)
        y[row, : len(targets)] = torch.tensor(targets)
        real[row, : len(inputs)] = True
    return Batch(x, y, real)


def pack_rows(lengths: Sequence[int], length: int) -> list[list[int]]:
    """Group examples (by their input lengths) into rows of at most length tokens.

    First fit: each example goes into the first row with room for it, else opens a new row.
    """
    rows: list[list[int]] = []
    room: list[int] = []
    for i, n in enumerate(lengths):
        if n > length:
            raise ValueError(f"example {i} has {n} inputs, more than length={length}")
        row = next((r for r, free in enumerate(room) if free >= n), None)
        if row is None:
            rows.append([])
            room.append(length)
            row = len(rows) - 1
        rows[row].append(i)
        room[row] -= n
    return rows


def pack_batch(examples: Sequence[Example], pad_id: int, length: int) -> Batch:
    """Several examples per row, each shifted on its own; doc_ids number them within a row.

    Use doc_ids with the model (`GPT.forward(doc_ids=…)`) to keep attention inside each
    example; without it the row is read as one text and later examples see earlier ones.
    """
    shifted = [_shifted(e) for e in examples]
    rows = pack_rows([len(inputs) for inputs, _ in shifted], length)
    x = torch.full((len(rows), length), pad_id, dtype=torch.long)  # (B, T)
    y = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
    real = torch.zeros((len(rows), length), dtype=torch.bool)
    doc_ids = torch.full((len(rows), length), -1, dtype=torch.long)  # padding: its own "doc"
    for row, members in enumerate(rows):
        start = 0
        for doc, i in enumerate(members):
            inputs, targets = shifted[i]
            end = start + len(inputs)
            x[row, start:end] = torch.tensor(inputs)
            y[row, start:end] = torch.tensor(targets)
            real[row, start:end] = True
            doc_ids[row, start:end] = doc
            start = end
    return Batch(x, y, real, doc_ids)


class SFTSampler:
    """Random padded batches of examples, drawn like `tinylm.data.BatchSampler` draws windows.

    `sample()` returns (x, y), so `tinylm.train.train_step` runs on it unchanged.
    """

    def __init__(
        self,
        examples: Sequence[Example],
        batch_size: int,
        pad_id: int,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ) -> None:
        if not examples:
            raise ValueError("no examples to fine-tune on")
        self.examples = list(examples)
        self.batch_size = batch_size
        self.pad_id = pad_id
        self.device = torch.device(device)
        self.rng = random.Random(seed)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of batch_size random examples, each (B, T) on the device."""
        chosen = self.rng.sample(self.examples, min(self.batch_size, len(self.examples)))
        batch = pad_batch(chosen, self.pad_id).to(self.device)
        return batch.x, batch.y


# --------------------------------------------------------------------------- poem data

FORM_INSTRUCTIONS = {"五绝": "五言绝句", "七绝": "七言绝句", "五律": "五言律诗", "七律": "七言律诗"}


@dataclass(frozen=True)
class Instruction:
    """An instruction built from a poem: write a poem of this form on this title."""

    title: str
    form: str  # one of tinylm.poetry.FORMS
    answer: str  # the poem's body

    @property
    def prompt(self) -> str:
        """「以《题》为题，写一首七言绝句。」: the user's request."""
        return f"以《{self.title}》为题，写一首{FORM_INSTRUCTIONS[self.form]}。"

    def messages(self, with_answer: bool = True) -> list[dict]:
        """The conversation: the request, and the poem as the assistant's answer."""
        messages = [{"role": "user", "content": self.prompt}]
        if with_answer:
            messages.append({"role": "assistant", "content": self.answer})
        return messages


def poem_instructions(
    poems: Sequence[Poem], forms: Sequence[str] = tuple(FORM_INSTRUCTIONS)
) -> list[Instruction]:
    """An instruction for every poem of the given forms, its form read off its lines."""
    unknown = sorted(set(forms) - set(FORM_INSTRUCTIONS))
    if unknown:
        raise ValueError(f"unknown forms {unknown}; forms are {list(FORM_INSTRUCTIONS)}")
    instructions = []
    for poem in poems:
        form = classify_form(poem.content)
        if form in forms and poem.title.strip():
            instructions.append(Instruction(poem.title.strip(), form, poem.content))
    return instructions


def encode_instructions(
    instructions: Sequence[Instruction],
    tokenizer: Tokenizer,
    template: str = "chatml",
    max_tokens: int | None = None,
) -> list[Example]:
    """Tokenised instructions, dropping those longer than max_tokens (the model's context + 1)."""
    examples = [encode_chat(i.messages(), tokenizer, template) for i in instructions]
    return [e for e in examples if max_tokens is None or len(e) <= max_tokens]


# --------------------------------------------------------------------------- train, score


def finetune(
    model: GPT,
    examples: Sequence[Example],
    steps: int,
    batch_size: int = 16,
    lr: float = 3e-4,
    pad_id: int = 0,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Fine-tune the model in place with the pretraining step; returns the loss of each step.

    Which tokens count is decided by the examples' labels alone: pass masked examples for SFT,
    `Example.unmasked()` ones to train on every token as pretraining does. pad_id can be any
    id: padding follows the text, so no real token attends to it, and its labels are -100.
    """
    device = next(model.parameters()).device
    schedule = {"lr": lr, "min_lr": lr / 10, "warmup_steps": min(10, steps), "max_steps": steps}
    optimizer = train.build_optimizer(model, lr=lr, weight_decay=0.0, fused=device.type == "cuda")
    sampler = SFTSampler(examples, batch_size, pad_id, device, seed)
    autocast = hardware.autocast_context(device, "auto")  # as pretraining picks it
    scaler = hardware.grad_scaler(device, "auto")  # fp16 (GPUs without native bf16) only
    model.train()
    losses = []
    for step in progress_bar(range(steps), desc="fine-tune", disable=not progress):
        for group in optimizer.param_groups:
            group["lr"] = train.lr_at(step, **schedule)
        loss, _ = train.train_step(model, optimizer, sampler, autocast, scaler=scaler)
        losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def mean_loss(
    model: GPT, examples: Sequence[Example], pad_id: int = 0, batch_size: int = 32
) -> float:
    """Cross-entropy per counted token (labels != -100) over all examples, in nats."""
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for start in range(0, len(examples), batch_size):
        batch = pad_batch(examples[start : start + batch_size], pad_id).to(device)
        logits, _ = model(batch.x)  # (B, T, V)
        total += F.cross_entropy(
            logits.flatten(0, 1).float(),
            batch.y.flatten(),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        ).item()
        count += int((batch.y != IGNORE_INDEX).sum())
    return total / count


def answer(
    model: GPT,
    tokenizer: Tokenizer,
    instruction: Instruction,
    template: str = "chatml",
    max_new_tokens: int = 100,
    temperature: float = 0.0,
    seed: int = 0,
) -> str:
    """The model's answer to an instruction: generate after the prompt, stop at the end token."""
    device = next(model.parameters()).device
    prompt = render(instruction.messages(with_answer=False), template, add_generation_prompt=True)
    ids = tokenizer.encode(prompt)
    room = model.config.block_size - len(ids)
    if room < 1:
        raise ValueError(
            f"the prompt has {len(ids)} tokens, leaving no room in the model's "
            f"context of {model.config.block_size}"
        )
    end_id = tokenizer.encode(END_TOKEN[template])[0]
    idx = torch.tensor([ids], device=device)  # (1, T)
    generator = torch.Generator(device=device).manual_seed(seed)
    out = generate(
        model,
        idx,
        min(max_new_tokens, room),
        temperature=temperature,
        eot_id=end_id,
        generator=generator,
    )[0, len(ids) :].tolist()
    out = out[: out.index(end_id)] if end_id in out else out
    return tokenizer.decode([i for i in out if i < tokenizer.vocab_size])


def form_accuracy(
    model: GPT,
    tokenizer: Tokenizer,
    instructions: Sequence[Instruction],
    template: str = "chatml",
    temperature: float = 0.0,
    progress: bool = True,
) -> tuple[float, list[str]]:
    """The share of answers whose form (五绝, 七律, …) is the one asked for, and the answers."""
    answers = [
        answer(model, tokenizer, instruction, template, temperature=temperature, seed=i)
        for i, instruction in enumerate(
            progress_bar(instructions, desc="answer", disable=not progress)
        )
    ]
    hits = sum(classify_form(text) == i.form for text, i in zip(answers, instructions, strict=True))
    return hits / len(instructions), answers
