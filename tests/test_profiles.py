"""Profiles: selection by environment variable and a helpful error for unknown names."""

import pytest

from tinylm import profiles


def test_env_var_selects_profile(monkeypatch):
    monkeypatch.setenv(profiles.ENV_VAR, "ci")
    assert profiles.get_profile().name == "ci"
    monkeypatch.setenv(profiles.ENV_VAR, " CPU ")
    assert profiles.get_profile().name == "cpu"


def test_default_follows_hardware(monkeypatch):
    monkeypatch.delenv(profiles.ENV_VAR, raising=False)
    monkeypatch.setattr(profiles.torch.cuda, "is_available", lambda: True)
    assert profiles.get_profile().name == "gpu"
    monkeypatch.setattr(profiles.torch.cuda, "is_available", lambda: False)
    assert profiles.get_profile().name == "cpu"


def test_unknown_profile_lists_valid_ones(monkeypatch):
    monkeypatch.setenv(profiles.ENV_VAR, "laptop")
    with pytest.raises(ValueError, match="'laptop'.*ci, cpu, gpu"):
        profiles.get_profile()


def test_profiles_grow_from_ci_to_gpu():
    ci, cpu, gpu = (profiles.PROFILES[n] for n in ("ci", "cpu", "gpu"))
    assert ci.bpe_sample_chars <= cpu.bpe_sample_chars <= gpu.bpe_sample_chars
    assert max(ci.density_vocab_sizes) <= max(cpu.density_vocab_sizes)
