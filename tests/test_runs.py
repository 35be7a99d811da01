"""Runs: TrainConfig's checks, the talk's runs and their twins, names that stay inside runs/."""

import math
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from tinylm import cli
from tinylm.download import PROJECT_ROOT
from tinylm.model import PRESETS, count_parameters, flops_per_token, preset
from tinylm.profiles import CPU_FP32, PROFILES
from tinylm.runs import (
    CHAR_VOCAB,
    RUNS,
    RUNS_DIR_ENV,
    TrainConfig,
    config_changes,
    runs_dir,
    tokenizer_twin,
)
from tinylm.scaling import TALK_RUNS, run_tokens
from tinylm.tokenizers import DEFAULT_BPE_VOCAB_SIZE, GPT2_VOCAB_SIZE


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
        *zip(CPU_FP32.overfit_runs, bf16.overfit_runs, strict=True),
    ]:
        assert fp32_run == f"{bf16_run}-fp32" and fp32_run in RUNS


@pytest.mark.parametrize(
    "run", ["char-cpu", "bpe-cpu", "gpt2-cpu", "overfit-cpu", "overfit-dropout-cpu"]
)
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
    main = training_flops("char-cpu-fp32", CHAR_VOCAB)
    assert training_flops("mistral-cpu-fp32", CHAR_VOCAB) == pytest.approx(main, rel=0.01)


@pytest.mark.parametrize("profile", [*PROFILES.values(), CPU_FP32], ids=lambda p: p.label)
def test_each_profiles_tokenizer_runs_cost_the_same_training_flops(profile):
    vocab = {"char": CHAR_VOCAB, "bpe": DEFAULT_BPE_VOCAB_SIZE, "gpt2": GPT2_VOCAB_SIZE}
    twins = [run for run in profile.eval_runs if run.startswith(("char-", "bpe-", "gpt2-"))]
    assert [RUNS[run].tokenizer for run in twins] == ["char", "bpe", "gpt2"]
    assert twins[0] == profile.train_run  # the profile's main run is the character entry
    flops = [training_flops(run, vocab[RUNS[run].tokenizer]) for run in twins]
    for run, run_flops in zip(twins, flops, strict=True):  # equal up to rounding to whole steps
        assert run_flops == pytest.approx(flops[0], rel=0.5 / RUNS[run].max_steps)
    reference, gpt2 = RUNS[twins[0]], RUNS[twins[2]]
    assert gpt2.max_steps < reference.max_steps / 2  # GPT-2's 50k-row output layer: dear tokens
    assert asdict(tokenizer_twin(reference, "char", "same")) == asdict(
        replace(reference, run_name="same")
    )


def test_the_talks_mymistral_run_keeps_what_the_talk_states():
    cfg, talk = RUNS["mymistral-0.4b"], RUNS["talk-30m"]
    assert cfg.model == "mymistral-0.4b" and cfg.run_name == cfg.model
    # in RUNS for a GPU, but trained by no notebook: ~45 minutes on an A10G
    assert all("mymistral-0.4b" not in profile.eval_runs for profile in PROFILES.values())
    config = preset(cfg.model, vocab_size=GPT2_VOCAB_SIZE)
    assert (config.n_layer, config.n_embd, config.hidden_size) == (8, 2048, 4096)
    assert config.norm == "rmsnorm" and config.position == "rope" and config.mlp == "swiglu"
    assert count_parameters(preset(cfg.model)) == pytest.approx(401e6, rel=0.01)  # "0.4B"
    # the talk's nanoGPT recipe: GPT-2 tokens, 64 x 256 tokens a step, AdamW, lr, bf16, SDPA
    same = ("tokenizer", "lr", "min_lr", "betas", "weight_decay", "warmup_steps", "dtype")
    assert all(getattr(cfg, key) == getattr(talk, key) for key in same)
    assert cfg.attention == "sdpa" and config.block_size == 256
    assert cfg.batch_size * cfg.grad_accum == talk.batch_size == 64
    assert cfg.dropout == 0.0  # the talk's MistralForCausalLM has no dropout layer
    # as many tokens as the talk's other large run, its 757M nanoGPT
    assert run_tokens(cfg) == pytest.approx(TALK_RUNS["talk-757m"].tokens, rel=1e-3)


