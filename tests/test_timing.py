"""tinylm.timing: one timed call, warm-up then best repeat, no memory counter off CUDA, threads."""

import pytest
import torch

from tinylm.timing import best_time_ms, num_threads, peak_memory_mib, synchronize, timed


def test_best_time_ms_warms_up_then_keeps_the_best_repeat():
    calls = []
    assert best_time_ms(lambda: calls.append(1), "cpu", repeats=4) >= 0
    assert len(calls) == 5  # one warm-up call, then the four timed ones
    with pytest.raises(ValueError, match="repeats"):
        best_time_ms(lambda: None, "cpu", repeats=0)


def test_peak_memory_is_not_tracked_on_cpu():
    assert peak_memory_mib(lambda: torch.zeros(1000), torch.device("cpu")) is None


def test_synchronize_waits_for_the_named_device_and_nothing_else(monkeypatch):
    """No GPU here: torch's own waits are patched (where defined), recording what is waited on."""
    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(device))
    monkeypatch.setattr(torch.mps, "synchronize", lambda: waited.append("mps"))
    for device in ("cuda:1", torch.device("cuda", 1), "mps", torch.device("mps"), "cpu"):
        synchronize(device)
    assert waited == [torch.device("cuda", 1), torch.device("cuda", 1), "mps", "mps"]


def test_timed_returns_the_result_and_the_seconds():
    result, seconds = timed(sorted, [3, 1, 2], reverse=True)
    assert result == [3, 2, 1] and seconds >= 0
    assert timed(sum, [1, 2], device="cpu")[0] == 3


def test_num_threads_sets_then_restores_the_setting():
    before = torch.get_num_threads()
    with num_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with num_threads(None):  # None: as set
        assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), num_threads(1):
        raise RuntimeError("restored even when the block fails")
    assert torch.get_num_threads() == before
