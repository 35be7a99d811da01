"""Generation speed (tokens/s) with and without the KV cache, on a randomly initialised model.

Greedy decoding (temperature 0) after a 1-token prompt, at batch 1 and 16, each way run once
untimed for a few tokens first. The ways:

- with the KV cache: only the new token runs through the model (`generate`, the course's way);
- without it, nanoGPT's way: the whole context runs through the model every step, but the output
  layer is applied to the last position only (`generate(use_cache=False)`);
- without it, the plain way (`--plain-batch-sizes`, batch 1 by default): the whole context runs
  through the model and the output layer, logits at every position, and the last one is kept,
  as a loop around `model(idx)` does (`tinylm.sampling.plain_greedy`);
- the cache with one thing changed (`--variants`): 1 thread instead of all (`threads1`), bf16
  autocast (`bf16`). torch.compile is not tried: the cache grows by torch.cat, so every step has
  new shapes and recompiles.

Two setups are recorded. By default the talk's `30m` preset decodes 256 tokens: the context grows
from 1 token to exactly its block_size, so the cache serves every step; that file is
``bench_generate_<device>.json``. With ``--model char-cpu --new-tokens 127,255 --plain-batch-sizes
1,16 --variants threads1,bf16`` (``make bench`` runs both) the cpu profile's model writes 127
tokens (its context fills up exactly) and 255: past block_size the sampler drops the cache and
recomputes the last block_size tokens every step, as nanoGPT does throughout; that file is
``bench_generate_char-cpu_<device>.json``.

Weights are random (speed does not depend on them). Whether every fp32 way wrote the tokens the
cache wrote is recorded (``identical_tokens``), not asserted: they should agree, though a near-tie
could round either way; in bf16 they are expected to differ (``bf16_same_tokens``). It prints a
table and writes the JSON under ``data/reference/`` (or ``--out``); it never asserts a timing.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch
from common import load_average, machine, save_result, slug

from tinylm.hardware import autocast_context, best_device
from tinylm.model import GPT, preset
from tinylm.reference import REFERENCE_DIR
from tinylm.sampling import generate, plain_greedy
from tinylm.timing import DECODE_WARMUP_TOKENS, num_threads, timed

DEFAULT_MODEL = "30m"


@dataclass(frozen=True)
class Way:
    """One way to decode greedily, and what it changes from the cache's way."""

    key: str
    description: str
    cache: bool = True
    plain: bool = False  # plain_greedy: logits at every position, no cache
    threads: int | None = None  # torch threads while it runs; None: as set (all cores)
    dtype: str = "float32"  # "bfloat16": bf16 autocast

    def decode(self, model: GPT, idx: torch.Tensor, new_tokens: int) -> torch.Tensor:
        """(B, T) prompt → (B, T + new_tokens), greedy, this way."""
        if self.plain:
            return plain_greedy(model, idx, new_tokens)
        with autocast_context(idx.device, self.dtype):  # float32: changes nothing
            return generate(model, idx, new_tokens, temperature=0, use_cache=self.cache)


WAYS = {
    way.key: way
    for way in [
        Way("with_cache", "with the KV cache"),
        Way("without_cache", "without the cache (whole context, last-position logits)", False),
        Way("plain", "plain loop (whole context, logits at every position)", False, True),
        Way("threads1", "with the KV cache, 1 thread", threads=1),
        Way("bf16", "with the KV cache, bf16 autocast", dtype="bfloat16"),
    ]
}
VARIANTS = ("threads1", "bf16")


