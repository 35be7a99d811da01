"""What a training run is: `TrainConfig`, its checks, and `RUNS`, the course's runs by name.

A run is named by its folder, ``runs/<run_name>/`` (``$TINYLM_RUNS_DIR/<run_name>/`` if that is
set), and described by a frozen `TrainConfig`: the model preset, the tokenizer, the batch, the
schedule and the hardware choices. `RUNS` lists every run the notebooks, the CLI and the bench
scripts train, in one table, each built from the profiles' main runs and the talk's; `sweep_run`
builds notebook 08's scaling-sweep runs the same way, one per (model, steps) a profile lists.
`config_changes` says how two configs differ, which decides whether
a run folder can be resumed (`tinylm.run_files.check_resumable`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch

from tinylm.config import ATTENTION_IMPLEMENTATIONS
from tinylm.download import PROJECT_ROOT, env_path
from tinylm.model import PRESETS, flops_per_token, preset
from tinylm.tokenizers import DEFAULT_BPE_VOCAB_SIZE, GPT2_VOCAB_SIZE, TOKENIZER_NAMES

RUNS_DIR_ENV = "TINYLM_RUNS_DIR"  # where run folders go (default: <project>/runs)
DTYPES = ("auto", "float32", "bfloat16", "float16")
COMPILE_CHOICES = ("auto", True, False)
RESIDENT_CHOICES = ("auto", True, False)
PARALLEL_CHOICES = ("ddp", "fsdp")
WINDOW_CHOICES = ("random", "documents")
# Fields that decide how the work is spread over processes or where the data lives, not what
# is trained: is_finished ignores them (a run finished under DDP is finished under FSDP; the
# batches are the same with the corpus on the GPU or not; older runs lack the fields).
LAYOUT_FIELDS = ("parallel", "resident_data")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; `RUNS` holds the course's runs by name."""

    run_name: str  # the folder under runs/
    model: str = "char-ci"  # a preset of tinylm.config.PRESETS
    tokenizer: str = "char"  # "char", "bpe" or "gpt2": which packed data to train on
    batch_size: int = 64  # sequences per micro-batch (per process under DDP)
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: int = 4900  # optimizer steps; the learning-rate schedule spans them
    warmup_steps: int = 100
    lr: float = 1e-3  # peak learning rate, reached after warmup
    min_lr: float = 1e-4  # where the cosine decay ends
    weight_decay: float = 0.1  # on matrices and embeddings only
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0  # largest global gradient norm; 0 turns clipping off
    dropout: float = 0.2
    eval_interval: int = 250  # steps between evaluations (and checkpoints)
    eval_batches: int = 20  # fixed batches per evaluation, from each of train and val
    log_interval: int = 10  # steps between records (the only host syncs of the loop)
    block_size: int | None = None  # context length; None keeps the preset's
    device: str = "auto"  # "auto" picks cuda, then mps, then cpu
    # "auto": bf16 autocast where the hardware has native bf16 (Ampere+ GPUs, CPUs with AMX or
    # AVX-512 BF16), fp16 autocast + a gradient scaler on older GPUs, else float32 (see
    # resolve_precision). "float16" always brings the gradient scaler.
    dtype: str = "auto"
    # "auto": torch.compile on CUDA; on CPU only in bf16 and for runs of CPU_COMPILE_MIN_TOKENS
    # tokens or more, which repay the compile time (see use_compile).
    compile: bool | str = "auto"
    # Keep the packed training tokens on the device and cut batches there (BatchSampler's
    # resident=True); "auto": on CUDA only. True elsewhere exercises the GPU's path (tests).
    resident_data: bool | str = "auto"
    seed: int = 1337
    attention: str = "sdpa"  # "manual" or "sdpa"
    # Where training and evaluation windows start: "random" anywhere in the packed tokens (as
    # nanoGPT does), "documents" only at an end-of-text token, so position 0 is a poem's start.
    windows: str = "random"
    # Train on only the first this many tokens of the training split (None: all of it), so a
    # small run passes over the same poems many times: notebook 05's overfitting runs.
    train_tokens: int | None = None
    # With several processes: "ddp" copies the whole model to each, "fsdp" shards parameters,
    # gradients and optimizer state across them (for 757m, mymistral-0.4b/1b). One process: no
    # effect.
    parallel: str = "ddp"

    def __post_init__(self) -> None:
        """Refuse a field out of its range, with a message naming the field and what it takes."""
        _check_names(self)
        _check_counts(self)
        _check_optimizer(self)
        _check_seed_and_device(self)

    @property
    def schedule(self) -> dict[str, float]:
        """The learning-rate schedule's numbers, as `tinylm.train.lr_at` takes them."""
        return {
            "lr": self.lr,
            "min_lr": self.min_lr,
            "warmup_steps": self.warmup_steps,
            "max_steps": self.max_steps,
        }

    @property
    def out_dir(self) -> Path:
        """The run's folder: ``$TINYLM_RUNS_DIR/<run_name>``, by default ``<project>/runs/…``."""
        return run_folder(self.run_name)


