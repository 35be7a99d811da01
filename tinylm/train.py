"""The training loop: AdamW, warmup + cosine, clipping, accumulation, eval, checkpoints, DDP.

Read `train` top to bottom, as nanoGPT's train.py: load the packed tokens, build the model and
the optimizer (or restore both from a checkpoint), then repeat one optimizer step at a time:
set the learning rate, run `grad_accum` micro-batches forward and backward, clip, step. Every
`log_interval` steps a record goes to ``runs/<run_name>/log.jsonl``; every `eval_interval` steps
the model is also scored on fixed batches and a checkpoint is written.

A run's folder ``runs/<run_name>/`` (``$TINYLM_RUNS_DIR/<run_name>/`` if that is set) holds:

- ``log.jsonl``: one JSON record per log or eval step, the same dicts as `TrainResult.history`:
  step, tokens (seen so far, all processes), lr, train_loss (mean over the steps since the
  last record, dropout on), val_loss and eval_train_loss (eval steps only: fixed validation and
  training batches, dropout off, so the two compare), grad_norm (mean, before clipping),
  tokens_per_s, mfu (None off known GPUs), elapsed_s. Fields that do not apply are None.
- ``checkpoint/``: the model (config.json + model.safetensors) and ``trainer_state.pt``
  (optimizer, step, RNG states, TrainConfig, data meta, and the gradient scaler's state in
  fp16), enough to resume exactly; ``checkpoint.old/``, the one before it, to fall back on if
  the newest is found damaged.
- ``model/``: the final model, ``tokenizer.json`` and ``train_config.json``, once finished.
- ``lock``, while a process trains the run: a second one is refused (`tinylm.lock`).

Resuming needs the same TrainConfig (`LAYOUT_FIELDS` aside): a run asked for with another
config is an error that names the fields that differ, never a model trained some other way.

Under ``torchrun`` every process trains on its own batches and only rank 0 logs, saves and
shows progress. With ``parallel="ddp"`` (the default) every process holds the whole model and
DistributedDataParallel averages the gradients; with ``parallel="fsdp"`` each process holds only
its shard of every parameter, gradient and AdamW moment (ZeRO-3), for models too big to copy
onto every GPU. The files written are the same either way.

Precision (`resolve_precision`): with ``dtype="auto"`` the weights and AdamW stay in fp32 and
the forward pass runs under bf16 autocast where the hardware computes bf16 natively (Ampere or
newer GPUs; CPUs with AMX or AVX-512 BF16, see `tinylm.profiles.cpu_bf16_support`); on older
GPUs under fp16 autocast, whose narrow range needs a gradient scaler (`grad_scaler`); elsewhere
in fp32. ``compile="auto"`` (`use_compile`) compiles on CUDA, and on CPU only bf16 runs long
enough to repay the compile time (CPU_COMPILE_MIN_TOKENS).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import shutil
import time
import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.nn.parallel import DistributedDataParallel as DDP

from tinylm import data
from tinylm.attention import ATTENTION_IMPLEMENTATIONS
from tinylm.data import PROJECT_ROOT, BatchSampler, PackedData, write_json
from tinylm.lock import folder_lock
from tinylm.model import GPT, PRESETS, GPTConfig, flops_per_token, preset
from tinylm.profiles import best_device, cpu_bf16_support
from tinylm.progress import progress_bar
from tinylm.timing import synchronize
from tinylm.tokenizers import TOKENIZER_NAMES, Tokenizer, load_tokenizer

RUNS_DIR_ENV = "TINYLM_RUNS_DIR"  # where run folders go (default: <project>/runs)
# torch.compile's backend (default "inductor", which generates C++ on CPU and Triton on CUDA).
# "aot_eager" traces the same graphs without generating code: for a machine without a C++
# compiler, and for the CPU tests of the gpu runs, where inductor's CPU code is not what a GPU
# would run anyway.
COMPILE_BACKEND_ENV = "TINYLM_COMPILE_BACKEND"
DTYPES = ("auto", "float32", "bfloat16", "float16")
AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}  # float32: no autocast
COMPILE_CHOICES = ("auto", True, False)
# compile="auto" on CPU: compiling costs ~31 s once, so it must save more than that. On 2 Xeon
# cores with AMX at the char-cpu shape: eager bf16 5,922 tok/s, compiled bf16 8,170 (31 s to
# compile), so compiling breaks even after ~0.65M tokens; in fp32 it gains nothing (compiled
# 4,595 vs eager 4,518 tok/s). Runs of at least this many tokens per process compile in bf16.
CPU_COMPILE_MIN_TOKENS = 1_000_000
RESIDENT_CHOICES = ("auto", True, False)
PARALLEL_CHOICES = ("ddp", "fsdp")
WINDOW_CHOICES = ("random", "documents")
# Fields that decide how the work is spread over processes or where the data lives, not what
# is trained: is_finished ignores them (a run finished under DDP is finished under FSDP; the
# batches are the same with the corpus on the GPU or not; older runs lack the fields).
LAYOUT_FIELDS = ("parallel", "resident_data")
EVAL_SEED = 1234  # one seed for the fixed eval batches, so every run is scored on the same text
LOG_FILE = "log.jsonl"
CHECKPOINTS = ("checkpoint", "checkpoint.old")  # the newest first
STATE_FILE = "trainer_state.pt"
TOKENIZER_FILE = "tokenizer.json"
TRAIN_CONFIG_FILE = "train_config.json"
SHAPE_FIELDS = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "bias")

# Peak dense (no 2:4 sparsity) bf16 tensor-core FLOP/s per GPU, from NVIDIA's datasheets; the
# longest name contained in torch.cuda.get_device_name() wins ("A10G" before "A10").
PEAK_FLOPS: dict[str, float] = {
    "H100 PCIe": 756e12,  # H100 datasheet: 1,513 TFLOPS with sparsity, half of it dense
    "H100": 989e12,  # H100 datasheet, SXM5: 1,979 TFLOPS with sparsity
    "H200": 989e12,  # H200 datasheet, SXM: same tensor cores as the H100 SXM
    "A100": 312e12,  # A100 datasheet: 312 TFLOPS dense, 624 with sparsity
    "A10": 125e12,  # NVIDIA A10 datasheet: 125 TFLOPS dense, 250 with sparsity
    # AWS publishes no tensor-core figure for the A10G (g5 instances, the talk's GPU). We ASSUME
    # the A10 datasheet's 125 (same GA102 chip); third parties report about 70 for the A10G
    # (tinylm.scaling.A10G_PEAKS), and if that is right its true MFU is higher than reported here.
    "A10G": 125e12,
}


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; `RUNS` holds the course's runs by name."""

    run_name: str  # the folder under runs/
    model: str = "char-ci"  # a preset of tinylm.model.PRESETS
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
    # With several processes: "ddp" copies the whole model to each, "fsdp" shards parameters,
    # gradients and optimizer state across them (for 757m, mymistral-0.4b/1b). One process: no
    # effect.
    parallel: str = "ddp"

    def __post_init__(self) -> None:
        _check(bool(self.run_name) and "/" not in self.run_name and "\\" not in self.run_name,
               "run_name", f"must be a non-empty folder name, got {self.run_name!r}")
        _check_choice("model", self.model, sorted(PRESETS))
        _check_choice("tokenizer", self.tokenizer, TOKENIZER_NAMES)
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("compile", self.compile, COMPILE_CHOICES)
        _check_choice("resident_data", self.resident_data, RESIDENT_CHOICES)
        _check_choice("attention", self.attention, ATTENTION_IMPLEMENTATIONS)
        _check_choice("parallel", self.parallel, PARALLEL_CHOICES)
        _check_choice("windows", self.windows, WINDOW_CHOICES)
        for name in ("batch_size", "grad_accum", "max_steps", "eval_interval", "eval_batches",
                     "log_interval"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 1, name,
                   f"must be a positive integer, got {value!r}")
        _check(isinstance(self.warmup_steps, int) and 0 <= self.warmup_steps <= self.max_steps,
               "warmup_steps", f"must be an integer from 0 to max_steps ({self.max_steps}), "
               f"got {self.warmup_steps!r}")
        _check(self.block_size is None or (isinstance(self.block_size, int)
                                           and self.block_size >= 1),
               "block_size", f"must be None or a positive integer, got {self.block_size!r}")
        for name in ("lr", "min_lr", "weight_decay", "grad_clip", "dropout"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and not isinstance(value, bool)
                   and math.isfinite(value), name, f"must be a finite number, got {value!r}")
        _check(self.lr > 0, "lr", f"must be positive, got {self.lr}")
        _check(0 <= self.min_lr <= self.lr, "min_lr",
               f"must be between 0 and lr ({self.lr}), got {self.min_lr}")
        _check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(isinstance(self.betas, (tuple, list)) and len(self.betas) == 2
               and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1
                       for b in self.betas),
               "betas", f"must be two numbers in [0, 1), got {self.betas!r}")
        _check(self.grad_clip >= 0, "grad_clip", f"must be >= 0 (0: off), got {self.grad_clip}")
        _check(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}")
        _check(isinstance(self.seed, int), "seed", f"must be an integer, got {self.seed!r}")
        _check(self.device == "auto" or _is_device(self.device), "device",
               f"must be 'auto' or a torch device such as 'cpu', 'cuda', 'cuda:1' or 'mps', "
               f"got {self.device!r}")

    @property
    def out_dir(self) -> Path:
        """The run's folder: ``$TINYLM_RUNS_DIR/<run_name>``, by default ``<project>/runs/…``."""
        return run_folder(self.run_name)


