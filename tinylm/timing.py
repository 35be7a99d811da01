"""Timing on any device: wait for queued work before reading the clock, keep the best of a few.

A GPU runs kernels asynchronously: `fn()` returns once the work is queued, so a clock read right
after it measures nothing. `synchronize` waits for the device; `timed` times one call that way
and `best_time_ms` keeps the fastest of a few repeats (the least disturbed by other work on the
machine); `num_threads` runs a block on fewer CPU threads. The bench/ scripts and the notebooks
time with these.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

DECODE_WARMUP_TOKENS = 8  # untimed tokens a decoding benchmark writes first (allocator, kernels)


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work, so a clock read afterwards measures it."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@contextmanager
def num_threads(threads: int | None) -> Iterator[None]:
    """Run the block on `threads` torch threads (None: as set), then restore the setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def timed(
    fn: Callable[..., Any], *args: Any, device: torch.device | str | None = None, **kwargs: Any
) -> tuple[Any, float]:
    """fn(*args, **kwargs) and the seconds it took, after `device`'s queued work if one is given."""
    if device is not None:
        synchronize(device)
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    if device is not None:
        synchronize(device)
    return result, time.perf_counter() - start


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
