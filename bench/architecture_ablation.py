"""Which Mistral option helps the cpu profile's character model: each one alone, at equal compute.

Notebook 10 trains `char-cpu` (GPT-2 style) against `mistral-cpu` (all five options of
Mistral-7B: RMSNorm, RoPE, SwiGLU, grouped-query attention, untied head) at the same training
FLOPs. This script trains `char-cpu` with **one** option switched at a time, everything else as
in `tinylm.runs.RUNS["char-cpu"]` (data, batches, schedule, seed, bf16 + compile), and as many
steps as give the same training FLOPs (`tinylm.runs.same_compute_steps`). It scores every model
as bench/recipe_search.py does (`common.validation_losses`): fp32 validation loss on fixed
random and poem-start windows, and 200 poems (temperature 0.8, top-k 200, seed 0) judged by
`tinylm.poetry.PoemJudge`.

A finished run is loaded, not trained again; `char-cpu` and `mistral-cpu` are the runs notebooks
05 and 10 train. Each new variant trains for about 10 minutes on 2 cores. Run all of it with
``python bench/architecture_ablation.py`` or some variants with ``--only rope``; it writes
``data/reference/architecture_ablation_cpu.json``, keeping the results of variants it did not run.
One seed per variant: read differences smaller than a few hundredths of a nat as noise.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch
from common import JUDGED_POEMS, POEM_METRICS, machine, save_result, validation_losses

from tinylm import cleaning, data, poetry
from tinylm.evaluate import EVAL_SEED
from tinylm.model import PRESETS
from tinylm.reference import REFERENCE_DIR
from tinylm.runs import CHAR_VOCAB, RUNS, TrainConfig, same_compute_steps
from tinylm.train import train

REFERENCE = RUNS["char-cpu"]
# name: (what it changes, the GPTConfig fields switched on char-cpu's preset). None: a course run.
VARIANTS: dict[str, tuple[str, dict | None]] = {
    "char-cpu": ("GPT-2 style: LayerNorm, learned positions, GELU, tied head", None),
    "rmsnorm": ("RMSNorm only", dict(norm="rmsnorm")),
    "rope": ("rotary positions only", dict(position="rope")),
    "swiglu": ("SwiGLU MLP (hidden 688) only", dict(mlp="swiglu", intermediate_size=688)),
    "gqa": ("2 key/value heads for 4 query heads only", dict(n_kv_head=2)),
    "untied": ("untied output layer only", dict(tie_weights=False)),
    "mistral-cpu": ("all five options (notebook 10's twin)", None),
}


def variant_config(name: str) -> TrainConfig:
    """The variant's run: char-cpu with its preset's options switched, at char-cpu's compute."""
    changes = VARIANTS[name][1]
    if changes is None:
        return RUNS[name]
    model = f"char-cpu-{name}"  # char-cpu-rope is a preset already, and RUNS' char-cpu-rope
    PRESETS[model] = replace(PRESETS[REFERENCE.model], **changes)
    return replace(
        REFERENCE,
        run_name=model,
        model=model,
        max_steps=same_compute_steps(REFERENCE, model, CHAR_VOCAB),
    )


def score(name: str, judge: poetry.PoemJudge) -> dict:
    """Train (or load) one variant and score its loss and its poems."""
    cfg = variant_config(name)
    result = train(cfg)
    report, documents = poetry.judge_model(result.model, result.tokenizer, judge, JUDGED_POEMS)
    return {
        "variant": name,
        "what": VARIANTS[name][0],
        "changes": VARIANTS[name][1],
        "steps": cfg.max_steps,
        "tokens": result.history[-1]["tokens"],
        **validation_losses(result.model, data.load_packed("char").val, result.tokenizer.eot_id),
        **{key: report[key] for key in POEM_METRICS},
        "examples": documents[:3],
    }


def main() -> None:
    """Score the chosen variants and merge them into the JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument(
        "--out", type=Path, default=REFERENCE_DIR / "architecture_ablation_cpu.json"
    )
    args = parser.parse_args()
    judge = poetry.PoemJudge.from_training(cleaning.load_corpus().train)
    old = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
    results = {r["variant"]: r for r in old.get("results", [])}
    for name in args.only:  # saved after each variant: a long run stopped early keeps its rows
        results[name] = score(name, judge)
        row = results[name]
        print(
            f"{name:<12} {row['steps']:>5} steps  val random {row['val_random_64']:.3f}  "
            f"val poem-start {row['val_documents_64']:.3f}  regulated {row['regulated']:.0%}  "
            f"uniform {row['uniform_verses']:.0%}  copied {row['copied_verses']:.1%}",
            flush=True,
        )
        result = {
            "machine": machine(torch.device("cpu")),
            "reference_run": REFERENCE.run_name,
            "eval_seed": EVAL_SEED,
            "poems": JUDGED_POEMS,
            "sampling": {"temperature": 0.8, "top_k": 200, "seed": 0},
            "results": [results[name] for name in VARIANTS if name in results],
        }
        print(f"saved {save_result(result, args.out)}")


if __name__ == "__main__":
    main()