def runs_dir() -> Path:
    """The folder holding every run's folder: $TINYLM_RUNS_DIR, by default <project>/runs."""
    return Path(os.environ.get(RUNS_DIR_ENV) or PROJECT_ROOT / "runs")


def run_folder(run_name: str) -> Path:
    """Where a run of this name keeps its log, checkpoint and model."""
    return runs_dir() / run_name


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ValueError(f"TrainConfig.{name} {message}")


def _check_choice(name: str, value: object, valid: tuple | list) -> None:
    _check(value in valid, name, f"must be one of {list(valid)}, got {value!r}")


def _is_device(name: str) -> bool:
    try:
        torch.device(name)
    except (RuntimeError, TypeError):
        return False
    return True


def config_fields() -> list[str]:
    """Names of the TrainConfig fields, for error messages and the CLI's key=value overrides."""
    return [f.name for f in fields(TrainConfig)]


RUNS: dict[str, TrainConfig] = {
    # CI: 5-6 s of training on 2 idle Xeon cores (9-11 s for `python -m tinylm train --run
    # char-ci` with start-up and three poems; measured 2026-11-30), several times that on a
    # loaded machine. The loss falls; the poems are still noise.
    "char-ci": TrainConfig("char-ci", model="char-ci", tokenizer="char", batch_size=16,
                           max_steps=60, warmup_steps=10, lr=3e-3, min_lr=3e-4, dropout=0.0,
                           eval_interval=20, eval_batches=4, log_interval=5,
                           windows="documents"),
    # A laptop: under 10 minutes on 2 CPU cores with native bf16 (bf16 autocast + compile, as
    # "auto" picks there; 5,600 to 8,600 tokens/s on the 2-core VMs here, which vary), 3.1M
    # characters (0.8 epoch). Windows start at a poem, so the learned positions mean the same
    # in training as in writing. bench/recipe_search.py compared the choices
    # (data/reference/recipe_search_cpu.json): at 2.2M tokens, poem-start windows wrote 54 %
    # regulated poems against 24 % for random ones; at ~4.4M tokens, batch 16 at lr 2e-3 had
    # the lowest validation loss of batch 8 or 16 at lr 1e-3, 2e-3 or 3e-3, but 4.4M tokens
    # does not fit 10 minutes at the slower speed. Too short to overfit, so no dropout.
    "char-cpu": TrainConfig("char-cpu", model="char-cpu", tokenizer="char", batch_size=16,
                            max_steps=1500, warmup_steps=100, lr=2e-3, min_lr=2e-4,
                            dropout=0.0, eval_interval=250, eval_batches=8, log_interval=25,
                            windows="documents"),
    # A workshop GPU: the talk's 30M shape on characters, ~11 epochs of the 3.8M characters.
    "char-gpu": TrainConfig("char-gpu", model="30m", tokenizer="char", batch_size=64,
                            max_steps=2500, warmup_steps=100, lr=1e-3, min_lr=1e-4,
                            dropout=0.2, eval_interval=250, eval_batches=20, log_interval=10,
                            windows="documents"),
    # The talk's runs on an A10G: GPT-2 tokens, 64 x 256 tokens a step, 4,900 steps = 80.3M
    # tokens (~10 epochs), AdamW (0.9, 0.99), lr 1e-3 cosine to 1e-4, dropout 0.2, bf16, SDPA.
    "talk-30m": TrainConfig("talk-30m", model="30m", tokenizer="gpt2", batch_size=64,
                            max_steps=4900, warmup_steps=100, lr=1e-3, min_lr=1e-4,
                            dropout=0.2, eval_interval=250, eval_batches=20, log_interval=10),
    "talk-124m": TrainConfig("talk-124m", model="124m", tokenizer="gpt2", batch_size=64,
                             max_steps=4900, warmup_steps=100, lr=1e-3, min_lr=1e-4,
                             dropout=0.2, eval_interval=250, eval_batches=20, log_interval=10),
}
# Tokenizer comparisons (notebook 09): one model shape, three tokenizers, the same training
# FLOPs. GPT-2's 50,304-row output layer makes each token ~3x (cpu shape) or ~5x (ci shape)
# dearer than a character, so its runs take that many times fewer steps.
RUNS.update({
    "bpe-ci": replace(RUNS["char-ci"], run_name="bpe-ci", tokenizer="bpe"),
    "gpt2-ci": replace(RUNS["char-ci"], run_name="gpt2-ci", tokenizer="gpt2", max_steps=12,
                       warmup_steps=2, eval_interval=6),
    "tok-char-cpu": replace(RUNS["char-cpu"], run_name="tok-char-cpu", batch_size=8,
                            max_steps=450, warmup_steps=50, lr=1e-3, min_lr=1e-4,
                            eval_interval=150, log_interval=50),
    "tok-bpe-cpu": replace(RUNS["char-cpu"], run_name="tok-bpe-cpu", tokenizer="bpe",
                           batch_size=8, max_steps=450, warmup_steps=50, lr=1e-3, min_lr=1e-4,
                           eval_interval=150, log_interval=50),
    "tok-gpt2-cpu": replace(RUNS["char-cpu"], run_name="tok-gpt2-cpu", tokenizer="gpt2",
                            batch_size=8, max_steps=156, warmup_steps=20, lr=1e-3, min_lr=1e-4,
                            eval_interval=52, log_interval=13),
    "bpe-gpu": replace(RUNS["char-gpu"], run_name="bpe-gpu", tokenizer="bpe"),
})


