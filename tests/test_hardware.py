"""tinylm.hardware: what the machine has (device, native bf16), and what "auto" decides there.

Detection reads /proc/cpuinfo or PyTorch's probes, so the tests pretend other CPUs by patching
them, and the CUDA queries, in torch. The device policy: MPS's self-check against the CPU and
its CPU fallback. No Mac here: the fallback runs with a fake MPS (best_device and the comparison
patched in tinylm.hardware, where they are defined and where resolve_device looks them up), and
the comparison itself runs on the CPU, against a correct step and against a deliberately broken
one. Then precision, compile and peak FLOPs by device.
"""

import sys
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import replace

import pytest
import torch

from tinylm import cli, hardware
from tinylm.runs import RUNS, TrainConfig
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
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match=f"device '{name}' cannot train here.*device=auto"):
        hardware.resolve_device(name)
    monkeypatch.setenv("TINYLM_RUNS_DIR", str(tmp_path / "runs"))
    assert cli.main(["train", "--run", "char-ci", f"device={name}"]) == 1
    assert not (tmp_path / "runs").exists()  # no empty run folder left behind


@pytest.fixture
def cpu_flags(monkeypatch):
    """Pretend the CPU lists these /proc/cpuinfo flags (None: not Linux); the cache is reset."""
    monkeypatch.delenv(hardware.CPU_BF16_ENV, raising=False)

    def pretend(flags: set[str] | None) -> None:
        monkeypatch.setattr(hardware, "_cpu_flags", lambda: flags)
        hardware.detected_cpu_bf16.cache_clear()

    yield pretend
    hardware.detected_cpu_bf16.cache_clear()


