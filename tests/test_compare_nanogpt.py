"""bench/compare_nanogpt.py on synthetic runs: speeds of both, curves side by side, no GPU run."""

import importlib
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def compare(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("compare_nanogpt")


def reference_run(steps: int, ms: float, wall_s: float) -> dict:
    return {
        "shape": {"max_iters": steps, "eval_interval": 1000},
        "wall_s": wall_s,
        "evals": [{"step": 0, "val_loss": 10.9}, {"step": 1000, "val_loss": 2.7}],
        "iters": [{"iter": 100, "loss": 3.5, "ms": ms}, {"iter": 1000, "loss": 2.6, "ms": 900.0}],
    }


REFERENCE = {
    "gpt2_30m_4900it": reference_run(4900, 16.384, 100.0),
    "gpt2_124m_5000it": reference_run(5000, 32.768, 200.0),
}


def runs_file(tmp_path: Path) -> Path:
    record = {
        "run": "talk-30m",
        "steps": 500,
        "tokens": 500 * 16384,
        "val_loss": 2.9,
        "elapsed_s": 16.384,
        "median_tokens_per_s": 600000.0,
        "curve": {"step": [0, 250, 500], "val_loss": [10.8, 3.4, 2.9]},
    }
    machine = {"device": "cuda:0", "device_name": "NVIDIA H100 80GB HBM3"}
    path = tmp_path / "runs_cuda-nvidia-h100.json"
    path.write_text(json.dumps({"machine": machine, "results": [record]}), encoding="utf-8")
    return path


def test_speeds_of_both_and_the_curves_side_by_side(compare, tmp_path):
    result = compare.compare(compare.load_runs(runs_file(tmp_path)), REFERENCE)
    assert result["machine"]["device_name"] == "NVIDIA H100 80GB HBM3"
    small, large = result["results"]
    assert small["tinylm"] == {
        "gpu": "NVIDIA H100 80GB HBM3",
        "steps": 500,
        "tokens_per_s": 600000.0,
        "end_to_end_tokens_per_s": 500000.0,  # 8.192M tokens in 16.384 s
        "last_eval_step": 500,
        "last_val_loss": 2.9,
    }
    assert small["nanogpt"]["gpu"] == "NVIDIA H200"
    assert small["nanogpt"]["tokens_per_s"] == 1e6  # the eval step (900 ms) left out
    assert small["nanogpt"]["end_to_end_tokens_per_s"] == pytest.approx(4900 * 16384 / 100.0, 0.1)
    assert [(r["step"], r["tinylm_val_loss"], r["nanogpt_val_loss"]) for r in small["curves"]] == [
        (0, 10.8, 10.9),
        (250, 3.4, None),
        (500, 2.9, None),
        (1000, None, 2.7),
    ]
    assert small["curves"][1]["tokens"] == 250 * 16384
    assert large["tinylm"] is None and large["nanogpt"]["tokens_per_s"] == 5e5


def test_without_a_gpu_run_it_says_so_and_saves_the_reference_side(compare, tmp_path, capsys):
    out = tmp_path / "compare.json"
    compare.main(["--runs", str(tmp_path / "runs_missing.json"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert "no GPU run of talk-30m recorded" in printed and "nanoGPT on an H200" in printed
    result = json.loads(out.read_text(encoding="utf-8"))
    assert "machine" not in result  # nothing was measured here
    assert all(row["tinylm"] is None for row in result["results"])
    assert result["results"][0]["nanogpt"]["run"] == "gpt2_30m_4900it"  # the committed reference