def same_compute_steps(reference: TrainConfig, model: str, vocab_size: int) -> int:
    """Optimizer steps that give `model` the training FLOPs of `reference` (same batches)."""
    block_size = reference.block_size or PRESETS[reference.model].block_size
    ours = flops_per_token(preset(model, vocab_size=vocab_size), block_size)
    theirs = flops_per_token(preset(reference.model, vocab_size=vocab_size), block_size)
    return round(reference.max_steps * theirs / ours)


# Architecture comparison (notebook 10): each profile's character model against its
# Mistral-style twin (RMSNorm, RoPE, SwiGLU, grouped-query attention, untied head), with the
# same data, batches and schedule, and as many steps as give the same training FLOPs.
CHAR_VOCAB = PRESETS["char-cpu"].vocab_size  # the character vocabulary, padded to 64


def _mistral_twin(size: str, model: str) -> TrainConfig:
    """The run char-<size> with its model swapped for `model`, at the same training FLOPs."""
    reference = RUNS[f"char-{size}"]
    return replace(reference, run_name=f"mistral-{size}", model=model,
                   max_steps=same_compute_steps(reference, model, CHAR_VOCAB))


RUNS.update({"mistral-ci": _mistral_twin("ci", "mistral-ci"),
             "mistral-cpu": _mistral_twin("cpu", "mistral-cpu"),
             "mistral-gpu": _mistral_twin("gpu", "mistral-30m")})


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step `step`: linear warmup to cfg.lr, cosine decay to min_lr."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    if step >= cfg.max_steps:
        return cfg.min_lr
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)  # 0 → 1
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def peak_flops(device: torch.device | str) -> float | None:
    """Peak dense bf16 FLOP/s of a CUDA device (PEAK_FLOPS); None on CPU, MPS or unknown GPUs."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_FLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_FLOPS[key]
    return None


def mfu(flops: int, tokens_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: training FLOPs per token x tokens/s as a fraction of the peak."""
    return None if peak is None else flops * tokens_per_s / peak