# The largest seed: torch's generators take up to 2**64 - 1, and each process adds its rank.
MAX_SEED = 2**63 - 1

# Fields added after runs were first saved, with the value those runs were trained with.
NEWER_FIELD_DEFAULTS = {"train_tokens": None}

# Characters a run folder's name may not hold: path separators, control characters, and those
# Windows forbids in file names, so a run_name can only ever name a folder inside runs/.
FORBIDDEN_NAME_CHARACTERS = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
# Names Windows keeps for devices, with or without an extension: a folder "CON" or "nul.x"
# cannot be made there, so a run folder copied from Linux could not be opened.
WINDOWS_DEVICE_NAME = re.compile(r"(CON|PRN|AUX|NUL|COM[1-9]|LPT[1-9])(\..*)?$", re.IGNORECASE)


def is_plain_name(name: object) -> bool:
    """True for a string that names one folder inside another: no ".", "..", separators or controls.

    A name ending in a dot or a space is refused too (Windows strips them, so two names would
    share a folder there), Windows' device names such as CON and NUL, and names longer than
    255 bytes.
    """
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not FORBIDDEN_NAME_CHARACTERS.search(name)
        and not name.endswith((".", " "))
        and not WINDOWS_DEVICE_NAME.match(name)
        and len(name.encode("utf-8")) <= 255  # the longest file name most file systems allow
    )


def runs_dir() -> Path:
    """The folder holding every run's folder: $TINYLM_RUNS_DIR, by default <project>/runs."""
    return env_path(RUNS_DIR_ENV) or PROJECT_ROOT / "runs"


def run_folder(run_name: str) -> Path:
    """Where a run of this name keeps its log, checkpoint and model."""
    return runs_dir() / run_name


def _check_names(cfg: TrainConfig) -> None:
    """The run's folder name, and every field that takes one of a few names."""
    _check(
        is_plain_name(cfg.run_name),
        "run_name",
        "must be one plain folder name (not '.' or '..', no path separators, control or "
        "Windows-reserved characters such as : * ? < > |, not a Windows device name such as "
        f"CON or NUL, at most 255 bytes), got {cfg.run_name!r}",
    )
    _check_choice("model", cfg.model, sorted(PRESETS))
    _check_choice("tokenizer", cfg.tokenizer, TOKENIZER_NAMES)
    _check_choice("dtype", cfg.dtype, DTYPES)
    _check_choice("compile", cfg.compile, COMPILE_CHOICES)
    _check_choice("resident_data", cfg.resident_data, RESIDENT_CHOICES)
    _check_choice("attention", cfg.attention, ATTENTION_IMPLEMENTATIONS)
    _check_choice("parallel", cfg.parallel, PARALLEL_CHOICES)
    _check_choice("windows", cfg.windows, WINDOW_CHOICES)


