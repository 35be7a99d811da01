"""The cpu profile on CPU: training tokens/s against the talk's plain loop.

The figure the project tracks is the training ratio "course tokens/s ÷ reference tokens/s" at the
char-cpu shape, measured in one run, for the course as a learner gets it (`default` below): at
least 1.5x on a CPU with native bf16 (AMX or AVX-512 BF16), and never slower than the fp32
reference (about 1.0x) on a CPU without. It is printed last and saved as ``train.speedup``.

The model is the cpu profile's run, `tinylm.runs.RUNS["char-cpu"]` (preset char-cpu: 4 layers of
width 256, context 128, the character vocabulary; batches of 16 x 128), on the real packed
character data (`tinylm.data.load_packed("char")`, train split; speed does not depend on the
text, but the losses then mean something). Prepare it first with `make data`.

Training. Each way to train is built from the same initial weights, runs `--warmup` untimed steps
(compiling happens there, from an empty inductor cache as on a first run; their seconds are
reported), then `--rounds` rounds of `--steps` timed steps. The ways take turns round by round,
so a burst of load elsewhere on the machine hits them all, and the median round is reported.

- reference: the talk's loop, written out below as nanoGPT's train.py runs it on one CPU:
  attention by hand, fp32, plain `torch.optim.AdamW` (one parameter group, not fused), batches
  stacked window by window (nanoGPT's get_batch), gradients clipped at 1.0, no compile;
- default: the run's own step, `tinylm.train.train_step`, as `tinylm.train.train` runs it here
  (SDPA, AdamW, `BatchSampler`), with dtype="auto" and compile="auto" resolved as training
  resolves them on this machine (`tinylm.hardware.resolve_precision` and `use_compile`: bf16
  autocast on a CPU with native bf16, compiled when the run is long enough to repay it). Built
  right after the reference, so a compiled default's warm-up is a first run's: from an empty
  inductor cache, in a process that has compiled nothing yet;
- course: the same step in fp32, not compiled (what "auto" resolves to on a CPU without native
  bf16): the base the variants change one thing of;
- the course's step with one thing changed (`--train-variants`): 1 thread instead of all
  (`torch.set_num_threads`, restored after), fused AdamW, bf16 autocast, torch.compile, and
  torch.compile with bf16 autocast. A variant that compiles the graph an earlier way compiled
  (compile-bf16 after a compiled bf16 default) reuses kernels already built in this process, so
  its warm-up is shorter than a first run's.

Sampling speed at the same shape, the KV cache against the talk's loop, is bench/generate.py's
(``--model char-cpu``): one script per figure.

Run it with `python bench/cpu_speed.py` on an otherwise idle machine (2 cores: about four
minutes). It prints a table and the tracked ratio, and writes JSON to
``data/reference/bench_cpu_speed_cpu.json`` (or ``--out``); it never asserts a timing. The flags
shrink it, e.g. ``--run char-ci --steps 1 --rounds 1``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from common import course_precision, failure, load_average, machine, native_bf16, save_result, slug

from tinylm import data
from tinylm.data import BatchSampler
from tinylm.hardware import autocast_context, cpu_bf16_support
from tinylm.model import GPT, GPTConfig, count_parameters
from tinylm.profiles import PROFILES
from tinylm.reference import REFERENCE_DIR
from tinylm.runs import RUNS, TrainConfig
from tinylm.timing import num_threads
from tinylm.train import build_model_config, build_optimizer, lr_at, train_step

CPU = torch.device("cpu")
# The least ratio default ÷ reference the project accepts: with native bf16 on the CPU, and
# without it ("never slower than fp32", 1.0 less the 5 % a shared machine's timings wander).
GOALS = {True: 1.5, False: 0.95}


@dataclass(frozen=True)
class TrainVariant:
    """One way to train: the talk's loop or the course's step, and what it changes."""

    key: str
    description: str
    reference: bool = False  # the talk's loop (reference_trainer) instead of train_step
    threads: int | None = None  # torch threads while it runs; None: as set (all cores)
    dtype: str = "float32"  # "bfloat16": bf16 autocast
    fused: bool = False  # fused AdamW
    compile: bool = False  # torch.compile


TRAIN_VARIANTS = [
    TrainVariant("reference", "reference: talk's loop (manual attn)", reference=True),
    TrainVariant("course", "course: train_step, fp32 (SDPA)"),
    TrainVariant("threads1", "course, 1 thread", threads=1),
    TrainVariant("fused", "course + fused AdamW", fused=True),
    TrainVariant("bf16", "course + bf16 autocast", dtype="bfloat16"),
    TrainVariant("compile", "course + torch.compile", compile=True),
    TrainVariant("compile-bf16", "course + compile + bf16", dtype="bfloat16", compile=True),
]
# --------------------------------------------------------------------------- training


def default_variant(cfg: TrainConfig) -> TrainVariant:
    """The course as a learner gets it: the run's dtype and compile as training resolves them."""
    precision = course_precision(cfg, CPU)
    how = "compiled" if precision["compile"] else "eager"
    return TrainVariant(
        "default",
        f"course by default: {precision['dtype']}, {how}",
        dtype=precision["dtype"],
        compile=precision["compile"],
    )


