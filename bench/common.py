"""What the benchmarks share: the machine record saved beside every figure, and how runs are scored.

A figure without its machine is noise, so every script here saves `machine(device)` (device and
CPU names, torch, threads, load average, native bf16 and any restriction of the CPU's
instructions, commit, profile and its sizes) with its results, under ``data/reference/``
(`tinylm.reference.REFERENCE_DIR`) by default, where `tinylm.viz` reads them back. The recipe and
architecture benchmarks score every run the same way: `validation_losses`, and JUDGED_POEMS
poems judged on POEM_METRICS. None of this is course material, so it stays out of `tinylm`.

The scripts run as ``python bench/<script>.py``, which puts this folder on ``sys.path``: they
``import common``; a test does ``monkeypatch.syspath_prepend`` with this folder first.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from tinylm.data import write_json
from tinylm.download import PROJECT_ROOT
from tinylm.evaluate import estimate_loss, fixed_batches
from tinylm.hardware import cpu_bf16_support, cuda_has_native_bf16, resolve_precision, use_compile
from tinylm.model import GPT
from tinylm.profiles import get_profile
from tinylm.runs import TrainConfig

JUDGED_POEMS = 200  # poems the benchmarks write and judge per run
POEM_METRICS = (  # the PoemJudge report fields the benchmarks record
    "finished",
    "regulated",
    "uniform_verses",
    "copied_verses",
    "rhymes",
    "tone_agreement",
)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        if found:
            return found.group(1).strip()
    return platform.processor() or platform.machine()


def native_bf16(device: torch.device) -> bool | None:
    """Whether the device computes bf16 natively (CPU: AMX or AVX-512 BF16); None: unknown (MPS)."""
    if device.type == "cuda":
        return cuda_has_native_bf16()
    if device.type == "cpu":
        return cpu_bf16_support() is not None
    return None


# Settings that hold the CPU back from what it has (to measure the common laptop on a bigger
# machine): PyTorch's, oneDNN's and MKL's instruction sets, and the course's bf16 switch.
CPU_RESTRICTION_ENV = (
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "MKL_ENABLE_INSTRUCTIONS",
    "TINYLM_CPU_BF16",
)


def cpu_restrictions() -> dict[str, str]:
    """Which of CPU_RESTRICTION_ENV are set for this measurement, and to what ({}: none)."""
    return {name: os.environ[name] for name in CPU_RESTRICTION_ENV if name in os.environ}


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none, e.g. Windows)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def machine(device: torch.device) -> dict:
    """What the figures were measured on, including how busy the machine was."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, text=True, capture_output=True
    ).stdout.strip()
    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "commit": commit or None,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "profile": get_profile().name,
        "load_average_1min": load_average(),
        "native_bf16": native_bf16(device),
    }
    if device.type == "cpu":
        info["cpu_bf16"] = cpu_bf16_support()  # "AMX", "AVX-512 BF16" or None (emulated)
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()  # e.g. AVX2, AVX512
        info["cpu_restrictions"] = cpu_restrictions()
    info["profile_runs"] = get_profile().train_run  # char-cpu or char-cpu-fp32: which sizes
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["device_memory_gib"] = round(
            torch.cuda.get_device_properties(device).total_memory / 2**30, 1
        )
    return info


def course_precision(cfg: TrainConfig, device: torch.device) -> dict:
    """The compute dtype and compile setting tinylm.train resolves for this run on this device."""
    return {"dtype": resolve_precision(device, cfg.dtype), "compile": use_compile(cfg, device)}


def slug(device: torch.device) -> str:
    """cpu, mps, or the GPU's name in lower case, e.g. cuda-nvidia-a10g (for file names)."""
    if device.type != "cuda":
        return device.type
    return "cuda-" + re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")


def failure(error: Exception) -> str:
    """How a measurement that raised is recorded: its type and the first line of its message."""
    message = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return f"failed: {type(error).__name__}: {message}"


def save_result(result: dict, out: Path) -> Path:
    """Write a benchmark's result as JSON (folders made as needed, atomically) and return out."""
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(result, out)  # to a temporary name, then renamed
    return out


def validation_losses(
    model: GPT, tokens: np.ndarray, eot_id: int, batch_size: int = 8
) -> dict[str, float]:
    """fp32 loss on fixed batches: 8 and 64 of random windows, and 64 of poem-start windows."""
    scored = {
        "val_random_8": TrainConfig("validation", batch_size=batch_size, eval_batches=8),
        "val_random_64": TrainConfig("validation", batch_size=batch_size, eval_batches=64),
        "val_documents_64": TrainConfig(
            "validation", batch_size=batch_size, eval_batches=64, windows="documents"
        ),
    }
    block_size = model.config.block_size
    return {
        key: estimate_loss(
            model, fixed_batches(tokens, cfg, block_size, "cpu", eot_id), nullcontext()
        )
        for key, cfg in scored.items()
    }
