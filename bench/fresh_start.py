"""What a learner waits for on this machine, from a fresh clone: `make demo`, sampling, `make warm`.

The cpu profile promises budgets (docs/teaching.md): the main run trains in under 10 minutes,
`make demo` from a fresh clone finishes in under 13 (set-up and data included), and `make warm`
trains every run the notebooks use in about an hour. This script measures them as a learner
meets them. It clones the committed HEAD of this repository into a new folder beside it, then,
timing each step:

1. ``make demo``: a new virtual environment from requirements.lock, the data (downloaded, or
   copied from ``TINYLM_DATA_MIRROR``), the profile's main run, three poems;
2. ``python -m tinylm sample -n 120`` with the CLI's defaults, and ``python -m tinylm eval``
   (the course's judge on ``--samples`` poems), on that main run;
3. with ``--warm``: ``make warm`` into a new, empty runs folder, so every run of the profile,
   the main run included, trains from scratch (the data is ready by then, as after set-up).

It saves ``data/reference/fresh_start_<profile label>.json`` (cpu-fp32 where the machine trains
in fp32) with the machine record, each run's training time from its own log, and the judge's
report. Run it on an idle machine: one heavy job at a time. To measure the common laptop on a
CPU with bf16, hold it to AVX2 and fp32 first: ``ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 TINYLM_CPU_BF16=0``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import machine, save_result

from tinylm.download import PROJECT_ROOT
from tinylm.hardware import best_device
from tinylm.pretrained import profile_runs
from tinylm.profiles import get_profile
from tinylm.progress import PROGRESS_ENV
from tinylm.reference import REFERENCE_DIR
from tinylm.run_files import read_log
from tinylm.runs import RUNS_DIR_ENV


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """Run a command to the end, its output kept: (wall seconds, output); raise if it fails."""
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{(done.stdout + done.stderr)[-4000:]}")
    return seconds, done.stdout


def run_seconds(runs_folder: Path, run_names: list[str]) -> dict[str, float]:
    """Each run's training time (evaluations included) from the last record of its own log."""
    return {name: read_log(runs_folder / name)[-1]["elapsed_s"] for name in run_names}


def main() -> None:
    """Clone, time the learner's first commands, save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", action="store_true", help="also time make warm from scratch")
    parser.add_argument("--samples", type=int, default=200, help="poems the judge scores")
    parser.add_argument("--out", type=Path, help="JSON file (default: see above)")
    args = parser.parse_args()
    profile = get_profile()
    out = args.out or REFERENCE_DIR / f"fresh_start_{profile.label}.json"
    clone = Path(tempfile.mkdtemp(prefix="tinylm-fresh-", dir=PROJECT_ROOT.parent))
    subprocess.run(["git", "clone", "--quiet", str(PROJECT_ROOT), str(clone)], check=True)
    env = {**os.environ, PROGRESS_ENV: "text"}
    env.pop(RUNS_DIR_ENV, None)  # the clone's own runs/ folder, empty
    python = str(clone / ".venv" / "bin" / "python")
    main_run = profile.train_run
    figures: dict = {"clone": clone.name, "profile": profile.label, "main_run": main_run}

    seconds, _ = timed(["make", "demo"], clone, env)
    figures["make_demo_s"] = round(seconds, 1)
    figures["main_run_train_s"] = run_seconds(clone / "runs", [main_run])[main_run]
    print(
        f"make demo (fresh clone): {seconds:.0f} s; {main_run} trained in "
        f"{figures['main_run_train_s']:.0f} s",
        flush=True,
    )

    seconds, _ = timed([python, "-m", "tinylm", "sample", "-n", "120"], clone, env)
    figures["sample_120_cli_defaults_s"] = round(seconds, 1)
    print(f"120 poems with the CLI's defaults: {seconds:.0f} s", flush=True)

    report_file = clone / "runs" / main_run / "eval.json"
    seconds, _ = timed(
        [python, "-m", "tinylm", "eval", "--run", main_run, "--samples", str(args.samples)],
        clone,
        env,
    )
    report = json.loads(report_file.read_text(encoding="utf-8"))
    figures["eval_s"] = round(seconds, 1)
    figures["eval"] = {k: v for k, v in report.items() if k != "examples"}
    figures["eval_examples"] = report["examples"]
    print(
        f"judged {args.samples} poems: regulated {report['regulated']:.1%}, uniform verses "
        f"{report['uniform_verses']:.1%}, copied verses {report['copied_verses']:.1%}",
        flush=True,
    )

    if args.warm:
        warm_runs = clone / "runs-warm"
        seconds, _ = timed(["make", "warm"], clone, {**env, RUNS_DIR_ENV: str(warm_runs)})
        names = [cfg.run_name for cfg in profile_runs(profile.name)]
        figures["make_warm_s"] = round(seconds, 1)
        figures["warm_run_train_s"] = run_seconds(warm_runs, names)
        print(f"make warm (every run from scratch): {seconds:.0f} s", flush=True)

    result = {
        "benchmark": "fresh_start",
        "machine": machine(torch.device(best_device())),
        "note": "wall seconds of each command in a fresh clone of the committed HEAD (make demo "
        "includes creating .venv from requirements.lock and preparing the data; pip's cache and "
        "the data mirror were whatever this machine had); *_train_s from each run's log",
        "python": sys.version.split()[0],
        "results": figures,
    }
    print(f"saved {save_result(result, out)}; the clone is in {clone}")


if __name__ == "__main__":
    main()
