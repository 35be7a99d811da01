"""Writing text with a trained model: every decoding strategy of notebook 07, and whole poems.

The model gives logits (B, V) for the next token; a decoding strategy turns them into a choice.
Each step of `generate` is: repetition penalty → temperature → top-k → top-p → sample (or argmax
at temperature 0). Each transform is a small pure function here, so the notebook can plot it.
`beam_search` keeps the `num_beams` most likely continuations instead of one.

Temperature divides the logits: < 1 sharpens the distribution, > 1 flattens it. At 0 the
division is undefined, and frameworks disagree on what 0 means (the talk's table):

| framework    | default | range     | temperature 0                     |
|--------------|---------|-----------|-----------------------------------|
| transformers | 1       | (0, inf)  | error: use do_sample=False        |
| vLLM         | 1       | [0, inf)  | below 1e-5: greedy                |
| TGI          | 1       | (0, inf)  | error                             |
| Bedrock      | 0.5     | [0, 1]    | allowed                           |
| GPT-4 API    | 1       | [0, 2]    | allowed                           |

Here, as in vLLM and the OpenAI API, ``temperature=0`` means greedy decoding (always the most
likely token).

KV cache: by default the prompt runs through the model once (the prefill) and every later step
feeds only the new token, reusing the keys and values stored in a `KVCache`. The model's
position embeddings are absolute (positions 0 … block_size-1), so once a sequence outgrows
block_size, keeping the last block_size tokens shifts every token to a new position: the cached
keys, computed at the old positions, are stale. From then on the cache is dropped and the last
block_size tokens are recomputed each step, exactly as nanoGPT crops, so generation with and
without the cache computes the same logits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from tinylm.attention import KVCache
from tinylm.model import GPT
from tinylm.tokenizers import Tokenizer


def _check_args(
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    num_beams: int = 1,
) -> None:
    """Raise ValueError for a decoding parameter out of its range (NaN and infinity included)."""
    for name, value in (("temperature", temperature), ("repetition_penalty", repetition_penalty)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be None or a positive integer, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be None or in (0, 1], got {top_p}")
    if repetition_penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0 (1 = none), got {repetition_penalty}")
    if num_beams < 1:
        raise ValueError(f"num_beams must be a positive integer, got {num_beams}")


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits (..., V) divided by temperature (> 0): < 1 sharpens softmax, > 1 flattens it."""
    if temperature <= 0:
        raise ValueError(
            f"temperature must be > 0 to divide by it (0 = greedy: take the "
            f"argmax instead), got {temperature}"
        )
    return logits / temperature


def top_k_mask(logits: torch.Tensor, k: int) -> torch.Tensor:
    """True for the k largest logits of each row (..., V), ties with the k-th included."""
    _check_args(top_k=k)
    kth = torch.topk(logits, min(k, logits.size(-1))).values[..., [-1]]  # (..., 1)
    return logits >= kth


def top_p_mask(logits: torch.Tensor, p: float) -> torch.Tensor:
    """True for the nucleus of each row (..., V): the fewest most likely tokens with mass >= p.

    A token is kept if the tokens more likely than it hold less than p of the probability, so
    the most likely token is always kept, and p = 1 keeps every token. A tolerance of 1e-6
    absorbs float rounding, so that probabilities 0.5 and 0.3 do reach p = 0.8.
    """
    _check_args(top_p=p)
    if p == 1:
        return torch.ones_like(logits, dtype=torch.bool)
    probs = F.softmax(logits.float(), dim=-1)  # (..., V)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the more likely tokens
    keep_sorted = before < p - 1e-6
    keep_sorted[..., 0] = True
    return keep_sorted.scatter(-1, order, keep_sorted)  # back to vocabulary order


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Logits with all but the k largest of each row set to -inf (softmax gives them 0)."""
    return logits.masked_fill(~top_k_mask(logits, k), float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Logits with every token outside the top-p nucleus set to -inf (nucleus sampling)."""
    return logits.masked_fill(~top_p_mask(logits, p), float("-inf"))


def apply_repetition_penalty(
    logits: torch.Tensor, idx: torch.Tensor, penalty: float
) -> torch.Tensor:
    """Make the tokens already in each row less likely (CTRL, as in transformers).

    logits (B, V), idx (B, T): for every token id present in the row, a positive logit is
    divided by the penalty and a negative one multiplied by it (penalty > 1 discourages
    repeats, < 1 encourages them). Each id counts once, however often it occurs.
    """
    _check_args(repetition_penalty=penalty)
    seen = logits.gather(1, idx)  # (B, T): the logits of the tokens already written
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, idx, seen)


