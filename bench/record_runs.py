"""Record finished training runs (final losses, time, throughput, loss curve) as references.

Training writes everything to ``runs/<run>/log.jsonl``, which is not committed. This script
reads the logs of the named runs (default: the profile's runs of notebooks 05 and 10) and
writes their final figures, with the machine record, to ``data/reference/runs_<device>.json``
(``runs_cpu-fp32.json`` for the cpu profile's fp32 sizes; or ``--out``), where
`docs/benchmarks.md` and the notebooks can read them. Run it on the machine that trained the
runs, e.g. after ``python -m tinylm train --run talk-30m`` on a GPU:
``python bench/record_runs.py talk-30m``.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import torch
from common import machine, save_result, slug

from tinylm.hardware import best_device
from tinylm.model import CONFIG_FILE, GPTConfig, count_parameters, flops_per_token
from tinylm.profiles import get_profile
from tinylm.reference import REFERENCE_DIR
from tinylm.run_files import TRAIN_CONFIG_FILE, read_log
from tinylm.runs import run_folder


def run_record(name: str) -> dict:
    """The final figures of one finished run, from its log and the config saved with its model."""
    folder = run_folder(name)
    model_dir = folder / "model"
    if not (model_dir / TRAIN_CONFIG_FILE).is_file():
        raise SystemExit(
            f"run {name!r} has no final model in {model_dir}; train it first with "
            f"`python -m tinylm train --run {name}`"
        )
    cfg = json.loads((model_dir / TRAIN_CONFIG_FILE).read_text(encoding="utf-8"))
    config = GPTConfig.from_dict(json.loads((model_dir / CONFIG_FILE).read_text(encoding="utf-8")))
    log = read_log(folder)
    last = log[-1]
    throughput = [r["tokens_per_s"] for r in log if r["tokens_per_s"] is not None]
    mfus = [r["mfu"] for r in log if r["mfu"] is not None]
    finished = datetime.fromtimestamp((model_dir / TRAIN_CONFIG_FILE).stat().st_mtime, timezone.utc)
    return {
        "run": name,
        "model": cfg["model"],
        "tokenizer": cfg["tokenizer"],
        "parameters": count_parameters(config),
        "steps": last["step"],
        "tokens": last["tokens"],
        "batch_size": cfg["batch_size"],
        "block_size": config.block_size,
        "train_flops": flops_per_token(config) * last["tokens"],
        "val_loss": last["val_loss"],
        "eval_train_loss": last["eval_train_loss"],
        "elapsed_s": round(last["elapsed_s"], 1),
        "median_tokens_per_s": round(sorted(throughput)[len(throughput) // 2], 1),
        "median_mfu": sorted(mfus)[len(mfus) // 2] if mfus else None,
        "finished": finished.isoformat(timespec="seconds"),
        "curve": {
            key: [r[key] for r in log if r["val_loss"] is not None]
            for key in ("step", "tokens", "val_loss", "eval_train_loss")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "runs",
        nargs="*",
        help="run folders under runs/ (default: the profile's notebook 05 and 10 runs: "
        "char-cpu and mistral-cpu, or their -fp32 sizes where this machine trains in fp32)",
    )
    parser.add_argument(
        "--out", type=Path, help="JSON file (default: data/reference/runs_<device>.json)"
    )
    args = parser.parse_args()
    device = torch.device(best_device())
    profile = get_profile()
    sizes = "-fp32" if profile.fp32_sizes else ""
    out = args.out or REFERENCE_DIR / f"runs_{slug(device)}{sizes}.json"
    records = [run_record(name) for name in args.runs or [profile.train_run, profile.mistral_run]]
    print(
        f"{'run':<14}{'steps':>7}{'tokens (M)':>12}{'val loss':>10}{'minutes':>9}{'tokens/s':>10}"
    )
    for r in records:
        print(
            f"{r['run']:<14}{r['steps']:>7}{r['tokens'] / 1e6:>12.2f}{r['val_loss']:>10.3f}"
            f"{r['elapsed_s'] / 60:>9.1f}{r['median_tokens_per_s']:>10,.0f}"
        )
    result = {
        "benchmark": "runs",
        "machine": machine(device),
        "note": "recorded on this machine from each run's own log; elapsed_s is the "
        "run's wall time, evaluation included, and tokens/s the median of its "
        "logged intervals (less sensitive to other work on the machine)",
        "results": records,
    }
    print(f"saved {save_result(result, out)}")


if __name__ == "__main__":
    main()
