"""The cpu profile on CPU: training and sampling tokens/s against the talk's plain loops.

The figure the project tracks is the training ratio "course tokens/s ÷ reference tokens/s" at the
char-cpu shape, measured in one run, for the course as a learner gets it (`default` below): at
least 1.5x on a CPU with native bf16 (AMX or AVX-512 BF16), and never slower than the fp32
reference (about 1.0x) on a CPU without. It is printed last and saved as ``train.speedup``.

The model is the cpu profile's run, `tinylm.runs.RUNS["char-cpu"]` (preset char-cpu: 4 layers of
width 256, context 128, the character vocabulary; batches of 8 x 128), on the real packed
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

Sampling. Greedy decoding (temperature 0) after a 1-token prompt, at batch 1 and 16, the same
random weights (seeded) for every way, each way run once untimed for a few tokens first:

- reference: the talk's (nanoGPT's) generation loop, `tinylm.sampling.plain_greedy`: the
  whole context through the model every step, logits at every position, attention by hand,
  fp32, no KV cache;
- course: `tinylm.sampling.generate` with the KV cache (SDPA, fp32);
- the course's sampler with one thing changed (`--sample-variants`): no cache, 1 thread, bf16
  autocast. torch.compile is not tried: the cache grows by torch.cat, so every step has new
  shapes and recompiles.

char-cpu's context is 128 tokens. Past it the sampler drops the cache and recomputes the last 128
tokens every step (absolute positions shift as the window slides), so by default every batch
size decodes block_size - 1 = 127 new tokens (the context fills up exactly: the cache serves
every step) and 2 * block_size - 1 = 255 (the second half runs without the cache, like the
reference throughout). Whether each way wrote the reference's tokens is recorded, not asserted:
in fp32 they should agree (manual attention and SDPA round differently, so a near-tie could
flip); in bf16 they are expected to differ.

Run it with `python bench/cpu_speed.py` on an otherwise idle machine (2 cores: about five
minutes). It prints two tables and the tracked ratio, and writes JSON to
``data/reference/bench_cpu_speed_cpu.json`` (or ``--out``); it never asserts a timing. The flags
shrink it, e.g. ``--run char-ci --steps 1 --rounds 1 --new-tokens 4``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from tinylm import data
from tinylm.data import BatchSampler
from tinylm.hardware import autocast_context, course_precision
from tinylm.machine import (
    REFERENCE_DIR,
    failure,
    load_average,
    machine,
    native_bf16,
    save_result,
    slug,
)
from tinylm.model import GPT, GPTConfig, count_parameters
from tinylm.profiles import PROFILES, cpu_bf16_support
from tinylm.runs import RUNS, TrainConfig
from tinylm.sampling import generate, plain_greedy
from tinylm.timing import DECODE_WARMUP_TOKENS, timed
from tinylm.train import build_model_config, build_optimizer, lr_at, train_step

CPU = torch.device("cpu")
PARTS = ("train", "sample")
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


@dataclass(frozen=True)
class SampleVariant:
    """One way to decode greedily: the talk's loop or the course's sampler, and what it changes."""

    key: str
    description: str
    reference: bool = False  # plain_greedy on the manual-attention copy of the model
    cache: bool = True  # the KV cache (course sampler only)
    threads: int | None = None  # torch threads while it runs; None: as set (all cores)
    dtype: str = "float32"  # "bfloat16": bf16 autocast


TRAIN_VARIANTS = [
    TrainVariant("reference", "reference: talk's loop (manual attn)", reference=True),
    TrainVariant("course", "course: train_step, fp32 (SDPA)"),
    TrainVariant("threads1", "course, 1 thread", threads=1),
    TrainVariant("fused", "course + fused AdamW", fused=True),
    TrainVariant("bf16", "course + bf16 autocast", dtype="bfloat16"),
    TrainVariant("compile", "course + torch.compile", compile=True),
    TrainVariant("compile-bf16", "course + compile + bf16", dtype="bfloat16", compile=True),
]
SAMPLE_VARIANTS = [
    SampleVariant(
        "reference", "reference: whole context (manual attn)", reference=True, cache=False
    ),
    SampleVariant("course", "course: generate, KV cache (SDPA)"),
    SampleVariant("no-cache", "course without the cache", cache=False),
    SampleVariant("threads1", "course, 1 thread", threads=1),
    SampleVariant("bf16", "course + bf16 autocast", dtype="bfloat16"),
]


@contextmanager
def num_threads(threads: int | None) -> Iterator[None]:
    """Run the block on `threads` torch threads (None: as set), then restore the setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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