def reference_batch(
    tokens: np.ndarray, batch_size: int, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """nanoGPT's get_batch: random windows of the token array, stacked one by one; (B, T) each."""
    ix = torch.randint(len(tokens) - block_size, (batch_size,))
    x = torch.stack([torch.from_numpy(tokens[i : i + block_size].astype(np.int64)) for i in ix])
    y = torch.stack(
        [torch.from_numpy(tokens[i + 1 : i + 1 + block_size].astype(np.int64)) for i in ix]
    )
    return x, y


def reference_trainer(
    config: GPTConfig, cfg: TrainConfig, tokens: np.ndarray
) -> Callable[[], torch.Tensor]:
    """The talk's training loop (nanoGPT's train.py on one CPU); each call is one step → loss."""
    torch.manual_seed(cfg.seed)
    model = GPT(replace(config, attention="manual"))
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
    )
    steps = itertools.count()

    def step() -> torch.Tensor:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(next(steps), **cfg.schedule)
        x, y = reference_batch(tokens, cfg.batch_size, config.block_size)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def course_trainer(
    variant: TrainVariant, config: GPTConfig, cfg: TrainConfig, tokens: np.ndarray
) -> Callable[[], torch.Tensor]:
    """The run's step as tinylm.train.train takes it, with the variant's change; → loss."""
    cfg = replace(cfg, dtype=variant.dtype, compile=variant.compile)
    torch.manual_seed(cfg.seed)
    model = GPT(config)
    optimizer = build_optimizer(
        model, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas, fused=variant.fused
    )
    step_model = torch.compile(model) if variant.compile else model
    sampler = BatchSampler(tokens, cfg.batch_size, config.block_size, CPU, seed=cfg.seed)
    autocast = autocast_context(CPU, cfg.dtype)
    steps = itertools.count()

    def step() -> torch.Tensor:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(next(steps), **cfg.schedule)
        return train_step(
            step_model,
            optimizer,
            sampler,
            autocast,
            grad_accum=cfg.grad_accum,
            grad_clip=cfg.grad_clip,
        )[0]

    return step


def run_steps(
    step: Callable[[], torch.Tensor], steps: int, threads: int | None
) -> tuple[float, float]:
    """Seconds that `steps` (>= 1) training steps took on `threads` threads, and the last loss."""
    with num_threads(threads):
        start = time.perf_counter()
        for _ in range(steps):
            loss = step()
        value = loss.item()
        return time.perf_counter() - start, value


