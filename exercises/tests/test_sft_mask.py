"""Checks of exercises/sft_mask.py against tinylm.sft.encode_chat (notebook 06)."""

import pytest

from exercises.tests.checks import expect
from tinylm import sft
from tinylm.tokenizers import CharTokenizer

ASK = {"role": "user", "content": "以《春》为题，写一首五言绝句。"}
POEM = {"role": "assistant", "content": "春江花月夜，风山水云天。"}
ASK_AGAIN = {"role": "user", "content": "再写一首。"}
POEM_AGAIN = {"role": "assistant", "content": "山水云天人，春江归月夜。"}
SYSTEM = {"role": "system", "content": "你是诗人。"}
CONVERSATIONS = {
    "one answer": [ASK, POEM],
    "with a system prompt": [SYSTEM, ASK, POEM],
    "two answers": [ASK, POEM, ASK_AGAIN, POEM_AGAIN],
    "no answer": [ASK],
}
TEMPLATES = ("chatml", "llama2")

# --------------------------------------------------------------------------- the reference
# The only lines of this file that call tinylm: adapt them here if its API changes.

IGNORE = sft.IGNORE_INDEX  # -100


def reference_tokenizer(template):
    texts = [sft.render(messages, template) for messages in CONVERSATIONS.values()]
    return sft.add_chat_tokens(CharTokenizer([]), template, texts)


def reference_example(messages, template):
    """(ids, labels, answer_start, end_id, tokenizer) of a conversation."""
    tok = reference_tokenizer(template)
    example = sft.encode_chat(messages, tok, template)
    start = sft.IM_START + "assistant\n" if template == "chatml" else sft.E_INST
    end_id = tok.encode(sft.END_TOKEN[template])[0]
    return example.ids, example.labels, tok.encode(start), end_id, tok


# --------------------------------------------------------------------------- diagnoses


def check_labels(got, ids, expected, answer_start, end_id, tok):
    """got equals expected; else name the first wrong position and the rule it breaks."""
    __tracebackhide__ = True
    expect(isinstance(got, list), f"sft_labels should return a list, got {type(got).__name__}")
    expect(
        len(got) == len(ids),
        f"the labels must be as long as ids ({len(ids)}), got "
        f"{len(got)}: one label per token, not shifted",
    )
    for i, (have, want) in enumerate(zip(got, expected, strict=True)):
        if have == want:
            continue
        token = f"position {i} (token {tok.decode([ids[i]])!r})"
        if want != IGNORE and ids[i] == end_id:
            expect(
                False,
                f"the answer's end token must be counted (label {have} found at "
                f"position {i}, expected its id {want}): the model has to learn to "
                "stop",
            )
        if want != IGNORE and have == IGNORE:
            expect(
                False,
                f"{token} is part of an answer, so its label must be its own id {want}, got -100",
            )
        if want != IGNORE:
            expect(
                False,
                f"{token} is counted, so its label must be the token's own id {want},"
                f" got {have}: do not shift the labels, the model does that",
            )
        header = any(
            list(ids[j : j + len(answer_start)]) == list(answer_start)
            for j in range(max(0, i - len(answer_start) + 1), i + 1)
        )
        if header:
            why = (
                f"belongs to the answer's opening {tok.decode(answer_start)!r}, which is "
                "prompt, not answer"
            )
        elif i > 0 and expected[i - 1] != IGNORE:
            why = "comes after the answer's end token"
        else:
            why = "is part of the prompt"
        expect(
            False,
            f"{token} {why}, so its label must be -100, got {have}: only the answer "
            "and its end token count",
        )


def labels_of(exercise, ids, answer_start, end_id):
    ids_before = list(ids)
    got = exercise.sft_labels(ids, answer_start, end_id)
    expect(list(ids) == ids_before, "sft_labels changed its input ids; build a new list")
    return got


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("name", CONVERSATIONS)
def test_labels_equal_encode_chat(exercise, template, name):
    ids, labels, start, end_id, tok = reference_example(CONVERSATIONS[name], template)
    got = labels_of(exercise, ids, start, end_id)
    check_labels(got, ids, labels, start, end_id, tok)


@pytest.mark.parametrize("template", TEMPLATES)
def test_answer_at_the_end_of_the_sequence(exercise, template):
    ids, labels, start, end_id, tok = reference_example([ASK, POEM], template)
    last = max(i for i, label in enumerate(labels) if label != IGNORE)  # the end token
    ids, labels = ids[: last + 1], labels[: last + 1]
    got = labels_of(exercise, ids, start, end_id)
    check_labels(got, ids, labels, start, end_id, tok)


@pytest.mark.parametrize("cut", [1, 5])
def test_answer_cut_off_by_the_context_still_counts(exercise, cut):
    ids, labels, start, end_id, tok = reference_example([ASK, POEM], "chatml")
    first = next(i for i, label in enumerate(labels) if label != IGNORE)  # the answer starts
    ids, labels = ids[: first + cut], labels[: first + cut]
    got = labels_of(exercise, ids, start, end_id)
    check_labels(got, ids, labels, start, end_id, tok)


def test_end_token_in_the_prompt_does_not_count(exercise):
    ids, labels, start, end_id, tok = reference_example([SYSTEM, ASK, POEM], "chatml")
    expect(ids.count(end_id) == 3, "the test conversation should hold three end tokens")
    got = labels_of(exercise, ids, start, end_id)
    check_labels(got, ids, labels, start, end_id, tok)


def test_empty_conversation(exercise):
    got = exercise.sft_labels([], [5, 6], 7)
    expect(got == [], f"no tokens, no labels: sft_labels([], ...) should be [], got {got}")