# --------------------------------------------------------------------------- sampling


def decoder(variant: SampleVariant) -> Callable[[GPT, torch.Tensor, int], torch.Tensor]:
    """The variant's greedy loop: (model, idx (B, T), new tokens) → (B, T + new)."""
    if variant.reference:
        return plain_greedy

    def decode(model: GPT, idx: torch.Tensor, new_tokens: int) -> torch.Tensor:
        with autocast_context(CPU, variant.dtype):
            return generate(model, idx, new_tokens, temperature=0, use_cache=variant.cache)

    return decode


def measure_sampling(
    variants: list[SampleVariant],
    config: GPTConfig,
    seed: int,
    batch_sizes: list[int],
    new_tokens: list[int],
) -> list[dict]:
    """Tokens/s of every way to decode, per batch size and length, and whether tokens agree."""
    torch.manual_seed(seed)
    course = GPT(config).eval()
    reference = GPT(replace(config, attention="manual")).eval()
    reference.load_state_dict(course.state_dict())
    rows = []
    for batch_size in batch_sizes:
        prompt = torch.randint(
            config.vocab_size, (batch_size, 1), generator=torch.Generator().manual_seed(batch_size)
        )
        for n in new_tokens:
            group, reference_tokens = [], None
            for variant in variants:
                print(
                    f"  sample: batch {batch_size}, {n} tokens: {variant.description}", flush=True
                )
                model = reference if variant.reference else course
                with num_threads(variant.threads):
                    decoder(variant)(model, prompt, DECODE_WARMUP_TOKENS)  # untimed
                    out, seconds = timed(decoder(variant), model, prompt, n, device=CPU)
                reference_tokens = out if reference_tokens is None else reference_tokens
                group.append(
                    {
                        "variant": variant.key,
                        "description": variant.description,
                        "batch_size": batch_size,
                        "new_tokens": n,
                        "cache": variant.cache,
                        "attention": "manual" if variant.reference else config.attention,
                        "threads": variant.threads or torch.get_num_threads(),
                        "dtype": variant.dtype,
                        "seconds": round(seconds, 3),
                        "tokens_per_s": round(batch_size * n / seconds, 1),
                        "identical_to_reference": torch.equal(out, reference_tokens),
                    }
                )
            add_ratios(group)
            rows += group
    return rows


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


