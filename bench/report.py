"""Write docs/benchmarks.md from the benchmark JSON files committed under data/reference/.

Every figure on that page comes from a file a bench script wrote, with the date, device and
commit it was measured on, so the page cannot drift from the measurements: run
``python bench/report.py`` after any benchmark (``make bench`` does), and
``python bench/report.py --check`` to fail when the committed page is out of date (the tests do).
The page has one part per kind of device, so a CPU figure never appears under a GPU title; the
GPU part says so plainly while no GPU file exists, and the last section gives the command that
records the GPU figures (bench/gpu_check.sh).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from tinylm.download import PROJECT_ROOT
from tinylm.reference import REFERENCE_DIR

PAGE = PROJECT_ROOT / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Measured by the scripts in [`bench/`](../bench) and saved as JSON under
[`data/reference/`](../data/reference); this page is generated from those files by
`python bench/report.py` (do not edit it by hand). Timings depend on the machine and on what
else it was doing: each table names its device, date, commit and the load average when it ran.
Figures measured on a CPU and on a GPU are in separate parts.
"""
PART_TITLES = {"cpu": "On the CPU", "cuda": "On a GPU"}  # by device type; others by their name


def machine_line(info: dict) -> str:
    """One line naming where and when a file's figures were measured."""
    parts = [info.get("device_name") or info.get("processor") or "unknown device"]
    if info.get("device", "cpu") == "cpu" and info.get("cpu_count"):
        parts.append(f"{info['cpu_count']} cores")
    if info.get("torch"):
        parts.append(f"torch {info['torch']}")
    parts.append(f"commit `{info.get('commit')}`")
    parts.append(str(info.get("date", "?"))[:10])
    if info.get("load_average_1min") is not None:
        parts.append(f"load average {info['load_average_1min']}")
    if info.get("native_bf16") is not None:
        parts.append(
            "native bf16: " + (info.get("cpu_bf16") or "yes" if info["native_bf16"] else "none")
        )
    if info.get("cpu_capability"):
        parts.append(f"PyTorch's CPU kernels: {info['cpu_capability']}")
    if info.get("cpu_restrictions"):
        held = " ".join(f"{k}={v}" for k, v in info["cpu_restrictions"].items())
        parts.append(f"held back with {held}")
    return "*" + ", ".join(parts) + "*"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def number(value: float | None, digits: int = 0, suffix: str = "") -> str:
    """A figure with thousands separators, or a dash when missing."""
    return "–" if value is None else f"{value:,.{digits}f}{suffix}"


def percent(share: float | None) -> str:
    """A share in [0, 1] as a percentage, or a dash when missing."""
    return number(None if share is None else 100 * share, 1, " %")


def data_prep(result: dict) -> str:
    """Seconds per stage of the cold data pipeline."""
    rows = [[stage, number(seconds, 1)] for stage, seconds in result["seconds"].items()]
    return table(["stage", "seconds"], rows)


def train_throughput(result: dict) -> str:
    """The optimisation ladder: tokens/s, ms per step and MFU per preset and rung."""
    rows, base = [], {}
    for r in result["results"]:
        if r["status"] != "ok":
            rows.append([r["preset"], r["rung"], "–", "–", "–", "–", r["status"]])
            continue
        base.setdefault(r["preset"], r["tokens_per_s"])
        rows.append(
            [
                r["preset"],
                r["rung"],
                number(r["tokens_per_s"]),
                number(r["ms_per_step"], 1),
                f"{r['tokens_per_s'] / base[r['preset']]:.2f}×",
                percent(r["mfu"]),
                "ok",
            ]
        )
    warmup = "1 warm-up step" if result["warmup"] == 1 else f"{result['warmup']} warm-up steps"
    note = f"Batch {result['batch_size']}, {result['steps']} timed steps after {warmup}."
    if result["peak_flops"]:
        note += f" MFU against {result['peak_flops'] / 1e12:,.0f} TFLOP/s dense bf16."
    return (
        note
        + "\n\n"
        + table(["preset", "rung", "tokens/s", "ms/step", "speed-up", "MFU", "status"], rows)
    )


