"""The cpu profile's fp32 runs: the same recipes as the bf16 ones, smaller, and named so."""

from dataclasses import asdict

import pytest

from tinylm.model import PRESETS, flops_per_token, preset
from tinylm.profiles import CPU_FP32, PROFILES
from tinylm.runs import CHAR_VOCAB, RUNS

GPT2_VOCAB = 50257


def training_flops(run: str, vocab_size: int) -> float:
    """Training FLOPs of a run of RUNS with a tokenizer of vocab_size."""
    cfg = RUNS[run]
    per_step = cfg.batch_size * cfg.grad_accum * PRESETS[cfg.model].block_size
    return cfg.max_steps * per_step * flops_per_token(preset(cfg.model, vocab_size=vocab_size))


def test_every_fp32_run_is_named_so_and_exists():
    bf16 = PROFILES["cpu"]
    for fp32_run, bf16_run in [
        (CPU_FP32.train_run, bf16.train_run),
        (CPU_FP32.mistral_run, bf16.mistral_run),
        *zip(CPU_FP32.eval_runs, bf16.eval_runs, strict=True),
    ]:
        assert fp32_run == f"{bf16_run}-fp32" and fp32_run in RUNS


@pytest.mark.parametrize("run", ["char-cpu", "tok-char-cpu", "tok-bpe-cpu", "tok-gpt2-cpu"])
def test_an_fp32_run_keeps_its_recipe_and_changes_only_its_size(run):
    same, fp32 = asdict(RUNS[run]), asdict(RUNS[f"{run}-fp32"])
    changed = {key for key in same if same[key] != fp32[key]}
    assert changed <= {
        "run_name",
        "model",
        "max_steps",
        "warmup_steps",
        "eval_interval",
        "log_interval",
    }
    assert fp32["max_steps"] < same["max_steps"]
    assert training_flops(f"{run}-fp32", CHAR_VOCAB) < 0.7 * training_flops(run, CHAR_VOCAB)


def test_the_fp32_comparisons_keep_equal_compute():
    char = training_flops("tok-char-cpu-fp32", CHAR_VOCAB)
    assert training_flops("tok-gpt2-cpu-fp32", GPT2_VOCAB) == pytest.approx(char, rel=0.02)
    main = training_flops("char-cpu-fp32", CHAR_VOCAB)
    assert training_flops("mistral-cpu-fp32", CHAR_VOCAB) == pytest.approx(main, rel=0.01)
