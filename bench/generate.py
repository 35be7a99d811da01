"""Generation speed (tokens/s) with and without the KV cache, on a randomly initialised model.

Greedy decoding of `--new-tokens` tokens (256 by default: the context then grows from 1 token to
exactly block_size 256, so the cache is used for every step) after a 1-token prompt, at batch 1
and 16, on the talk's `30m` preset shape by default. Three ways, all giving the same tokens:

- with the KV cache: only the new token runs through the model (`generate`, the default);
- without it, nanoGPT's way: the whole context runs through the model every step, but the output
  layer is applied to the last position only (`generate(use_cache=False)`);
- without it, the plain way (`--naive-batch-sizes`, batch 1 by default): the whole context runs
  through the model and the output layer, logits at every position, and the last one is kept,
  as a loop around `model(idx)` does.

Weights are random (speed does not depend on them); the script checks that every way produces
identical tokens, which holds in fp32 (in bf16 the ways round differently and greedy ties flip).

Run it with `python bench/generate.py` (CPU: a few minutes, mostly batch 16 without the cache).
It prints a table and writes JSON to ``data/reference/bench_generate_<device>.json`` (or
``--out``); it never asserts a timing.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch

from tinylm.machine import REFERENCE_DIR, machine, save_result, slug
from tinylm.model import GPT, preset
from tinylm.profiles import best_device
from tinylm.sampling import generate, plain_greedy
from tinylm.timing import DECODE_WARMUP_TOKENS, timed

DECODERS: dict[str, Callable[[GPT, torch.Tensor, int], torch.Tensor]] = {
    "with_cache": lambda model, idx, n: generate(model, idx, n, temperature=0, use_cache=True),
    "without_cache": lambda model, idx, n: generate(model, idx, n, temperature=0, use_cache=False),
    "plain": plain_greedy,
}
DESCRIPTIONS = {
    "with_cache": "with the KV cache",
    "without_cache": "without the cache (whole context, last-position logits)",
    "plain": "plain loop (whole context, logits at every position)",
}


def measure(
    model: GPT, batch_size: int, new_tokens: int, device: torch.device, plain: bool
) -> dict:
    """Tokens/s each way for one batch size, and the cache's speed-ups; tokens must agree."""
    prompt = torch.randint(
        model.config.vocab_size,
        (batch_size, 1),
        generator=torch.Generator().manual_seed(batch_size),
    ).to(device)
    ways = ["with_cache", "without_cache"] + (["plain"] if plain else [])
    row: dict = {"batch_size": batch_size, "new_tokens": new_tokens}
    reference = None
    for way in ways:
        print(f"  batch {batch_size}: {DESCRIPTIONS[way]}", flush=True)
        DECODERS[way](model, prompt, DECODE_WARMUP_TOKENS)  # untimed
        out, seconds = timed(DECODERS[way], model, prompt, new_tokens, device=prompt.device)
        if reference is not None and not torch.equal(out, reference):
            raise AssertionError(
                f"batch {batch_size}: greedy tokens differ between "
                f"{DESCRIPTIONS['with_cache']} and {DESCRIPTIONS[way]}"
            )
        reference = out if reference is None else reference
        row[f"{way}_s"] = round(seconds, 3)
        row[f"{way}_tokens_per_s"] = round(batch_size * new_tokens / seconds, 1)
    row["identical_tokens"] = True
    row["speed_up"] = round(row["without_cache_s"] / row["with_cache_s"], 2)
    if plain:
        row["speed_up_vs_plain"] = round(row["plain_s"] / row["with_cache_s"], 2)
    return row


def format_table(name: str, rows: list[dict]) -> str:
    """One line per batch size: tokens/s each way and the cache's speed-up."""
    lines = [
        f"{'model':<8}{'batch':>6}{'new tokens':>12}{'cache tok/s':>13}"
        f"{'no cache tok/s':>16}{'speed-up':>10}{'plain tok/s':>13}{'speed-up':>10}"
        "  identical"
    ]
    for r in rows:
        plain = (
            f"{r['plain_tokens_per_s']:>13,.0f}{r['speed_up_vs_plain']:>9.1f}x"
            if "plain_s" in r
            else f"{'-':>13}{'-':>10}"
        )
        lines.append(
            f"{name:<8}{r['batch_size']:>6}{r['new_tokens']:>12}"
            f"{r['with_cache_tokens_per_s']:>13,.0f}"
            f"{r['without_cache_tokens_per_s']:>16,.0f}{r['speed_up']:>9.1f}x{plain}"
            f"  {'yes' if r['identical_tokens'] else 'no'}"
        )
    return "\n".join(lines)


def main() -> None:
    device = torch.device(best_device())
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="30m", help="model preset (default: %(default)s)")
    parser.add_argument(
        "--batch-sizes", default="1,16", help="comma-separated batch sizes (default: %(default)s)"
    )
    parser.add_argument(
        "--naive-batch-sizes",
        default="1",
        help="batch sizes that also run the plain loop (default: %(default)s)",
    )
    parser.add_argument(
        "--new-tokens",
        type=int,
        default=256,
        help="tokens generated after a 1-token prompt (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, help="JSON file (default: data/reference/bench_generate_<device>.json)"
    )
    args = parser.parse_args()
    out = args.out or REFERENCE_DIR / f"bench_generate_{slug(device)}.json"
    torch.manual_seed(0)
    model = GPT(preset(args.model)).to(device).eval()
    info = machine(device)
    print(
        f"{info['device_name']} ({device}), torch {info['torch']}, "
        f"{info['torch_threads']} threads; preset {args.model} "
        f"({model.num_parameters() / 1e6:.1f}M parameters, random weights, fp32), "
        "greedy, "
        f"{args.new_tokens} new tokens after a 1-token prompt"
    )
    plain_sizes = {int(b) for b in args.naive_batch_sizes.split(",") if b}
    rows = [
        measure(model, int(b), args.new_tokens, device, int(b) in plain_sizes)
        for b in args.batch_sizes.split(",")
    ]
    print(format_table(args.model, rows))
    result = {
        "benchmark": "generate",
        "machine": info,
        "model": args.model,
        "parameters": model.num_parameters(),
        "block_size": model.config.block_size,
        "dtype": "float32",
        "decoding": "greedy",
        "prompt_tokens": 1,
        "warmup_tokens": DECODE_WARMUP_TOKENS,
        "results": rows,
    }
    print(f"saved {save_result(result, out)}")


if __name__ == "__main__":
    main()
