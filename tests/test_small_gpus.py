"""Smaller GPUs: the micro-batch fit, the profile by GPU memory, datasheet peaks by device name.

No GPU here: device memory is simulated, by passing bytes to the pure functions or by
monkeypatching `device_memory` where it is looked up (tinylm.hardware for the training loop,
tinylm.profiles for the default profile).
"""

from dataclasses import replace

import pytest
import torch

from tinylm import cli, data, hardware, profiles, run_files
from tinylm.hardware import GIB, GPUTooSmall, MicroBatchSplitWarning, fit_micro_batch
from tinylm.model import preset
from tinylm.runs import RUNS, TrainConfig
from tinylm.train import build_model_config, train

GPT2_VOCAB = 50257  # tiktoken's gpt2, padded to 50,304 by the preset
TALK_124M = RUNS["talk-124m"]
TALK_124M_CONFIG = preset(TALK_124M.model, vocab_size=GPT2_VOCAB)

# A tiny character run on the synthetic corpus, in fp32 and without dropout, so that the split
# run's arithmetic differs from the whole one's only in the order of its sums.
SPLIT = TrainConfig(
    "whole",
    model="char-ci",
    tokenizer="char",
    batch_size=4,
    max_steps=6,
    warmup_steps=2,
    lr=3e-3,
    min_lr=3e-4,
    dropout=0.0,
    eval_interval=3,
    eval_batches=2,
    log_interval=1,
    block_size=32,
    dtype="float32",
)


@pytest.mark.parametrize(
    ("gib", "micro_batch", "grad_accum"),
    [(80, 64, 1), (24, 64, 1), (16, 32, 2), (15, 32, 2), (7.6, 16, 4), (5.8, 8, 8)],
)
def test_talk_124m_splits_its_batch_to_fit(gib, micro_batch, grad_accum):
    fit = fit_micro_batch(TALK_124M_CONFIG, 64, 1, int(gib * GIB))
    assert fit[:2] == (micro_batch, grad_accum)
    assert fit[2] == hardware.training_bytes(TALK_124M_CONFIG, micro_batch)
    assert fit[2] <= gib * GIB * (1 - hardware.CUDA_MEMORY_HEADROOM)


def test_the_estimates_the_fit_works_from():
    talk_30m = preset("30m", vocab_size=GPT2_VOCAB)
    char_gpu = preset("30m", vocab_size=8768)  # the character vocabulary, padded
    assert hardware.training_bytes(TALK_124M_CONFIG, 64) / GIB == pytest.approx(17.37, abs=0.01)
    assert hardware.training_bytes(talk_30m, 64) / GIB == pytest.approx(12.39, abs=0.01)
    assert hardware.training_bytes(char_gpu, 64) / GIB == pytest.approx(3.28, abs=0.01)
    assert fit_micro_batch(talk_30m, 64, 1, 15 * GIB)[:2] == (64, 1)  # a T4 trains it whole


def test_the_split_keeps_the_tokens_per_step_and_divides_the_batch():
    assert fit_micro_batch(TALK_124M_CONFIG, 64, 2, 15 * GIB)[:2] == (32, 4)
    for batch_size in (48, 60, 64):
        for gib in (4, 6, 10, 15):
            micro_batch, grad_accum, _ = fit_micro_batch(TALK_124M_CONFIG, batch_size, 3, gib * GIB)
            assert batch_size % micro_batch == 0 and micro_batch * grad_accum == batch_size * 3


def test_fsdp_shards_the_weights_and_optimizer_state():
    mistral_1b = preset("mymistral-1b")
    with pytest.raises(GPUTooSmall, match="one sequence of 256 tokens needs ~14.7 GiB"):
        fit_micro_batch(mistral_1b, 8, 1, 15 * GIB)
    assert fit_micro_batch(mistral_1b, 8, 1, 15 * GIB, shards=4)[0] >= 1


def test_a_gpu_too_small_for_one_sequence_is_an_error():
    with pytest.raises(GPUTooSmall, match=r"needs ~2\.1 GiB to train, more than the 1\.8 GiB"):
        fit_micro_batch(TALK_124M_CONFIG, 64, 1, 2 * GIB)


@pytest.fixture
def gpu_of(monkeypatch):
    """Pretend tinylm.hardware sees a CUDA GPU with this name and memory in GiB."""

    def pretend(name: str, gib: float) -> None:
        monkeypatch.setattr(hardware, "device_memory", lambda device: (name, int(gib * GIB)))

    return pretend


def test_the_layout_warns_what_it_changed(gpu_of):
    cuda = torch.device("cuda", 0)
    gpu_of("Tesla T4", 15)
    with pytest.warns(MicroBatchSplitWarning) as caught:
        assert hardware.micro_batch_layout(TALK_124M, TALK_124M_CONFIG, cuda) == (32, 2)
    assert str(caught[0].message) == (
        "talk-124m: micro-batch 64 needs ~17.4 GiB, more than fits the 15.0 GiB of Tesla T4; "
        "training 2 × 32 with gradient accumulation (same 16,384 tokens per step)"
    )
    gpu_of("NVIDIA A100-SXM4-80GB", 80)
    assert hardware.micro_batch_layout(TALK_124M, TALK_124M_CONFIG, cuda) == (64, 1)


