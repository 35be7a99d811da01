"""The bench scripts, CI-sized: each runs, exits 0 and writes its JSON (no timing is checked).

Also what they share in bench/common.py besides the machine record (tests/test_machine.py):
how the recipe benchmarks score a model.
"""

import importlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tinylm import data, download
from tinylm.hardware import resolve_precision, use_compile
from tinylm.model import GPT, GPTConfig
from tinylm.runs import RUNS

BENCH = Path(__file__).resolve().parent.parent / "bench"
REFERENCE = BENCH.parent / "data" / "reference"


def run_bench(script: str, tmp_path: Path, *args: str) -> dict:
    """Run bench/<script> with args, its JSON to tmp_path (and its temporary files); the JSON."""
    out = tmp_path / "result.json"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    result = json.loads(out.read_text(encoding="utf-8"))
    assert {"benchmark", "machine"} <= set(result)
    assert {"date", "device_name", "torch", "cpu_count", "load_average_1min"} <= set(
        result["machine"]
    )
    return result


@pytest.mark.slow
def test_data_prep_runs_on_the_mirror(tmp_path):
    if not os.environ.get(download.MIRROR_ENV):
        pytest.skip(
            f"bench/data_prep.py copies the poems from a local mirror: set "
            f"{download.MIRROR_ENV} (.ci/run does)"
        )
    result = run_bench("data_prep.py", tmp_path, "--tokenizers", "char")
    assert result["benchmark"] == "data_prep" and result["mirror"]
    assert result["tokenizers"] == ["char"]
    stages = result["seconds"]
    assert {
        "fetch + verify (59 files)",
        "corpus total (load_corpus)",
        "prepare char (tokenizer + encode + pack)",
        "cold pipeline, mirror → 1 packed tokenizations",
    } <= set(stages)
    assert not any("BPE" in stage for stage in stages)  # trained only when bpe is asked for
    assert not list(tmp_path.glob("tmp*"))  # the throwaway data folder is gone


@pytest.mark.slow
def test_exercises_train_times_the_comparison_and_the_seed_spread(tmp_path):
    result = run_bench("exercises_train.py", tmp_path, "--steps", "3", "--seeds", "2")
    assert result["comparison_s"] > 0 and result["settings"]["steps"] == 3
    assert len(result["seed_spread"]["val_loss_by_seed"]) == 2
    solutions = result["solutions"]
    assert abs(solutions["val_yours"] - solutions["val_tinylm"]) < 1e-3


@pytest.mark.slow
def test_train_throughput_climbs_the_ladder(tmp_path):
    result = run_bench(
        "train_throughput.py",
        tmp_path,
        "--presets",
        "char-ci",
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--rungs",
        "4",
    )
    rows = result["results"]
    assert [r["rung"] for r in rows] == [
        "fp32, attention by hand",
        "+ SDPA",
        "+ bf16 autocast",
        "+ fused AdamW",
    ]
    assert all(r["status"] == "ok" and r["tokens_per_s"] > 0 for r in rows), rows


@pytest.mark.slow
def test_generate_compares_cache_and_no_cache(tmp_path):
    result = run_bench(
        "generate.py", tmp_path, "--model", "char-ci", "--batch-sizes", "1,2", "--new-tokens", "8"
    )
    rows = result["results"]
    assert [r["batch_size"] for r in rows] == [1, 2]
    assert all(r["identical_tokens"] and r["with_cache_tokens_per_s"] > 0 for r in rows)
    assert "plain_tokens_per_s" in rows[0] and "plain_tokens_per_s" not in rows[1]
    assert set(result["ways"]) == {"with_cache", "without_cache", "plain"}