def next_token(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one id per row of logits (B, V): argmax at temperature 0, else a sample; → (B, 1)."""
    _check_args(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = F.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator)


@torch.no_grad()
def next_logits(model: GPT, idx: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
    """Logits (B, V) for the token after idx (B, T), in fp32.

    With a cache, only the tokens it has not seen run through the model (the whole prompt at the
    prefill, then one token a step); without one, the last block_size tokens are recomputed.
    """
    if cache is not None:
        logits, _ = model(idx[:, cache.seq_len :], cache=cache, last_only=True)  # (B, 1, V)
    else:
        logits, _ = model(idx[:, -model.config.block_size :], last_only=True)  # (B, 1, V)
    return logits[:, -1, :].float()


def _cache_for(model: GPT, idx: torch.Tensor, cache: KVCache | None) -> KVCache | None:
    """The cache to use for the next step: dropped once idx (B, T) outgrows block_size.

    Past block_size the window slides, every token moves to a new absolute position, and the
    cached keys and values (computed at the old positions) no longer apply.
    """
    return cache if idx.size(1) <= model.config.block_size else None


@torch.no_grad()
def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    eot_id: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Extend idx (B, T) one token at a time, up to max_new_tokens; → (B, T + new).

    The model runs in eval mode (no dropout). A row that has produced eot_id is finished: it is
    padded with eot_id and the model no longer runs on it, so a batch costs what its unfinished
    rows cost; generation stops once every row is finished. The sampling step still draws for
    every row, so each row's tokens are the ones it would get in a batch where no row ended.
    use_cache=False recomputes the whole context every step (the slow baseline, same tokens).
    """
    _check_args(temperature, top_k, top_p, repetition_penalty)
    was_training = model.training
    model.eval()
    cache = model.new_cache() if use_cache else None
    finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)  # (B,)
    running = torch.arange(idx.size(0), device=idx.device)  # rows the model still runs on
    for _ in range(max_new_tokens):
        cache = _cache_for(model, idx, cache)
        logits = _running_logits(model, idx, running, cache)  # (B, V)
        if repetition_penalty != 1.0:
            logits = apply_repetition_penalty(logits, idx, repetition_penalty)
        new = next_token(
            logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
        )  # (B, 1)
        if eot_id is not None:
            new = new.masked_fill(finished[:, None], eot_id)
            finished |= new[:, 0] == eot_id
        idx = torch.cat((idx, new), dim=1)
        if eot_id is not None:
            if bool(finished.all()):
                break
            running, cache = _drop_finished(running, finished, cache)
    model.train(was_training)
    return idx


def _running_logits(
    model: GPT, idx: torch.Tensor, running: torch.Tensor, cache: KVCache | None
) -> torch.Tensor:
    """Next-token logits (B, V) computed for the running rows only; finished rows get zeros.

    The zeros are never used (a finished row's token is replaced by end-of-text), but the rows
    keep their place, so sampling draws the same random numbers for every row as without them.
    """
    if running.numel() == idx.size(0):
        return next_logits(model, idx, cache)
    logits = next_logits(model, idx[running], cache)  # (R, V)
    full = logits.new_zeros(idx.size(0), logits.size(-1))  # (B, V)
    full[running] = logits
    return full


def _drop_finished(
    running: torch.Tensor, finished: torch.Tensor, cache: KVCache | None
) -> tuple[torch.Tensor, KVCache | None]:
    """The running rows without those that just finished, and the cache cut to match."""
    still = ~finished[running]  # (R,)
    if bool(still.all()):
        return running, cache
    if cache is not None:
        cache.select(still.nonzero().squeeze(1))
    return running[still], cache


@torch.no_grad()
def plain_greedy(model: GPT, idx: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """The plainest loop around ``model(idx)``: the whole context each step, logits everywhere.

    Greedy, no cache: the baseline bench/generate.py measures the KV cache against (the same
    tokens as `generate(..., temperature=0)`). nanoGPT's loop also runs the whole context every
    step, but its forward applies the output layer to the last position only, as
    ``generate(..., use_cache=False)`` does.
    """
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -model.config.block_size :])  # (B, T, V)
        idx = torch.cat((idx, logits[:, -1, :].argmax(dim=-1, keepdim=True)), dim=1)
    return idx


