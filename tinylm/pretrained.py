"""Trained models on demand: `get` trains a model once per profile and reuses it afterwards.

So each notebook can run on its own: the first to ask for ``poem-char`` trains it (seconds in
``ci``, minutes in ``cpu``), every later one loads it from ``runs/<run>/model/``. Two notebooks
asking at once do not train it twice: the second waits for the first (`trained`).
"""

from __future__ import annotations

from contextlib import nullcontext

from tinylm.lock import folder_lock
from tinylm.model import GPT
from tinylm.profiles import get_profile
from tinylm.run_files import is_finished
from tinylm.runs import RUNS, TrainConfig, sweep_run
from tinylm.tokenizers import Tokenizer
from tinylm.train import TrainResult, train

MODELS: dict[str, str] = {
    "poem-char": "the profile's character-level poem model (Profile.train_run: "
    "char-ci, char-cpu, char-cpu-fp32 or char-gpu)",
    "poem-mistral": "its Mistral-style twin, trained with the same FLOPs (Profile.mistral_run: "
    "mistral-ci, mistral-cpu, mistral-cpu-fp32 or mistral-gpu)",
}
RUN_FIELDS = {"poem-char": "train_run", "poem-mistral": "mistral_run"}  # Profile fields


def get(
    name: str = "poem-char", profile: str | None = None, progress: bool = True
) -> tuple[GPT, Tokenizer]:
    """The trained model and tokenizer for the profile (TINYLM_PROFILE if None), in eval mode.

    Trains the run the first time (resuming a cut-short run) and loads it every later time.
    """
    if name not in MODELS:
        valid = "; ".join(f"{key!r}: {what}" for key, what in MODELS.items())
        raise ValueError(f"unknown model {name!r}; valid names are {valid}")
    run = getattr(get_profile(profile), RUN_FIELDS[name])
    result = trained(RUNS[run], progress=progress)
    return result.model, result.tokenizer


def trained(cfg: TrainConfig, progress: bool = True) -> TrainResult:
    """Train (or load) a run; if another process is training it, wait for it, then load."""
    waiting = nullcontext() if is_finished(cfg) else folder_lock(cfg.out_dir, wait=True)
    with waiting:
        return train(cfg, progress=progress)


def profile_runs(profile: str | None = None) -> list[TrainConfig]:
    """Every run the notebooks train in the profile, in the order they first need them.

    The main model (notebooks 03-07, and 05's run; in the gpu profile 05 trains the talk's
    30M model too), notebook 05's overfitting runs, notebook 08's scaling sweep, notebook 09's
    tokenizer runs and notebook 10's Mistral-style and RoPE-only twins. Each appears once.
    """
    p = get_profile(profile)
    main = [RUNS[p.train_run]] + ([RUNS["talk-30m"]] if p.name == "gpu" else [])  # 03-07
    overfit = [RUNS[name] for name in p.overfit_runs]  # 05
    sweep = [sweep_run(model, steps) for model, steps in p.scaling_sweep]  # 08
    later = [RUNS[name] for name in (*p.eval_runs, p.mistral_run, p.rope_run)]  # 09, 10
    unique = {cfg.run_name: cfg for cfg in main + overfit + sweep + later}  # first kept
    return list(unique.values())


def warm(profile: str | None = None, progress: bool = True) -> list[TrainResult]:
    """Train (or load) every run of `profile_runs`, so no notebook waits for a training run."""
    return [trained(cfg, progress=progress) for cfg in profile_runs(profile)]