@pytest.mark.slow
def test_generate_records_lengths_and_variants(tmp_path):
    args = ["--model", "char-ci", "--batch-sizes", "2", "--plain-batch-sizes", "2"]
    result = run_bench(
        "generate.py", tmp_path, *args, "--new-tokens", "4,70", "--variants", "threads1,bf16"
    )
    rows = result["results"]
    assert [(r["batch_size"], r["new_tokens"]) for r in rows] == [(2, 4), (2, 70)]  # 70 > 64
    for row in rows:
        assert row["threads1_tokens_per_s"] > 0 and row["bf16_vs_cache"] > 0
        assert "bf16_same_tokens" in row and "threads1_same_tokens" not in row
        assert row["speed_up_vs_plain"] > 0
    assert list(result["ways"]) == ["with_cache", "without_cache", "plain", "threads1", "bf16"]


@pytest.mark.slow
def test_cpu_speed_measures_every_way_against_the_reference(tmp_path):
    if not data.is_prepared("char"):
        pytest.skip(
            "bench/cpu_speed.py trains on the packed character data: run `make data` "
            "first (make test does)"
        )
    result = run_bench(
        "cpu_speed.py",
        tmp_path,
        "--run",
        "char-ci",
        "--steps",
        "1",
        "--rounds",
        "1",
        "--warmup",
        "1",
        "--train-variants",
        "threads1,bf16",
    )
    assert result["benchmark"] == "cpu_speed" and result["run"] == "char-ci"
    train = result["train"]["results"]
    assert [r["variant"] for r in train] == ["reference", "default", "course", "threads1", "bf16"]
    assert all(r["status"] == "ok" and r["tokens_per_s"] > 0 for r in train), train
    assert train[0]["ratio_to_reference"] == 1.0 and train[3]["threads"] == 1
    assert (train[2]["dtype"], train[2]["compile"]) == ("float32", False)  # the fp32 base
    # The tracked figure: the course as training resolves "auto" here, over the reference.
    speedup, default = result["train"]["speedup"], train[1]
    cfg, cpu = RUNS["char-ci"], torch.device("cpu")
    resolved = {"dtype": resolve_precision(cpu, cfg.dtype), "compile": use_compile(cfg, cpu)}
    assert {key: default[key] for key in resolved} == resolved
    assert {key: speedup["default"][key] for key in resolved} == resolved
    assert speedup["default"]["asked"] == {"dtype": "auto", "compile": "auto"}
    assert speedup["default"]["ratio"] == default["ratio_to_reference"] > 0
    assert speedup["default"]["warmup_s"] == default["warmup_s"]
    assert speedup["ratios"] == {r["variant"]: r["ratio_to_reference"] for r in train[1:]}
    native = result["machine"]["native_bf16"]
    assert speedup["native_bf16"] is native and (speedup["cpu_bf16"] is not None) is native
    assert speedup["goal"] == (1.5 if native else 0.95)
    assert speedup["meets_goal"] is (speedup["default"]["ratio"] >= speedup["goal"])
    assert result["profile"] == "ci"  # char-ci is the ci profile's run
    assert "sample" not in result  # sampling speed is bench/generate.py's


@pytest.mark.slow
def test_pretraining_exercises_trains_both_variants(tmp_path, monkeypatch):
    if not data.is_prepared("char"):
        pytest.skip(
            "the exercise runs train on the packed character data: run `make data` "
            "first (make test does)"
        )
    monkeypatch.setenv("TINYLM_RUNS_DIR", str(tmp_path / "runs"))
    result = run_bench("pretraining_exercises.py", tmp_path, "--run", "char-ci")
    rows = result["results"]
    assert list(rows) == ["as trained", "dropout 0.1", "half lr"]
    assert [rows[name]["dropout"] for name in rows] == [0.0, 0.1, 0.0]
    assert rows["half lr"]["lr"] == RUNS["char-ci"].lr / 2
    assert all(row["final_step"] == RUNS["char-ci"].max_steps for row in rows.values())
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "char-ci",
        "char-ci-dropout",
        "char-ci-half-lr",
    ]


