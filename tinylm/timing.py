"""Timing on any device: wait for queued work before reading the clock, keep the best of a few.

A GPU runs kernels asynchronously: `fn()` returns once the work is queued, so a clock read right
after it measures nothing. `synchronize` waits for the device; `best_time_ms` times a call that
way and keeps the fastest of a few repeats (the least disturbed by other work on the machine).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work, so a clock read afterwards measures it."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def best_time_ms(fn: Callable[[], object], device: torch.device | str, repeats: int = 3) -> float:
    """The best wall time of fn() in milliseconds over `repeats` calls, after one warm-up call."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    fn()  # warm-up: first-call costs (allocation, kernel selection, caches) are not the speed
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def peak_memory_mib(fn: Callable[[], object], device: torch.device | str) -> float | None:
    """Peak CUDA memory fn() allocates beyond what was in use, in MiB; None off CUDA.

    PyTorch tracks the peak of its allocator only on CUDA; on a CPU there is no such counter.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20