@pytest.mark.parametrize(
    "name",
    [
        *["..", ".", "", "a/b", "a\\b", "../x", "a\nb", "a:b", "a?", "x.", "x "],
        *["CON", "nul", "Aux.txt", "com1", "LPT9.log"],  # Windows' device names
        *["x" * 256, "诗" * 86],  # over 255 bytes
        *[123, True, (1, 2)],
    ],
)
def test_a_run_name_is_one_plain_folder_name(name):
    with pytest.raises(ValueError, match="TrainConfig.run_name must be one plain folder name"):
        TrainConfig(name)


@pytest.mark.parametrize(
    "name",
    [
        "char-cpu",
        "talk-30m",
        "my run 2",
        "v1.2_b16",
        "唐诗",
        "console",
        "com10",
        "nullx",
        "诗" * 85,
    ],
)
def test_ordinary_run_names_pass(name):
    assert TrainConfig(name).run_name == name


@pytest.mark.parametrize("override", ["run_name=..", "run_name=.", "run_name=123", "run_name=a/b"])
def test_the_cli_touches_nothing_outside_the_runs_folder(workspace, capsys, override):
    for parent in (workspace, workspace / "runs"):  # what run_name=.. and run_name=. would name
        for name in ("model", "checkpoint"):
            (parent / name).mkdir(parents=True)
            (parent / name / "keep.txt").write_text("a user's file")
        (parent / "log.jsonl").write_text("a user's log")
    before = sorted(p.relative_to(workspace) for p in workspace.rglob("*"))
    assert cli.main(["train", "--run", "char-ci", "--steps", "1", override]) == 1
    assert "TrainConfig.run_name must be one plain folder name" in capsys.readouterr().err
    assert sorted(p.relative_to(workspace) for p in workspace.rglob("*")) == before


@pytest.mark.parametrize("seed", [-1, 2**63, 2**70, True, 1.5, "1"])
def test_a_seed_is_an_integer_torch_can_take(seed):
    with pytest.raises(ValueError, match=r"TrainConfig.seed must be an integer from 0 to 2\*\*63"):
        TrainConfig("x", seed=seed)