# --------------------------------------------------------------------------- building blocks


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0 logs, saves and shows progress."""
        return self.rank == 0


def setup_distributed(device_type: str) -> tuple[Distributed, bool]:
    """Join torchrun's process group (RANK/WORLD_SIZE/LOCAL_RANK in the environment).

    Returns the process's place and whether this call created the group (then we destroy it).
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Distributed(), False
    place = Distributed(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)),
                        int(os.environ["WORLD_SIZE"]))
    if dist.is_initialized():
        return place, False
    if device_type == "cuda":
        torch.cuda.set_device(place.local_rank)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return place, True


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The torch device for TrainConfig.device ("auto": cuda > mps > cpu; one GPU per rank)."""
    device = torch.device(best_device() if name == "auto" else name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def cuda_has_native_bf16() -> bool:
    """True when the current GPU computes bf16 in hardware (Ampere or newer), not emulated."""
    try:  # is_bf16_supported() alone also says True on a T4 or V100, which only emulate bf16
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch: no such argument
        return torch.cuda.get_device_capability() >= (8, 0)


def resolve_precision(device: torch.device, dtype: str) -> str:
    """The compute dtype TrainConfig.dtype means on this device: bfloat16, float16 or float32.

    "auto" takes bf16 where the hardware has it natively (it keeps fp32's range, so no loss
    scaling), fp16 on GPUs without it (tensor cores, but with a gradient scaler), and fp32
    elsewhere (emulated bf16 on a CPU is slower than fp32; MPS stays in fp32).
    """
    if dtype != "auto":
        return dtype
    if device.type == "cuda":
        return "bfloat16" if cuda_has_native_bf16() else "float16"
    if device.type == "cpu" and cpu_bf16_support() is not None:
        return "bfloat16"
    return "float32"


def use_bf16(device: torch.device, dtype: str) -> bool:
    """True when `resolve_precision` picks bf16 (FSDP then also gathers weights in bf16)."""
    return resolve_precision(device, dtype) == "bfloat16"


def autocast_context(device: torch.device, dtype: str) -> torch.autocast | nullcontext:
    """bf16 or fp16 autocast as `resolve_precision` says, else a context that changes nothing."""
    precision = resolve_precision(device, dtype)
    if precision in AUTOCAST_DTYPES:
        return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])
    return nullcontext()


def grad_scaler(device: torch.device, dtype: str) -> torch.amp.GradScaler | None:
    """A gradient scaler when training in fp16 (small gradients would round to 0), else None."""
    if resolve_precision(device, dtype) == "float16":
        return torch.amp.GradScaler(device.type)
    return None


def build_model_config(cfg: TrainConfig, vocab_size: int) -> GPTConfig:
    """The preset's shape with the tokenizer's vocabulary (padded to 64), dropout and context."""
    overrides = {"block_size": cfg.block_size} if cfg.block_size is not None else {}
    return preset(cfg.model, vocab_size=vocab_size, dropout=cfg.dropout,
                  attention=cfg.attention, **overrides)


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, fused: bool = False
                    ) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings (≥ 2-D) only, not on norms or biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, sampler: BatchSampler,
               cfg: TrainConfig, autocast: torch.autocast | nullcontext, *,
               scaler: torch.amp.GradScaler | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step over grad_accum micro-batches; (mean loss, grad norm) stay on device.

    With a scaler (fp16, see `grad_scaler`) the loss is scaled before backward and the
    gradients unscaled before clipping, so the norm is the true one; a step whose gradients
    overflowed is skipped by the scaler and reports norm 0 (nothing was applied).
    """
    total = torch.zeros((), device=sampler.device)
    for micro in range(cfg.grad_accum):
        x, y = sampler.sample()  # (B, T) each
        with sync_gradients_if(model, micro == cfg.grad_accum - 1):
            with autocast:
                _, loss = model(x, y)
            loss = loss / cfg.grad_accum  # the micro-batches' gradients add up to the mean's
            (loss if scaler is None else scaler.scale(loss)).backward()
        total += loss.detach()
    if scaler is not None:
        scaler.unscale_(optimizer)  # clip (and report) the true gradients, not scaled ones
    # Under FSDP the gradients are shards (DTensors): clip_grad_norm_ sums the squares over all
    # ranks, so it clips by the global norm, and returns it as a DTensor.
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    if scaler is None:
        optimizer.step()
    else:  # skips the step if a gradient overflowed, and adapts the scale for the next one
        scaler.step(optimizer)
        scaler.update()
        norm = torch.where(norm.isfinite(), norm, torch.zeros_like(norm))  # no host sync
    optimizer.zero_grad(set_to_none=True)
    return total, norm


def sync_gradients_if(model: torch.nn.Module, last: bool) -> AbstractContextManager:
    """Under DDP or FSDP, reduce the gradients across ranks only after the last micro-batch."""
    if isinstance(model, DDP):
        return nullcontext() if last else model.no_sync()
    module = getattr(model, "_orig_mod", model)  # the model inside torch.compile's wrapper
    if isinstance(module, FSDPModule):
        # Until the last micro-batch: no reduce-scatter (gradients add up unsharded, as under
        # DDP), and the parameters stay gathered after backward (the next forward needs them).
        module.set_requires_gradient_sync(last)
        module.set_reshard_after_backward(last)
    return nullcontext()


def timed_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, sampler: BatchSampler,
                cfg: TrainConfig, autocast: torch.autocast | nullcontext, steps: int,
                warmup: int = 1, scaler: torch.amp.GradScaler | None = None) -> dict:
    """Time `steps` training steps after `warmup` untimed ones: tokens/s, ms/step, last loss."""
    start = time.perf_counter()
    for _ in range(warmup):
        train_step(model, optimizer, sampler, cfg, autocast, scaler=scaler)
    synchronize(sampler.device)
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        loss, _ = train_step(model, optimizer, sampler, cfg, autocast, scaler=scaler)
    loss = loss.item()  # waits for the last step
    synchronize(sampler.device)
    seconds = time.perf_counter() - start
    tokens = steps * cfg.grad_accum * sampler.batch_size * sampler.block_size
    return {"tokens_per_s": tokens / seconds, "ms_per_step": 1e3 * seconds / steps,
            "warmup_s": warmup_s, "loss": loss}


