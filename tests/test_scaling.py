"""Scaling laws on known values: FLOPs, Chinchilla's optimum, the law, MFU, and the fitter."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tinylm import scaling
from tinylm.model import GPT, PRESETS, GPTConfig, count_parameters, flops_per_token
from tinylm.profiles import PROFILES
from tinylm.runs import RUNS
from tinylm.train import TrainResult

TINY = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32)


def test_flops_agree_with_the_model():
    # as tests/test_model.py pins it: 6 · 123,587,328 + 12 · 12 layers · 256 tokens · 768 channels
    assert scaling.run_flops(PRESETS["124m"], 1) == 6 * 123_587_328 + 12 * 12 * 256 * 768
    assert scaling.run_flops(TINY, 1000) == 1000 * flops_per_token(TINY)
    assert scaling.training_flops(123_587_328, 1e9) == 6 * 123_587_328 * 1e9


def test_chinchilla_rule_at_gophers_budget():
    n, d = scaling.chinchilla_optimal(5.76e23)  # Gopher's compute: Chinchilla 70B on 1.4T
    assert n == pytest.approx(69.3e9, rel=1e-3)
    assert d == pytest.approx(1.386e12, rel=1e-3)
    assert 6 * n * d == pytest.approx(5.76e23)


def test_law_optimum_minimises_the_law_on_the_budget():
    compute = 1e21
    n, d = scaling.law_optimum(scaling.CHINCHILLA, compute)
    assert 6 * n * d == pytest.approx(compute)
    best = scaling.CHINCHILLA(n, d)
    for factor in (0.8, 1.25):
        assert scaling.CHINCHILLA(n * factor, d / factor) > best
    a = 0.28 / (0.34 + 0.28)  # N grows as C^a
    assert scaling.law_optimum(scaling.CHINCHILLA, 2 * compute)[0] / n == pytest.approx(2**a)


def test_chinchilla_law_value():
    expected = 1.69 + 406.4 / 70e9**0.34 + 410.7 / 1.4e12**0.28
    assert scaling.CHINCHILLA(70e9, 1.4e12) == pytest.approx(expected)
    assert scaling.CHINCHILLA(70e9, 1.4e12) == pytest.approx(1.937, abs=1e-3)
    assert scaling.CHINCHILLA(np.array([1e9, 1e10]), 1e11).shape == (2,)


def test_mfu_and_time_of_a_made_up_run():
    seconds = 600.0
    tokens = 0.4 * scaling.peak("A100") * seconds / flops_per_token(TINY)  # 40 % busy
    assert scaling.implied_mfu(TINY, tokens, seconds, "A100") == pytest.approx(0.4)
    assert scaling.training_seconds(1e18, "A100", mfu=0.5) == pytest.approx(1e18 / 156e12)
    assert scaling.training_seconds(1e18, "A100", 0.5, n_gpus=4) == pytest.approx(1e18 / 624e12)


def test_the_talks_runs():
    assert scaling.run_tokens(RUNS["talk-30m"]) == 64 * 256 * 4900
    runs = scaling.TALK_RUNS
    assert runs["talk-30m"].params == count_parameters(PRESETS["30m"])
    assert runs["talk-30m"].mfu == pytest.approx(0.125, abs=0.001)  # as notebook 05 shows
    assert runs["talk-124m"].mfu == pytest.approx(0.179, abs=0.001)
    assert runs["talk-30m"].mfu_at(scaling.PEAK_FLOPS["A10G"]) == runs["talk-30m"].mfu
    assert runs["talk-30m"].mfu_at(70e12) == pytest.approx(0.125 * 125 / 70, abs=0.002)
    assert set(scaling.A10G_PEAKS.values()) == {125e12, 70e12}
    assert runs["talk-757m"].tokens_per_param < 0.03  # 20M tokens for 757M parameters


def test_effective_tokens_of_repeated_data():
    assert scaling.effective_tokens(1e6, 1) == 1e6
    assert scaling.effective_tokens(1e6, 0.5) == 5e5
    assert scaling.effective_tokens(1e6, 4) == pytest.approx(4e6, rel=0.1)  # repeats ≈ new
    assert scaling.effective_tokens(1e6, 1e4) == pytest.approx(1e6 * (1 + 15.4))  # saturates


def test_fit_recovers_a_noiseless_law():
    n = np.logspace(5, 9, 8)
    fit = scaling.fit_power_law(1.8 + 300 * n**-0.3, n, n_boot=20)
    assert (fit.law.E, fit.law.A[0], fit.law.alpha[0]) == pytest.approx((1.8, 300, 0.3), rel=1e-6)
    assert fit.rms_log_error < 1e-9
    n2, d2 = (g.ravel() for g in np.meshgrid(np.logspace(6, 10, 4), np.logspace(8, 12, 4)))
    fit = scaling.fit_power_law(scaling.CHINCHILLA(n2, d2), n2, d2, n_boot=20)
    assert fit.law.A == pytest.approx(scaling.CHINCHILLA.A, rel=1e-4)
    assert fit.law.alpha == pytest.approx(scaling.CHINCHILLA.alpha, rel=1e-4)


def test_fitted_exponents_stay_positive():
    n = np.logspace(5, 8, 8)
    fit = scaling.fit_power_law(2.0 + 1e-3 * n**0.2, n, n_boot=50)  # loss rising with N
    assert min(s.alpha[0] for s in (fit.law, *fit.samples)) >= scaling.MIN_EXPONENT


def test_fit_of_noisy_points_brackets_the_truth():
    rng = np.random.default_rng(0)
    n = np.logspace(5, 8, 12)
    loss = (2.0 + 50 * n**-0.25) * np.exp(rng.normal(0, 0.01, n.size))  # 1 % noise
    fit = scaling.fit_power_law(loss, n, n_boot=200, seed=1)
    low, high = fit.parameter_intervals(level=0.95)["alpha1"]
    assert low < 0.25 < high
    low, high = fit.interval(1e7)
    assert low < 2.0 + 50 * 1e7**-0.25 < high
    assert fit.interval(np.array([1e6, 1e7]))[0].shape == (2,)


def test_bad_inputs_are_rejected_with_clear_messages():
    with pytest.raises(ValueError, match="needs more than 3 points"):
        scaling.fit_power_law([3.0, 2.5, 2.2], [1, 2, 3])
    with pytest.raises(ValueError, match="one value per loss"):
        scaling.fit_power_law([3.0, 2.5, 2.2, 2.0, 1.9], [1, 2, 3])
    with pytest.raises(ValueError, match="finite and positive"):
        scaling.fit_power_law([3.0, 2.5, -2.2, 2.0, 1.9], [1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="at least one resource"):
        scaling.fit_power_law([3.0, 2.5])
    with pytest.raises(ValueError, match="unknown GPU 'V100'"):
        scaling.training_seconds(1e18, "V100", 0.4)
    with pytest.raises(ValueError, match=r"mfu .* \(0, 1\]"):
        scaling.training_seconds(1e18, "A100", 40)
    with pytest.raises(ValueError, match="compute must be a positive"):
        scaling.chinchilla_optimal(-1.0)
    with pytest.raises(ValueError, match="tokens must be a positive"):
        scaling.training_flops(1e6, math.nan)
    with pytest.raises(ValueError, match="takes 2 resource"):
        scaling.CHINCHILLA(1e9)
    with pytest.raises(ValueError, match="two terms"):
        scaling.law_optimum(scaling.PowerLaw(1.0, (1.0,), (0.5,)), 1e20)
    with pytest.raises(ValueError, match="positive exponents"):
        scaling.law_optimum(scaling.PowerLaw(1.0, (1.0, 1.0), (0.5, -0.1)), 1e20)
    with pytest.raises(ValueError, match="one A and one alpha"):
        scaling.PowerLaw(1.0, (1.0, 2.0), (0.5,))


def test_every_profile_sweeps_enough_points_to_fit_and_hold_one_out():
    for profile in PROFILES.values():
        sweep = profile.scaling_sweep
        assert all(model in PRESETS for model, _ in sweep)
        assert len(set(sweep)) >= 7  # 5 parameters of L(N, D), one point held out, one spare
        assert len({model for model, _ in sweep}) >= 3


def test_sweep_config_and_point():
    cfg = scaling.sweep_config("sweep-xs", 150)
    assert (cfg.run_name, cfg.max_steps, cfg.eval_interval) == ("sweep-xs-150", 150, 150)
    assert scaling.run_tokens(cfg) == 150 * 16 * 64
    history = [{"tokens": 0, "val_loss": 9.0}, {"tokens": 4096, "val_loss": 6.5}]
    result = TrainResult(GPT(TINY), None, history, Path("runs/x"))
    assert scaling.sweep_point(result) == (count_parameters(TINY), 4096, 6.5)
    history.append({"tokens": 8192, "val_loss": None})
    with pytest.raises(ValueError, match="no final evaluation"):
        scaling.sweep_point(result)


def test_nanogpt_h200_speed_from_the_recorded_steps(tmp_path):
    iters = [{"iter": i, "ms": 900.0 if i % 1000 == 0 else 16.384} for i in range(100, 4901, 100)]
    shape = {"n_layer": 6, "n_head": 6, "n_embd": 384, "max_iters": 4900, "eval_interval": 1000}
    run = {"shape": shape, "wall_s": 99.0, "evals": [], "iters": iters}
    (tmp_path / "curves.json").write_text(json.dumps({"gpt2_30m_4900it": run}), encoding="utf-8")

    speed = scaling.nanogpt_h200_speed("talk-30m", tmp_path)
    assert (speed.reference_run, speed.gpu, speed.steps, speed.wall_s) == (
        "gpt2_30m_4900it",
        "NVIDIA H200",
        4900,
        99.0,
    )
    assert speed.step_ms == 16.384  # the steps after an evaluation are left out
    assert speed.tokens_per_s == pytest.approx(1e6)  # 16,384 tokens in 16.384 ms
    flops = flops_per_token(PRESETS["30m"]) * 1e6
    assert speed.mfu == pytest.approx(flops / scaling.PEAK_FLOPS["H200"])
    assert speed.minutes == pytest.approx(64 * 256 * 4900 / 1e6 / 60)  # the talk's tokens
    assert speed.end_to_end_tokens_per_s == pytest.approx(4900 * 16384 / 99.0)
    with pytest.raises(ValueError, match="no nanoGPT H200 run of 'talk-757m'"):
        scaling.nanogpt_h200_speed("talk-757m", tmp_path)


def test_the_committed_nanogpt_runs_are_the_talks_shapes():
    for name in scaling.NANOGPT_H200_RUNS:
        speed = scaling.nanogpt_h200_speed(name)
        assert speed.tokens_per_s > 1e5 and 0 < speed.mfu < 1
        assert speed.minutes < scaling.TALK_RUNS[name].minutes  # an H200 beats the talk's A10G
