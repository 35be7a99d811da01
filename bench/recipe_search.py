"""How the cpu profile's main run got its recipe: the runs compared, their losses and poems.

Every variant is the earlier `char-cpu` recipe (`BASE`: 4 layers of width 256, context 128,
batches of 8, lr 1e-3 cosine to 1e-4, 1,800 steps, no dropout) with a few settings changed, in
bf16 autocast with torch.compile; the last row is the course's `char-cpu` as `tinylm.runs.RUNS`
has it. Each is trained once (a finished run is loaded, not trained
again), then scored the same way:

- validation loss on fixed random windows (`windows="random"`: what `char-cpu`'s 4.947 nats per
  character was measured on, 8 batches of 8 x 128 at EVAL_SEED; also 64 batches, for less noise)
  and on 64 fixed batches of windows that start at a poem (`windows="documents"`), in fp32;
- 200 poems written from end-of-text (temperature 0.8, top-k 200, seed 0), scored by
  `tinylm.poetry.PoemJudge` against the training split.

The runs are deterministic on CPU, so how busy the machine was changes their wall time, not
their numbers; their wall times are not recorded here for that reason (the final run's is, in
data/reference/runs_cpu.json). Run all of it with ``python bench/recipe_search.py`` (about an
hour and a half on 2 cores) or some variants with ``--only A_rand B_docs``; it writes
``data/reference/recipe_search_cpu.json``, keeping the results of variants it did not run.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path

import torch
from common import JUDGED_POEMS, POEM_METRICS, machine, save_result, validation_losses

from tinylm import cleaning, data, poetry
from tinylm.evaluate import EVAL_SEED
from tinylm.reference import REFERENCE_DIR
from tinylm.runs import RUNS, TrainConfig
from tinylm.train import train

BASE = TrainConfig(
    "char-cpu",
    model="char-cpu",
    tokenizer="char",
    batch_size=8,
    max_steps=1800,
    warmup_steps=100,
    lr=1e-3,
    min_lr=1e-4,
    dropout=0.0,
    eval_interval=300,
    eval_batches=8,
    log_interval=50,
    dtype="bfloat16",
    compile=True,
)
# name: (what it tests, the settings changed from BASE). A and B: half the final token budget.
VARIANTS: dict[str, tuple[str, dict]] = {
    "A_rand": (
        "random windows, 2.2M tokens",
        dict(batch_size=16, max_steps=1075, eval_interval=1075, log_interval=25),
    ),
    "B_docs": (
        "windows start at a poem, 2.2M tokens",
        dict(
            batch_size=16, max_steps=1075, eval_interval=1075, log_interval=25, windows="documents"
        ),
    ),
    "C1_b8": (
        "documents, batch 8, lr 1e-3, 4.3M tokens",
        dict(batch_size=8, max_steps=4200, eval_interval=700, log_interval=50, windows="documents"),
    ),
    "C2_b16_lr2": (
        "documents, batch 16, lr 2e-3, 4.5M tokens",
        dict(
            batch_size=16,
            max_steps=2200,
            lr=2e-3,
            min_lr=2e-4,
            eval_interval=550,
            log_interval=25,
            windows="documents",
        ),
    ),
    "D1_b16_lr3": (
        "documents, batch 16, lr 3e-3, 4.5M tokens",
        dict(
            batch_size=16,
            max_steps=2200,
            lr=3e-3,
            min_lr=3e-4,
            eval_interval=550,
            log_interval=25,
            windows="documents",
        ),
    ),
    "D2_b8_lr2": (
        "documents, batch 8, lr 2e-3, 4.3M tokens",
        dict(
            batch_size=8,
            max_steps=4200,
            lr=2e-3,
            min_lr=2e-4,
            eval_interval=700,
            log_interval=50,
            windows="documents",
        ),
    ),
    "char-cpu": ("the course's run (tinylm.runs.RUNS), 3.1M tokens", None),
}


def variant_config(name: str) -> TrainConfig:
    """The variant's TrainConfig: BASE with its settings, in a run folder of its own name."""
    settings = VARIANTS[name][1]
    return RUNS[name] if settings is None else replace(BASE, run_name=name, **settings)


def score(name: str, judge: poetry.PoemJudge) -> dict:
    """Train (or load) one variant and score its loss and its poems."""
    cfg = variant_config(name)
    result = train(cfg)
    report, documents = poetry.judge_model(result.model, result.tokenizer, judge, JUDGED_POEMS)
    return {
        "variant": name,
        "what": VARIANTS[name][0],
        "settings": dict(VARIANTS[name][1] or asdict(cfg)),
        "tokens": result.history[-1]["tokens"],
        **validation_losses(result.model, data.load_packed("char").val, result.tokenizer.eot_id),
        **{key: report[key] for key in POEM_METRICS},
        "examples": documents[:3],
    }


def main() -> None:
    """Score the chosen variants and merge them into the JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=REFERENCE_DIR / "recipe_search_cpu.json")
    args = parser.parse_args()
    judge = poetry.PoemJudge.from_training(cleaning.load_corpus().train)
    old = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
    results = {r["variant"]: r for r in old.get("results", [])}
    for name in args.only:
        results[name] = score(name, judge)
        row = results[name]
        print(
            f"{name:<12} {row['tokens'] / 1e6:4.1f}M tokens  val random "
            f"{row['val_random_8']:.3f}  val documents {row['val_documents_64']:.3f}  "
            f"regulated {row['regulated']:.0%}  uniform {row['uniform_verses']:.0%}  "
            f"copied {row['copied_verses']:.1%}",
            flush=True,
        )
    result = {
        "machine": machine(torch.device("cpu")),
        "base": {k: v for k, v in vars(BASE).items() if k != "run_name"},
        "eval_seed": EVAL_SEED,
        "poems": JUDGED_POEMS,
        "sampling": {"temperature": 0.8, "top_k": 200, "seed": 0},
        "results": [results[name] for name in VARIANTS if name in results],
    }
    print(f"saved {save_result(result, args.out)}")


if __name__ == "__main__":
    main()