def _check_counts(cfg: TrainConfig) -> None:
    """The batch, the steps and the intervals: whole numbers; train_tokens and block_size too."""
    for name in (
        "batch_size",
        "grad_accum",
        "max_steps",
        "eval_interval",
        "eval_batches",
        "log_interval",
    ):
        value = getattr(cfg, name)
        _check(
            isinstance(value, int) and value >= 1,
            name,
            f"must be a positive integer, got {value!r}",
        )
    _check(
        isinstance(cfg.warmup_steps, int) and 0 <= cfg.warmup_steps <= cfg.max_steps,
        "warmup_steps",
        f"must be an integer from 0 to max_steps ({cfg.max_steps}), got {cfg.warmup_steps!r}",
    )
    _check(
        cfg.train_tokens is None
        or (
            isinstance(cfg.train_tokens, int)
            and not isinstance(cfg.train_tokens, bool)
            and cfg.train_tokens >= 1
        ),
        "train_tokens",
        f"must be None (all) or a positive integer, got {cfg.train_tokens!r}",
    )
    _check(
        cfg.block_size is None or (isinstance(cfg.block_size, int) and cfg.block_size >= 1),
        "block_size",
        f"must be None or a positive integer, got {cfg.block_size!r}",
    )


def _check_optimizer(cfg: TrainConfig) -> None:
    """The learning rates, weight decay, betas, clipping and dropout: finite, in range."""
    for name in ("lr", "min_lr", "weight_decay", "grad_clip", "dropout"):
        value = getattr(cfg, name)
        _check(
            _is_number(value) and math.isfinite(value),
            name,
            f"must be a finite number, got {value!r}",
        )
    _check(cfg.lr > 0, "lr", f"must be positive, got {cfg.lr}")
    _check(
        0 <= cfg.min_lr <= cfg.lr,
        "min_lr",
        f"must be between 0 and lr ({cfg.lr}), got {cfg.min_lr}",
    )
    _check(cfg.weight_decay >= 0, "weight_decay", f"must be >= 0, got {cfg.weight_decay}")
    _check(
        isinstance(cfg.betas, (tuple, list))
        and len(cfg.betas) == 2
        and all(_is_number(b) and 0 <= b < 1 for b in cfg.betas),
        "betas",
        f"must be two numbers in [0, 1), got {cfg.betas!r}",
    )
    _check(cfg.grad_clip >= 0, "grad_clip", f"must be >= 0 (0: off), got {cfg.grad_clip}")
    _check(0 <= cfg.dropout < 1, "dropout", f"must be in [0, 1), got {cfg.dropout}")


def _check_seed_and_device(cfg: TrainConfig) -> None:
    """A seed torch's generators take with the rank added, and a device torch knows."""
    _check(
        isinstance(cfg.seed, int) and not isinstance(cfg.seed, bool) and 0 <= cfg.seed <= MAX_SEED,
        "seed",
        f"must be an integer from 0 to 2**63 - 1, got {cfg.seed!r}",
    )
    _check(
        cfg.device == "auto" or _is_device(cfg.device),
        "device",
        f"must be 'auto' or a torch device such as 'cpu', 'cuda', 'cuda:1' or 'mps', "
        f"got {cfg.device!r}",
    )


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ValueError(f"TrainConfig.{name} {message}")


def _check_choice(name: str, value: object, valid: tuple | list) -> None:
    _check(value in valid, name, f"must be one of {list(valid)}, got {value!r}")


def _is_number(value: object) -> bool:
    """An int or a float, not a bool (True would pass for 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_device(name: str) -> bool:
    try:
        torch.device(name)
    except (RuntimeError, TypeError):
        return False
    return True


def config_fields() -> list[str]:
    """Names of the TrainConfig fields, for error messages and the CLI's key=value overrides."""
    return [f.name for f in fields(TrainConfig)]


def config_changes(saved: dict, cfg: TrainConfig) -> list[str]:
    """ "name saved → wanted" for each TrainConfig field cfg changes (LAYOUT_FIELDS aside).

    A field the saved config lacks counts as its default: runs saved before the field existed
    were trained as the default trains.
    """
    wanted = json.loads(json.dumps(asdict(cfg)))  # tuples as lists, as in the saved JSON
    saved = json.loads(json.dumps({**NEWER_FIELD_DEFAULTS, **saved}))
    missing = "(not saved)"
    return [
        f"{name} {saved.get(name, missing)} → {value}"
        for name, value in wanted.items()
        if name not in LAYOUT_FIELDS and saved.get(name, missing) != value
    ]