def fixed_batches(tokens: np.ndarray, cfg: TrainConfig, block_size: int, device: torch.device,
                  eot_id: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """eval_batches batches drawn once with EVAL_SEED: every evaluation scores the same text."""
    sampler = BatchSampler(tokens, cfg.batch_size, block_size, device, seed=EVAL_SEED,
                           start_token=window_start(cfg, eot_id))
    return [sampler.sample() for _ in range(cfg.eval_batches)]


def window_start(cfg: TrainConfig, eot_id: int | None) -> int | None:
    """The token every window starts at (end-of-text for windows="documents"), else None."""
    if cfg.windows == "random":
        return None
    if eot_id is None:
        raise ValueError('windows="documents" needs the tokenizer\'s end-of-text id (eot_id)')
    return eot_id


@torch.no_grad()
def estimate_loss(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]],
                  autocast: torch.autocast | nullcontext) -> float:
    """Mean loss over fixed batches with dropout off (eval mode), then back to train mode."""
    model.eval()
    total = torch.zeros((), device=batches[0][0].device)
    for x, y in batches:
        with autocast:
            _, loss = model(x, y)
        total += loss.float()
    model.train()
    return (total / len(batches)).item()


# --------------------------------------------------------------------------- sharding (FSDP)
# PyTorch's current FSDP ("FSDP2", torch.distributed.fsdp.fully_shard): each parameter becomes a
# DTensor of which this rank holds a slice of the rows (dim 0), gathered whole just before a
# block runs and freed after it; gradients are reduce-scattered back into slices, and AdamW,
# built on the sliced parameters, keeps sliced moments. It runs on CPU with gloo (the tests)
# as well as on CUDA with NCCL, so the older FullyShardedDataParallel wrapper is not needed.


def shard_model(model: GPT, device: torch.device, bf16: bool) -> GPT:
    """Shard each transformer block, then the rest (embeddings, final norm, head), over ranks."""
    with torch.no_grad():  # every rank starts from rank 0's weights, as DDP would copy them
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor, src=0)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    # bf16: gather the weights and compute in bf16, average the gradients in fp32; AdamW still
    # updates fp32 weights. The autocast context stays on, keeping norms and softmax in fp32.
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if bf16 else MixedPrecisionPolicy())
    for block in model.transformer.h:  # one all-gather per block: few blocks are whole at once
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)  # the root: wte (= lm_head if tied), wpe, ln_f
    return model  # the same object, its class now also an FSDPModule


def gather_full_model(model: GPT) -> GPT:
    """A plain GPT with the whole weights of a sharded one, on every rank (a collective)."""
    state = {name: (tensor.full_tensor() if isinstance(tensor, DTensor) else tensor).detach()
             for name, tensor in [*model.named_parameters(), *model.named_buffers()]}
    with torch.device("meta"):  # no memory, no random init: the gathered tensors are assigned
        plain = GPT(model.config)
    if model.config.tie_weights:  # named_parameters lists the shared matrix once, as wte
        state["lm_head.weight"] = state["transformer.wte.weight"]
    plain.load_state_dict(state, assign=True)
    if model.config.tie_weights:
        plain.lm_head.weight = plain.transformer.wte.weight  # one Parameter again, as in GPT()
    return plain


def gather_optimizer_state(optimizer: torch.optim.Optimizer, main: bool) -> dict | None:
    """optimizer.state_dict() with whole tensors, as without FSDP, on rank 0 (a collective)."""
    state = optimizer.state_dict()  # {"state": {index: {"step", "exp_avg", ...}}, "param_groups"}
    full: dict[int, dict] = {}
    for index, values in state["state"].items():  # the same order on every rank
        whole = {key: value.full_tensor() if isinstance(value, DTensor) else value
                 for key, value in values.items()}
        if main:  # to the CPU one tensor at a time: the device never holds all of them
            full[index] = {key: value.cpu() for key, value in whole.items()}
    return {**state, "state": full} if main else None


def shard_optimizer_state(state: dict, optimizer: torch.optim.Optimizer) -> dict:
    """A whole optimizer state_dict cut into this rank's slices, to load into the sharded one."""
    params = [p for group in optimizer.param_groups for p in group["params"]]  # index order
    sharded: dict[int, dict] = {}
    for index, values in state["state"].items():
        param = params[index]
        sharded[index] = {
            key: distribute_tensor(value.to(param.device), param.device_mesh, param.placements,
                                   src_data_rank=None)  # every rank read the whole file
            if isinstance(param, DTensor) and value.shape == param.shape else value  # not step
            for key, value in values.items()}
    return {**state, "state": sharded}


# --------------------------------------------------------------------------- saving and loading


def replace_dir(src: Path, dst: Path, keep_old: bool = False) -> None:
    """Move the folder src to dst so that a kill at any moment leaves dst or dst.old complete.

    keep_old keeps the replaced folder as dst.old (a checkpoint to fall back on if dst is
    later found damaged).
    """
    old = dst.with_name(dst.name + ".old")
    if dst.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(src, dst)
    if not keep_old:
        shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(out_dir: Path) -> Path | None:
    """The run's checkpoint folder, or its previous copy if a save was cut short; else None."""
    for name in CHECKPOINTS:
        if (out_dir / name / STATE_FILE).is_file():
            return out_dir / name
    return None


def save_checkpoint(out_dir: Path, model: GPT, state: dict) -> None:
    """Write model + trainer_state.pt to checkpoint.tmp, then swap it in for checkpoint/.

    The previous checkpoint stays as checkpoint.old, for `load_checkpoint` to fall back on.
    """
    tmp = out_dir / "checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    torch.save(state, tmp / STATE_FILE)
    replace_dir(tmp, out_dir / "checkpoint", keep_old=True)


