"""What the hardware is and what it decides for a run: device, precision, compile, batches, MFU.

Detection: `best_device` (CUDA, then Apple's MPS, then the CPU), `device_memory` (a CUDA GPU's
name and memory) and `cpu_bf16_support` (the CPU's native bf16 instructions, or none: the
TINYLM_CPU_BF16 switch can hide them). Every decision below, and tinylm.profiles' choice of
sizes (`trains_in_fp32`), reads the hardware through these, in this one module.

Precision (`resolve_precision`): with ``dtype="auto"`` the weights and AdamW stay in fp32 and
the forward pass runs under bf16 autocast where the hardware computes bf16 natively (Ampere or
newer GPUs; CPUs with AMX or AVX-512 BF16, see `cpu_bf16_support`); on older
GPUs under fp16 autocast, whose narrow range needs a gradient scaler (`grad_scaler`); elsewhere
in fp32. ``compile="auto"`` (`use_compile`) compiles on CUDA, and on CPU only bf16 runs long
enough to repay the compile time (CPU_COMPILE_MIN_TOKENS); never on native Windows, where
torch.compile's inductor backend does not run. `mfu` divides the model FLOPs a run
achieves by the GPU's datasheet peak (PEAK_FLOPS).

Memory (`micro_batch_layout`): on CUDA, a run whose estimated training memory
(`tinylm.model.training_memory_bytes`) does not fit the GPU trains its batch as more, smaller
micro-batches with gradient accumulation (`fit_micro_batch`), the same tokens per step. On every
device, a run that cannot fit at all (training plus its fixed evaluation batches, against the
GPU's memory or the machine's RAM) is refused before any work (`check_memory`): a typo such as
batch_size=1000000000 is one message, not minutes of swapping and an allocator's traceback.

Device (`resolve_device`): ``device="auto"`` picks `best_device`. MPS must first compute one
training step of a tiny GPT as the CPU does (`mps_agrees_with_cpu`, once per process); where it
does not, "auto" falls back to the CPU with a warning. `training_setup` says in words what
"auto" picks here, for the environment report (tinylm.profiles.describe_environment).
"""

from __future__ import annotations

import copy
import functools
import math
import os
import sys
import warnings
from collections.abc import Callable
from contextlib import nullcontext

import torch

from tinylm.model import GPT, PRESETS, GPTConfig, training_memory_bytes
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

# Peak dense (no 2:4 sparsity) tensor-core FLOP/s per GPU in the precision "auto" autocasts to
# there (bf16; fp16 on the T4, which has no bf16), accumulating in fp32 as autocast does, from
# NVIDIA's datasheets and whitepapers. A key matches whole words of torch.cuda.get_device_name()
# ("NVIDIA L40S" is no "L4", "NVIDIA A10G" no "A10"); the longest matching key wins. Figures
# marked "checked" were found again, in third-party copies of the tables, when this was written.
PEAK_FLOPS: dict[str, float] = {
    "H100 PCIe": 756e12,  # H100 datasheet: 1,513 TFLOPS with sparsity, half of it dense
    "H100": 989e12,  # H100 datasheet, SXM5: 1,979 TFLOPS with sparsity
    "H200": 989e12,  # H200 datasheet, SXM: same tensor cores as the H100 SXM
    # A100 datasheet: 312 TFLOPS dense, 624 with sparsity, for the 40 GB and the 80 GB (checked)
    "A100": 312e12,
    "A10": 125e12,  # NVIDIA A10 datasheet: 125 TFLOPS dense, 250 with sparsity
    # T4 datasheet: 65 TFLOPS "mixed precision (FP16/FP32)" (checked). Turing has no bf16, so
    # "auto" trains in fp16 there (resolve_precision) and this is fp16's peak, not bf16's.
    "T4": 65e12,
    "L4": 121e12,  # L4 datasheet: 242 TFLOPS bf16 with sparsity, half of it dense (checked)
    "L40S": 362e12,  # L40S datasheet: 362.05 TFLOPS bf16 dense, 733 with sparsity (checked)
    # GA102 whitepaper, appendix A: 71 TFLOPS fp16/bf16 tensor with fp32 accumulate (142 with
    # fp16 accumulate, which autocast does not use). Only the 142 was checked, not the 71.
    "RTX 3090": 71e12,
    # Ada (AD102) whitepaper: 165.2 TFLOPS fp16/bf16 tensor with fp32 accumulate, dense (330.3
    # with fp16 accumulate); a third-party table lists 165.15 dense, the whitepaper itself was
    # not found to check.
    "RTX 4090": 165.2e12,
    # AWS publishes no tensor-core figure for the A10G (g5 instances, the talk's GPU). We ASSUME
    # the A10 datasheet's 125 (same GA102 chip); third parties report about 70 for the A10G
    # (tinylm.scaling.A10G_PEAKS), and if that is right its true MFU is higher than reported here.
    "A10G": 125e12,
}