def test_the_layout_changes_nothing_off_cuda(recwarn, monkeypatch):
    monkeypatch.setattr(hardware, "host_memory", lambda: 1024 * GIB)
    cpu = torch.device("cpu")
    assert hardware.micro_batch_layout(TALK_124M, TALK_124M_CONFIG, cpu) == (64, 1)
    assert not recwarn.list


def test_too_small_a_gpu_names_the_run_the_memory_and_what_to_do(gpu_of):
    gpu_of("NVIDIA GeForce GT 1030", 2)
    with pytest.raises(GPUTooSmall) as error:
        hardware.micro_batch_layout(TALK_124M, TALK_124M_CONFIG, torch.device("cuda", 0))
    message = str(error.value)
    assert message.startswith("talk-124m cannot train on NVIDIA GeForce GT 1030: one sequence")
    for advice in ("~2.1 GiB", "smaller model preset (model 124m now)", "block_size (256 now)"):
        assert advice in message
    assert "bigger GPU" in message and "parallel=fsdp" in message


def test_a_gpu_that_cannot_train_the_run_stops_it_before_the_model_is_built(
    workspace, gpu_of, monkeypatch
):
    def no_model(*args):
        raise AssertionError("the model was built")

    monkeypatch.setattr("tinylm.train._starting_model", no_model)
    gpu_of("Tiny GPU", 0.001)
    with pytest.raises(GPUTooSmall, match="too-big cannot train on Tiny GPU"):
        train(replace(SPLIT, run_name="too-big"), progress=False)