def load_trainer_state(checkpoint: Path) -> dict:
    """trainer_state.pt, read with weights_only=True: tensors and plain containers, no code."""
    path = checkpoint / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        reason = str(error).split("\n", 1)[0].split(". ", 1)[0] or "ends too early"
        raise ValueError(f"{path} is damaged or incomplete ({type(error).__name__}: {reason})"
                         ) from None


def load_checkpoint(out_dir: Path, cfg: TrainConfig) -> tuple[Path, dict, GPT] | None:
    """The newest readable checkpoint: (folder, trainer state, model), or None if there is none.

    A damaged checkpoint/ (say, a disk filled up) falls back to checkpoint.old with a warning;
    if no checkpoint can be read, the error names each damaged file and how to start over.
    """
    problems = []
    for folder in (out_dir / name for name in CHECKPOINTS):
        if not (folder / STATE_FILE).is_file():
            continue
        try:
            state = load_trainer_state(folder)
            model = GPT.from_pretrained(folder, dropout=cfg.dropout, attention=cfg.attention)
        except ValueError as error:
            problems.append(str(error))
            continue
        if problems:
            warnings.warn(f"{problems[0]}; resuming from the previous checkpoint, {folder} "
                          f"(step {state['step']})", stacklevel=3)
        return folder, state, model
    if problems:
        raise ValueError(f"cannot resume {out_dir}: {'; '.join(problems)}. No readable "
                         "checkpoint is left: start the run over with resume=False "
                         "(CLI: --no-resume).")
    return None


def save_model(out_dir: Path, model: GPT, tokenizer: Tokenizer, cfg: TrainConfig) -> Path:
    """Write the finished model, its tokenizer and its TrainConfig to out_dir/model/."""
    tmp = out_dir / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save(tmp / TOKENIZER_FILE)
    write_json(asdict(cfg), tmp / TRAIN_CONFIG_FILE)  # written last: marks the run finished
    replace_dir(tmp, out_dir / "model")
    return out_dir / "model"


def load_model(directory: str | Path) -> tuple[GPT, Tokenizer]:
    """A model folder written by train (or save_pretrained + tokenizer.json), in eval mode."""
    directory = Path(directory)
    if not (directory / TOKENIZER_FILE).is_file():
        raise FileNotFoundError(f"{directory / TOKENIZER_FILE} is missing: not a model folder "
                                "written by tinylm.train (train the run first)")
    return GPT.from_pretrained(directory).eval(), load_tokenizer(directory / TOKENIZER_FILE)


def read_log(out_dir: Path, last_step: int | None = None) -> list[dict]:
    """The records of log.jsonl (those up to last_step, if given)."""
    path = out_dir / LOG_FILE
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
               if line.strip()]
    return [r for r in records if last_step is None or r["step"] <= last_step]


