"""Generation speed (tokens/s) with and without the KV cache, on a randomly initialised model.

Greedy decoding of `--new-tokens` tokens (256 by default: the context then grows from 1 token to
exactly block_size 256, so the cache is used for every step) after a 1-token prompt, at batch 1
and 16, on the talk's `30m` preset shape by default. Without the cache every step recomputes the
whole context; with it, only the new token runs through the model. Weights are random (speed
does not depend on them); both ways must produce identical tokens, which the script checks.

Run it with `python bench/generate.py` (CPU: a few minutes, mostly batch 16 without the cache).
It prints a table and writes JSON to ``data/reference/bench_generate_<device>.json`` (or
``--out``); it never asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from machine_info import ROOT, machine, slug

from tinylm.model import GPT, preset
from tinylm.profiles import best_device
from tinylm.sampling import generate

WARMUP_TOKENS = 8  # untimed tokens each way first (allocator, kernels, caches)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so the clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timed_generate(model: GPT, prompt: torch.Tensor, new_tokens: int,
                   use_cache: bool) -> tuple[torch.Tensor, float]:
    """Greedy tokens (B, 1 + new_tokens) and the seconds they took."""
    device = prompt.device
    generate(model, prompt, WARMUP_TOKENS, temperature=0, use_cache=use_cache)
    sync(device)
    start = time.perf_counter()
    out = generate(model, prompt, new_tokens, temperature=0, use_cache=use_cache)
    sync(device)
    return out, time.perf_counter() - start


def measure(model: GPT, batch_size: int, new_tokens: int, device: torch.device) -> dict:
    """Tokens/s with and without the cache for one batch size; the outputs must be identical."""
    prompt = torch.randint(model.config.vocab_size, (batch_size, 1),
                           generator=torch.Generator().manual_seed(batch_size)).to(device)
    print(f"  batch {batch_size}: with the cache", flush=True)
    cached, cached_s = timed_generate(model, prompt, new_tokens, use_cache=True)
    print(f"  batch {batch_size}: without the cache (recomputing the context every step)",
          flush=True)
    full, full_s = timed_generate(model, prompt, new_tokens, use_cache=False)
    if not torch.equal(cached, full):
        raise AssertionError(f"batch {batch_size}: greedy tokens differ with and without the "
                             "KV cache")
    tokens = batch_size * new_tokens
    return {"batch_size": batch_size, "new_tokens": new_tokens, "identical_tokens": True,
            "with_cache_s": round(cached_s, 3), "without_cache_s": round(full_s, 3),
            "with_cache_tokens_per_s": round(tokens / cached_s, 1),
            "without_cache_tokens_per_s": round(tokens / full_s, 1),
            "speed_up": round(full_s / cached_s, 2)}


def format_table(name: str, rows: list[dict]) -> str:
    """One line per batch size: tokens/s each way and the cache's speed-up."""
    lines = [f"{'model':<8}{'batch':>6}{'new tokens':>12}{'cache tok/s':>13}"
             f"{'no cache tok/s':>16}{'speed-up':>10}  identical"]
    for r in rows:
        lines.append(f"{name:<8}{r['batch_size']:>6}{r['new_tokens']:>12}"
                     f"{r['with_cache_tokens_per_s']:>13,.0f}"
                     f"{r['without_cache_tokens_per_s']:>16,.0f}{r['speed_up']:>9.1f}x"
                     f"  {'yes' if r['identical_tokens'] else 'no'}")
    return "\n".join(lines)


def main() -> None:
    device = torch.device(best_device())
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="30m", help="model preset (default: %(default)s)")
    parser.add_argument("--batch-sizes", default="1,16",
                        help="comma-separated batch sizes (default: %(default)s)")
    parser.add_argument("--new-tokens", type=int, default=256,
                        help="tokens generated after a 1-token prompt (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="JSON file (default: data/reference/"
                        "bench_generate_<device>.json)")
    args = parser.parse_args()
    out = args.out or ROOT / "data" / "reference" / f"bench_generate_{slug(device)}.json"
    torch.manual_seed(0)
    model = GPT(preset(args.model)).to(device).eval()
    info = machine(device)
    print(f"{info['device_name']} ({device}), torch {info['torch']}, "
          f"{info['torch_threads']} threads; preset {args.model} "
          f"({model.num_parameters() / 1e6:.1f}M parameters, random weights, fp32), greedy, "
          f"{args.new_tokens} new tokens after a 1-token prompt")
    rows = [measure(model, int(b), args.new_tokens, device) for b in args.batch_sizes.split(",")]
    print(format_table(args.model, rows))
    result = {"benchmark": "generate", "machine": info, "model": args.model,
              "parameters": model.num_parameters(), "block_size": model.config.block_size,
              "dtype": "float32", "decoding": "greedy", "prompt_tokens": 1,
              "warmup_tokens": WARMUP_TOKENS, "results": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