def format_sampling(rows: list[dict]) -> str:
    """One line per batch size, length and way to decode: tokens/s, ratio, same tokens."""
    lines = [
        f"{'batch':>5}{'new':>5}  {'sampling':<40}{'tokens/s':>10}{'x ref':>8}"
        "  same tokens as reference"
    ]
    for r in rows:
        lines.append(
            f"{r['batch_size']:>5}{r['new_tokens']:>5}  {r['description']:<40}"
            f"{r['tokens_per_s']:>10,.0f}{ratio(r):>8}"
            f"  {'yes' if r['identical_to_reference'] else 'no'}"
        )
    return "\n".join(lines)


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
    train_extras = [v.key for v in TRAIN_VARIANTS[2:]]  # all but the reference and the course
    sample_extras = [v.key for v in SAMPLE_VARIANTS[2:]]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run",
        default=PROFILES["cpu"].train_run,
        choices=sorted(RUNS),
        help="the training run measured (default: the cpu profile's, %(default)s)",
    )
    parser.add_argument("--parts", default=",".join(PARTS), help="train, sample or both")
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
        default=",".join(train_extras),
        help="ways to train besides the reference, the default and the "
        "course's fp32 step (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-sizes",
        default="1,16",
        help="comma-separated sampling batch sizes (default: %(default)s)",
    )
    parser.add_argument(
        "--new-tokens",
        help="comma-separated numbers of tokens to decode (default: "
        "block_size - 1 and 2 * block_size - 1)",
    )
    parser.add_argument(
        "--sample-variants",
        default=",".join(sample_extras),
        help="ways to decode besides the reference and the course's (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, help="JSON file (default: data/reference/bench_cpu_speed_cpu.json)"
    )
    args = parser.parse_args()
    parts = chosen(parser, args.parts, list(PARTS), "parts")
    train_keys = ["course"] + chosen(parser, args.train_variants, train_extras, "train variants")
    sample_keys = ["reference", "course"] + chosen(
        parser, args.sample_variants, sample_extras, "sample variants"
    )
    out = args.out or REFERENCE_DIR / f"bench_cpu_speed_{slug(CPU)}.json"

    cfg = RUNS[args.run]
    packed = data.load_packed(cfg.tokenizer)
    config = build_model_config(cfg, packed.tokenizer.vocab_size)
    block = config.block_size
    new_tokens = [int(n) for n in (args.new_tokens or f"{block - 1},{2 * block - 1}").split(",")]
    info = machine(CPU)
    print(
        f"{info['device_name']}, torch {info['torch']}, {info['torch_threads']} threads, "
        f"load average {info['load_average_1min']}; run {args.run}: preset {cfg.model} "
        f"({count_parameters(config) / 1e6:.1f}M parameters, context {block}), "
        f"{cfg.tokenizer} data"
    )
    profile = next((p.name for p in PROFILES.values() if p.train_run == args.run), None)
    result: dict = {
        "benchmark": "cpu_speed",
        "machine": info,
        "run": args.run,
        "profile": profile,
        "model": cfg.model,
        "config": asdict(config),
        "parameters": count_parameters(config),
        "data": f"real packed tokens: tinylm.data.load_packed({cfg.tokenizer!r})",
    }
    tables = []
    if "train" in parts:
        variants = [
            TRAIN_VARIANTS[0],
            default_variant(cfg),
            *(v for v in TRAIN_VARIANTS[1:] if v.key in train_keys),
        ]
        with tempfile.TemporaryDirectory(prefix="inductor-") as cache:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # compile from scratch, not from disk
            rows = measure_training(
                variants, config, cfg, packed.train, args.steps, args.rounds, args.warmup
            )
        summary = speedup(rows, cfg)
        tables.append(format_training(rows))
        result["train"] = {
            "batch_size": cfg.batch_size,
            "block_size": block,
            "warmup_steps": args.warmup,
            "steps_per_round": args.steps,
            "rounds": args.rounds,
            "statistic": "median round",
            "speedup": summary,
            "results": rows,
        }
    if "sample" in parts:
        variants = [v for v in SAMPLE_VARIANTS if v.key in sample_keys]
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        rows = measure_sampling(variants, config, cfg.seed, batch_sizes, new_tokens)
        tables.append(format_sampling(rows))
        result["sample"] = {
            "decoding": "greedy",
            "weights": f"random (seed {cfg.seed})",
            "prompt_tokens": 1,
            "warmup_tokens": DECODE_WARMUP_TOKENS,
            "results": rows,
        }
    result["load_average_1min_end"] = load_average()
    print("\n\n".join(tables))
    if "train" in result:
        print("\n" + format_speedup(result["train"]["speedup"], args.run))
    print(f"saved {save_result(result, out)}")


if __name__ == "__main__":
    main()