def generate(result: dict) -> str:
    """Generation tokens/s with and without the KV cache (and the recorded variants)."""
    variants = [key for key in ("threads1", "bf16") if key in result.get("ways", {})]
    rows = []
    for r in result["results"]:
        rows.append(
            [
                str(r["batch_size"]),
                str(r["new_tokens"]),
                number(r["with_cache_tokens_per_s"]),
                number(r["without_cache_tokens_per_s"]),
                f"{r['speed_up']:.1f}×",
                number(r.get("plain_tokens_per_s")),
                f"{r['speed_up_vs_plain']:.1f}×" if "speed_up_vs_plain" in r else "–",
                *(ratio_text(r.get(f"{key}_vs_cache")) for key in variants),
                "yes" if r["identical_tokens"] else "no",
            ]
        )
    note = (
        f"Preset `{result['model']}` ({result['parameters'] / 1e6:.1f}M parameters, context "
        f"{result['block_size']}, random weights, {result['dtype']}), greedy, after a "
        f"{result['prompt_tokens']}-token prompt. Without the cache: nanoGPT's loop (whole "
        "context, output layer on the last position); plain loop: logits at every position"
        + (
            "; 1 thread and bf16: the cache's tokens/s with that one change, as a ratio"
            if variants
            else ""
        )
        + ". Same tokens: whether every fp32 way wrote the cache's tokens."
    )
    headers = {"threads1": "1 thread", "bf16": "bf16 autocast"}
    return (
        note
        + "\n\n"
        + table(
            [
                "batch",
                "new tokens",
                "with cache tok/s",
                "without tok/s",
                "speed-up",
                "plain loop tok/s",
                "speed-up",
                *(headers[key] for key in variants),
                "same tokens",
            ],
            rows,
        )
    )


def runs(result: dict) -> str:
    """Finished training runs: size, tokens, final losses, wall time, throughput."""
    rows = []
    for r in result["results"]:
        rows.append(
            [
                f"`{r['run']}`",
                f"`{r['model']}`",
                r["tokenizer"],
                number(r["parameters"] / 1e6, 2),
                number(r["tokens"] / 1e6, 2),
                number(r["val_loss"], 3),
                number(r["elapsed_s"] / 60, 1),
                number(r["median_tokens_per_s"]),
                percent(r["median_mfu"]),
                r["finished"][:10],
            ]
        )
    return (
        result["note"][0].upper()
        + result["note"][1:]
        + ".\n\n"
        + table(
            [
                "run",
                "model",
                "tokenizer",
                "params (M)",
                "tokens (M)",
                "val loss (nats)",
                "minutes",
                "tokens/s (median)",
                "MFU",
                "finished",
            ],
            rows,
        )
    )


def fresh_start(result: dict) -> str:
    """A learner's first commands from a fresh clone, timed, and the main run's poems judged."""
    r = result["results"]
    judged = r["eval"]
    rows = [
        ["`make demo` (new .venv, data, main run, three poems)", number(r["make_demo_s"])],
        [f"training `{r['main_run']}` (inside `make demo`)", number(r["main_run_train_s"])],
        ["120 poems, `python -m tinylm sample -n 120`", number(r["sample_120_cli_defaults_s"])],
        [f"`python -m tinylm eval` ({judged['poems']} poems)", number(r["eval_s"])],
    ]
    if "make_warm_s" in r:
        rows.append(
            ["`make warm` (every run of the profile, from scratch)", number(r["make_warm_s"])]
        )
        rows += [[f"… `{name}`", number(s)] for name, s in r["warm_run_train_s"].items()]
    verdict = (
        f"The main run's {judged['poems']} poems: {percent(judged['regulated'])} regulated, "
        f"{percent(judged['uniform_verses'])} with verses of one length, "
        f"{percent(judged['copied_verses'])} of verses copied from the training poems."
    )
    return table(["step", "seconds"], rows) + "\n\n" + verdict


def ratio_text(value: float | None) -> str:
    """A ratio to the reference, e.g. 1.95×, or a dash when missing."""
    return "–" if value is None else f"{value:.2f}×"


def tracked_ratio(result: dict) -> str:
    """The figure the project tracks: the course by default against the reference, and its goal."""
    summary = result["train"].get("speedup")
    if summary is None:
        return (
            "This file predates the tracked ratio (the course as a learner gets it by "
            "default, against the reference): run `python bench/cpu_speed.py` again."
        )
    default = summary["default"]
    asked = default["asked"]
    verdict = {True: "met", False: "**not met**", None: "not measured"}[summary["meets_goal"]]
    return (
        f"**Course by default ÷ nanoGPT-style reference: {ratio_text(default['ratio'])}** "
        f"(training tokens/s at the `{result['run']}` shape, both measured in the same run). "
        f"By default the course trains here in {default['dtype']}, "
        f"{'compiled' if default['compile'] else 'not compiled'} (dtype "
        f"`{asked['dtype']}` and compile `{asked['compile']}`, as `tinylm.train` resolves "
        f"them on this machine); its warm-up steps, compiling included, took "
        f"{number(default['warmup_s'], 1)} s. Native bf16 on this CPU: "
        f"{summary['cpu_bf16'] or 'none'}; the goal on such a CPU is at least "
        f"{summary['goal']}×: {verdict}."
    )