def same_compute_steps(reference: TrainConfig, model: str, vocab_size: int) -> int:
    """Optimizer steps that give `model` the training FLOPs of `reference` (same batches)."""
    block_size = reference.block_size or PRESETS[reference.model].block_size
    ours = flops_per_token(preset(model, vocab_size=vocab_size), block_size)
    theirs = flops_per_token(preset(reference.model, vocab_size=vocab_size), block_size)
    return round(reference.max_steps * theirs / ours)


# The profiles' main runs and the talk's; the rest of RUNS is built from them.
# CI: 5-6 s of training on 2 idle Xeon cores (9-11 s for `python -m tinylm train --run char-ci`
# with start-up and three poems; measured 2026-11-30), several times that on a loaded machine.
# The loss falls; the poems are still noise.
CHAR_CI = TrainConfig(
    "char-ci",
    model="char-ci",
    tokenizer="char",
    batch_size=16,
    max_steps=60,
    warmup_steps=10,
    lr=3e-3,
    min_lr=3e-4,
    dropout=0.0,
    eval_interval=20,
    eval_batches=4,
    log_interval=5,
    windows="documents",
)
# A laptop: under 10 minutes on 2 CPU cores with native bf16 (bf16 autocast + compile, as
# "auto" picks there; 5,600 to 8,600 tokens/s on the 2-core VMs here, which vary), 3.1M
# characters (0.8 epoch). Windows start at a poem, so the learned positions mean the same
# in training as in writing. bench/recipe_search.py compared the choices
# (data/reference/recipe_search_cpu.json): at 2.2M tokens, poem-start windows wrote 54 %
# regulated poems against 24 % for random ones; at ~4.4M tokens, batch 16 at lr 2e-3 had
# the lowest validation loss of batch 8 or 16 at lr 1e-3, 2e-3 or 3e-3, but 4.4M tokens
# does not fit 10 minutes at the slower speed. Too short to overfit, so no dropout.
CHAR_CPU = TrainConfig(
    "char-cpu",
    model="char-cpu",
    tokenizer="char",
    batch_size=16,
    max_steps=1500,
    warmup_steps=100,
    lr=2e-3,
    min_lr=2e-4,
    dropout=0.0,
    eval_interval=250,
    eval_batches=8,
    log_interval=25,
    windows="documents",
)
# A laptop that trains in fp32 (no native bf16, or Apple's MPS; tinylm.profiles.CPU_FP32): fp32
# is about half as fast as bf16 there, so the same recipe (batches, schedule, poem-start windows)
# on a narrower model (char-cpu-fp32: width 192, ~4,000 tokens/s on 2 AVX2 cores) and 2.15M
# tokens, to train in under 10 minutes there (data/reference/fresh_start_cpu-fp32.json).
CHAR_CPU_FP32 = replace(CHAR_CPU, run_name="char-cpu-fp32", model="char-cpu-fp32", max_steps=1050)
# The talk's runs on an A10G: GPT-2 tokens, 64 x 256 tokens a step, 4,900 steps = 80.3M
# tokens (~10 epochs), AdamW (0.9, 0.99), lr 1e-3 cosine to 1e-4, dropout 0.2, bf16, SDPA.
TALK_30M = TrainConfig(
    "talk-30m",
    model="30m",
    tokenizer="gpt2",
    batch_size=64,
    max_steps=4900,
    warmup_steps=100,
    lr=1e-3,
    min_lr=1e-4,
    dropout=0.2,
    eval_interval=250,
    eval_batches=20,
    log_interval=10,
)
# A workshop GPU: the talk's 30M run on characters, 2,500 steps (~11 epochs of the 3.8M
# characters), windows starting at a poem as in the other character runs.
CHAR_GPU = replace(
    TALK_30M, run_name="char-gpu", tokenizer="char", max_steps=2500, windows="documents"
)
# The talk's MyMistral ("模型: nanoGPT模型 (size: 30M/124M) | MyMistral-0.4/1B", on the same one
# A10G): the 0.4B, whose loss and perplexity curves the talk shows. The talk states its model
# (Mistral-7B's architecture cut to 8 layers of width 2048: preset mymistral-0.4b), the GPU, and
# for its runs bf16 and FlashAttention; nothing else of this run's recipe. The course's
# assumptions, each a guess where the talk is silent:
# - GPT-2's tokens, as the talk's nanoGPT runs. The talk's MyMistral read Mistral's own
#   LlamaTokenizer (32,000 tokens, the "<s>" of its samples, ~1.47 tokens per character); the
#   course ships no copy of it. GPT-2's 50,257 tokens make the embedding and the untied output
#   layer 1.6x larger: 542M parameters with both tables, against 467M with Llama's.
# - 20M tokens, as the talk's other large run ("~757M size / 20M tokens / 77min / ~3 epochs"):
#   1,221 steps of 64 x 256 tokens, ~2.5 epochs of the GPT-2-tokenized poems. About 45 minutes on
#   an A10G at the ~20 TFLOP/s the talk's 757M run implies (tinylm.scaling.TALK_RUNS).
# - the rest of the talk's nanoGPT table: context 256, AdamW (0.9, 0.99), lr 1e-3 with cosine decay
#   (to 1e-4 after 100 warmup steps, as TALK_30M), but no dropout: the talk's printout of its
#   MistralForCausalLM has no dropout layer (transformers' Mistral has only attention_dropout,
#   0 by default).
# - 64 sequences a step as 2 micro-batches of 32: 64 at once needs ~27 GiB
#   (tinylm.model.training_memory_bytes), more than the A10G's 24. On several GPUs, DDP fits too
#   (8.7 GB of weights, gradients and AdamW state); `parallel=fsdp` shards them.
# No notebook trains it (`python -m tinylm train --run mymistral-0.4b` on a GPU does).
TALK_MYMISTRAL = replace(
    TALK_30M,
    run_name="mymistral-0.4b",
    model="mymistral-0.4b",
    batch_size=32,
    grad_accum=2,
    max_steps=1221,
    dropout=0.0,
    eval_interval=125,
)
CHAR_VOCAB = PRESETS["char-cpu"].vocab_size  # the character vocabulary, padded to 64
# The vocabulary each tokenizer gives a model: with the model's shape, what a token costs.
TOKENIZER_VOCAB_SIZES = {"char": CHAR_VOCAB, "bpe": DEFAULT_BPE_VOCAB_SIZE, "gpt2": GPT2_VOCAB_SIZE}


