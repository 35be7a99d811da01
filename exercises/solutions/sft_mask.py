"""Solution (notebook 06): the SFT label mask, so that only the answer is learned."""

from collections.abc import Sequence

from tinylm.sft import IGNORE_INDEX  # -100: the label F.cross_entropy skips


def sft_labels(ids: Sequence[int], answer_start: Sequence[int], end_id: int) -> list[int]:
    """Labels for fine-tuning: each answer token's own id, IGNORE_INDEX (-100) everywhere else."""
    labels = [IGNORE_INDEX] * len(ids)  # the prompt does not count: start with nothing counted
    start, n = list(answer_start), len(answer_start)
    in_answer = False
    i = 0
    while i < len(ids):
        if not in_answer and list(ids[i : i + n]) == start:
            in_answer = True  # the header itself stays -100; the answer begins after it
            i += n
            continue
        if in_answer:
            labels[i] = ids[i]  # learn to predict this token
            in_answer = ids[i] != end_id  # the end token counts too, then the answer is over
        i += 1
    return labels
