"""Profiles: selection by environment variable or hardware, a helpful error for unknown names.

The hardware is read in tinylm.hardware, so the tests patch it there (or PyTorch itself).
"""

from types import SimpleNamespace

import pytest
import torch

from tinylm import hardware, profiles


def test_env_var_selects_profile(monkeypatch):
    monkeypatch.setenv(profiles.ENV_VAR, "ci")
    assert profiles.get_profile().name == "ci"
    monkeypatch.setenv(profiles.ENV_VAR, " CPU ")
    assert profiles.get_profile().name == "cpu"


def test_default_follows_hardware(monkeypatch):
    monkeypatch.delenv(profiles.ENV_VAR, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    a10g = SimpleNamespace(name="NVIDIA A10G", total_memory=22 * 2**30)  # keeps the gpu profile
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: a10g)
    assert profiles.get_profile().name == "gpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert profiles.get_profile().name == "cpu"


def test_unknown_profile_lists_valid_ones(monkeypatch):
    monkeypatch.setenv(profiles.ENV_VAR, "laptop")
    with pytest.raises(ValueError, match="'laptop'.*ci, cpu, gpu"):
        profiles.get_profile()


def test_profiles_grow_from_ci_to_gpu():
    ci, cpu, gpu = (profiles.PROFILES[n] for n in ("ci", "cpu", "gpu"))
    assert ci.bpe_sample_chars <= cpu.bpe_sample_chars <= gpu.bpe_sample_chars
    assert max(ci.density_vocab_sizes) <= max(cpu.density_vocab_sizes)


@pytest.mark.parametrize(
    ("device", "cpu_bf16", "train_run"),
    [
        ("cpu", "AMX", "char-cpu"),  # native bf16: today's runs
        ("cpu", None, "char-cpu-fp32"),  # most laptops
        ("mps", None, "char-cpu-fp32"),  # Apple silicon trains in fp32
        ("cuda", None, "char-cpu"),  # TINYLM_PROFILE=cpu on a GPU: the GPU is fast enough
    ],
)
def test_the_cpu_profile_is_sized_by_the_precision_it_trains_in(
    monkeypatch, device, cpu_bf16, train_run
):
    monkeypatch.setattr(hardware, "best_device", lambda: device)
    monkeypatch.setattr(hardware, "cpu_bf16_support", lambda: cpu_bf16)
    profile = profiles.get_profile("cpu")
    assert profile.name == "cpu" and profile.train_run == train_run
    fp32 = train_run.endswith("-fp32")
    assert all(run.endswith("-fp32") == fp32 for run in (profile.mistral_run, *profile.eval_runs))
    assert profiles.get_profile("ci") is profiles.PROFILES["ci"]  # only cpu has two sizes


def test_the_environment_report_holds_the_device_its_training_setup_and_the_profile(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)  # so: the CPU
    monkeypatch.setattr(hardware, "cpu_bf16_support", lambda: "AMX")
    monkeypatch.setenv(profiles.ENV_VAR, "ci")
    report = profiles.describe_environment()
    assert report["device"] == "cpu" and report["cpu bf16"] == "AMX"
    assert report["precision"] == "bf16 autocast (CPU has AMX)"  # hardware.training_setup's
    assert report["profile"].startswith("ci: ")
    assert report["profile"].endswith(f"(set by {profiles.ENV_VAR})")
