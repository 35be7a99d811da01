"""What the hardware decides for a run: device, precision, compile, where the batches are cut, MFU.

Precision (`resolve_precision`): with ``dtype="auto"`` the weights and AdamW stay in fp32 and
the forward pass runs under bf16 autocast where the hardware computes bf16 natively (Ampere or
newer GPUs; CPUs with AMX or AVX-512 BF16, see `tinylm.profiles.cpu_bf16_support`); on older
GPUs under fp16 autocast, whose narrow range needs a gradient scaler (`grad_scaler`); elsewhere
in fp32. ``compile="auto"`` (`use_compile`) compiles on CUDA, and on CPU only bf16 runs long
enough to repay the compile time (CPU_COMPILE_MIN_TOKENS). `mfu` divides the model FLOPs a run
achieves by the GPU's datasheet peak (PEAK_FLOPS).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from tinylm.model import PRESETS
from tinylm.profiles import best_device, cpu_bf16_support
from tinylm.runs import TrainConfig

# torch.compile's backend (default "inductor", which generates C++ on CPU and Triton on CUDA).
# "aot_eager" traces the same graphs without generating code: for a machine without a C++
# compiler, and for the CPU tests of the gpu runs, where inductor's CPU code is not what a GPU
# would run anyway.
COMPILE_BACKEND_ENV = "TINYLM_COMPILE_BACKEND"
AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}  # float32: no autocast
# compile="auto" on CPU: compiling costs ~31 s once, so it must save more than that. On 2 Xeon
# cores with AMX at the char-cpu shape: eager bf16 5,922 tok/s, compiled bf16 8,170 (31 s to
# compile), so compiling breaks even after ~0.65M tokens; in fp32 it gains nothing (compiled
# 4,595 vs eager 4,518 tok/s). Runs of at least this many tokens per process compile in bf16.
CPU_COMPILE_MIN_TOKENS = 1_000_000

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


def course_precision(cfg: TrainConfig, device: torch.device) -> dict:
    """The compute dtype and compile setting tinylm.train resolves for this run on this device."""
    return {"dtype": resolve_precision(device, cfg.dtype), "compile": use_compile(cfg, device)}