# The MPS self-check (`mps_agrees_with_cpu`). Some PyTorch releases train GPTs wrongly on MPS,
# with no error: a training loss stuck near 6 where the CPU's fell (rasbt/LLMs-from-scratch
# issue #635), losses of 19.9 where the CPU computed 3.8 under torch 2.8 (issue #791). So one
# forward and backward pass of a tiny seeded GPT runs on MPS and on the CPU, and the loss and
# the global gradient norm must agree within SELF_CHECK_RTOL. Both run in fp32, but with other
# kernels and another summation order, which moves the last digits: on the CPU this step in
# fp32 and in fp64 differs by 2e-7 relatively (loss 6.25, gradient norm 0.55), and up to ~1e-5
# between fp32 backends is ordinary rounding. The failures reported are far larger (losses 5x
# the CPU's in #791), so 1e-3 sits 100x above rounding and far below any failure seen.
SELF_CHECK_RTOL = 1e-3
SELF_CHECK_MODEL = GPTConfig(vocab_size=512, block_size=64, n_layer=2, n_head=4, n_embd=64)
SELF_CHECK_BATCH = 12  # sequences of block_size tokens: the check takes ~50 ms on one CPU core
DeviceStep = Callable[[GPT, torch.Tensor, torch.Tensor], dict[str, float]]


class DeviceMismatchWarning(UserWarning):
    """A device computed the self-check's training step differently from the CPU."""


def best_device() -> str:
    """The fastest device PyTorch can use here: ``cuda``, then Apple's ``mps``, else ``cpu``."""
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def device_memory(device: torch.device | str) -> tuple[str, int] | None:
    """(name, total bytes) of a CUDA device, as the driver reports them; None off CUDA."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    return props.name, props.total_memory


# CPU flags (as /proc/cpuinfo names them) of native bf16 matrix instructions, best first: with
# them bf16 autocast is faster than fp32 on the CPU; without them bf16 is emulated, and slower.
CPU_BF16_FLAGS = {"amx_bf16": "AMX", "avx512_bf16": "AVX-512 BF16"}
# TINYLM_CPU_BF16=0 makes the course treat the CPU as one without bf16 (fp32 and the cpu
# profile's fp32 runs): to try on a bf16 machine what most laptops get. Speed as on such a laptop
# also needs PyTorch's own kernels held to AVX2: ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2.
CPU_BF16_ENV = "TINYLM_CPU_BF16"


def cpu_bf16_support() -> str | None:
    """The CPU's native bf16 instructions, "AMX" or "AVX-512 BF16", or None (bf16 emulated).

    None too when TINYLM_CPU_BF16 is 0 (or off, no, false); unset, empty, 1, on, yes, true
    or auto: what the CPU reports. Any other value is an error, not a silent guess.
    """
    switch = os.environ.get(CPU_BF16_ENV, "").strip().lower()
    if switch in ("0", "off", "no", "false"):
        return None
    if switch not in ("", "1", "on", "yes", "true", "auto"):
        raise ValueError(
            f"{CPU_BF16_ENV}={os.environ[CPU_BF16_ENV]!r} is not a setting: use 0 to treat the "
            "CPU as one without bf16 (as most laptops are), or unset it to use what the CPU has"
        )
    return detected_cpu_bf16()


@functools.lru_cache(maxsize=1)
def detected_cpu_bf16() -> str | None:
    """What the CPU itself reports (cpu_bf16_support without the switch), read once."""
    flags = _cpu_flags()
    if flags is None:  # not Linux: ask PyTorch's own CPU probe
        return _torch_cpu_bf16()
    return next((name for flag, name in CPU_BF16_FLAGS.items() if flag in flags), None)


def _cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str] | None:
    """The flags of /proc/cpuinfo's first processor on Linux; None elsewhere or if unreadable."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        return None
    return set()  # a Linux CPU that lists no flags (ARM: "Features"): no x86 bf16


