"""The device policy of tinylm.hardware: MPS's self-check against the CPU and its CPU fallback.

No Mac here: the fallback runs with a fake MPS (best_device and the comparison patched in
tinylm.hardware, where resolve_device looks them up), and the comparison itself runs on the
CPU, against a correct step and against a deliberately broken one.
"""

import warnings
from collections.abc import Iterator

import pytest
import torch

from tinylm import cli, hardware
from tinylm.runs import TrainConfig
from tinylm.train import train

MISMATCH = {"cpu": {"loss": 6.25, "grad norm": 0.55}, "device": {"loss": 31.5, "grad norm": 9.75}}


@pytest.fixture(autouse=True)
def fresh_verdict() -> Iterator[None]:
    """Each test starts without a cached MPS verdict and leaves none behind (a fake one)."""
    hardware.mps_agrees_with_cpu.cache_clear()
    yield
    hardware.mps_agrees_with_cpu.cache_clear()


@pytest.fixture
def fake_mps(monkeypatch: pytest.MonkeyPatch) -> list[torch.device]:
    """ "auto" finds MPS, and MPS disagrees with the CPU; the list collects the devices checked."""
    checked = []

    def disagree(device: torch.device) -> tuple[bool, dict]:
        checked.append(device)
        return False, MISMATCH

    monkeypatch.setattr(hardware, "best_device", lambda: "mps")
    monkeypatch.setattr(hardware, "device_agrees_with_cpu", disagree)
    monkeypatch.setattr(hardware, "check_available", lambda device: None)  # MPS, CUDA "exist"
    return checked


def gradients_scaled_by(factor: float) -> hardware.DeviceStep:
    """A backend's step whose loss is right and whose every gradient is `factor` times too big."""

    def step(model: torch.nn.Module, idx: torch.Tensor, targets: torch.Tensor) -> dict:
        for param in model.parameters():
            param.register_hook(lambda grad: grad * factor)
        return hardware.forward_backward(model, idx, targets)

    return step


def test_the_cpu_agrees_with_itself(one_thread):
    agrees, numbers = hardware.device_agrees_with_cpu(torch.device("cpu"))
    assert agrees and numbers["device"] == numbers["cpu"]
    loss, grad_norm = numbers["cpu"]["loss"], numbers["cpu"]["grad norm"]
    assert loss == pytest.approx(6.25, abs=0.05)  # ln 512 = 6.24: a fresh model guesses evenly
    assert 0 < grad_norm < 10


def test_the_check_leaves_the_callers_random_numbers_alone(one_thread):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    hardware.device_agrees_with_cpu(torch.device("cpu"))
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(("factor", "agrees"), [(1 + 1e-5, True), (1.01, False)])
def test_rounding_passes_and_a_broken_backward_does_not(one_thread, factor, agrees):
    verdict, numbers = hardware.device_agrees_with_cpu(
        torch.device("cpu"), device_step=gradients_scaled_by(factor)
    )
    assert verdict is agrees
    assert numbers["device"]["loss"] == numbers["cpu"]["loss"]  # only the gradients are off
    ratio = numbers["device"]["grad norm"] / numbers["cpu"]["grad norm"]
    assert ratio == pytest.approx(factor, rel=1e-6)


def test_auto_falls_back_to_the_cpu_when_mps_disagrees(fake_mps):
    with pytest.warns(hardware.DeviceMismatchWarning) as caught:
        assert hardware.resolve_device("auto") == torch.device("cpu")
    message = str(caught[0].message)
    for text in (torch.__version__, "31.5", "6.25", "9.75", "0.55", "0.001 relative"):
        assert text in message
    assert 'device="auto" trains and samples on the CPU' in message
    assert 'device="mps"' in message and "still uses MPS" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # checked and warned once per process
        assert hardware.resolve_device("auto") == torch.device("cpu")
        assert hardware.resolve_device("mps") == torch.device("mps")  # asked for: kept
    assert fake_mps == [torch.device("mps")]


def test_an_explicit_mps_is_kept_but_warned(fake_mps):
    with pytest.warns(hardware.DeviceMismatchWarning, match="still uses MPS"):
        assert hardware.resolve_device("mps") == torch.device("mps")


def test_an_mps_that_agrees_is_used_without_a_warning(monkeypatch):
    monkeypatch.setattr(hardware, "best_device", lambda: "mps")
    monkeypatch.setattr(hardware, "check_available", lambda device: None)
    monkeypatch.setattr(hardware, "device_agrees_with_cpu", lambda device: (True, MISMATCH))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert hardware.resolve_device("auto") == torch.device("mps")


def test_other_devices_are_not_checked(fake_mps):
    assert hardware.resolve_device("cpu") == torch.device("cpu")
    assert hardware.resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert fake_mps == []


def test_training_and_the_cli_fall_back_to_the_cpu(workspace, one_thread, fake_mps):
    cfg = TrainConfig(
        "mps-fallback",
        tokenizer="char",
        batch_size=2,
        max_steps=2,
        warmup_steps=1,
        eval_interval=2,
        eval_batches=1,
        block_size=16,
        dtype="float32",
    )
    with pytest.warns(hardware.DeviceMismatchWarning):
        result = train(cfg, progress=False)
    assert next(result.model.parameters()).device == torch.device("cpu")
    _, model, _ = cli.load_cli_model(None, str(result.out_dir))
    assert next(model.parameters()).device == torch.device("cpu")
    assert len(fake_mps) == 1


@pytest.mark.skipif(not torch.backends.mps.is_available(), reason="needs Apple's MPS")
def test_this_macs_mps_agrees_with_the_cpu():
    agrees, numbers = hardware.device_agrees_with_cpu(torch.device("mps"))
    assert agrees, hardware.mps_mismatch_message(numbers)


@pytest.mark.parametrize("name", ["cuda", "cuda:3", "meta", "mps"])
def test_a_device_this_machine_lacks_is_an_error_before_any_work(name, monkeypatch, tmp_path):
    monkeypatch.setattr(hardware.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware.torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(hardware.torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match=f"device '{name}' cannot train here.*device=auto"):
        hardware.resolve_device(name)
    monkeypatch.setenv("TINYLM_RUNS_DIR", str(tmp_path / "runs"))
    assert cli.main(["train", "--run", "char-ci", f"device={name}"]) == 1
    assert not (tmp_path / "runs").exists()  # no empty run folder left behind
