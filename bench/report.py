"""Write docs/benchmarks.md from the benchmark JSON files committed under data/reference/.

Every figure on that page comes from a file a bench script wrote, with the date, device and
commit it was measured on, so the page cannot drift from the measurements: run
``python bench/report.py`` after any benchmark (``make bench`` does), and
``python bench/report.py --check`` to fail when the committed page is out of date (the tests do).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from machine_info import ROOT

REFERENCE = ROOT / "data" / "reference"
PAGE = ROOT / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Measured by the scripts in [`bench/`](../bench) and saved as JSON under
[`data/reference/`](../data/reference); this page is generated from those files by
`python bench/report.py` (do not edit it by hand). Timings depend on the machine and on what
else it was doing: each table names its device, date, commit and the load average when it ran.
"""


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
    return "*" + ", ".join(parts) + "*"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def number(value: float | None, digits: int = 0, suffix: str = "") -> str:
    """A figure with thousands separators, or a dash when missing."""
    return "–" if value is None else f"{value:,.{digits}f}{suffix}"


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
        mfu = None if r["mfu"] is None else 100 * r["mfu"]
        rows.append([r["preset"], r["rung"], number(r["tokens_per_s"]),
                     number(r["ms_per_step"], 1), f"{r['tokens_per_s'] / base[r['preset']]:.2f}×",
                     number(mfu, 1, " %"), "ok"])
    warmup = "1 warm-up step" if result["warmup"] == 1 else f"{result['warmup']} warm-up steps"
    note = f"Batch {result['batch_size']}, {result['steps']} timed steps after {warmup}."
    return note + "\n\n" + table(["preset", "rung", "tokens/s", "ms/step", "speed-up", "MFU",
                                  "status"], rows)


def generate(result: dict) -> str:
    """Generation tokens/s with and without the KV cache."""
    rows = []
    for r in result["results"]:
        rows.append([str(r["batch_size"]), str(r["new_tokens"]),
                     number(r["with_cache_tokens_per_s"]),
                     number(r["without_cache_tokens_per_s"]), f"{r['speed_up']:.1f}×",
                     number(r.get("plain_tokens_per_s")),
                     f"{r['speed_up_vs_plain']:.1f}×" if "speed_up_vs_plain" in r else "–"])
    note = (f"Preset `{result['model']}` ({result['parameters'] / 1e6:.1f}M parameters, random "
            f"weights, {result['dtype']}), greedy, after a {result['prompt_tokens']}-token "
            "prompt; identical tokens every way. Without the cache: nanoGPT's loop (whole "
            "context, output layer on the last position); plain loop: logits at every position.")
    return note + "\n\n" + table(["batch", "new tokens", "with cache tok/s",
                                  "without tok/s", "speed-up", "plain loop tok/s", "speed-up"],
                                 rows)


def runs(result: dict) -> str:
    """Finished training runs: size, tokens, final losses, wall time, throughput."""
    rows = []
    for r in result["results"]:
        mfu = None if r["median_mfu"] is None else 100 * r["median_mfu"]
        rows.append([f"`{r['run']}`", f"`{r['model']}`", r["tokenizer"],
                     number(r["parameters"] / 1e6, 2), number(r["tokens"] / 1e6, 2),
                     number(r["val_loss"], 3), number(r["elapsed_s"] / 60, 1),
                     number(r["median_tokens_per_s"]), number(mfu, 1, " %"),
                     r["finished"][:10]])
    return (result["note"][0].upper() + result["note"][1:] + ".\n\n" +
            table(["run", "model", "tokenizer", "params (M)", "tokens (M)", "val loss (nats)",
                   "minutes", "tokens/s (median)", "MFU", "finished"], rows))


def cpu_speed(result: dict) -> str:
    """The cpu profile's training and sampling against the talk-style reference loops."""
    train, sample = result["train"], result["sample"]
    train_rows = [[r["description"], number(r.get("tokens_per_s")), number(r.get("ms_per_step"), 1),
                   f"{r['ratio_to_reference']:.2f}×" if r.get("ratio_to_reference") else "–",
                   number(r["warmup_s"], 1), r["status"]] for r in train["results"]]
    sample_rows = [[str(r["batch_size"]), str(r["new_tokens"]), r["description"],
                    number(r["tokens_per_s"]), f"{r['ratio_to_reference']:.2f}×",
                    "yes" if r["identical_to_reference"] else "no"] for r in sample["results"]]
    return (f"Run `{result['run']}` ({result['parameters'] / 1e6:.2f}M parameters), "
            f"{result['data']}. Training: batch {train['batch_size']} × {train['block_size']}, "
            f"the {train['statistic']} of {train['rounds']} rounds of "
            f"{train['steps_per_round']} steps, the ways taking turns.\n\n" +
            table(["training", "tokens/s", "ms/step", "× reference", "warm-up s", "status"],
                  train_rows) +
            f"\n\nSampling: {sample['decoding']}, {sample['weights']}, after a "
            f"{sample['prompt_tokens']}-token prompt.\n\n" +
            table(["batch", "new tokens", "sampling", "tokens/s", "× reference",
                   "same tokens as the reference"], sample_rows))


SECTIONS: list[tuple[str, str, Callable[[dict], str]]] = [
    ("Data preparation", "bench_data_prep*.json", data_prep),
    ("Training throughput, one optimisation at a time", "bench_train_throughput_*.json",
     train_throughput),
    ("CPU speed against the talk's plain loops", "bench_cpu_speed_*.json", cpu_speed),
    ("Generation with and without the KV cache", "bench_generate_*.json", generate),
    ("Training runs", "runs_*.json", runs),
]
GPU_FIGURES = [
    "the training ladder (`bench/train_throughput.py`) on an H100/H200-class GPU: targets 30m "
    "≥ 45 % MFU and 124m ≥ 55 % MFU against 989 TFLOPS dense bf16",
    "the talk's 30M run (`python -m tinylm train --run talk-30m`, 80M GPT-2 tokens) end to end, "
    "compile included, in under 2 minutes on one H100-class GPU, with its final validation loss "
    "(record it with `python bench/record_runs.py talk-30m`)",
    "the 124M run (`talk-124m`) and the gpu-profile runs of the notebooks (`char-gpu`, "
    "`mistral-gpu`)",
    "generation with and without the KV cache on a GPU (`bench/generate.py`)",
    "DDP and FSDP on several GPUs (tokens/s scaling with the number of GPUs)",
]


def render() -> str:
    """The whole page."""
    parts = [HEADER]
    gpu_measured = False
    for title, pattern, render_section in SECTIONS:
        files = sorted(REFERENCE.glob(pattern))
        if not files:
            parts.append(f"## {title}\n\nNot measured yet.\n")
            continue
        parts.append(f"## {title}\n")
        for path in files:
            result = json.loads(path.read_text(encoding="utf-8"))
            gpu_measured |= result["machine"].get("device", "cpu").startswith("cuda")
            parts.append(f"[`{path.name}`](../data/reference/{path.name}): "
                         f"{machine_line(result['machine'])}\n\n{render_section(result)}\n")
    if not gpu_measured:
        parts.append("## Still to measure on a GPU\n\nNo GPU has been available to the course's "
                     "developers yet, so none of these figures exist:\n\n" +
                     "\n".join(f"- {item}" for item in GPU_FIGURES) +
                     "\n\n`bench/gpu_check.sh` measures the ladder, the talk's 30M run and "
                     "generation in one go on a machine with one CUDA GPU (about 10 minutes on "
                     "an H100).\n")
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if docs/benchmarks.md differs from what the JSON gives")
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
