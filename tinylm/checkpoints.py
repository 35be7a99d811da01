"""Trained models on demand: `get` trains a model once per profile and reuses it afterwards.

So each notebook can run on its own: the first to ask for ``poem-char`` trains it (seconds in
``ci``, minutes in ``cpu``), every later one loads it from ``runs/<run>/model/``.
"""

from __future__ import annotations

from tinylm.model import GPT
from tinylm.profiles import get_profile
from tinylm.tokenizers import Tokenizer
from tinylm.train import RUNS, train

MODELS: dict[str, str] = {
    "poem-char": "the profile's character-level poem model (Profile.train_run: "
                 "char-ci, char-cpu or char-gpu)",
    "poem-mistral": "its Mistral-style twin, trained with the same FLOPs (Profile.mistral_run: "
                    "mistral-ci, mistral-cpu or mistral-gpu)",
}
RUN_FIELDS = {"poem-char": "train_run", "poem-mistral": "mistral_run"}  # Profile fields


def get(name: str = "poem-char", profile: str | None = None, progress: bool = True
        ) -> tuple[GPT, Tokenizer]:
    """The trained model and tokenizer for the profile (TINYLM_PROFILE if None), in eval mode.

    Trains the run the first time (resuming a cut-short run) and loads it every later time.
    """
    if name not in MODELS:
        valid = "; ".join(f"{key!r}: {what}" for key, what in MODELS.items())
        raise ValueError(f"unknown model {name!r}; valid names are {valid}")
    run = getattr(get_profile(profile), RUN_FIELDS[name])
    result = train(RUNS[run], progress=progress)
    return result.model, result.tokenizer
