"""The nanoGPT H200 reference: files load, speeds come from step times, rows split into poems."""

import json

import pytest

from tinylm import nanogpt_reference as ref
from tinylm.model import flops_per_token, preset


def test_the_committed_reference_has_four_runs_and_two_sets_of_rows():
    assert set(ref.curves()) == {
        "gpt2_30m_4900it",
        "gpt2_30m_5000it",
        "gpt2_124m_5000it",
        "char_30m_2000it",
    }
    rows = ref.sample_rows()
    assert {name: len(r) for name, r in rows.items()} == {
        "gpt2_30m_5000it": 128,
        "gpt2_124m_5000it": 128,
    }


def test_the_steady_step_time_leaves_out_steps_that_include_an_evaluation():
    run = {
        "shape": {"eval_interval": 200},
        "iters": [
            {"iter": 100, "ms": 10.0},
            {"iter": 200, "ms": 900.0},  # evaluated before this step
            {"iter": 300, "ms": 12.0},
            {"iter": 400, "ms": 800.0},
            {"iter": 500, "ms": 11.0},
        ],
    }
    assert ref.steady_step_ms(run) == 11.0
    assert ref.tokens_per_s(run) == pytest.approx(16384 / 0.011)


def test_mfu_divides_the_models_flops_per_second_by_the_peak():
    run = {"shape": {"eval_interval": 1000}, "iters": [{"iter": 100, "ms": 16.384}]}
    flops = ref.mfu("gpt2_30m_5000it", run, peak_flops=1.0) / 1e6  # 1M tokens/s

    assert flops == pytest.approx(flops_per_token(preset("30m", vocab_size=50304)))


def test_only_documents_that_ended_are_kept():
    rows = [
        f"诗一\n甲\n春。{ref.EOT}诗二\n乙\n秋。{ref.EOT}诗三\n丙\n冬",
        f"{ref.EOT}诗四\n丁\n夏。{ref.EOT}",
    ]
    assert ref.ended_documents(rows) == ["诗一\n甲\n春。", "诗二\n乙\n秋。", "诗四\n丁\n夏。"]


def test_a_missing_file_says_how_to_restore_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="restore it with `git checkout"):
        ref.curves(tmp_path)
    (tmp_path / "samples.json").write_text(json.dumps({"m": {"samples": ["x"], "tok_per_s_b1": 1}}))
    assert ref.sample_rows(tmp_path) == {"m": ["x"]}
    assert ref.sampling_times(tmp_path) == {"m": {"tok_per_s_b1": 1}}
