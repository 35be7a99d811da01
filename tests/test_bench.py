"""The bench scripts, CI-sized: each runs, exits 0 and writes its JSON (no timing is checked)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinylm import data

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run_bench(script: str, tmp_path: Path, *args: str) -> dict:
    """Run bench/<script> with args, its JSON to tmp_path (and its temporary files); the JSON."""
    out = tmp_path / "result.json"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, str(BENCH / script), *args, "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    result = json.loads(out.read_text(encoding="utf-8"))
    assert {"benchmark", "machine"} <= set(result)
    assert {"date", "device_name", "torch", "cpu_count", "load_average_1min"} <= set(
        result["machine"])
    return result


def test_data_prep_runs_on_the_mirror(tmp_path):
    if not os.environ.get(data.MIRROR_ENV):
        pytest.skip(f"bench/data_prep.py copies the poems from a local mirror: set "
                    f"{data.MIRROR_ENV} (.ci/run does)")
    result = run_bench("data_prep.py", tmp_path, "--tokenizers", "char")
    assert result["benchmark"] == "data_prep" and result["mirror"]
    assert result["tokenizers"] == ["char"]
    stages = result["seconds"]
    assert {"fetch + verify (59 files)", "corpus total (load_corpus)",
            "prepare char (tokenizer + encode + pack)",
            "cold pipeline, mirror → 1 packed tokenizations"} <= set(stages)
    assert not any("BPE" in stage for stage in stages)  # trained only when bpe is asked for
    assert not list(tmp_path.glob("tmp*"))  # the throwaway data folder is gone


def test_train_throughput_climbs_the_ladder(tmp_path):
    result = run_bench("train_throughput.py", tmp_path, "--presets", "char-ci",
                       "--batch-size", "2", "--steps", "1", "--warmup", "1", "--rungs", "4")
    rows = result["results"]
    assert [r["rung"] for r in rows] == ["fp32, attention by hand", "+ SDPA", "+ bf16 autocast",
                                         "+ fused AdamW"]
    assert all(r["status"] == "ok" and r["tokens_per_s"] > 0 for r in rows), rows


def test_generate_compares_cache_and_no_cache(tmp_path):
    result = run_bench("generate.py", tmp_path, "--model", "char-ci", "--batch-sizes", "1,2",
                       "--new-tokens", "8")
    rows = result["results"]
    assert [r["batch_size"] for r in rows] == [1, 2]
    assert all(r["identical_tokens"] and r["with_cache_tokens_per_s"] > 0 for r in rows)
    assert "plain_tokens_per_s" in rows[0] and "plain_tokens_per_s" not in rows[1]


def test_cpu_speed_measures_every_way_against_the_reference(tmp_path):
    if not data.is_prepared("char"):
        pytest.skip("bench/cpu_speed.py trains on the packed character data: run `make data` "
                    "first (make test does)")
    result = run_bench("cpu_speed.py", tmp_path, "--run", "char-ci", "--steps", "1",
                       "--rounds", "1", "--warmup", "1", "--train-variants", "threads1,bf16",
                       "--batch-sizes", "1,2", "--new-tokens", "4")
    assert result["benchmark"] == "cpu_speed" and result["run"] == "char-ci"
    train = result["train"]["results"]
    assert [r["variant"] for r in train] == ["reference", "course", "threads1", "bf16"]
    assert all(r["status"] == "ok" and r["tokens_per_s"] > 0 for r in train), train
    assert train[0]["ratio_to_reference"] == 1.0 and train[2]["threads"] == 1
    sample = result["sample"]["results"]
    assert [(r["batch_size"], r["variant"]) for r in sample] == [
        (b, v) for b in (1, 2) for v in ("reference", "course", "no-cache", "threads1", "bf16")]
    assert all(r["new_tokens"] == 4 and r["tokens_per_s"] > 0 and "identical_to_reference" in r
               for r in sample)


def test_record_runs_reads_a_finished_run(tmp_path):
    if not data.is_prepared("char"):
        pytest.skip("recording a run needs one trained on the packed character data: run "
                    "`make data` first (make test does)")
    env = {**os.environ, "TINYLM_RUNS_DIR": str(tmp_path / "runs")}
    trained = subprocess.run([sys.executable, "-m", "tinylm", "train", "--run", "char-ci",
                              "max_steps=4", "warmup_steps=1", "eval_interval=2"],
                             capture_output=True, text=True, env=env, timeout=300)
    assert trained.returncode == 0, trained.stderr[-4000:]
    out = tmp_path / "runs.json"
    done = subprocess.run([sys.executable, str(BENCH / "record_runs.py"), "char-ci", "--out",
                           str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    (run,) = json.loads(out.read_text(encoding="utf-8"))["results"]
    assert run["run"] == "char-ci" and run["steps"] == 4
    assert run["curve"]["step"] == [0, 2, 4] and run["val_loss"] == run["curve"]["val_loss"][-1]


def test_benchmarks_page_is_generated_from_the_committed_json():
    done = subprocess.run([sys.executable, str(BENCH / "report.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr + " (run `python bench/report.py` and commit)"