def cpu_speed(result: dict) -> str:
    """The cpu profile's training against the talk-style reference loop."""
    train = result["train"]
    train_rows = [
        [
            r["description"],
            number(r.get("tokens_per_s")),
            number(r.get("ms_per_step"), 1),
            ratio_text(r.get("ratio_to_reference")),
            number(r.get("warmup_s"), 1),
            r["status"],
        ]
        for r in train["results"]
    ]
    profile = f", the {result['profile']} profile's run" if result.get("profile") else ""
    return (
        f"Run `{result['run']}`{profile} ({result['parameters'] / 1e6:.2f}M parameters), "
        f"{result['data']}.\n\n{tracked_ratio(result)}\n\n"
        f"Training: batch {train['batch_size']} × {train['block_size']}, "
        f"the {train['statistic']} of {train['rounds']} rounds of "
        f"{train['steps_per_round']} steps, the ways taking turns; warm-up: the untimed "
        "first steps, compiling included, the ways built in the table's order in one "
        "process.\n\n"
        + table(
            ["training", "tokens/s", "ms/step", "× reference", "warm-up s", "status"], train_rows
        )
    )


def machine_record(result: dict) -> str:
    """The device, and the precision each run's "auto" settings resolve to on it."""
    info = result["machine"]
    extras = [
        f"CUDA {info['cuda']}" if info.get("cuda") else None,
        f"{info['device_memory_gib']} GiB" if info.get("device_memory_gib") else None,
    ]
    rows = [
        [f"`{run}`", p["dtype"], "yes" if p["compile"] else "no"]
        for run, p in result["precision"].items()
    ]
    note = ", ".join(e for e in extras if e)
    return (
        (note + ". " if note else "") + 'What `dtype="auto"` and `compile="auto"` '
        "resolve to for each run here:\n\n" + table(["run", "compute dtype", "compiled"], rows)
    )


def poems(result: dict) -> str:
    """The poem judge's report on one model's samples (tinylm.poetry.PoemJudge)."""
    row = [f"`{Path(result['model']).parent.name}`", str(result["poems"])]
    row += [
        percent(result[key])
        for key in ("finished", "regulated", "rhymes", "tone_agreement", "copied_verses")
    ]
    row.append(number(result["val_bits_per_char"], 3))
    sampling = result["sampling"]
    return (
        f"Temperature {sampling['temperature']}, top-k {sampling['top_k']}, at most "
        f"{sampling['max_new_tokens']} tokens a poem, seed {sampling['seed']} "
        "(`python -m tinylm eval`); rhymes and tone agreement over the regulated poems.\n\n"
        + table(
            [
                "run",
                "poems",
                "finished",
                "regulated",
                "rhymes",
                "tone agreement",
                "copied verses",
                "val bits/char",
            ],
            [row],
        )
    )


# (title, file pattern, renderer, the device types it is measured on)
SECTIONS: list[tuple[str, str, Callable[[dict], str], tuple[str, ...]]] = [
    (
        "The machine and the precision the runs resolve to",
        "machine_*.json",
        machine_record,
        ("cuda",),
    ),
    ("Data preparation", "bench_data_prep*.json", data_prep, ("cpu",)),
    (
        "Training throughput, one optimisation at a time",
        "bench_train_throughput_*.json",
        train_throughput,
        ("cpu", "cuda"),
    ),
    ("CPU training against the talk's plain loop", "bench_cpu_speed_*.json", cpu_speed, ("cpu",)),
    ("Training runs", "runs_*.json", runs, ("cpu", "cuda")),
    ("A learner's first commands, from a fresh clone", "fresh_start_*.json", fresh_start, ()),
    ("Poems judged", "eval_*.json", poems, ("cuda",)),
    (
        "Generation with and without the KV cache",
        "bench_generate_*.json",
        generate,
        ("cpu", "cuda"),
    ),
]
GPU_FIGURES = [
    "the machine record: GPU, torch, CUDA, and the precision `auto` resolves to for the talk's "
    "runs (`bench/machine_info.py`, `bench/common.py`)",
    "the training ladder (`bench/train_throughput.py`, presets 30m and 124m) with MFU: targets "
    "30m ≥ 45 % and 124m ≥ 55 % MFU against 989 TFLOPS dense bf16",
    "the talk's runs end to end, `talk-30m` and `talk-124m` (80.3M GPT-2 tokens each, compile "
    "included), with their curves, final validation losses, tokens/s and MFU "
    "(`bench/record_runs.py`); talk-30m's target is under 2 minutes on one H100-class GPU",
    "200 poems from each of the two, judged by `tinylm.poetry.PoemJudge` (`python -m tinylm eval`)",
    "generation with and without the KV cache (`bench/generate.py`)",
]
NOT_IN_GPU_CHECK = (
    "Not measured by `bench/gpu_check.sh` either: the gpu profile's notebook runs "
    "(`char-gpu`, `mistral-gpu`), and DDP and FSDP on several GPUs (tokens/s "
    "as the number of GPUs grows)."
)
RECORDING = """## Recording the GPU figures

`bench/gpu_check.sh` records every GPU figure above in one run of at most 10 minutes on one
H100/H200-class GPU. Each step has its own time limit (together 580 s), so one slow step cannot
eat the others' time; a training run stopped by its limit is neither recorded nor judged. The
data goes in a file of its own: `data/` is git-ignored, and the GPU machine may have no network.

1. Where the data is prepared (after `make data`): `bash bench/gpu_check.sh pack` writes
   `data/bench/gpu_check.tar.gz` (about 22 MB: the packed GPT-2 tokens, the raw poems and 平仄
   labels the poem judge reads, tiktoken's GPT-2 files, and wheels of OpenCC and pypinyin for
   CPython 3.12, or for the version in `GPU_PYTHON_VERSION`).
2. Copy that file to the same path in a checkout of the same commit on the GPU machine (for
   example `scp data/bench/gpu_check.tar.gz gpu:tinylm/data/bench/`), and there, from the
   repository root: `OUT=/tmp/gpu_check bash bench/gpu_check.sh`. It writes its JSON files and
   its log, `gpu_check.log`, into `$OUT`.
3. Copy the JSON files unchanged into `data/reference/` of your checkout (their names include
   the device, e.g. `runs_cuda-nvidia-h200.json`), for example with
   `scp 'gpu:/tmp/gpu_check/*.json' data/reference/`, or with
   `cp /tmp/gpu_check/*.json data/reference/` where the GPU machine holds your checkout. Then run
   `python bench/report.py`. The log stays out of `data/reference/`.
"""


