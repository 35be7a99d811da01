"""Writing text with a trained model: nanoGPT's sampling loop, and whole poems from it.

Temperature convention: ``temperature=0`` means greedy decoding (always the most likely token),
as in vLLM and the OpenAI API; transformers and TGI reject 0 instead (the talk's table).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tinylm.model import GPT
from tinylm.tokenizers import Tokenizer


def next_token(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick one id per row of logits (B, V): argmax at temperature 0, else a sample; → (B, 1)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature  # < 1 sharpens the distribution, > 1 flattens it
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))  # only the k best remain
    probs = F.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator)


@torch.no_grad()
def generate(model: GPT, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, eot_id: int | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Extend idx (B, T) one token at a time, up to max_new_tokens; → (B, T + new).

    The model runs in eval mode (no dropout). A row that has produced eot_id is finished and
    padded with eot_id; generation stops early once every row is finished.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be None or a positive integer, got {top_k}")
    was_training = model.training
    model.eval()
    finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)  # (B,)
    for _ in range(max_new_tokens):
        context = idx[:, -model.config.block_size:]  # (B, ≤ block_size): what the model sees
        logits, _ = model(context)  # (B, t, V)
        new = next_token(logits[:, -1, :].float(), temperature, top_k, generator)  # (B, 1)
        if eot_id is not None:
            new = new.masked_fill(finished[:, None], eot_id)
            finished |= new[:, 0] == eot_id
        idx = torch.cat((idx, new), dim=1)
        if eot_id is not None and bool(finished.all()):
            break
    model.train(was_training)
    return idx


def sample_poems(model: GPT, tokenizer: Tokenizer, prompts: list[str] | None = None, n: int = 5,
                 max_new_tokens: int = 200, temperature: float = 0.8, top_k: int | None = 200,
                 seed: int = 1337) -> list[str]:
    """n poems written from scratch, or n per prompt (len(prompts) * n), each cut at end-of-text.

    Every row starts with the end-of-text token, as every poem did in training, so the model
    begins a new document: the prompt (a title, say) and then what the model adds to it.
    """
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    poems = []
    for prompt in [""] if prompts is None else prompts:
        start = [tokenizer.eot_id, *tokenizer.encode(prompt)]
        idx = torch.tensor([start] * n, dtype=torch.long, device=device)  # (n, len(start))
        out = generate(model, idx, max_new_tokens, temperature, top_k, tokenizer.eot_id,
                       generator)
        poems += [decode_document(row[1:].tolist(), tokenizer) for row in out]
    return poems


def decode_document(ids: list[int], tokenizer: Tokenizer) -> str:
    """Decode ids up to the first end-of-text token.

    Ids past the tokenizer's vocabulary (the padding rows of the embedding) are dropped.
    """
    if tokenizer.eot_id in ids:
        ids = ids[:ids.index(tokenizer.eot_id)]
    return tokenizer.decode([i for i in ids if i < tokenizer.vocab_size])