def _torch_cpu_bf16() -> str | None:
    """cpu_bf16_support from PyTorch's CPU probes (macOS, Windows); None on Apple silicon."""
    probes = {"AMX": "_is_amx_tile_supported", "AVX-512 BF16": "_is_avx512_bf16_supported"}
    for name, probe in probes.items():  # private helpers: absent in some versions
        if getattr(torch.cpu, probe, lambda: False)():
            return name
    capability = torch.backends.cpu.get_cpu_capability().upper()
    if "AMX" in capability:
        return "AMX"
    return "AVX-512 BF16" if "AVX512" in capability and "BF16" in capability else None


def trains_in_fp32() -> bool:
    """True where the course's "auto" device trains in fp32: a CPU without bf16, or MPS."""
    device = best_device()
    return device == "mps" or (device == "cpu" and cpu_bf16_support() is None)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The torch device for TrainConfig.device ("auto": cuda > mps > cpu; one GPU per rank).

    MPS must pass `mps_agrees_with_cpu` (checked once per process): where it fails, "auto"
    falls back to the CPU, while an explicit "mps" is kept; both are warned.
    """
    device = torch.device(best_device() if name == "auto" else name)
    check_available(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if device.type == "mps" and not mps_agrees_with_cpu() and name == "auto":
        device = torch.device("cpu")
    return device


def check_available(device: torch.device) -> None:
    """Raise ValueError, saying what to use, for a device this machine cannot train on."""
    if device.type == "cuda" and device.index is not None:
        found = torch.cuda.device_count()
        usable = device.index < found
    elif device.type == "cuda":
        found, usable = "no", torch.cuda.is_available()
    elif device.type == "mps":
        usable = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    else:
        usable = device.type == "cpu"
    if not usable:
        have = f"torch {torch.__version__} sees {best_device()}" + (
            f" and {found} CUDA GPU(s)" if device.type == "cuda" else ""
        )
        raise ValueError(
            f"device {str(device)!r} cannot train here ({have}): use device=auto, which picks "
            "the best device this machine has, or device=cpu"
        )


@functools.lru_cache(maxsize=1)
def mps_agrees_with_cpu() -> bool:
    """Whether MPS trains the self-check's tiny GPT as the CPU does; warns once if it does not."""
    agrees, numbers = device_agrees_with_cpu(torch.device("mps"))
    if not agrees:
        warnings.warn(DeviceMismatchWarning(mps_mismatch_message(numbers)), stacklevel=3)
    return agrees


def mps_mismatch_message(numbers: dict[str, dict[str, float]]) -> str:
    """What went wrong on MPS (PyTorch version, both results) and which device runs instead."""
    mps, cpu = numbers["device"], numbers["cpu"]
    return (
        f"MPS computes a training step differently from the CPU under PyTorch "
        f"{torch.__version__}: a tiny GPT's loss is {mps['loss']:.7g} on MPS and "
        f"{cpu['loss']:.7g} on the CPU, its gradient norm {mps['grad norm']:.7g} and "
        f"{cpu['grad norm']:.7g} (allowed: {SELF_CHECK_RTOL:g} relative). Some PyTorch releases "
        'train wrongly on MPS, so device="auto" trains and samples on the CPU instead; an '
        'explicit device="mps" (CLI: `python -m tinylm train device=mps`) still uses MPS. '
        "Another PyTorch release may pass this check."
    )