def measure(
    model: GPT, ways: list[Way], batch_size: int, new_tokens: int, device: torch.device
) -> dict:
    """Tokens/s each way for one batch size and length, and whether each wrote the same tokens.

    speed_up and speed_up_vs_plain: how many times faster the cache is than nanoGPT's loop and
    the plain one; <variant>_vs_cache: a variant's tokens/s over the cache's.
    """
    prompt = torch.randint(
        model.config.vocab_size,
        (batch_size, 1),
        generator=torch.Generator().manual_seed(batch_size),
    ).to(device)
    row: dict = {"batch_size": batch_size, "new_tokens": new_tokens}
    cached, same, seconds_of = None, {}, {}
    for way in ways:
        print(f"  batch {batch_size}, {new_tokens} tokens: {way.description}", flush=True)
        with num_threads(way.threads):
            way.decode(model, prompt, DECODE_WARMUP_TOKENS)  # untimed
            out, seconds = timed(way.decode, model, prompt, new_tokens, device=device)
        cached = out if cached is None else cached
        same[way], seconds_of[way.key] = torch.equal(out, cached), seconds
        row[f"{way.key}_s"] = round(seconds, 3)
        row[f"{way.key}_tokens_per_s"] = round(batch_size * new_tokens / seconds, 1)
    row["identical_tokens"] = all(same[way] for way in ways if way.dtype == "float32")
    cache_s = seconds_of["with_cache"]
    row["speed_up"] = round(seconds_of["without_cache"] / cache_s, 2)
    if "plain" in seconds_of:
        row["speed_up_vs_plain"] = round(seconds_of["plain"] / cache_s, 2)
    for way in ways:
        if way.key in VARIANTS:
            row[f"{way.key}_vs_cache"] = round(cache_s / seconds_of[way.key], 2)
        if way.dtype != "float32":
            row[f"{way.key}_same_tokens"] = same[way]
    return row


def format_table(name: str, ways: list[Way], rows: list[dict]) -> str:
    """One line per batch size, length and way: tokens/s and its ratio to the cache's."""
    lines = [f"{'model':<10}{'batch':>6}{'new':>5}  {'way':<56}{'tokens/s':>10}{'x cache':>9}"]
    for r in rows:
        for way in ways:
            if f"{way.key}_s" not in r:
                continue
            lines.append(
                f"{name:<10}{r['batch_size']:>6}{r['new_tokens']:>5}  {way.description:<56}"
                f"{r[f'{way.key}_tokens_per_s']:>10,.0f}"
                f"{r[f'{way.key}_tokens_per_s'] / r['with_cache_tokens_per_s']:>8.2f}x"
            )
        same = "yes" if r["identical_tokens"] else "NO"
        lines.append(f"{'':<21}  every fp32 way wrote the cache's tokens: {same}")
    return "\n".join(lines)


def numbers(text: str) -> list[int]:
    """argparse type: comma-separated positive integers."""
    values = [int(part) for part in text.split(",") if part.strip()]
    if any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def main() -> None:
    device = torch.device(best_device())
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model preset (%(default)s)")
    parser.add_argument("--batch-sizes", type=numbers, default=[1, 16], help="e.g. 1,16")
    parser.add_argument(
        "--plain-batch-sizes",
        type=numbers,
        default=[1],
        help="batch sizes that also run the plain loop (default: 1)",
    )
    parser.add_argument(
        "--new-tokens",
        type=numbers,
        default=[256],
        help="tokens generated after a 1-token prompt, comma-separated (default: 256)",
    )
    parser.add_argument(
        "--variants",
        default="",
        help=f"ways besides the cache and no cache, comma-separated: {', '.join(VARIANTS)}",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="JSON file (default: data/reference/bench_generate[_<model>]_<device>.json)",
    )
    args = parser.parse_args()
    variants = [name.strip() for name in args.variants.split(",") if name.strip()]
    if set(variants) - set(VARIANTS):
        parser.error(f"unknown variants {sorted(set(variants) - set(VARIANTS))}; use {VARIANTS}")
    model_part = "" if args.model == DEFAULT_MODEL else f"_{args.model}"
    out = args.out or REFERENCE_DIR / f"bench_generate{model_part}_{slug(device)}.json"
    torch.manual_seed(0)
    model = GPT(preset(args.model)).to(device).eval()
    info = machine(device)
    print(
        f"{info['device_name']} ({device}), torch {info['torch']}, "
        f"{info['torch_threads']} threads, load average {info['load_average_1min']}; preset "
        f"{args.model} ({model.num_parameters() / 1e6:.1f}M parameters, context "
        f"{model.config.block_size}, random weights, fp32), greedy after a 1-token prompt"
    )
    rows = []
    for batch_size in args.batch_sizes:
        keys = ["with_cache", "without_cache"]
        keys += ["plain"] if batch_size in args.plain_batch_sizes else []
        ways = [WAYS[key] for key in keys + variants]
        rows += [measure(model, ways, batch_size, n, device) for n in args.new_tokens]
    print(format_table(args.model, list(WAYS.values()), rows))
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
        "ways": {key: WAYS[key].description for key in WAYS if any(f"{key}_s" in r for r in rows)},
        "results": rows,
        "load_average_1min_end": load_average(),
    }
    print(f"saved {save_result(result, out)}")


if __name__ == "__main__":
    main()