def tokenizer_twin(reference: TrainConfig, tokenizer: str, run_name: str) -> TrainConfig:
    """The reference run on another tokenizer's tokens, at the same training FLOPs.

    Same model shape, batches and schedule. A larger vocabulary makes every token dearer (the
    output layer has a row per token: GPT-2's 50k rows cost the cpu shapes ~3x a character), so
    the twin takes that many times fewer steps, and its warmup, evaluations and records scale
    with them.
    """
    block_size = reference.block_size or PRESETS[reference.model].block_size

    def cost(name: str) -> int:
        vocab_size = TOKENIZER_VOCAB_SIZES[name]
        return flops_per_token(preset(reference.model, vocab_size=vocab_size), block_size)

    ratio = cost(reference.tokenizer) / cost(tokenizer)
    return replace(
        reference,
        run_name=run_name,
        tokenizer=tokenizer,
        max_steps=max(1, round(reference.max_steps * ratio)),
        warmup_steps=round(reference.warmup_steps * ratio),
        eval_interval=max(1, round(reference.eval_interval * ratio)),
        log_interval=max(1, round(reference.log_interval * ratio)),
    )


def model_twin(reference: TrainConfig, run_name: str, model: str) -> TrainConfig:
    """The reference run with its model swapped for `model`, at the same training FLOPs."""
    return replace(
        reference,
        run_name=run_name,
        model=model,
        max_steps=same_compute_steps(reference, model, CHAR_VOCAB),
    )