def test_the_cli_says_a_gpu_is_too_small_in_one_line(workspace, gpu_of, capsys):
    gpu_of("Tiny GPU", 0.001)
    assert cli.main(["train", "--run", "char-ci", "--no-resume"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: char-ci cannot train on Tiny GPU") and "Traceback" not in error


@pytest.mark.parametrize(
    ("gib", "profile"),
    [(4, "cpu"), (6, "cpu"), (7.6, "gpu"), (15, "gpu"), (24, "gpu"), (80, "gpu")],
)
def test_the_default_profile_follows_gpu_memory(gib, profile, monkeypatch):
    monkeypatch.delenv(profiles.ENV_VAR, raising=False)
    monkeypatch.setattr(profiles.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(profiles, "device_memory", lambda device: ("GPU", int(gib * GIB)))
    assert profiles.default_profile_name() == profile
    monkeypatch.setattr(profiles, "training_setup", lambda device: {})  # would ask the GPU
    report = profiles.describe_environment()
    assert report["device"] == f"cuda (GPU, {gib:.1f} GiB)"
    assert report["profile"].startswith(f"{profile}: ")
    assert f"a GPU with {gib:.1f} GiB, " in report["profile"]
    assert ("under the 7 GiB" in report["profile"]) == (profile == "cpu")


def test_the_profile_report_says_when_the_variable_chose(monkeypatch):
    monkeypatch.setenv(profiles.ENV_VAR, "ci")
    monkeypatch.setattr(profiles, "training_setup", lambda device: {})
    assert profiles.describe_environment()["profile"].endswith(f"(set by {profiles.ENV_VAR})")


PEAKS_BY_DEVICE_NAME = {  # as torch.cuda.get_device_name() reports them
    "Tesla T4": 65e12,  # fp16: the T4 has no bf16
    "NVIDIA L4": 121e12,
    "NVIDIA L40S": 362e12,
    "NVIDIA L40": None,  # not an L4
    "NVIDIA A100-SXM4-40GB": 312e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100 80GB PCIe": 312e12,
    "NVIDIA GeForce RTX 3090": 71e12,
    "NVIDIA GeForce RTX 4090": 165.2e12,
    "NVIDIA A10G": 125e12,
    "NVIDIA A10": 125e12,
    "NVIDIA H100 80GB HBM3": 989e12,
    "NVIDIA H100 PCIe": 756e12,
    "NVIDIA T400 4GB": None,  # not a T4
    "NVIDIA GeForce RTX 4080": None,
}


@pytest.mark.parametrize(("name", "peak"), PEAKS_BY_DEVICE_NAME.items())
def test_peak_flops_by_device_name(name, peak, monkeypatch):
    assert hardware.peak_flops_of(name) == peak
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: name)
    assert hardware.peak_flops(torch.device("cuda", 0)) == peak


@pytest.fixture
def gpu_for_two(workspace, one_thread, gpu_of) -> None:
    """A pretend GPU where SPLIT trains 2 sequences at a time but not its batch of 4."""
    config = build_model_config(SPLIT, data.load_packed("char").tokenizer.vocab_size)
    between = (hardware.training_bytes(config, 2) + hardware.training_bytes(config, 4)) / 2
    gpu_of("Small GPU", between / (1 - hardware.CUDA_MEMORY_HEADROOM) / GIB)


def test_the_loop_trains_a_split_batch_as_the_whole_one(gpu_for_two, monkeypatch):
    with monkeypatch.context() as on_cpu:
        on_cpu.setattr(hardware, "device_memory", lambda device: None)
        whole = train(SPLIT, progress=False)
    split_cfg = replace(SPLIT, run_name="split")
    with pytest.warns(MicroBatchSplitWarning, match=r"split: micro-batch 4 .* training 2 × 2 "):
        split = train(split_cfg, progress=False)
    assert {(r["micro_batch"], r["grad_accum"]) for r in whole.history} == {(4, 1)}
    assert {(r["micro_batch"], r["grad_accum"]) for r in split.history} == {(2, 2)}
    assert [r["tokens"] for r in split.history] == [r["tokens"] for r in whole.history]
    assert split.history[-1]["tokens"] == 6 * 4 * 32
    for key in ("train_loss", "val_loss", "eval_train_loss"):  # the same windows, split in two
        pairs = [
            (ours[key], theirs[key])
            for ours, theirs in zip(split.history, whole.history, strict=True)
            if theirs[key] is not None
        ]
        assert len(pairs) >= 3 and all(a == pytest.approx(b, rel=1e-5) for a, b in pairs), pairs
    saved = run_files.load_trainer_state(split_cfg.out_dir / "checkpoint")["train_config"]
    assert (saved["batch_size"], saved["grad_accum"]) == (4, 1)  # the recipe, not the layout


def test_a_run_split_on_a_small_gpu_resumes_whole_elsewhere(gpu_for_two, monkeypatch):
    cfg = replace(SPLIT, run_name="moved")
    with pytest.warns(MicroBatchSplitWarning):
        train(cfg, progress=False, max_steps=3)
    monkeypatch.setattr(hardware, "device_memory", lambda device: None)  # now on the CPU
    resumed = train(cfg, progress=False)  # the same TrainConfig: it resumes
    layouts = [(r["step"], r["micro_batch"], r["grad_accum"]) for r in resumed.history]
    assert layouts == [(s, 2, 2) for s in range(4)] + [(s, 4, 1) for s in range(4, 7)]
    assert [r["tokens"] for r in resumed.history] == [s * 4 * 32 for s in range(7)]


def test_the_divisors_of_a_huge_batch_come_at_once():
    assert hardware.divisors(12) == [12, 6, 4, 3, 2, 1]
    assert hardware.divisors(1) == [1]
    assert len(hardware.divisors(10**9)) == 100  # 2^9 · 5^9: (9 + 1)², not 10⁹ trial divisions


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ({"batch_size": 10**9}, "training 1,000,000,000 × 32 tokens at a time"),
        ({"block_size": 10**6}, "training 4 × 1,000,000 tokens at a time"),
        ({"eval_batches": 10**9}, "1,000,000,000 fixed evaluation batches"),
    ],
)
def test_a_run_that_cannot_fit_the_machines_ram_is_refused(override, says, monkeypatch):
    monkeypatch.setattr(hardware, "host_memory", lambda: 8 * GIB)
    cfg = replace(SPLIT, **override)
    config = preset(cfg.model, vocab_size=100, block_size=cfg.block_size)
    with pytest.raises(
        hardware.NotEnoughMemory, match="more than the 8.0 GiB of this machine's RAM"
    ) as error:
        hardware.micro_batch_layout(cfg, config, torch.device("cpu"))
    assert says in str(error.value) and "Lower batch_size" in str(error.value)


def test_a_run_is_not_refused_where_the_machine_does_not_say_its_memory(monkeypatch):
    monkeypatch.setattr(hardware, "host_memory", lambda: None)
    cfg = replace(SPLIT, batch_size=10**6)
    config = preset(cfg.model, vocab_size=100, block_size=cfg.block_size)
    assert hardware.micro_batch_layout(cfg, config, torch.device("cpu")) == (10**6, 1)


def test_the_fixed_evaluation_batches_count_on_a_gpu_too(gpu_of):
    gpu_of("NVIDIA A100-SXM4-80GB", 80)
    cfg = replace(SPLIT, eval_batches=10**9)
    config = preset(cfg.model, vocab_size=100, block_size=cfg.block_size)
    with pytest.raises(hardware.NotEnoughMemory, match="GiB of NVIDIA A100-SXM4-80GB"):
        hardware.micro_batch_layout(cfg, config, torch.device("cuda", 0))


def test_the_cli_refuses_a_typo_sized_batch_in_one_line_and_leaves_no_folder(workspace, capsys):
    (workspace / "runs").mkdir()
    before = sorted(workspace.rglob("*"))
    assert cli.main(["train", "--run", "char-ci", "--steps", "1", "batch_size=1000000000"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "char-ci needs about" in error
    assert sorted(workspace.rglob("*")) == before
