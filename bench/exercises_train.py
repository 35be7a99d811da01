"""What `make exercises-train` costs, and how far apart two correct runs of it may land.

Times the comparison that `python -m exercises.train --solutions` runs (the worked solutions'
model and tinylm's, trained one after the other on the CPU), then trains tinylm's model alone
from the same starting weights with other batch seeds: the spread of those validation losses is
what a correct `get_batch` that draws its windows in another order may move the learner's loss
by, and what `exercises.train.TOLERANCE` is set from. Saves
``data/reference/exercises_train_<profile>.json``. Run it on an idle machine (one heavy job at a
time): `python bench/exercises_train.py`.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import torch
from common import machine, save_result

from exercises import train as exercise_train
from tinylm import data
from tinylm.model import GPT
from tinylm.profiles import get_profile
from tinylm.reference import REFERENCE_DIR


def seed_spread(
    packed: data.PackedData, settings: exercise_train.Settings, seeds: list[int]
) -> dict:
    """tinylm's validation loss after training with each batch seed, from the same weights."""
    config = exercise_train.model_config(settings, packed.meta["vocab_size"])
    val = exercise_train.val_batches(packed.val, settings)
    losses = {}
    for seed in seeds:
        torch.manual_seed(settings.seed)  # the starting weights compare() uses
        model = GPT(config)
        exercise_train.train_tinylm(model, packed.train, dataclasses.replace(settings, seed=seed))
        losses[seed] = exercise_train.mean_loss(model, val)
    values = list(losses.values())
    return {
        "val_loss_by_seed": losses,
        "range": max(values) - min(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def main() -> None:
    """Time the solutions' comparison, measure the seed spread, save and print both."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="batch seeds for the spread")
    parser.add_argument("--steps", type=int, help="optimizer steps (default: the profile's)")
    parser.add_argument("--out", type=Path, help="where to save the JSON")
    args = parser.parse_args()
    profile = get_profile()
    settings = exercise_train.Settings(steps=args.steps or profile.exercise_train_steps)
    result = {"benchmark": "exercises_train", "machine": machine(torch.device("cpu"))}
    packed = data.load_packed("char")
    pieces = exercise_train.load_pieces(solutions=True)
    start = time.perf_counter()
    comparison = exercise_train.compare(
        pieces, packed.train, packed.val, packed.meta["vocab_size"], settings
    )
    result["comparison_s"] = time.perf_counter() - start
    result["solutions"] = {"val_yours": comparison.val_yours, "val_tinylm": comparison.val_tinylm}
    seeds = [settings.seed + k for k in range(args.seeds)]
    result["seed_spread"] = seed_spread(packed, settings, seeds)
    result.update(profile=profile.label, settings=dataclasses.asdict(settings))
    out = args.out or REFERENCE_DIR / f"exercises_train_{profile.label}.json"
    print(
        f"comparison (both models, {settings.steps} steps each): {result['comparison_s']:.0f} s; "
        f"gap with the solutions {comparison.gap:+.5f}; tinylm's loss over {args.seeds} batch "
        f"seeds spans {result['seed_spread']['range']:.4f}, standard deviation "
        f"{result['seed_spread']['stdev']:.4f} (the tolerance: {exercise_train.TOLERANCE})"
    )
    print(f"saved {save_result(result, out)}")


if __name__ == "__main__":
    main()