def forward_backward(model: GPT, idx: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """One training step without the update: the loss and the global gradient norm, as floats."""
    _, loss = model(idx, targets)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return {"loss": loss.item(), "grad norm": torch.nn.utils.get_total_norm(grads).item()}


def device_agrees_with_cpu(
    device: torch.device, rtol: float = SELF_CHECK_RTOL, device_step: DeviceStep = forward_backward
) -> tuple[bool, dict[str, dict[str, float]]]:
    """Whether a tiny seeded GPT's loss and gradient norm on `device` match the CPU's, and both.

    The numbers come as {"cpu": {"loss": …, "grad norm": …}, "device": {…}}. device_step runs
    the step on the device: a test passes a broken one to see a mismatch without a broken device.
    """
    with torch.random.fork_rng(devices=[]):  # the caller's random numbers stay as they were
        torch.manual_seed(0)
        model = GPT(SELF_CHECK_MODEL)
        shape = (SELF_CHECK_BATCH, SELF_CHECK_MODEL.block_size)
        idx, targets = torch.randint(SELF_CHECK_MODEL.vocab_size, (2, *shape))
    on_device = device_step(copy.deepcopy(model).to(device), idx.to(device), targets.to(device))
    on_cpu = forward_backward(model, idx, targets)
    agrees = all(math.isclose(on_device[key], on_cpu[key], rel_tol=rtol) for key in on_cpu)
    return agrees, {"cpu": on_cpu, "device": on_device}


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
    CPU_COMPILE_MIN_TOKENS tokens per process; never on MPS, nor on native Windows, where
    inductor does not run. block_size defaults to the run's.
    """
    if cfg.compile != "auto":
        return cfg.compile
    if sys.platform == "win32":
        return False
    if device.type == "cuda":
        return True
    if device.type != "cpu" or resolve_precision(device, cfg.dtype) != "bfloat16":
        return False
    block_size = block_size or cfg.block_size or PRESETS[cfg.model].block_size
    return cfg.max_steps * cfg.batch_size * cfg.grad_accum * block_size >= CPU_COMPILE_MIN_TOKENS


def training_setup(device: str) -> dict[str, str]:
    """The CPU's native bf16, and the precision and compiling that "auto" picks on `device`."""
    cpu_bf16 = cpu_bf16_support()
    precision = resolve_precision(torch.device(device), "auto")
    if precision == "bfloat16":
        why = f"CPU has {cpu_bf16}" if device == "cpu" else "GPU has native bf16"
        precision_line = f"bf16 autocast ({why})"
    elif precision == "float16":
        precision_line = "fp16 autocast + gradient scaler (GPU without native bf16)"
    else:
        precision_line = "fp32" + (" (no native bf16 on this CPU)" if device == "cpu" else "")
    if sys.platform == "win32":
        compile_line = "no (torch.compile's inductor backend does not run on native Windows)"
    elif device == "cuda":
        compile_line = "yes, every run"
    elif device == "cpu" and precision == "bfloat16":
        compile_line = (
            f"runs of {CPU_COMPILE_MIN_TOKENS / 1e6:g}M+ tokens only (shorter ones "
            "would not earn back the compile time)"
        )
    else:
        compile_line = "no (it would not speed training up here)"
    return {"cpu bf16": cpu_bf16 or "none", "precision": precision_line, "compile": compile_line}


def use_resident_data(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether the training tokens live on the device: asked for, or "auto" on CUDA."""
    return cfg.resident_data is True or (cfg.resident_data == "auto" and device.type == "cuda")


def peak_flops(device: torch.device | str) -> float | None:
    """Peak dense tensor-core FLOP/s of a CUDA device (PEAK_FLOPS); None off CUDA or if unknown."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return peak_flops_of(torch.cuda.get_device_name(device))


def peak_flops_of(gpu_name: str) -> float | None:
    """PEAK_FLOPS's entry for a GPU named as CUDA names it: the longest key made of its words."""
    name = f" {_name_words(gpu_name)} "
    matches = [key for key in PEAK_FLOPS if f" {_name_words(key)} " in name]
    return PEAK_FLOPS[max(matches, key=len)] if matches else None


def _name_words(name: str) -> str:
    """A device name's words, upper-case, split at spaces and hyphens: "A100 SXM4 40GB"."""
    return " ".join(name.upper().replace("-", " ").split())


def mfu(flops: int, tokens_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: training FLOPs per token x tokens/s as a fraction of the peak."""
    return None if peak is None else flops * tokens_per_s / peak


# The share of a GPU's memory `fit_micro_batch` leaves out of its plan: the CUDA context (a few
# hundred MiB, more without CUDA's lazy module loading), cuBLAS and cuDNN workspaces, the
# caching allocator's rounding and fragmentation, and the slack a rough estimate needs. 10 %
# keeps 1.5 GiB free on a 15 GiB T4; on an 80 GB card it keeps 8 GiB, where a split costs little.
CUDA_MEMORY_HEADROOM = 0.10
GIB = 2**30


class NotEnoughMemory(RuntimeError):
    """The run cannot fit this machine's memory (RAM or GPU); the message says what to lower."""


class GPUTooSmall(NotEnoughMemory):
    """Not even a micro-batch of one sequence trains in the GPU's memory."""


class MicroBatchSplitWarning(UserWarning):
    """The micro-batch was split with gradient accumulation to fit the GPU's memory."""


def training_bytes(
    model_config: GPTConfig, batch_size: int, flash: bool = True, shards: int = 1
) -> int:
    """Peak memory of one process training batch_size sequences (training_memory_bytes, summed).

    Under FSDP over `shards` processes each keeps 1/shards of the weights, gradients and AdamW
    state: the part that does not grow with the batch, so the estimate at batch 0.
    """
    state = sum(training_memory_bytes(model_config, 0, flash).values())
    total = sum(training_memory_bytes(model_config, batch_size, flash).values())
    return math.ceil(state / shards) + total - state


def divisors(n: int) -> list[int]:
    """The divisors of n, largest first (in √n steps: a batch of 10⁹ is a typo, not a hang)."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted({*small, *(n // d for d in small)}, reverse=True)


def fit_micro_batch(
    model_config: GPTConfig,
    batch_size: int,
    grad_accum: int,
    memory_bytes: int,
    flash: bool = True,
    shards: int = 1,
) -> tuple[int, int, int]:
    """The largest micro-batch dividing batch_size that trains in a GPU of memory_bytes.

    Returns (micro_batch, grad_accum, bytes it needs): the accumulation grows as the batch is
    split, so each optimizer step still sees batch_size x grad_accum sequences. The estimate
    must fit all but CUDA_MEMORY_HEADROOM of the memory; GPUTooSmall if one sequence does not.
    """
    usable = memory_bytes * (1 - CUDA_MEMORY_HEADROOM)
    for micro_batch in divisors(batch_size):
        needed = training_bytes(model_config, micro_batch, flash, shards)
        if needed <= usable:
            return micro_batch, grad_accum * (batch_size // micro_batch), needed
    raise GPUTooSmall(
        f"one sequence of {model_config.block_size} tokens needs ~{needed / GIB:.1f} GiB to "
        f"train, more than the {usable / GIB:.1f} GiB usable of its {memory_bytes / GIB:.1f} GiB"
    )


def micro_batch_layout(
    cfg: TrainConfig, model_config: GPTConfig, device: torch.device, world_size: int = 1
) -> tuple[int, int]:
    """(micro_batch, grad_accum) this process trains with: cfg's, split to fit its GPU.

    Off CUDA nothing changes. Where cfg.batch_size does not fit the GPU (`fit_micro_batch`),
    the batch is split, with a MicroBatchSplitWarning; cfg stays the recipe, which a resumed
    run is compared against. Under torchrun every process fits its own GPU.
    """
    memory = device_memory(device)
    if memory is None:
        check_memory(cfg, model_config, None, cfg.batch_size)
        return cfg.batch_size, cfg.grad_accum
    gpu, total = memory
    flash = cfg.attention == "sdpa"  # SDPA's fused kernels never hold the T x T attention
    shards = world_size if cfg.parallel == "fsdp" else 1
    try:
        micro_batch, grad_accum, _ = fit_micro_batch(
            model_config, cfg.batch_size, cfg.grad_accum, total, flash, shards
        )
    except GPUTooSmall as error:
        raise GPUTooSmall(
            f"{cfg.run_name} cannot train on {gpu}: {error}. Pick a smaller model preset (model "
            f"{cfg.model} now), a shorter block_size ({model_config.block_size} now), or a "
            "bigger GPU; or shard the model over several GPUs (parallel=fsdp under torchrun)."
        ) from None
    if micro_batch < cfg.batch_size:
        full = training_bytes(model_config, cfg.batch_size, flash, shards)
        tokens = cfg.batch_size * cfg.grad_accum * model_config.block_size
        warnings.warn(
            MicroBatchSplitWarning(
                f"{cfg.run_name}: micro-batch {cfg.batch_size} needs ~{full / GIB:.1f} GiB, more "
                f"than fits the {total / GIB:.1f} GiB of {gpu}; training {grad_accum} × "
                f"{micro_batch} with gradient accumulation (same {tokens:,} tokens per step)"
            ),
            stacklevel=2,
        )
    check_memory(cfg, model_config, memory, micro_batch, shards)
    return micro_batch, grad_accum


def host_memory() -> int | None:
    """Bytes of RAM in this machine, or None where the OS does not say (Windows)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def eval_batch_bytes(cfg: TrainConfig, block_size: int) -> int:
    """Memory of the fixed evaluation batches: inputs and targets in int64, for both splits."""
    return 2 * 2 * 8 * cfg.eval_batches * cfg.batch_size * block_size


def check_memory(
    cfg: TrainConfig,
    model_config: GPTConfig,
    memory: tuple[str, int] | None,
    micro_batch: int,
    shards: int = 1,
) -> None:
    """Refuse a run whose training and evaluation batches cannot fit the device's memory.

    memory is the GPU's (name, bytes) from `device_memory`, or None off CUDA: then the
    machine's RAM counts, for the CPU and for Apple's MPS, whose memory is the machine's. The
    estimate is the mixed-precision budget (`training_bytes`), less than fp32 needs, so only
    runs that cannot fit are refused.
    """
    where, total = memory if memory is not None else ("this machine's RAM", host_memory())
    if total is None:
        return
    flash = cfg.attention == "sdpa"
    training = training_bytes(model_config, micro_batch, flash, shards)
    evals = eval_batch_bytes(cfg, model_config.block_size)
    if training + evals > total:
        raise NotEnoughMemory(
            f"{cfg.run_name} needs about {(training + evals) / GIB:,.1f} GiB (training "
            f"{micro_batch:,} × {model_config.block_size:,} tokens at a time: "
            f"{training / GIB:,.1f} GiB; {cfg.eval_batches:,} fixed evaluation batches: "
            f"{evals / GIB:,.1f} GiB), more than the {total / GIB:,.1f} GiB of {where}. Lower "
            "batch_size (raise grad_accum to keep the tokens per step), block_size or "
            "eval_batches, or pick a smaller model preset."
        )