def test_a_huge_seed_override_is_one_line_not_an_overflow(workspace, capsys):
    assert cli.main(["train", "--run", "char-ci", "--steps", "1", f"seed={2**64}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TrainConfig.seed must be an integer" in err
    assert not (workspace / "runs" / "char-ci").exists()


def test_a_link_in_the_run_folder_stops_the_run_before_it_writes(workspace, capsys):
    elsewhere = workspace / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("a user's file")
    run = workspace / "runs" / "char-ci"
    run.mkdir(parents=True)
    (run / "checkpoint").symlink_to(elsewhere, target_is_directory=True)
    before = sorted(p.relative_to(workspace) for p in workspace.rglob("*"))
    assert cli.main(["train", "--run", "char-ci", "--steps", "1", "--no-resume"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a link" in err and "another run_name" in err
    assert sorted(p.relative_to(workspace) for p in workspace.rglob("*")) == before


def test_a_relative_runs_folder_is_taken_from_the_project_not_the_current_folder(
    monkeypatch, tmp_path
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(RUNS_DIR_ENV, "my-runs")
    assert runs_dir() == PROJECT_ROOT / "my-runs"
    monkeypatch.setenv(RUNS_DIR_ENV, "~/runs")
    assert runs_dir() == Path.home() / "runs"


@pytest.mark.parametrize("value", [0, -5, 1.5, True, "100"])
def test_train_tokens_is_none_or_a_positive_integer(value):
    with pytest.raises(ValueError, match="train_tokens"):
        TrainConfig("x", train_tokens=value)


def test_a_run_saved_before_a_field_existed_counts_as_its_default():
    cfg = TrainConfig("x")
    saved = {k: v for k, v in asdict(cfg).items() if k != "train_tokens"}
    assert config_changes(saved, cfg) == []
    assert config_changes(saved, replace(cfg, train_tokens=100)) == ["train_tokens None → 100"]


@pytest.mark.parametrize("profile", [*PROFILES.values(), CPU_FP32], ids=lambda p: p.label)
def test_the_overfitting_runs_differ_only_in_dropout_and_pass_many_epochs(profile):
    without, dropout = (RUNS[name] for name in profile.overfit_runs)
    assert (without.dropout, dropout.dropout) == (0.0, 0.2)
    assert asdict(replace(dropout, run_name=without.run_name, dropout=0.0)) == asdict(without)
    tokens = without.max_steps * without.batch_size * PRESETS[without.model].block_size
    assert tokens / without.train_tokens >= 10  # epochs over the subset: enough to turn


@pytest.mark.parametrize("profile", [*PROFILES.values(), CPU_FP32], ids=lambda p: p.label)
def test_the_rope_twin_changes_only_the_positions_at_equal_compute(profile):
    main, rope = RUNS[profile.train_run], RUNS[profile.rope_run]
    assert PRESETS[rope.model] == replace(PRESETS[main.model], position="rope")
    assert asdict(replace(rope, run_name=main.run_name, model=main.model)) == asdict(main)


def test_config_errors_name_the_field():
    tiny = TrainConfig("tiny", model="char-ci", max_steps=20, warmup_steps=4, lr=3e-3, min_lr=3e-4)
    with pytest.raises(
        ValueError,
        match=r"TrainConfig.dtype .*'auto', 'float32', 'bfloat16', "
        "'float16'",
    ):
        replace(tiny, dtype="fp8")
    with pytest.raises(ValueError, match="TrainConfig.model"):
        replace(tiny, model="7b")
    with pytest.raises(ValueError, match="TrainConfig.min_lr"):
        replace(tiny, min_lr=1.0)
    with pytest.raises(ValueError, match="TrainConfig.warmup_steps"):
        replace(tiny, warmup_steps=21)
    with pytest.raises(ValueError, match="TrainConfig.device"):
        replace(tiny, device="tpu9")
    with pytest.raises(ValueError, match="TrainConfig.lr must be a finite number, got 'abc'"):
        replace(tiny, lr="abc")
    # Issue 14, case 8: lr=1e400 (infinite) was accepted; the NaN stop caught it only later.
    for bad in (1e400, math.nan):
        with pytest.raises(ValueError, match="TrainConfig.lr must be a finite number"):
            replace(tiny, lr=bad)
    with pytest.raises(ValueError, match="TrainConfig.dropout must be a finite number"):
        replace(tiny, dropout=-math.inf)
    with pytest.raises(
        ValueError,
        match=r"TrainConfig.parallel must be one of \['ddp', 'fsdp'\], "
        "got 'zero'",
    ):
        replace(tiny, parallel="zero")


def test_runs_match_the_talk():
    for name in ("talk-30m", "talk-124m"):
        cfg = RUNS[name]
        tokens = cfg.batch_size * 256 * cfg.max_steps
        assert cfg.tokenizer == "gpt2" and cfg.block_size is None and 79e6 < tokens < 81e6
        assert (cfg.lr, cfg.min_lr, cfg.betas, cfg.dropout, cfg.weight_decay) == (
            1e-3,
            1e-4,
            (0.9, 0.99),
            0.2,
            0.1,
        )
    assert all(cfg.run_name == name for name, cfg in RUNS.items())


def test_mistral_twins_train_with_the_same_flops():
    for size in ("ci", "cpu", "gpu"):
        reference, twin = RUNS[f"char-{size}"], RUNS[f"mistral-{size}"]
        assert (
            replace(
                twin,
                run_name=reference.run_name,
                model=reference.model,
                max_steps=reference.max_steps,
            )
            == reference
        )  # nothing else differs
        flops = [
            flops_per_token(preset(cfg.model, vocab_size=CHAR_VOCAB)) * cfg.max_steps
            for cfg in (reference, twin)
        ]
        assert abs(flops[1] / flops[0] - 1) < 0.01
        assert preset(twin.model).position == "rope" and preset(twin.model).mlp == "swiglu"