def measure_training(
    variants: list[TrainVariant],
    config: GPTConfig,
    cfg: TrainConfig,
    tokens: np.ndarray,
    steps: int,
    rounds: int,
    warmup: int,
) -> list[dict]:
    """Tokens/s of every way to train: warm-ups first, then rounds taking turns; medians."""
    rows, runners = [], {}
    for variant in variants:
        print(f"  train: {variant.description}: building, {warmup} warm-up steps", flush=True)
        row = {
            "variant": variant.key,
            "description": variant.description,
            "loop": "reference" if variant.reference else "course",
            "attention": "manual" if variant.reference else config.attention,
            "threads": variant.threads or torch.get_num_threads(),
            "dtype": variant.dtype,
            "fused_adamw": variant.fused,
            "compile": variant.compile,
        }
        rows.append(row)
        try:
            step = (
                reference_trainer(config, cfg, tokens)
                if variant.reference
                else course_trainer(variant, config, cfg, tokens)
            )
            row["warmup_s"] = round(run_steps(step, warmup, variant.threads)[0], 2)
        except Exception as error:  # record why a way fails (e.g. no compiler) and go on
            row["status"] = failure(error)
            continue
        row.update(status="ok", round_tokens_per_s=[])
        runners[variant.key] = (step, variant.threads, row)
    tokens_per_step = cfg.batch_size * config.block_size
    for number in range(rounds):
        print(f"  train: round {number + 1} of {rounds}, {steps} steps each way", flush=True)
        for step, threads, row in runners.values():
            seconds, row["loss"] = run_steps(step, steps, threads)
            row["round_tokens_per_s"].append(round(steps * tokens_per_step / seconds, 1))
    for _, _, row in runners.values():
        row["tokens_per_s"] = statistics.median(row["round_tokens_per_s"])
        row["ms_per_step"] = round(1e3 * tokens_per_step / row["tokens_per_s"], 1)
        row["loss"] = round(row["loss"], 3)
    add_ratios(rows)
    return rows


def speedup(rows: list[dict], cfg: TrainConfig) -> dict:
    """The course's default against the reference, every way's ratio, and this CPU's goal."""
    default = next(r for r in rows if r["variant"] == "default")
    ratio = default.get("ratio_to_reference")
    native = native_bf16(CPU)
    return {
        "measure": "course tokens/s / reference tokens/s, median rounds of one run",
        "native_bf16": native,
        "cpu_bf16": cpu_bf16_support(),
        "default": {
            "dtype": default["dtype"],
            "compile": default["compile"],
            "asked": {"dtype": cfg.dtype, "compile": cfg.compile},
            "ratio": ratio,
            "warmup_s": default.get("warmup_s"),
        },
        "goal": GOALS[native],
        "meets_goal": None if ratio is None else ratio >= GOALS[native],
        "ratios": {r["variant"]: r.get("ratio_to_reference") for r in rows[1:]},
    }


def add_ratios(rows: list[dict]) -> None:
    """Give each measured row ratio_to_reference: its tokens/s over the first (reference) row's."""
    base = rows[0].get("tokens_per_s")
    for row in rows:
        if "tokens_per_s" in row:
            row["ratio_to_reference"] = round(row["tokens_per_s"] / base, 2) if base else None


# --------------------------------------------------------------------------- report


def ratio(row: dict) -> str:
    """The row's ratio to the reference as text, e.g. 1.25x, or - without a reference."""
    return "-" if row.get("ratio_to_reference") is None else f"{row['ratio_to_reference']:.2f}x"


def format_training(rows: list[dict]) -> str:
    """One line per way to train: tokens/s, ms per step, ratio to the reference, warm-up."""
    lines = [f"{'training':<38}{'tokens/s':>10}{'ms/step':>9}{'x ref':>8}{'warm-up s':>11}  status"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"{r['description']:<38}{'':>38}  {r['status']}")
            continue
        lines.append(
            f"{r['description']:<38}{r['tokens_per_s']:>10,.0f}{r['ms_per_step']:>9.1f}"
            f"{ratio(r):>8}{r['warmup_s']:>11.1f}  ok"
        )
    return "\n".join(lines)


