"""tinylm.timing: a warm-up call, the best of the repeats, and no memory counter off CUDA."""

import pytest
import torch

from tinylm.timing import best_time_ms, peak_memory_mib, synchronize


def test_best_time_ms_warms_up_then_keeps_the_best_repeat():
    calls = []
    assert best_time_ms(lambda: calls.append(1), "cpu", repeats=4) >= 0
    assert len(calls) == 5  # one warm-up call, then the four timed ones
    with pytest.raises(ValueError, match="repeats"):
        best_time_ms(lambda: None, "cpu", repeats=0)


def test_peak_memory_is_not_tracked_on_cpu():
    assert peak_memory_mib(lambda: torch.zeros(1000), torch.device("cpu")) is None


def test_synchronize_accepts_a_name_or_a_device():
    synchronize("cpu")
    synchronize(torch.device("cpu"))