@pytest.mark.slow
def test_record_runs_reads_a_finished_run(tmp_path):
    if not data.is_prepared("char"):
        pytest.skip(
            "recording a run needs one trained on the packed character data: run "
            "`make data` first (make test does)"
        )
    env = {**os.environ, "TINYLM_RUNS_DIR": str(tmp_path / "runs")}
    trained = subprocess.run(
        [
            sys.executable,
            "-m",
            "tinylm",
            "train",
            "--run",
            "char-ci",
            "max_steps=4",
            "warmup_steps=1",
            "eval_interval=2",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr[-4000:]
    out = tmp_path / "runs.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / "record_runs.py"), "char-ci", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    (run,) = json.loads(out.read_text(encoding="utf-8"))["results"]
    assert run["run"] == "char-ci" and run["steps"] == 4
    assert run["curve"]["step"] == [0, 2, 4] and run["val_loss"] == run["curve"]["val_loss"][-1]


@pytest.mark.slow
def test_benchmarks_page_is_generated_from_the_committed_json():
    done = subprocess.run(
        [sys.executable, str(BENCH / "report.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr + " (run `python bench/report.py` and commit)"


def load_report(monkeypatch):
    """bench/report.py as a module."""
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("report")


def gpu_part(page: str) -> tuple[str, str]:
    """The page's CPU part and its GPU part (up to the recipe)."""
    cpu, rest = page.split("\n## On a GPU\n")
    return cpu, rest.split("\n## Recording the GPU figures\n")[0]


def test_benchmarks_page_never_shows_a_cpu_figure_under_a_gpu_title(tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    shutil.copytree(REFERENCE, reference)
    for path in reference.glob("*.json"):  # the committed files, whatever GPU ones exist
        if "cuda" in path.name:
            path.unlink()
    report = load_report(monkeypatch)
    cpu, gpu = gpu_part(report.render(reference))
    assert "No GPU run has been recorded yet" in gpu and ".json" not in gpu
    assert "bench_cpu_speed_cpu.json" in cpu

    generate = json.loads((reference / "bench_generate_cpu.json").read_text(encoding="utf-8"))
    generate["machine"].update(device="cuda:0", device_name="NVIDIA H200")
    (reference / "bench_generate_cuda-nvidia-h200.json").write_text(json.dumps(generate))
    judged = {
        "model": "/tmp/runs/talk-30m/model",
        "poems": 200,
        "finished": 0.9,
        "regulated": 0.5,
        "rhymes": 0.4,
        "tone_agreement": 0.7,
        "copied_verses": 0.01,
        "val_bits_per_char": 9.5,
        "sampling": {"temperature": 0.8, "top_k": 200, "max_new_tokens": 256, "seed": 0},
    }
    (reference / "eval_talk-30m_cuda-nvidia-h200.json").write_text(json.dumps(judged))
    cpu, gpu = gpu_part(report.render(reference))
    assert "No GPU run has been recorded yet" not in gpu
    assert "bench_generate_cuda-nvidia-h200.json" in gpu and "_cpu.json" not in gpu
    assert "eval_talk-30m_cuda-nvidia-h200.json" in gpu and "| `talk-30m` | 200 | 90.0 %" in gpu
    assert "Not recorded on a GPU yet" in gpu  # the ladder, the runs, the machine record
    assert "cuda-nvidia-h200" not in cpu


def test_gpu_check_parses_and_its_time_limits_fit_ten_minutes(monkeypatch):
    script = BENCH / "gpu_check.sh"
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    if shutil.which("shellcheck"):
        done = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout
    text = script.read_text(encoding="utf-8")
    limits = dict(re.findall(r"\b(T_[A-Z0-9]+)=(\d+)", text))
    assert limits and all(f'"${name}"' in text or f"=${name}" in text for name in limits)
    total = sum(map(int, limits.values()))
    assert total < 600
    assert f"= {total}, under 600" in text  # the script's own sum, as its header says
    assert f"together {total} s" in load_report(monkeypatch).RECORDING


def test_saved_notebooks_keep_final_bars_and_no_bertviz_scripts(tmp_path, monkeypatch):
    import nbformat

    monkeypatch.syspath_prepend(str(BENCH))
    notebook_times = importlib.import_module("notebook_times")
    bars = nbformat.v4.new_code_cell(
        "train()",
        outputs=[
            nbformat.v4.new_output(
                "stream", name="stderr", text="run:  0%| 0/3\rrun: 33%| 1/3\rrun: 100%| 3/3\n"
            )
        ],
    )
    view = nbformat.v4.new_code_cell(
        "head_view(maps, tokens)",
        metadata={"tags": ["bertviz"]},
        outputs=[
            nbformat.v4.new_output(
                "display_data", data={"text/html": "<script>" + "x" * 1000 + "</script>"}
            )
        ],
    )
    path = tmp_path / "nb.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[bars, view]), path)
    notebook_times.tidy_outputs(path)
    cells = nbformat.read(path, as_version=4).cells
    assert cells[0].outputs[0].text == "run: 100%| 3/3\n"
    assert cells[1].outputs[0].data["text/html"] == notebook_times.BERTVIZ_NOTE


def test_workshop_route_keeps_the_core_code_cells(monkeypatch):
    import nbformat

    monkeypatch.syspath_prepend(str(BENCH))
    route = importlib.import_module("workshop_route")
    text, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    notebook = nbformat.v4.new_notebook(
        cells=[
            text("# 99 · Title"),  # the intro: core in a notebook with a core section
            code("import math"),
            text("## 1. A · core"),
            code("a = 1"),
            text("### Sub · optional"),
            code("sub = 2"),
            text("### Unmarked"),  # back to its section's mark
            code("back = 3"),
            text("## 2. B · optional"),
            code("b = 4"),
            text("Read at home.\n\n## Exercises · core: `exercises/x.py`; the questions optional"),
            code("x = 5"),
        ]
    )
    found = route.workshop_route(notebook)
    assert found.cells == [1, 3, 7, 11]
    assert found.prose_words == 4 + 5 + 2 + 8  # "Read at home." is section 2's
    copy = route.route_copy(notebook, found.cells)
    assert [c.source for c in copy.cells if c.cell_type == "code"] == [
        "import math",
        "a = 1",
        "back = 3",
        "x = 5",
    ]
    assert sum(c.cell_type == "markdown" for c in copy.cells) == 6

    optional = nbformat.v4.new_notebook(
        cells=[text("# 98 · Optional as a whole"), code("import math"), text("## 1. A · optional")]
    )
    assert route.workshop_route(optional) == route.Route(cells=[], prose_words=0)
    with pytest.raises(ValueError, match="without · core or · optional"):
        route.workshop_route(nbformat.v4.new_notebook(cells=[text("## 1. Unmarked")]))


def test_validation_losses_are_three_figures_near_ln_vocab_at_init(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    common = importlib.import_module("common")
    rng = np.random.default_rng(0)  # documents of 1-9 tokens from 1..15, each after id 0 (EOT)
    docs = [[0, *rng.integers(1, 16, size=rng.integers(1, 10))] for _ in range(300)]
    tokens = np.concatenate(docs).astype(np.uint16)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, block_size=16, n_layer=1, n_head=2, n_embd=16))
    losses = common.validation_losses(model, tokens, 0, batch_size=2)
    assert list(losses) == ["val_random_8", "val_random_64", "val_documents_64"]
    assert all(abs(value - math.log(16)) < 0.5 for value in losses.values())
    assert common.validation_losses(model, tokens, 0, batch_size=2) == losses


def test_the_ablation_benchmark_trains_the_course_rope_run(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    ablation = importlib.import_module("architecture_ablation")
    assert ablation.variant_config("rope") == RUNS["char-cpu-rope"]