def write_log(out_dir: Path, records: list[dict]) -> None:
    """Rewrite log.jsonl with these records (used when resuming from an earlier step)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r) + "\n" for r in records)
    partial = out_dir / (LOG_FILE + ".part")
    partial.write_text(lines, encoding="utf-8")
    os.replace(partial, out_dir / LOG_FILE)


def append_log(out_dir: Path, record: dict) -> None:
    """Add one record to log.jsonl."""
    with open(out_dir / LOG_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def config_changes(saved: dict, cfg: TrainConfig) -> list[str]:
    """"name saved → wanted" for each TrainConfig field cfg changes (LAYOUT_FIELDS aside)."""
    wanted = json.loads(json.dumps(asdict(cfg)))  # tuples as lists, as in the saved JSON
    saved = json.loads(json.dumps(saved))
    missing = "(not saved)"
    return [f"{name} {saved.get(name, missing)} → {value}" for name, value in wanted.items()
            if name not in LAYOUT_FIELDS and saved.get(name, missing) != value]


def saved_config(out_dir: Path) -> dict | None:
    """The TrainConfig (as a dict) of the finished model in out_dir/model/, if there is one."""
    path = out_dir / "model" / TRAIN_CONFIG_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{path} is damaged ({error}); start the run over with resume=False "
                         "(CLI: --no-resume)") from None


def is_finished(cfg: TrainConfig) -> bool:
    """True when out_dir/model/ holds the final model of this config (LAYOUT_FIELDS aside)."""
    saved = saved_config(cfg.out_dir)
    return saved is not None and not config_changes(saved, cfg)


def start_over(out_dir: Path) -> None:
    """Remove what an earlier run left in out_dir: checkpoints, final model, log."""
    for name in ("checkpoint", "checkpoint.old", "checkpoint.tmp", "model", "model.old",
                 "model.tmp"):
        shutil.rmtree(out_dir / name, ignore_errors=True)
    (out_dir / LOG_FILE).unlink(missing_ok=True)


def check_resumable(folder: Path, saved: dict, cfg: TrainConfig, saved_model: GPTConfig | None
                    = None, config: GPTConfig | None = None) -> None:
    """Refuse to go on with a run folder trained with another TrainConfig or model shape.

    saved is the folder's TrainConfig as a dict; LAYOUT_FIELDS may differ. Resuming under
    another config would return a model that is not the run asked for (say, one trained past
    the new max_steps), so every other difference is an error that names the fields.
    """
    diffs = config_changes(saved, cfg)
    if saved_model is not None and config is not None:
        diffs += [f"model {name} {getattr(saved_model, name)} → {getattr(config, name)}"
                  for name in SHAPE_FIELDS if getattr(saved_model, name) != getattr(config, name)]
    if diffs:
        raise ValueError(f"cannot resume from {folder}: it was trained with another config "
                         f"({'; '.join(diffs)}). Train this config under a new run_name, or "
                         "start the run over with resume=False (CLI: --no-resume).")


def rng_state(sampler: BatchSampler, device: torch.device) -> dict:
    """Every random number generator the run uses, so a resumed run draws the same numbers."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "numpy": (kind, key.tolist(), pos, has_gauss, gauss),
            "torch": torch.get_rng_state(), "sampler": sampler.generator.get_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_state(state: dict, sampler: BatchSampler, device: torch.device) -> None:
    """Restore what rng_state saved."""
    random.setstate(state["python"])
    kind, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(key, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    sampler.generator.set_state(state["sampler"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def gather_rng_states(state: dict, place: Distributed) -> list[dict]:
    """Every rank's RNG state, in rank order (rank 0 saves them all)."""
    if place.world_size == 1:
        return [state]
    states: list = [None] * place.world_size
    dist.all_gather_object(states, state)
    return states


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN or infinite; the message says what to try."""


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    """What `train` returns: the model (eval mode), its tokenizer, the records, the run folder."""

    model: GPT
    tokenizer: Tokenizer
    history: list[dict]
    out_dir: Path


def train(cfg: TrainConfig, resume: bool = True, progress: bool = True,
          max_steps: int | None = None) -> TrainResult:
    """Train (or resume, or just load) the run described by cfg; see the module docstring.

    max_steps stops this call after that step while the schedule still spans cfg.max_steps:
    call again to resume. A run already finished with the same config is loaded, not retrained.
    """
    stop = cfg.max_steps if max_steps is None else max_steps
    if not 1 <= stop <= cfg.max_steps:
        raise ValueError(f"cannot stop at step {stop}: run {cfg.run_name} has max_steps "
                         f"{cfg.max_steps}, so stop at a step from 1 to {cfg.max_steps}")
    if resume and is_finished(cfg):
        finished = load_finished(cfg)
        if finished is not None:
            return finished
    place, owns_group = setup_distributed(resolve_device(cfg.device).type)
    try:
        with folder_lock(cfg.out_dir) if place.main else nullcontext():  # one writer per run
            result = _train(cfg, place, resume, progress, stop)
        if place.world_size > 1:
            dist.barrier()  # no rank tears the group down while rank 0 is still saving
        return result
    finally:
        if owns_group:
            dist.destroy_process_group()


def load_finished(cfg: TrainConfig) -> TrainResult | None:
    """The finished run's model, or None (with a warning) if its files are damaged."""
    try:
        model, tokenizer = load_model(cfg.out_dir / "model")
    except ValueError as error:
        warnings.warn(f"{error}; training resumes from the run's checkpoint to write it again",
                      stacklevel=3)
        return None
    device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", 0)))
    return TrainResult(model.to(device), tokenizer, read_log(cfg.out_dir), cfg.out_dir)


def _load_data(cfg: TrainConfig, place: Distributed) -> PackedData:
    """Rank 0 prepares the packed tokens if needed (a no-op when cached); then all load them.

    Damaged packed files (cut short, changed) are an error that names them, not rebuilt
    silently: `python -m tinylm data` rebuilds them.
    """
    if place.main:
        data.prepare(cfg.tokenizer, repair=False)
    if place.world_size > 1:
        dist.barrier()
    return data.load_packed(cfg.tokenizer)


def _train(cfg: TrainConfig, place: Distributed, resume: bool, progress: bool,
           stop: int) -> TrainResult:
    device = resolve_device(cfg.device, place.local_rank)
    if device.type == "cuda":  # TensorFloat-32 for any matmul left in fp32
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed + place.rank)  # dropout differs by rank; rank 0's init is copied
    packed = _load_data(cfg, place)
    tokenizer, out = packed.tokenizer, cfg.out_dir
    config = build_model_config(cfg, tokenizer.vocab_size)
    loaded = load_checkpoint(out, cfg) if resume else None
    checkpoint, state, model = loaded or (None, None, GPT(config))
    if state:
        check_resumable(checkpoint, state["train_config"], cfg, model.config, config)
    elif resume and (finished := saved_config(out)) is not None:  # starting over would delete it
        check_resumable(out / "model", finished, cfg)
    model.to(device)
    fsdp = cfg.parallel == "fsdp" and place.world_size > 1
    if fsdp:  # each rank now keeps 1/world_size of every tensor
        model = shard_model(model, device, use_bf16(device, cfg.dtype))
    optimizer = build_optimizer(model, cfg, fused=device.type == "cuda")  # on the shards, if any
    sampler = BatchSampler(packed.train, cfg.batch_size, config.block_size, device,
                           seed=cfg.seed + place.rank,  # each rank draws its own batches
                           start_token=window_start(cfg, tokenizer.eot_id),
                           resident=use_resident_data(cfg, device))  # GPU: corpus on the GPU
    scaler = grad_scaler(device, cfg.dtype)  # fp16 only
    step, elapsed = 0, 0.0
    if state:
        if len(state["rng"]) != place.world_size:
            raise ValueError(f"{checkpoint} was written by {len(state['rng'])} processes; "
                             "resume with as many (torchrun --nproc_per_node), or start over "
                             "with resume=False")
        optimizer.load_state_dict(shard_optimizer_state(state["optimizer"], optimizer) if fsdp
                                  else state["optimizer"])
        set_rng_state(state["rng"][place.rank], sampler, device)
        if scaler is not None and "scaler" in state:  # older checkpoints have none
            scaler.load_state_dict(state["scaler"])
        step, elapsed = state["step"], state["elapsed_s"]
    history = read_log(out, step) if state else []
    if place.main:
        if not state:
            start_over(out)
        write_log(out, history)

    step_model = (torch.compile(model, backend=os.environ.get(COMPILE_BACKEND_ENV, "inductor"))
                  if use_compile(cfg, device, config.block_size) else model)
    train_model = step_model
    if place.world_size > 1 and not fsdp:
        train_model = DDP(step_model, device_ids=[device.index] if device.type == "cuda" else None)
    autocast = autocast_context(device, cfg.dtype)
    evals = {"val_loss": fixed_batches(packed.val, cfg, config.block_size, device,
                                       tokenizer.eot_id),
             "eval_train_loss": fixed_batches(packed.train, cfg, config.block_size, device,
                                              tokenizer.eot_id)}
    tokens_per_step = cfg.batch_size * config.block_size * cfg.grad_accum * place.world_size
    flops, peak = flops_per_token(config), peak_flops(device)
    if peak is not None:
        peak *= place.world_size

    def evaluate(record: dict) -> None:
        # Every rank scores the same fixed batches (simple, keeps the ranks in step).
        for key, batches in evals.items():
            record[key] = estimate_loss(step_model, batches, autocast)
        _check_finite(record, "val_loss", cfg, out)

    def save() -> None:
        states = gather_rng_states(rng_state(sampler, device), place)
        whole = gather_full_model(model) if fsdp else model  # FSDP: every rank takes part
        optimizer_state = (gather_optimizer_state(optimizer, place.main) if fsdp
                           else optimizer.state_dict())
        if place.main:  # the same files with or without FSDP
            save_checkpoint(out, whole, {
                "step": step, "optimizer": optimizer_state, "rng": states,
                "train_config": asdict(cfg), "data_meta": packed.meta,
                "elapsed_s": elapsed + time.perf_counter() - t0,
                **({"scaler": scaler.state_dict()} if scaler is not None else {})})

    def log(record: dict) -> None:
        history.append(record)
        if place.main:
            append_log(out, record)
            bar.set_postfix({k: f"{record[k]:.3f}" for k in ("train_loss", "val_loss")
                             if record[k] is not None})

    bar = progress_bar(total=cfg.max_steps, initial=step, desc=cfg.run_name, unit="step",
                       disable=not (progress and place.main))
    t0 = time.perf_counter()
    if step == 0:  # the loss at initialisation (≈ ln vocab_size)
        record = _record(0, 0, lr_at(0, cfg), elapsed)
        evaluate(record)
        log(record)
    model.train()
    loss_sum = torch.zeros((), device=device)
    norm_sum = torch.zeros((), device=device)
    steps_since, t_interval = 0, time.perf_counter()
    while step < stop:
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, norm = train_step(train_model, optimizer, sampler, cfg, autocast, scaler=scaler)
        loss_sum += loss
        norm_sum += norm
        steps_since += 1
        step += 1
        bar.update()
        is_eval = step % cfg.eval_interval == 0 or step == stop
        if step % cfg.log_interval and not is_eval:
            continue
        train_loss = loss_sum.item() / steps_since  # the host waits for the GPU here, then
        seconds = time.perf_counter() - t_interval  # the clock includes all queued work
        record = _record(step, step * tokens_per_step, lr, elapsed + time.perf_counter() - t0)
        record["train_loss"] = train_loss
        record["grad_norm"] = norm_sum.item() / steps_since
        record["tokens_per_s"] = steps_since * tokens_per_step / seconds
        record["mfu"] = mfu(flops, record["tokens_per_s"], peak)
        _check_finite(record, "train_loss", cfg, out)
        _check_finite(record, "grad_norm", cfg, out)
        if is_eval:
            evaluate(record)
            save()
        log(record)
        loss_sum.zero_()
        norm_sum.zero_()
        steps_since, t_interval = 0, time.perf_counter()
    bar.close()
    if fsdp:  # every rank returns the whole model, as under DDP
        model = gather_full_model(model)
    if place.main and step == cfg.max_steps:
        save_model(out, model, tokenizer, cfg)
    return TrainResult(model.eval(), tokenizer, history, out)


def use_compile(cfg: TrainConfig, device: torch.device, block_size: int | None = None) -> bool:
    """Whether to torch.compile: as asked, or on "auto" where it repays its compile time.

    "auto": always on CUDA; on CPU only in bf16 (fp32 gains nothing) and for runs of at least
    CPU_COMPILE_MIN_TOKENS tokens per process; never on MPS. block_size defaults to the run's.
    """
    if cfg.compile != "auto":
        return cfg.compile
    if device.type == "cuda":
        return True
    if device.type != "cpu" or resolve_precision(device, cfg.dtype) != "bfloat16":
        return False
    block_size = block_size or cfg.block_size or PRESETS[cfg.model].block_size
    return cfg.max_steps * cfg.batch_size * cfg.grad_accum * block_size >= CPU_COMPILE_MIN_TOKENS


def use_resident_data(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether the training tokens live on the device: asked for, or "auto" on CUDA."""
    return cfg.resident_data is True or (cfg.resident_data == "auto" and device.type == "cuda")


def _record(step: int, tokens: int, lr: float, elapsed: float) -> dict:
    """A log record with every field, None where it does not apply."""
    return {"step": step, "tokens": tokens, "lr": lr, "train_loss": None,
            "eval_train_loss": None, "val_loss": None, "grad_norm": None,
            "tokens_per_s": None, "mfu": None, "elapsed_s": elapsed}


def _check_finite(record: dict, key: str, cfg: TrainConfig, out: Path) -> None:
    """Stop the run on a NaN or infinite value; the last checkpoint was saved before it."""
    value = record[key]
    if math.isfinite(value):
        return
    checkpoint = find_checkpoint(out)
    kept = (f"the last good checkpoint ({checkpoint}) is kept, and running again resumes "
            "from it" if checkpoint else "no checkpoint had been written yet")
    raise TrainingDiverged(
        f"{key} became {value} at step {record['step']} (lr {record['lr']:.2e}); the run "
        f"stopped and {kept}. Try a lower lr (now {cfg.lr:g}), more warmup_steps (now "
        f"{cfg.warmup_steps}) or a smaller grad_clip (now {cfg.grad_clip:g}), and check the "
        "data for corrupt or out-of-range token ids.")