@torch.no_grad()
def beam_search(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    num_beams: int = 4,
    length_penalty: float = 1.0,
    eot_id: int | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """The most likely continuation of each prompt row of idx (B, T) found by beam search.

    Every step extends each of the num_beams running beams by every token and keeps the
    num_beams best sums of log-probabilities. A beam that emits eot_id is finished and scored
    sum log-prob / length ** length_penalty (length = new tokens, eot included), as in
    transformers: length_penalty > 0 favours longer texts, < 0 shorter ones. A prompt is done
    once it has num_beams finished beams and no running beam, scored at its current length,
    beats the worst of them; at max_new_tokens the running beams count as finished.
    Returns (B, T + new), shorter results padded with eot_id (or 0 without one).
    """
    _check_args(num_beams=num_beams)
    was_training = model.training
    model.eval()
    b, t = idx.shape
    beams = idx.repeat_interleave(num_beams, dim=0)  # (B*K, T): K beams per prompt
    scores = torch.zeros(b, num_beams, device=idx.device)  # (B, K) sum of log-probs
    scores[:, 1:] = float("-inf")  # the K beams start identical: count the first only
    finished = [BeamHypotheses(num_beams, length_penalty) for _ in range(b)]
    cache = model.new_cache() if use_cache else None
    for step in range(max_new_tokens):
        cache = _cache_for(model, beams, cache)
        logprobs = F.log_softmax(next_logits(model, beams, cache), dim=-1)  # (B*K, V)
        vocab = logprobs.size(-1)
        candidates = (scores.view(-1, 1) + logprobs).view(b, -1)  # (B, K*V)
        # 2K candidates per prompt: enough to keep K running even if K of them end here
        top_scores, top_ids = candidates.topk(2 * num_beams, dim=-1)  # (B, 2K)
        beam, token = top_ids // vocab, top_ids % vocab  # (B, 2K): which beam, which next token
        running = []  # (row of beams, token, sum log-prob) of every prompt's K running beams
        for i, hypotheses in enumerate(finished):
            top = zip(top_scores[i].tolist(), beam[i].tolist(), token[i].tolist(), strict=True)
            own = beams[i * num_beams : (i + 1) * num_beams, t:]  # (K, step): new ids so far
            kept = hypotheses.process(top, own, eot_id, step + 1)
            running += [(i * num_beams + k, tok, score) for k, tok, score in kept]
        if all(h.done for h in finished):
            break
        rows = torch.tensor([row for row, _, _ in running], device=idx.device)  # (B*K,)
        tokens = torch.tensor([tok for _, tok, _ in running], device=idx.device)  # (B*K,)
        beams = torch.cat((beams[rows], tokens[:, None]), 1)  # each extends the beam in rows
        scores = torch.tensor([s for _, _, s in running], device=idx.device).view(b, num_beams)
        if cache is not None:
            cache.select(rows)
    else:  # max_new_tokens reached: running beams are hypotheses too
        for i, hypotheses in enumerate(finished):
            for k in range(0 if hypotheses.done else num_beams):
                new_ids = beams[i * num_beams + k, t:].tolist()
                hypotheses.add(scores[i, k].item(), new_ids, max(max_new_tokens, 1))
    model.train(was_training)
    return torch.cat((idx, _best_padded(finished, 0 if eot_id is None else eot_id, idx)), dim=1)


class BeamHypotheses:
    """One prompt's finished beams: the num_beams best, scored sum log-prob / length ** penalty.

    Like transformers' BeamHypotheses. `process` sorts one step's candidates of the prompt
    into finished beams (kept here) and the beams that run on.
    """

    def __init__(self, num_beams: int, length_penalty: float) -> None:
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.best: list[tuple[float, list[int]]] = []  # (score, new ids), best first
        self.done = False  # no running beam can get in any more: stop extending this prompt

    def score(self, logprob: float, length: int) -> float:
        """A sum of log-probs over length new tokens, made comparable across lengths."""
        return logprob / length**self.length_penalty

    def add(self, logprob: float, ids: list[int], length: int) -> None:
        """Keep a finished beam if it is among the num_beams best so far."""
        self.best.append((self.score(logprob, length), ids))
        self.best.sort(key=lambda pair: pair[0], reverse=True)
        del self.best[self.num_beams :]

    def process(
        self,
        top: Iterable[tuple[float, int, int]],
        beams: torch.Tensor,
        eot_id: int | None,
        length: int,
    ) -> list[tuple[int, int, float]]:
        """The K beams to run on, (beam, token, sum log-prob), from the 2K best candidates.

        top: (sum log-prob, beam, token), best first; beams (K, length - 1): the new ids so far.
        A candidate ending in eot_id finishes its beam, if it is among the K best; the K best
        others run on. Once the best running beam cannot beat the worst finished one, done.
        """
        kept = []
        for rank, (logprob, beam, token) in enumerate(top):
            if token == eot_id:
                if rank < self.num_beams and not self.done:  # a finished beam among the K best
                    self.add(logprob, beams[beam].tolist() + [token], length)
            elif len(kept) < self.num_beams:
                kept.append((beam, token, logprob))
        if not self.done and len(self.best) == self.num_beams:
            self.done = self.best[-1][0] >= self.score(kept[0][2], length)
        return kept


def _best_padded(finished: list[BeamHypotheses], pad: int, idx: torch.Tensor) -> torch.Tensor:
    """(B, new): each prompt's best finished beam, the shorter ones padded with pad, as idx."""
    best = [hypotheses.best[0][1] for hypotheses in finished]
    width = max(len(ids) for ids in best)
    return torch.tensor(
        [ids + [pad] * (width - len(ids)) for ids in best], dtype=idx.dtype, device=idx.device
    ).view(len(best), width)


def sample_poems(
    model: GPT,
    tokenizer: Tokenizer,
    prompts: list[str] | None = None,
    n: int = 5,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = 200,
    seed: int = 1337,
    *,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    use_cache: bool = True,
) -> list[str]:
    """n poems written from scratch, or n per prompt (len(prompts) * n), each cut at end-of-text.

    Every row starts with the end-of-text token, as every poem did in training, so the model
    begins a new document: the prompt (a title, say) and then what the model adds to it.
    """
    documents = sample_documents(
        model,
        tokenizer,
        prompts,
        n,
        max_new_tokens,
        temperature,
        top_k,
        seed,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        use_cache=use_cache,
    )
    return [text for text, _ in documents]


def sample_documents(
    model: GPT,
    tokenizer: Tokenizer,
    prompts: list[str] | None = None,
    n: int = 5,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = 200,
    seed: int = 1337,
    *,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    use_cache: bool = True,
    batch_size: int | None = None,
) -> list[tuple[str, bool]]:
    """`sample_poems`, each poem with whether the model ended it (wrote end-of-text) itself.

    Rows are written batch_size at a time (all n of a prompt at once by default) from one
    generator, so the poems depend on the seed and the batch size, not on the device's memory.
    """
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    step = batch_size or max(n, 1)
    documents = []
    for prompt in [""] if prompts is None else prompts:
        for first in range(0, n, step):
            rows = min(step, n - first)
            idx = document_start(tokenizer, prompt, rows, device)  # (rows, 1 + len(prompt))
            out = generate(
                model,
                idx,
                max_new_tokens,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                repetition_penalty=repetition_penalty,
                eot_id=tokenizer.eot_id,
                generator=generator,
                use_cache=use_cache,
            )
            for row in out[:, 1:].tolist():
                documents.append((decode_document(row, tokenizer), tokenizer.eot_id in row))
    return documents


def beam_poems(
    model: GPT,
    tokenizer: Tokenizer,
    prompts: list[str] | None = None,
    max_new_tokens: int = 200,
    num_beams: int = 4,
    length_penalty: float = 1.0,
    use_cache: bool = True,
) -> list[str]:
    """One poem per prompt (or one from scratch) by beam search: deterministic, no sampling."""
    device = next(model.parameters()).device
    texts = [""] if prompts is None else prompts
    idx = [document_start(tokenizer, prompt, 1, device) for prompt in texts]
    outs = [
        beam_search(
            model, row, max_new_tokens, num_beams, length_penalty, tokenizer.eot_id, use_cache
        )
        for row in idx
    ]  # prompts differ in length
    return [decode_document(out[0, 1:].tolist(), tokenizer) for out in outs]


def document_start(
    tokenizer: Tokenizer, prompt: str = "", n: int = 1, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(n, 1 + len(ids)) rows of end-of-text, then the prompt: how every poem began in training."""
    start = [tokenizer.eot_id, *tokenizer.encode(prompt)]
    return torch.tensor([start] * n, dtype=torch.long, device=device)


def decode_document(ids: list[int], tokenizer: Tokenizer) -> str:
    """Decode ids up to the first end-of-text token.

    Ids past the tokenizer's vocabulary (the padding rows of the embedding) are dropped.
    """
    if tokenizer.eot_id in ids:
        ids = ids[: ids.index(tokenizer.eot_id)]
    return tokenizer.decode([i for i in ids if i < tokenizer.vocab_size])