def device_type(path: Path, result: dict) -> str:
    """cpu, cuda or mps: from the file's machine record, else from the slug ending its name."""
    if "machine" in result:
        return result["machine"]["device"].split(":")[0]
    return path.stem.rsplit("_", 1)[-1].split("-")[0]


def source_line(path: Path, result: dict) -> str:
    """The file a table comes from, and where and when it was measured."""
    where = (
        machine_line(result["machine"])
        if "machine" in result
        else f"*device `{path.stem.rsplit('_', 1)[-1]}`, as the file's name says*"
    )
    return f"[`{path.name}`](../data/reference/{path.name}): {where}"


def render(reference: Path = REFERENCE_DIR) -> str:
    """The whole page from the JSON in `reference`: one part per kind of device, then the recipe."""
    found: dict[str, list[tuple[int, Path, dict]]] = {}
    for number_, (_, pattern, _, _) in enumerate(SECTIONS):
        for path in sorted(reference.glob(pattern)):
            result = json.loads(path.read_text(encoding="utf-8"))
            found.setdefault(device_type(path, result), []).append((number_, path, result))
    parts = [HEADER]
    for kind in ["cpu", "cuda", *sorted(set(found) - {"cpu", "cuda"})]:
        parts.append(f"## {PART_TITLES.get(kind, kind)}\n")
        files = found.get(kind, [])
        if kind == "cuda" and not files:
            parts.append(
                "No GPU run has been recorded yet: every figure on this page was "
                "measured on a CPU. Still to measure on a GPU:\n\n"
                + "\n".join(f"- {item}" for item in GPU_FIGURES)
                + f"\n\n{NOT_IN_GPU_CHECK} The last section says how to record them.\n"
            )
            continue
        for number_, (title, _, render_section, kinds) in enumerate(SECTIONS):
            mine = [(path, result) for n, path, result in files if n == number_]
            if not mine and kind not in kinds:
                continue
            parts.append(f"### {title}\n")
            if not mine:
                parts.append(
                    "Not recorded on a GPU yet.\n" if kind == "cuda" else "Not measured yet.\n"
                )
            for path, result in mine:
                parts.append(f"{source_line(path, result)}\n\n{render_section(result)}\n")
        if kind == "cuda":
            parts.append(NOT_IN_GPU_CHECK + "\n")
    parts.append(RECORDING)
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if docs/benchmarks.md differs from what the JSON gives",
    )
    args = parser.parse_args()
    page = render()
    if args.check:
        current = PAGE.read_text(encoding="utf-8") if PAGE.is_file() else ""
        if current != page:
            sys.exit(f"{PAGE} is out of date: run `python bench/report.py`")
        print(f"{PAGE} is up to date")
        return
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(page, encoding="utf-8")
    print(f"saved {PAGE}")


if __name__ == "__main__":
    main()
