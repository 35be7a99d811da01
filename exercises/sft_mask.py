"""Exercise (notebook 06): the SFT label mask, so that only the answer is learned.

Write the function, then check it with `make exercises` or `pytest exercises -k sft`.
The checks compare it with the labels of `tinylm.sft.encode_chat` on small conversations.
"""

from collections.abc import Sequence

IGNORE_INDEX = -100  # the label F.cross_entropy skips (tinylm.sft.IGNORE_INDEX)


def sft_labels(ids: Sequence[int], answer_start: Sequence[int], end_id: int) -> list[int]:
    """Labels for fine-tuning: each answer token's own id, IGNORE_INDEX (-100) everywhere else.

    ids: one tokenised conversation. answer_start (not empty): the tokens that open an
    assistant answer, e.g. those of "<|im_start|>assistant\\n" (ChatML) or " [/INST] "
    (Llama 2); they belong to the prompt, not to the answer. An answer runs from the token
    after answer_start up to and including the next end_id ("<|im_end|>" or "</s>"), so the
    model learns to stop. Every answer of a conversation counts. An answer cut off before its
    end token (the context was full) counts up to the end of ids. No answer: all -100.
    Labels are not shifted (the model does that). Returns a new list as long as ids.
    """
    raise NotImplementedError("not implemented yet: write sft_labels in exercises/sft_mask.py")
