"""The runs behind notebook 05's exercise answers: its run again with dropout, and at half the lr.

Exercise 1 trains the profile's run with `dropout=0.1`, exercise 2 with half the peak (and
final) learning rate; everything else is the run of `tinylm.runs.RUNS` (data, batches, steps,
seed, precision). This script trains both variants (a finished run is loaded, not trained again),
loads the run itself, and records for each: the training loss around step 100 (the mean of the
logged steps 75 to 125), the run's own validation loss at its last evaluation, and the fp32
validation losses bench/recipe_search.py records too (`common.validation_losses`: 64
fixed batches of random and of poem-start windows). The runs are deterministic on CPU, so the
load changes their wall time only, which is not recorded. ``python bench/pretraining_exercises.py``
(the `cpu` profile's `char-cpu`, about 20 minutes on 2 cores) writes
``data/reference/pretraining_exercises_cpu.json``; ``--run char-ci`` is the CI-sized check.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch
from common import machine, save_result, validation_losses

from tinylm import data
from tinylm.reference import REFERENCE_DIR
from tinylm.runs import RUNS, TrainConfig
from tinylm.train import train

EARLY_STEPS = (75, 125)  # the logged steps averaged for "the loss after 100 steps"


def variants(run: TrainConfig) -> dict[str, TrainConfig]:
    """The run and the two exercises' changes to it, each in a run folder of its own."""
    return {
        "as trained": run,
        "dropout 0.1": replace(run, run_name=f"{run.run_name}-dropout", dropout=0.1),
        "half lr": replace(
            run, run_name=f"{run.run_name}-half-lr", lr=run.lr / 2, min_lr=run.min_lr / 2
        ),
    }


def score(cfg: TrainConfig) -> dict:
    """Train (or load) one variant; its early training loss and its validation losses."""
    result = train(cfg)
    logged = [r for r in result.history if r["train_loss"] is not None]
    early = [r["train_loss"] for r in logged if EARLY_STEPS[0] <= r["step"] <= EARLY_STEPS[1]]
    evals = [r for r in result.history if r["val_loss"] is not None]
    return {
        "run": cfg.run_name,
        "dropout": cfg.dropout,
        "lr": cfg.lr,
        "min_lr": cfg.min_lr,
        "steps": cfg.max_steps,
        "tokens": result.history[-1]["tokens"],
        "train_loss_near_100": sum(early) / len(early) if early else None,
        "final_val_loss": evals[-1]["val_loss"],
        "final_step": evals[-1]["step"],
        "curve": {"step": [r["step"] for r in evals], "val_loss": [r["val_loss"] for r in evals]},
        **validation_losses(result.model, data.load_packed("char").val, result.tokenizer.eot_id),
    }


def main() -> None:
    """Train and score the variants of one run and save them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="char-cpu", choices=sorted(RUNS))
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the JSON file (default data/reference/pretraining_exercises_cpu"
        ".json for char-cpu, else pretraining_exercises_<run>.json)",
    )
    args = parser.parse_args()
    out = args.out or REFERENCE_DIR / (
        "pretraining_exercises_cpu.json"
        if args.run == "char-cpu"
        else f"pretraining_exercises_{args.run}.json"
    )
    results = {}
    for name, cfg in variants(RUNS[args.run]).items():
        results[name] = score(cfg)
        row = results[name]
        early = row["train_loss_near_100"]
        print(
            f"{name:<12} train loss near step 100 "
            f"{'-' if early is None else f'{early:.3f}'}  final val {row['final_val_loss']:.3f}"
            f"  val random {row['val_random_64']:.3f}  val poem-start "
            f"{row['val_documents_64']:.3f}",
            flush=True,
        )
    result = {
        "benchmark": "pretraining_exercises",
        "machine": machine(torch.device("cpu")),
        "reference_run": args.run,
        "early_steps": EARLY_STEPS,
        "results": results,
    }
    print(f"saved {save_result(result, out)}")


if __name__ == "__main__":
    main()