def overfitting_pair(
    reference: TrainConfig, size: str, train_tokens: int, max_steps: int
) -> tuple[TrainConfig, TrainConfig]:
    """The reference recipe for many epochs over its first train_tokens tokens, two ways.

    `overfit-<size>` trains without dropout, `overfit-dropout-<size>` with the talk's 0.2;
    both evaluate about twenty times, so the validation curve shows where it turns (notebook 05).
    """
    interval = max(1, max_steps // 20)
    without = replace(
        reference,
        run_name=f"overfit-{size}",
        train_tokens=train_tokens,
        max_steps=max_steps,
        warmup_steps=max_steps // 10,
        dropout=0.0,
        eval_interval=interval,
        eval_batches=4,
        log_interval=interval,
    )
    return without, replace(without, run_name=f"overfit-dropout-{size}", dropout=0.2)


def sweep_run(model: str, steps: int) -> TrainConfig:
    """Run `<model>-<steps>` of notebook 08's scaling sweep: char-cpu's recipe on a sweep model.

    Every run shares char-cpu's batch, context, evaluation batches and poem-start windows, so
    all are scored on the same text and their losses compare; each has its own warmup + cosine
    over `steps`, evaluates once at the end and logs five records. The profiles list their
    sweeps' (model, steps) (tinylm.profiles.Profile.scaling_sweep).
    """
    return replace(
        CHAR_CPU,
        run_name=f"{model}-{steps}",
        model=model,
        max_steps=steps,
        warmup_steps=max(1, min(50, steps // 10)),
        eval_interval=steps,
        log_interval=max(1, steps // 5),
    )


RUNS: dict[str, TrainConfig] = {
    cfg.run_name: cfg
    for cfg in (
        CHAR_CI,
        CHAR_CPU,
        CHAR_CPU_FP32,
        CHAR_GPU,
        TALK_30M,
        replace(TALK_30M, run_name="talk-124m", model="124m"),
        TALK_MYMISTRAL,
        # Tokenizer comparisons (notebook 09): each profile's main run against its twins on our
        # 8k BPE and on GPT-2's tokens, at the same training FLOPs.
        *(
            tokenizer_twin(reference, tokenizer, f"{tokenizer}-{size}")
            for reference, size in (
                (CHAR_CI, "ci"),
                (CHAR_CPU, "cpu"),
                (CHAR_CPU_FP32, "cpu-fp32"),
                (CHAR_GPU, "gpu"),
            )
            for tokenizer in ("bpe", "gpt2")
        ),
        # Overfitting (notebook 05): a few hundred poems (a few dozen in ci), seen ~20 times.
        *overfitting_pair(CHAR_CI, "ci", train_tokens=2_048, max_steps=40),
        *overfitting_pair(CHAR_CPU, "cpu", train_tokens=32_768, max_steps=400),
        *overfitting_pair(CHAR_CPU_FP32, "cpu-fp32", train_tokens=32_768, max_steps=280),
        *overfitting_pair(CHAR_GPU, "gpu", train_tokens=393_216, max_steps=600),
        # Architecture comparison (notebook 10): each profile's character model against its
        # Mistral-style twin (RMSNorm, RoPE, SwiGLU, grouped-query attention, untied head), with the
        # same data, batches and schedule, and as many steps as give the same training FLOPs.
        model_twin(CHAR_CI, "mistral-ci", "mistral-ci"),
        model_twin(CHAR_CPU, "mistral-cpu", "mistral-cpu"),
        model_twin(CHAR_CPU_FP32, "mistral-cpu-fp32", "mistral-cpu-fp32"),
        model_twin(CHAR_GPU, "mistral-gpu", "mistral-30m"),
        # ... and against the same model with rotary positions only (notebook 10's answer 1).
        *(
            model_twin(reference, f"{reference.run_name}-rope", f"{reference.model}-rope")
            for reference in (CHAR_CI, CHAR_CPU, CHAR_CPU_FP32, CHAR_GPU)
        ),
    )
}
