"""bench/common.py's machine record: what a benchmark saves, its file-name slug, a failure kept."""

import importlib
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tinylm.reference import REFERENCE_DIR

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def common(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """bench/common.py, imported as the bench scripts import it (bench/ on sys.path)."""
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("common")


def test_the_record_says_what_and_how_busy(common):
    info = common.machine(torch.device("cpu"))
    assert {"date", "device", "device_name", "torch", "cpu_count", "torch_threads"} <= set(info)
    assert {"load_average_1min", "native_bf16", "cpu_bf16", "profile", "commit"} <= set(info)
    assert info["device"] == "cpu" and info["torch"] == torch.__version__
    assert {"cpu_capability", "cpu_restrictions", "profile_runs"} <= set(info)


def test_the_record_names_the_cpu_restrictions(common, monkeypatch):
    for name in common.CPU_RESTRICTION_ENV:
        monkeypatch.delenv(name, raising=False)
    assert common.cpu_restrictions() == {}
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.setenv("TINYLM_CPU_BF16", "0")
    assert common.cpu_restrictions() == {"ATEN_CPU_CAPABILITY": "avx2", "TINYLM_CPU_BF16": "0"}
    assert common.machine(torch.device("cpu"))["cpu_bf16"] is None  # the switch hides bf16


def test_slug_is_the_device_type_off_cuda(common):
    assert common.slug(torch.device("cpu")) == "cpu"
    assert REFERENCE_DIR.name == "reference" and REFERENCE_DIR.parent.name == "data"


def test_failure_keeps_the_type_and_the_first_line(common):
    failure = common.failure
    assert failure(RuntimeError("no compiler\nlong trace")) == "failed: RuntimeError: no compiler"
    assert failure(ValueError()) == "failed: ValueError: "
    assert len(failure(OSError("x" * 500))) < 240


def test_save_result_makes_folders_and_leaves_no_partial_file(common, tmp_path):
    out = tmp_path / "deep" / "folder" / "bench_x_cpu.json"
    assert common.save_result({"benchmark": "x", "figure": "春"}, out) == out
    assert json.loads(out.read_text(encoding="utf-8")) == {"benchmark": "x", "figure": "春"}
    assert [p.name for p in out.parent.iterdir()] == [out.name]
