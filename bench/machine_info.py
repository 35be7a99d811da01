"""What a benchmark ran on, and how a failed measurement is recorded: shared by bench scripts.

Run as a script (bench/gpu_check.sh does), ``python bench/machine_info.py --runs talk-30m``, it
writes the machine record and the precision the named runs resolve to on it (dtype and compile,
as tinylm.train resolves "auto") to ``data/reference/machine_<device>.json`` (or under
``--out-dir``), its device slug in the name.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch

from tinylm.data import write_json
from tinylm.hardware import cuda_has_native_bf16, resolve_precision, use_compile
from tinylm.profiles import best_device, cpu_bf16_support, get_profile
from tinylm.runs import RUNS, TrainConfig

ROOT = Path(__file__).resolve().parent.parent


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


def course_precision(cfg: TrainConfig, device: torch.device) -> dict:
    """The compute dtype and compile setting tinylm.train resolves for this run on this device."""
    return {"dtype": resolve_precision(device, cfg.dtype), "compile": use_compile(cfg, device)}


def machine(device: torch.device) -> dict:
    """What the figures were measured on, including how busy the machine was."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True, capture_output=True
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
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["device_memory_gib"] = round(
            torch.cuda.get_device_properties(device).total_memory / 2**30, 1
        )
    return info


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none, e.g. Windows)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def slug(device: torch.device) -> str:
    """cpu, mps, or the GPU's name in lower case, e.g. cuda-nvidia-a10g (for file names)."""
    if device.type != "cuda":
        return device.type
    return "cuda-" + re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")


def failure(error: Exception) -> str:
    """How a measurement that raised is recorded: its type and the first line of its message."""
    message = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return f"failed: {type(error).__name__}: {message}"


def save(result: dict, out: Path) -> None:
    """Write a benchmark's result as JSON (folders made as needed) and say where."""
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(result, out)  # to a temporary name, then renamed
    print(f"saved {out}")


def main() -> None:
    """Write the machine record and the named runs' resolved precision (bench/gpu_check.sh)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default=best_device(), help="(default: %(default)s)")
    parser.add_argument(
        "--runs",
        nargs="*",
        default=[],
        choices=sorted(RUNS),
        help="runs whose resolved dtype and compile setting to record",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=ROOT / "data" / "reference",
        help="folder of machine_<device>.json (default: data/reference)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    info = machine(device)
    precision = {run: course_precision(RUNS[run], device) for run in args.runs}
    print(
        f"{info['device_name']} ({device}), torch {info['torch']}, native bf16: "
        f"{info['native_bf16']}"
    )
    for run, resolved in precision.items():
        print(f"  {run}: dtype auto -> {resolved['dtype']}, compile auto -> {resolved['compile']}")
    save(
        {"benchmark": "machine", "machine": info, "precision": precision},
        args.out_dir / f"machine_{slug(device)}.json",
    )


if __name__ == "__main__":
    main()
