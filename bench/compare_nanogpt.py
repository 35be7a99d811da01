"""tinylm's talk runs on a GPU beside nanoGPT's own runs of the talk's recipe on an H200.

`bench/gpu_check.sh` trains talk-30m and talk-124m and records them (`bench/record_runs.py`
writes runs_<slug>.json). This script sets each beside nanoGPT's run of the same shape
(`tinylm.nanogpt_reference`, data/reference/gpu-nanogpt-h200/): tokens per second of both, each
on its own GPU, and the two validation curves side by side, step by step. nanoGPT's validation
split is the talk's (the last 10 % of the poems in file order, duplicates kept), not the
course's, so the two losses differ by more than training: compare the curves' shapes, not their
levels.

    python bench/compare_nanogpt.py --runs /tmp/gpu_check/runs_cuda-nvidia-h200.json \\
        --out /tmp/gpu_check/compare_nanogpt_cuda-nvidia-h200.json

Without --runs it reads the GPU runs recorded in data/reference/ (runs_cuda-*.json). Where no
tinylm GPU run is recorded it says so and still shows the reference's side.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import save_result

from tinylm import nanogpt_reference as ref
from tinylm.scaling import NANOGPT_H200_RUNS
from tinylm.viz import reference_runs

LABEL = "nanoGPT on an H200, the talk's recipe"
NOTE = (
    "nanoGPT's losses are on the talk's split (the last 10 % of the poems in file order) and "
    "its cleaning (duplicates kept), tinylm's on the course's: both are nats per GPT-2 token, "
    "but of different validation text, so compare the curves' shapes and the speeds, not the "
    "loss levels. nanoGPT's 124M run took 5,000 steps at a peak learning rate of 6e-4 (tinylm's "
    "talk-124m: 4,900 at 1e-3). tokens_per_s: tinylm's is the median of its logged "
    "intervals, nanoGPT's its median step time (steps after an evaluation left out); "
    "end_to_end_tokens_per_s divides all tokens by the whole wall time (start-up, compiling "
    "and evaluations included)."
)


def load_runs(path: Path | None) -> dict[str, dict]:
    """{run name: record with its "machine"} from a runs JSON, or data/reference's GPU runs."""
    if path is None:
        return reference_runs("cuda")
    if not path.is_file():
        return {}
    recorded = json.loads(path.read_text(encoding="utf-8"))
    machine = recorded.get("machine", {})
    return {r["run"]: {**r, "machine": machine} for r in recorded.get("results", [])}


def side_by_side(mine: dict | None, evals: list[dict]) -> list[dict]:
    """One row per evaluated step of either run: tokens and both validation losses (or None)."""
    ours = dict(zip(mine["step"], mine["val_loss"], strict=True)) if mine else {}
    theirs = {e["step"]: e["val_loss"] for e in evals}
    return [
        {
            "step": step,
            "tokens": step * ref.TOKENS_PER_STEP,
            "tinylm_val_loss": ours.get(step),
            "nanogpt_val_loss": theirs.get(step),
        }
        for step in sorted(ours.keys() | theirs.keys())
    ]


def compare(runs: dict[str, dict], reference: dict[str, dict]) -> dict:
    """The comparison of every talk shape: both runs' speeds and the curves side by side."""
    rows = []
    for name, key in NANOGPT_H200_RUNS.items():
        theirs, mine = reference[key], runs.get(name)
        steps = theirs["shape"]["max_iters"]
        nanogpt = {
            "run": key,
            "gpu": ref.GPU_NAME,
            "steps": steps,
            "tokens_per_s": round(ref.tokens_per_s(theirs), 1),
            "end_to_end_tokens_per_s": round(steps * ref.TOKENS_PER_STEP / theirs["wall_s"], 1),
            "last_eval_step": theirs["evals"][-1]["step"],
            "last_val_loss": theirs["evals"][-1]["val_loss"],
        }
        tinylm = None
        if mine is not None:
            tinylm = {
                "gpu": mine["machine"].get("device_name", "unknown GPU"),
                "steps": mine["steps"],
                "tokens_per_s": mine["median_tokens_per_s"],
                "end_to_end_tokens_per_s": round(mine["tokens"] / mine["elapsed_s"], 1),
                "last_eval_step": mine["steps"],
                "last_val_loss": mine["val_loss"],
            }
        curve = side_by_side(mine and mine["curve"], theirs["evals"])
        rows.append({"run": name, "tinylm": tinylm, "nanogpt": nanogpt, "curves": curve})
    machines = [r["machine"] for name, r in runs.items() if name in NANOGPT_H200_RUNS]
    result = {"benchmark": "compare_nanogpt", "reference": LABEL, "note": NOTE, "results": rows}
    return {"machine": machines[0], **result} if machines else result


def report(result: dict) -> str:
    """The comparison as text: speeds, then the curves."""
    lines = [f"tinylm's talk runs against {LABEL}"]
    for row in result["results"]:
        mine, theirs = row["tinylm"], row["nanogpt"]
        lines.append(f"\n{row['run']}")
        if mine is None:
            lines.append(f"  tinylm: no GPU run of {row['run']} recorded (bench/gpu_check.sh)")
        for who, side in (("tinylm", mine), ("nanoGPT", theirs)):
            if side is not None:
                lines.append(
                    f"  {who:<8}{side['gpu'][:24]:<25}{side['tokens_per_s']:>12,.0f} tokens/s "
                    f"({side['end_to_end_tokens_per_s']:,.0f} end to end), {side['steps']:,} "
                    f"steps; validation loss {side['last_val_loss']:.3f} at step "
                    f"{side['last_eval_step']:,}"
                )
        lines.append(f"  {'step':>6}{'tokens':>9}{'tinylm val':>12}{'nanoGPT val':>13}")
        for r in row["curves"]:
            cells = [
                "-" if r[k] is None else f"{r[k]:.3f}"
                for k in ("tinylm_val_loss", "nanogpt_val_loss")
            ]
            lines.append(f"  {r['step']:>6}{r['tokens'] / 1e6:>8.1f}M{cells[0]:>12}{cells[1]:>13}")
    lines.append("\n" + result["note"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs", type=Path, help="runs JSON of bench/record_runs.py (default: data/reference's)"
    )
    parser.add_argument("--out", type=Path, help="JSON file to write (default: print only)")
    args = parser.parse_args(argv)
    result = compare(load_runs(args.runs), ref.curves())
    print(report(result))
    if args.out:
        print(f"saved {save_result(result, args.out)}")


if __name__ == "__main__":
    main()