def format_speedup(summary: dict, run: str) -> str:
    """The tracked figure in one line: the default's ratio to the reference, and the goal."""
    default = summary["default"]
    value = "-" if default["ratio"] is None else f"{default['ratio']:.2f}x"
    verdict = {True: "met", False: "NOT met", None: "not measured"}[summary["meets_goal"]]
    return (
        f"{run}, course by default ({default['dtype']}, "
        f"{'compiled' if default['compile'] else 'eager'}) / reference: {value}; native bf16: "
        f"{summary['cpu_bf16'] or 'none'}; goal >= {summary['goal']}x: {verdict}"
    )


def positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def chosen(parser: argparse.ArgumentParser, text: str, valid: list[str], what: str) -> list[str]:
    """The comma-separated names of `text`, each checked against `valid`."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(valid))
    if unknown:
        parser.error(f"unknown {what} {unknown}; choose from {valid}")
    return names


def main() -> None:
    extras = [v.key for v in TRAIN_VARIANTS[2:]]  # all but the reference and the course
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run",
        default=PROFILES["cpu"].train_run,
        choices=sorted(RUNS),
        help="the training run measured (default: the cpu profile's, %(default)s)",
    )
    parser.add_argument("--steps", type=positive, default=10, help="timed steps per round")
    parser.add_argument(
        "--rounds",
        type=positive,
        default=3,
        help="timed rounds per way to train (the median is reported)",
    )
    parser.add_argument(
        "--warmup",
        type=positive,
        default=2,
        help="untimed steps per way to train, compiling included",
    )
    parser.add_argument(
        "--train-variants",
        default=",".join(extras),
        help="ways to train besides the reference, the default and the "
        "course's fp32 step (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, help="JSON file (default: data/reference/bench_cpu_speed_cpu.json)"
    )
    args = parser.parse_args()
    keys = ["course"] + chosen(parser, args.train_variants, extras, "train variants")
    out = args.out or REFERENCE_DIR / f"bench_cpu_speed_{slug(CPU)}.json"

    cfg = RUNS[args.run]
    packed = data.load_packed(cfg.tokenizer)
    config = build_model_config(cfg, packed.tokenizer.vocab_size)
    info = machine(CPU)
    print(
        f"{info['device_name']}, torch {info['torch']}, {info['torch_threads']} threads, "
        f"load average {info['load_average_1min']}; run {args.run}: preset {cfg.model} "
        f"({count_parameters(config) / 1e6:.1f}M parameters, context {config.block_size}), "
        f"{cfg.tokenizer} data"
    )
    variants = [
        TRAIN_VARIANTS[0],
        default_variant(cfg),
        *(v for v in TRAIN_VARIANTS[1:] if v.key in keys),
    ]
    with tempfile.TemporaryDirectory(prefix="inductor-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # compile from scratch, not from disk
        rows = measure_training(
            variants, config, cfg, packed.train, args.steps, args.rounds, args.warmup
        )
    summary = speedup(rows, cfg)
    result = {
        "benchmark": "cpu_speed",
        "machine": info,
        "run": args.run,
        "profile": next((p.name for p in PROFILES.values() if p.train_run == args.run), None),
        "model": cfg.model,
        "config": asdict(config),
        "parameters": count_parameters(config),
        "data": f"real packed tokens: tinylm.data.load_packed({cfg.tokenizer!r})",
        "train": {
            "batch_size": cfg.batch_size,
            "block_size": config.block_size,
            "warmup_steps": args.warmup,
            "steps_per_round": args.steps,
            "rounds": args.rounds,
            "statistic": "median round",
            "speedup": summary,
            "results": rows,
        },
        "load_average_1min_end": load_average(),
    }
    print(format_training(rows))
    print("\n" + format_speedup(summary, args.run))
    print(f"saved {save_result(result, out)}")


if __name__ == "__main__":
    main()
