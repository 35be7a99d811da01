"""Training throughput (tokens/s, MFU) per model preset, adding one speed-up at a time.

The ladder, each rung keeping the ones before it: fp32 with attention by hand → SDPA (fused
attention) → bf16 autocast → fused AdamW → torch.compile. Every rung runs tinylm.train's own
`train_step` on random token ids (speed does not depend on the text) with dropout 0, after
`--warmup` untimed steps (which include compiling). A rung that does not apply on the device is
skipped with the reason; one that fails is recorded with its error. MFU is reported only on GPUs
listed in tinylm.hardware.PEAK_FLOPS.

Run it with `python bench/train_throughput.py` (CPU: about four minutes). It prints a table and
writes JSON to ``data/reference/bench_train_throughput_<device>.json`` (or ``--out``), rewritten
after each preset; it never asserts a timing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from common import failure, machine, save_result, slug

from tinylm.data import BatchSampler
from tinylm.hardware import autocast_context, best_device, mfu, peak_flops
from tinylm.model import GPT, flops_per_token, preset
from tinylm.reference import REFERENCE_DIR
from tinylm.train import build_optimizer, timed_steps

# (rung, what it changes): each rung applies its change on top of the previous rungs.
LADDER = [
    (
        "fp32, attention by hand",
        {"attention": "manual", "dtype": "float32", "fused": False, "compile": False},
    ),
    ("+ SDPA", {"attention": "sdpa"}),
    ("+ bf16 autocast", {"dtype": "bfloat16"}),
    ("+ fused AdamW", {"fused": True}),
    ("+ torch.compile", {"compile": True}),
]
DEFAULTS = {  # device type: presets, batch size, timed steps, warmup steps
    "cuda": (["30m", "124m"], 64, 20, 5),
    "mps": (["char-cpu", "30m"], 16, 5, 2),
    "cpu": (["char-cpu", "30m"], 8, 8, 2),
}


def not_applicable(device: torch.device, settings: dict) -> str | None:
    """Why a rung cannot run on this device, or None when it can."""
    if (
        settings["dtype"] == "bfloat16"
        and device.type == "cuda"
        and not torch.cuda.is_bf16_supported()
    ):
        return "this GPU has no bf16 support (needs Ampere or newer)"
    if settings["compile"] and device.type == "mps":
        return "torch.compile does not support training on MPS"
    return None


def measure(
    name: str, settings: dict, device: torch.device, batch_size: int, steps: int, warmup: int
) -> dict:
    """Tokens/s of `steps` training steps of preset `name` with these settings."""
    torch.manual_seed(0)
    config = preset(name, attention=settings["attention"])
    model = GPT(config).to(device)
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.1, fused=settings["fused"])
    step_model = torch.compile(model) if settings["compile"] else model
    tokens = np.random.default_rng(0).integers(0, config.vocab_size, 1 << 20, dtype=np.uint32)
    sampler = BatchSampler(tokens, batch_size, config.block_size, device)
    autocast = autocast_context(device, settings["dtype"])
    timing = timed_steps(step_model, optimizer, sampler, autocast, steps, warmup=warmup)
    tokens_per_s = timing["tokens_per_s"]
    return {
        "tokens_per_s": round(tokens_per_s, 1),
        "ms_per_step": round(timing["ms_per_step"], 1),
        "mfu": mfu(flops_per_token(config), tokens_per_s, peak_flops(device)),
        "warmup_s": round(timing["warmup_s"], 2),
        "loss": round(timing["loss"], 3),
    }


def run_ladder(
    name: str,
    device: torch.device,
    batch_size: int,
    steps: int,
    warmup: int,
    rungs: int = len(LADDER),
) -> list[dict]:
    """The first `rungs` rungs of LADDER for one preset."""
    rows, settings = [], {}
    for rung, change in LADDER[:rungs]:
        settings = {**settings, **change}
        row = {
            "preset": name,
            "rung": rung,
            **settings,
            "batch_size": batch_size,
            "block_size": preset(name).block_size,
        }
        print(f"  {name}: {rung}", flush=True)
        reason = not_applicable(device, settings)
        if reason:
            rows.append({**row, "status": f"skipped: {reason}"})
            continue
        try:
            rows.append(
                {
                    **row,
                    "status": "ok",
                    **measure(name, settings, device, batch_size, steps, warmup),
                }
            )
        except Exception as error:  # record why a rung fails (e.g. no compiler) and go on
            rows.append({**row, "status": failure(error)})
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def format_table(rows: list[dict]) -> str:
    """One line per preset and rung: tokens/s, ms per step, speed-up over the first rung, MFU."""
    lines = [
        f"{'preset':<13}{'rung':<26}{'tokens/s':>11}{'ms/step':>10}{'speed-up':>10}"
        f"{'MFU':>8}{'warmup s':>10}  status"
    ]
    base: dict[str, float] = {}
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"{r['preset']:<13}{r['rung']:<26}{'':>49}  {r['status']}")
            continue
        base.setdefault(r["preset"], r["tokens_per_s"])
        mfu_text = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        lines.append(
            f"{r['preset']:<13}{r['rung']:<26}{r['tokens_per_s']:>11,.0f}"
            f"{r['ms_per_step']:>10,.1f}{r['tokens_per_s'] / base[r['preset']]:>9.2f}x"
            f"{mfu_text:>8}{r['warmup_s']:>10.1f}  ok"
        )
    return "\n".join(lines)


def main() -> None:
    device = torch.device(best_device())
    presets, batch_size, steps, warmup = DEFAULTS[device.type]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--presets",
        default=",".join(presets),
        help="comma-separated model presets (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=batch_size,
        help="sequences per step (default: %(default)s)",
    )
    parser.add_argument("--steps", type=int, default=steps, help="timed steps per rung")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed steps per rung")
    parser.add_argument(
        "--rungs",
        type=int,
        default=len(LADDER),
        choices=range(1, len(LADDER) + 1),
        help="climb only the first N rungs (default: all %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="JSON file (default: data/reference/bench_train_throughput_<device>.json)",
    )
    args = parser.parse_args()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out = args.out or REFERENCE_DIR / f"bench_train_throughput_{slug(device)}.json"
    info = machine(device)
    print(
        f"{info['device_name']} ({device}), torch {info['torch']}, "
        f"{info['torch_threads']} threads; batch {args.batch_size}, {args.steps} timed steps "
        f"after {args.warmup} warmup steps per rung"
    )
    rows: list[dict] = []
    result = {
        "benchmark": "train_throughput",
        "machine": info,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "peak_flops": peak_flops(device),
        "results": rows,
    }
    for name in args.presets.split(","):
        rows += run_ladder(
            name.strip(), device, args.batch_size, args.steps, args.warmup, args.rungs
        )
        # Saved after each preset: a run stopped by a time limit keeps the presets it measured.
        print(f"saved {save_result(result, out)}")
    print(format_table(rows))


if __name__ == "__main__":
    main()
