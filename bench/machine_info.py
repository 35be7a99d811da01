"""What a benchmark ran on, and how a failed measurement is recorded: shared by bench scripts."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch

from tinylm.data import write_json
from tinylm.profiles import get_profile

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


def machine(device: torch.device) -> dict:
    """What the figures were measured on, including how busy the machine was."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                            capture_output=True).stdout.strip()
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": str(device), "device_name": device_name(device),
            "torch": torch.__version__, "commit": commit or None,
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "profile": get_profile().name, "load_average_1min": load_average()}


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
