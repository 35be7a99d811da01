"""Run profiles: one code path, three sizes (`ci` tests, `cpu` laptops, `gpu` workshops).

Pick one with the environment variable ``TINYLM_PROFILE``; without it the course uses ``gpu`` when
PyTorch sees a CUDA device with at least GPU_PROFILE_MIN_BYTES of memory and ``cpu`` otherwise.
Every notebook reads its sizes from here, so the same cells run in seconds under CI and at full
scale on a GPU. What the hardware is (device, GPU memory, native bf16) comes from tinylm.hardware.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch

# Detection lives in tinylm.hardware; notebooks also import best_device from here.
from tinylm.hardware import best_device, device_memory, training_setup, trains_in_fp32

ENV_VAR = "TINYLM_PROFILE"


@dataclass(frozen=True)
class Profile:
    """Sizes that change between profiles; everything else is the same code."""

    name: str
    description: str
    bpe_sample_chars: int  # text the hand-written BPE trainer learns from in notebook 02
    density_vocab_sizes: tuple[int, ...]  # BPE sizes measured for the density table
    concat_demo_poems: tuple[int, ...]  # poem counts timed for the quadratic list-concat demo
    train_run: str  # the profile's main training run: a key of tinylm.runs.RUNS
    mistral_run: str  # its Mistral-style twin at the same training FLOPs (notebook 10)
    rope_run: str  # the main run's model with rotary positions only, same FLOPs (notebook 10)
    attention_seq_lens: tuple[int, ...]  # sequence lengths timed in notebook 03
    sft_steps: int  # optimizer steps of each fine-tuning run in notebook 06
    sft_eval_prompts: int  # held-out instructions the fine-tuned models answer in notebook 06
    kv_cache_new_tokens: int  # tokens generated when timing the KV cache in notebook 07
    exercise_train_steps: int  # steps of `make exercises-train` (exercises/train.py, notebook 05)
    scaling_sweep: tuple[tuple[str, int], ...]  # notebook 08's sweep: (model preset, steps) runs
    overfit_runs: tuple[str, str]  # notebook 05's overfitting runs: without, with dropout
    eval_runs: tuple[str, ...]  # runs of tinylm.runs.RUNS whose poems notebook 09 scores
    eval_samples: int  # poems each model writes for notebook 09's metrics
    fp32_sizes: bool = False  # the cpu profile's runs for machines that train in fp32 (CPU_FP32)

    @property
    def label(self) -> str:
        """The name, plus "-fp32" for the fp32 sizes: how file names and reports tell them apart."""
        return f"{self.name}-fp32" if self.fp32_sizes else self.name


PROFILES: dict[str, Profile] = {
    "ci": Profile(
        name="ci",
        description="CI on 2 CPU cores: every notebook in seconds, smallest sizes",
        bpe_sample_chars=20_000,
        density_vocab_sizes=(512, 2048),
        concat_demo_poems=(250, 500, 1000),
        train_run="char-ci",
        mistral_run="mistral-ci",
        rope_run="char-ci-rope",
        attention_seq_lens=(64, 128, 256),
        sft_steps=20,
        sft_eval_prompts=8,
        kv_cache_new_tokens=32,
        exercise_train_steps=20,
        scaling_sweep=(
            ("sweep-xs", 5),
            ("sweep-xs", 10),
            ("sweep-xs", 20),
            ("sweep-s", 5),
            ("sweep-s", 10),
            ("sweep-s", 20),
            ("sweep-m", 10),
        ),
        overfit_runs=("overfit-ci", "overfit-dropout-ci"),
        eval_runs=("char-ci", "bpe-ci", "gpt2-ci"),
        eval_samples=16,
    ),
    "cpu": Profile(
        name="cpu",
        description="a laptop without a GPU: each notebook in about 10 minutes at most",
        bpe_sample_chars=300_000,
        density_vocab_sizes=(512, 2048, 8192, 16384),
        concat_demo_poems=(1000, 2000, 4000, 8000),
        train_run="char-cpu",
        mistral_run="mistral-cpu",
        rope_run="char-cpu-rope",
        attention_seq_lens=(128, 256, 512, 1024, 2048),
        sft_steps=300,
        sft_eval_prompts=100,
        kv_cache_new_tokens=256,
        exercise_train_steps=300,
        scaling_sweep=tuple(
            (m, s) for m in ("sweep-xs", "sweep-s", "sweep-l") for s in (100, 300, 900)
        ),
        overfit_runs=("overfit-cpu", "overfit-dropout-cpu"),
        eval_runs=("char-cpu", "bpe-cpu", "gpt2-cpu"),
        eval_samples=120,
    ),
    "gpu": Profile(
        name="gpu",
        description="an A10G-class GPU: the talk's runs at full scale",
        bpe_sample_chars=300_000,
        density_vocab_sizes=(512, 2048, 8192, 16384),
        concat_demo_poems=(1000, 2000, 4000, 8000),
        train_run="char-gpu",
        mistral_run="mistral-gpu",
        rope_run="char-gpu-rope",
        attention_seq_lens=(256, 512, 1024, 2048, 4096, 8192),
        sft_steps=1000,
        sft_eval_prompts=200,
        kv_cache_new_tokens=256,
        exercise_train_steps=300,
        scaling_sweep=tuple(
            (m, s) for m in ("sweep-xs", "sweep-s", "sweep-m", "sweep-l") for s in (250, 1000, 3000)
        ),
        overfit_runs=("overfit-gpu", "overfit-dropout-gpu"),
        eval_runs=("char-gpu", "bpe-gpu", "gpt2-gpu", "talk-30m", "talk-124m"),
        eval_samples=500,
    ),
}


# The least memory a CUDA GPU needs for the gpu profile by default; smaller GPUs get the cpu
# profile's sizes. An 8 GB card reports about 7.6 GiB and keeps the gpu profile: its runs fit
# there with gradient accumulation (tinylm.hardware.fit_micro_batch; talk-124m as 4 x 16). At
# 6 GB or less (laptop GPUs, mostly) talk-124m would shrink to micro-batches of 8 and fewer, on
# slow chips: hours per run, where the cpu profile's runs take minutes.
GPU_PROFILE_MIN_BYTES = 7 * 2**30


# The cpu profile on a machine that trains in fp32: a CPU without native bf16 (most laptops: Intel
# Core since 12th gen and AMD before Zen 4 stop at AVX2) or Apple's MPS. fp32 trains the cpu
# shape at about half the speed (char-cpu: 2,800 against 5,600 tokens/s on 2 cores), so these
# runs are smaller and shorter, and named *-fp32: a result says which size it is, and a run
# never changes size when it resumes (tinylm.runs.RUNS explains each). Same profile name.
CPU_FP32 = replace(
    PROFILES["cpu"],
    description="a laptop without a GPU or native bf16 (fp32 sizes): each notebook in about "
    "10 minutes at most",
    train_run="char-cpu-fp32",
    mistral_run="mistral-cpu-fp32",
    rope_run="char-cpu-fp32-rope",
    sft_steps=200,
    overfit_runs=("overfit-cpu-fp32", "overfit-dropout-cpu-fp32"),
    eval_runs=("char-cpu-fp32", "bpe-cpu-fp32", "gpt2-cpu-fp32"),
    fp32_sizes=True,
)


def default_profile_name() -> str:
    """``gpu`` on a CUDA GPU of GPU_PROFILE_MIN_BYTES or more, else ``cpu`` (no TINYLM_PROFILE)."""
    memory = device_memory(best_device())
    return "gpu" if memory is not None and memory[1] >= GPU_PROFILE_MIN_BYTES else "cpu"


def get_profile(name: str | None = None) -> Profile:
    """The named profile, or the one TINYLM_PROFILE (or the hardware) selects.

    ``cpu`` comes in two sizes: CPU_FP32's runs where the machine trains in fp32.
    """
    chosen = name or os.environ.get(ENV_VAR) or default_profile_name()
    try:
        profile = PROFILES[chosen.strip().lower()]
    except KeyError:
        valid = ", ".join(PROFILES)
        source = "argument" if name else f"environment variable {ENV_VAR}"
        raise ValueError(
            f"Unknown run profile {chosen!r} (from the {source}). Valid profiles are: {valid}. "
            f"Set {ENV_VAR} to one of them, for example `export {ENV_VAR}=cpu`, or unset it to "
            "let the course pick gpu or cpu from your hardware."
        ) from None
    return CPU_FP32 if profile.name == "cpu" and trains_in_fp32() else profile


def describe_environment() -> dict[str, str]:
    """Versions, device and profile: what a learner checks before the first lesson."""
    import platform

    import numpy
    import tiktoken

    device = best_device()
    if (memory := device_memory(device)) is not None:
        device = f"cuda ({memory[0]}, {memory[1] / 2**30:.1f} GiB)"
    profile = get_profile()
    return {
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "tiktoken": tiktoken.__version__,
        "device": device,
        "cpu threads": str(torch.get_num_threads()),
        **training_setup(best_device()),
        "profile": f"{profile.name}: {profile.description} ({_profile_reason()})",
    }


def _profile_reason() -> str:
    """Why get_profile() picks its profile: TINYLM_PROFILE, the GPU's memory, or no GPU."""
    if os.environ.get(ENV_VAR):
        return f"set by {ENV_VAR}"
    memory = device_memory(best_device())
    if memory is None:
        return "no CUDA GPU"
    size, least = memory[1] / 2**30, GPU_PROFILE_MIN_BYTES / 2**30
    if size >= least:
        return f"a GPU with {size:.1f} GiB, at least the {least:g} GiB the gpu profile needs"
    return f"a GPU with {size:.1f} GiB, under the {least:g} GiB the gpu profile needs"
