"""The talk's recipe trained by nanoGPT itself on one H200: curves, speed and poems, as data.

No GPU has trained `tinylm`'s own talk-scale runs for this course yet, but nanoGPT's
``train.py`` (karpathy/nanoGPT at 3adf61e, unmodified) has, with the talk's settings, on the
全唐诗 poems. ``data/reference/gpu-nanogpt-h200/`` holds what those runs recorded; its README
gives the provenance. Two things differ from the course, so label every use of this data as
"nanoGPT on an H200, the talk's recipe":

- the split is the talk's (the last 10 % of the poems in file order) and the text is cleaned
  less (duplicates kept), so its losses do not compare with a `tinylm` run's validation loss;
- the GPU is an H200, not the talk's A10G.

`curves()` gives each run's evaluations and logged steps, `steady_step_ms` / `tokens_per_s` /
`mfu` its speed, and `sample_rows` / `ended_documents` the 2 × 128 sampled rows as poems.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from tinylm.hardware import PEAK_FLOPS
from tinylm.model import flops_per_token, preset
from tinylm.reference import REFERENCE_DIR

NANOGPT_H200_DIR = REFERENCE_DIR / "gpu-nanogpt-h200"
GPU_NAME = "NVIDIA H200"
GPU_PEAK_FLOPS = PEAK_FLOPS["H200"]  # dense bf16, the datasheet's figure
TOKENS_PER_STEP = 64 * 256  # the talk's batch 64 × context 256, in every run here
EOT = "<|endoftext|>"
GPT2_VOCAB_PADDED = 50304  # nanoGPT pads GPT-2's 50,257 tokens to a multiple of 64
# Which course preset has each run's shape (layers × heads × width), for the FLOPs per token.
PRESET_OF_RUN = {
    "gpt2_30m_4900it": "30m",
    "gpt2_30m_5000it": "30m",
    "gpt2_124m_5000it": "124m",
}


def _load(name: str, folder: Path | None = None) -> dict:
    """One of the reference's JSON files, or an error that says how to get it back."""
    path = (folder or NANOGPT_H200_DIR) / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} is missing: it is part of the course's repository; restore it with "
            f"`git checkout -- {path}`"
        ) from None


def curves(folder: Path | None = None) -> dict[str, dict]:
    """Each run's record: parameters_M, shape, wall_s, evals (step, train_loss, val_loss) and
    iters (every 100th step: iter, loss, ms)."""
    return _load("curves.json", folder)


def steady_step_ms(run: dict) -> float:
    """The median step time in ms, leaving out the steps that include an evaluation."""
    every = run["shape"]["eval_interval"]
    times = [row["ms"] for row in run["iters"] if row["iter"] % every != 0]
    return statistics.median(times)


def tokens_per_s(run: dict) -> float:
    """Training tokens per second at the steady step time."""
    return TOKENS_PER_STEP / (steady_step_ms(run) / 1000)


def mfu(run_name: str, run: dict, peak_flops: float = GPU_PEAK_FLOPS) -> float:
    """Model FLOPs utilisation: the model's FLOPs per second over the GPU's peak (GPT-2 runs)."""
    config = preset(PRESET_OF_RUN[run_name], vocab_size=GPT2_VOCAB_PADDED)
    return flops_per_token(config) * tokens_per_s(run) / peak_flops


def sample_rows(folder: Path | None = None) -> dict[str, list[str]]:
    """The 128 sampled rows of each 5,000-step model (200 new tokens each, T = 0.8, top-k 200)."""
    return {name: record["samples"] for name, record in _load("samples.json", folder).items()}


def sampling_times(folder: Path | None = None) -> dict[str, dict[str, float]]:
    """The sampling speeds recorded with the rows (seconds for 128 × 200 and 1 × 255 tokens,
    and tokens/s of one row): batch128_200tok_s, batch1_255tok_s, tok_per_s_b1."""
    return {
        name: {key: value for key, value in record.items() if key != "samples"}
        for name, record in _load("samples.json", folder).items()
    }


def ended_documents(rows: list[str]) -> list[str]:
    """The documents of the rows that ended with end-of-text (the last of each row was cut off)."""
    return [doc.strip("\n") for row in rows for doc in row.split(EOT)[:-1] if doc.strip()]