def test_cpu_bf16_support_reads_the_cpu_flags(cpu_flags):
    for flags, support in [
        ({"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}, "AMX"),
        ({"avx512f", "avx512_bf16"}, "AVX-512 BF16"),
        ({"avx2", "fma"}, None),
        (set(), None),
    ]:
        cpu_flags(flags)
        assert hardware.cpu_bf16_support() == support


def test_cpu_flags_come_from_proc_cpuinfo_on_linux(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\n")
    assert hardware._cpu_flags(str(cpuinfo)) == {"fpu", "avx2", "amx_bf16"}
    monkeypatch.setattr(sys, "platform", "darwin")
    assert hardware._cpu_flags(str(cpuinfo)) is None


def test_cpu_bf16_support_asks_torch_off_linux(cpu_flags, monkeypatch):
    cpu_flags(None)
    probes = {"_is_amx_tile_supported": False, "_is_avx512_bf16_supported": False}
    for name, value in probes.items():
        monkeypatch.setattr(torch.cpu, name, lambda v=value: v, raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    assert hardware.cpu_bf16_support() is None  # Apple silicon: MPS is what counts there
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    hardware.detected_cpu_bf16.cache_clear()
    assert hardware.cpu_bf16_support() == "AVX-512 BF16"


def test_training_setup_says_precision_and_compile(cpu_flags, monkeypatch):
    cpu_flags({"avx512_bf16", "amx_bf16"})
    assert hardware.training_setup("cpu") == {
        "cpu bf16": "AMX",
        "precision": "bf16 autocast (CPU has AMX)",
        "compile": "runs of 1M+ tokens only (shorter ones would not earn back the compile time)",
    }
    cpu_flags({"avx2"})
    assert hardware.training_setup("cpu") == {
        "cpu bf16": "none",
        "precision": "fp32 (no native bf16 on this CPU)",
        "compile": "no (it would not speed training up here)",
    }
    monkeypatch.setattr(
        torch.cuda,
        "is_bf16_supported",
        lambda including_emulation=True: including_emulation,
    )  # a T4
    setup = hardware.training_setup("cuda")
    assert setup["precision"] == "fp16 autocast + gradient scaler (GPU without native bf16)"
    assert setup["compile"] == "yes, every run"
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: True
    )  # an A10G
    assert hardware.training_setup("cuda")["precision"] == "bf16 autocast (GPU has native bf16)"


def test_training_setup_says_no_compile_on_native_windows(cpu_flags, monkeypatch):
    cpu_flags({"amx_bf16"})
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(sys, "platform", "win32")
    no = "no (torch.compile's inductor backend does not run on native Windows)"
    assert hardware.training_setup("cpu")["compile"] == no
    assert hardware.training_setup("cuda")["compile"] == no


def test_the_switch_hides_the_cpus_bf16(cpu_flags, monkeypatch):
    cpu_flags({"avx512_bf16", "amx_bf16"})
    assert hardware.cpu_bf16_support() == "AMX"
    for off in ("0", "off", " No "):
        monkeypatch.setenv(hardware.CPU_BF16_ENV, off)
        assert hardware.cpu_bf16_support() is None
    monkeypatch.setenv(hardware.CPU_BF16_ENV, "1")
    assert hardware.cpu_bf16_support() == "AMX"


@pytest.mark.parametrize("value", ["maybe", "2", "avx2"])
def test_a_switch_value_that_means_nothing_is_an_error(cpu_flags, monkeypatch, value):
    cpu_flags({"avx512_bf16"})
    monkeypatch.setenv(hardware.CPU_BF16_ENV, value)
    with pytest.raises(ValueError, match=f"TINYLM_CPU_BF16='{value}' is not a setting: use 0"):
        hardware.cpu_bf16_support()


def test_peak_flops_by_device_name(monkeypatch):
    assert hardware.peak_flops("cpu") is None and hardware.mfu(100, 1e3, None) is None
    for name, peak in [
        ("NVIDIA A10G", 125e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("Tesla T4", 65e12),  # fp16: no bf16 on a T4 (more names: tests/test_small_gpus.py)
    ]:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device, n=name: n)
        assert hardware.peak_flops(torch.device("cuda")) == peak


def test_auto_precision_takes_native_bf16_else_fp16_on_gpus_else_fp32(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    resolve = hardware.resolve_precision
    for support, precision in [
        ("AMX", "bfloat16"),
        ("AVX-512 BF16", "bfloat16"),
        (None, "float32"),
    ]:
        monkeypatch.setattr(hardware, "cpu_bf16_support", lambda s=support: s)
        assert resolve(cpu, "auto") == precision
        assert hardware.use_bf16(cpu, "auto") == (precision == "bfloat16")
    assert resolve(torch.device("mps"), "auto") == "float32"
    # CUDA: a T4 or V100 only emulates bf16, so is_bf16_supported() says True there too
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation
    )  # a T4
    assert resolve(cuda, "auto") == "float16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve(cuda, "auto") == "bfloat16"  # an A10G
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)  # a torch without the
    for capability, precision in [((7, 5), "float16"), ((8, 6), "bfloat16")]:  # argument
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda c=capability: c)
        assert resolve(cuda, "auto") == precision
    for dtype in ("float32", "bfloat16", "float16"):  # asked for: taken as it is
        assert resolve(cpu, dtype) == resolve(cuda, dtype) == dtype


def test_fp16_brings_autocast_and_a_gradient_scaler(monkeypatch):
    cpu = torch.device("cpu")
    autocast = hardware.autocast_context(cpu, "float16")
    assert isinstance(autocast, torch.autocast) and autocast.fast_dtype == torch.float16
    assert isinstance(hardware.grad_scaler(cpu, "float16"), torch.amp.GradScaler)
    assert hardware.autocast_context(cpu, "bfloat16").fast_dtype == torch.bfloat16
    assert hardware.grad_scaler(cpu, "bfloat16") is None  # bf16 has fp32's range
    monkeypatch.setattr(hardware, "cpu_bf16_support", lambda: None)
    assert isinstance(hardware.autocast_context(cpu, "auto"), nullcontext)
    assert hardware.grad_scaler(cpu, "auto") is None


def test_compile_auto_on_cpu_only_for_long_bf16_runs(monkeypatch):
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda", 0), torch.device("mps")
    use_compile = hardware.use_compile
    monkeypatch.setattr(hardware, "cpu_bf16_support", lambda: "AMX")
    long, short = RUNS["char-cpu"], RUNS["char-ci"]  # 1,800 x 8 x 128 and 60 x 16 x 64 tokens
    assert use_compile(long, cpu) and not use_compile(short, cpu)
    assert not use_compile(replace(long, dtype="float32"), cpu)  # fp32: compiling gains nothing
    at_threshold = replace(short, batch_size=125, max_steps=125)  # 125 x 125 x 64 = 1M tokens
    assert hardware.CPU_COMPILE_MIN_TOKENS == 1_000_000 and use_compile(at_threshold, cpu)
    assert not use_compile(replace(at_threshold, max_steps=124), cpu)
    assert use_compile(replace(at_threshold, batch_size=25, grad_accum=5), cpu)  # also 1M
    assert not use_compile(at_threshold, cpu, block_size=32)  # the context the run trains at
    assert not use_compile(replace(at_threshold, block_size=32), cpu)
    assert use_compile(short, cuda) and not use_compile(long, mps)
    monkeypatch.setattr(hardware, "cpu_bf16_support", lambda: None)  # fp32 on this CPU
    assert not use_compile(long, cpu) and use_compile(replace(long, dtype="bfloat16"), cpu)
    assert use_compile(replace(short, compile=True), cpu)  # asked for: as asked
    assert not use_compile(replace(short, compile=False), cuda)


def test_compile_auto_is_off_on_native_windows(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.setattr(hardware, "cpu_bf16_support", lambda: "AMX")
    monkeypatch.setattr(sys, "platform", "win32")  # inductor does not run there
    long = RUNS["char-cpu"]
    assert not hardware.use_compile(long, cpu) and not hardware.use_compile(long, cuda)
    assert hardware.use_compile(replace(long, compile=True), cuda)  # asked for: as asked
