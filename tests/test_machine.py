"""tinylm.machine: the record a benchmark saves, its file-name slug, and how a failure is kept."""

import json

import torch

from tinylm.machine import REFERENCE_DIR, failure, machine, save_result, slug


def test_the_record_says_what_and_how_busy():
    info = machine(torch.device("cpu"))
    assert {"date", "device", "device_name", "torch", "cpu_count", "torch_threads"} <= set(info)
    assert {"load_average_1min", "native_bf16", "cpu_bf16", "profile", "commit"} <= set(info)
    assert info["device"] == "cpu" and info["torch"] == torch.__version__


def test_slug_is_the_device_type_off_cuda():
    assert slug(torch.device("cpu")) == "cpu"
    assert REFERENCE_DIR.name == "reference" and REFERENCE_DIR.parent.name == "data"


def test_failure_keeps_the_type_and_the_first_line():
    assert failure(RuntimeError("no compiler\nlong trace")) == "failed: RuntimeError: no compiler"
    assert failure(ValueError()) == "failed: ValueError: "
    assert len(failure(OSError("x" * 500))) < 240


def test_save_result_makes_folders_and_leaves_no_partial_file(tmp_path):
    out = tmp_path / "deep" / "folder" / "bench_x_cpu.json"
    assert save_result({"benchmark": "x", "figure": "春"}, out) == out
    assert json.loads(out.read_text(encoding="utf-8")) == {"benchmark": "x", "figure": "春"}
    assert [p.name for p in out.parent.iterdir()] == [out.name]
