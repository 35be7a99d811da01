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
    a10g = ("NVIDIA A10G", 22 * 2**30)  # its memory keeps it on the gpu profile
    monkeypatch.setattr(profiles, "device_memory", lambda d: a10g if d == "cuda" else None)
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


@pytest.fixture
def cpu_flags(monkeypatch):
    """Pretend the CPU lists these /proc/cpuinfo flags (None: not Linux); the cache is reset."""
    monkeypatch.delenv(profiles.CPU_BF16_ENV, raising=False)

    def pretend(flags: set[str] | None) -> None:
        monkeypatch.setattr(profiles, "_cpu_flags", lambda: flags)
        profiles.detected_cpu_bf16.cache_clear()

    yield pretend
    profiles.detected_cpu_bf16.cache_clear()


def test_cpu_bf16_support_reads_the_cpu_flags(cpu_flags):
    for flags, support in [
        ({"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}, "AMX"),
        ({"avx512f", "avx512_bf16"}, "AVX-512 BF16"),
        ({"avx2", "fma"}, None),
        (set(), None),
    ]:
        cpu_flags(flags)
        assert profiles.cpu_bf16_support() == support


def test_cpu_flags_come_from_proc_cpuinfo_on_linux(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\n")
    assert profiles._cpu_flags(str(cpuinfo)) == {"fpu", "avx2", "amx_bf16"}
    monkeypatch.setattr(profiles.sys, "platform", "darwin")
    assert profiles._cpu_flags(str(cpuinfo)) is None


def test_cpu_bf16_support_asks_torch_off_linux(cpu_flags, monkeypatch):
    cpu_flags(None)
    probes = {"_is_amx_tile_supported": False, "_is_avx512_bf16_supported": False}
    for name, value in probes.items():
        monkeypatch.setattr(profiles.torch.cpu, name, lambda v=value: v, raising=False)
    monkeypatch.setattr(profiles.torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    assert profiles.cpu_bf16_support() is None  # Apple silicon: MPS is what counts there
    monkeypatch.setattr(profiles.torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    profiles.detected_cpu_bf16.cache_clear()
    assert profiles.cpu_bf16_support() == "AVX-512 BF16"


def test_environment_report_says_precision_and_compile(cpu_flags, monkeypatch):
    cpu_flags({"avx512_bf16", "amx_bf16"})
    assert profiles.training_setup("cpu") == {
        "cpu bf16": "AMX",
        "precision": "bf16 autocast (CPU has AMX)",
        "compile": "runs of 1M+ tokens only (shorter ones would not earn back the compile time)",
    }
    cpu_flags({"avx2"})
    assert profiles.training_setup("cpu") == {
        "cpu bf16": "none",
        "precision": "fp32 (no native bf16 on this CPU)",
        "compile": "no (it would not speed training up here)",
    }
    monkeypatch.setattr(
        profiles.torch.cuda,
        "is_bf16_supported",
        lambda including_emulation=True: including_emulation,
    )  # a T4
    setup = profiles.training_setup("cuda")
    assert setup["precision"] == "fp16 autocast + gradient scaler (GPU without native bf16)"
    assert setup["compile"] == "yes, every run"
    monkeypatch.setattr(
        profiles.torch.cuda, "is_bf16_supported", lambda including_emulation=True: True
    )  # an A10G
    assert profiles.training_setup("cuda")["precision"] == "bf16 autocast (GPU has native bf16)"
    assert {"cpu bf16", "precision", "compile"} <= set(profiles.describe_environment())


def test_environment_report_says_no_compile_on_native_windows(cpu_flags, monkeypatch):
    cpu_flags({"amx_bf16"})
    monkeypatch.setattr(
        profiles.torch.cuda, "is_bf16_supported", lambda including_emulation=True: True
    )
    monkeypatch.setattr(profiles.sys, "platform", "win32")
    no = "no (torch.compile's inductor backend does not run on native Windows)"
    assert profiles.training_setup("cpu")["compile"] == no
    assert profiles.training_setup("cuda")["compile"] == no


def test_the_switch_hides_the_cpus_bf16(cpu_flags, monkeypatch):
    cpu_flags({"avx512_bf16", "amx_bf16"})
    assert profiles.cpu_bf16_support() == "AMX"
    for off in ("0", "off", " No "):
        monkeypatch.setenv(profiles.CPU_BF16_ENV, off)
        assert profiles.cpu_bf16_support() is None
    monkeypatch.setenv(profiles.CPU_BF16_ENV, "1")
    assert profiles.cpu_bf16_support() == "AMX"


@pytest.mark.parametrize("value", ["maybe", "2", "avx2"])
def test_a_switch_value_that_means_nothing_is_an_error(cpu_flags, monkeypatch, value):
    cpu_flags({"avx512_bf16"})
    monkeypatch.setenv(profiles.CPU_BF16_ENV, value)
    with pytest.raises(ValueError, match=f"TINYLM_CPU_BF16='{value}' is not a setting: use 0"):
        profiles.cpu_bf16_support()


@pytest.mark.parametrize(
    ("device", "flags", "train_run"),
    [
        ("cpu", {"amx_bf16"}, "char-cpu"),  # native bf16: today's runs
        ("cpu", {"avx2"}, "char-cpu-fp32"),  # most laptops
        ("mps", set(), "char-cpu-fp32"),  # Apple silicon trains in fp32
        ("cuda", {"avx2"}, "char-cpu"),  # TINYLM_PROFILE=cpu on a GPU: the GPU is fast enough
    ],
)
def test_the_cpu_profile_is_sized_by_the_precision_it_trains_in(
    cpu_flags, monkeypatch, device, flags, train_run
):
    cpu_flags(flags)
    monkeypatch.setattr(profiles, "best_device", lambda: device)
    profile = profiles.get_profile("cpu")
    assert profile.name == "cpu" and profile.train_run == train_run
    fp32 = train_run.endswith("-fp32")
    assert all(run.endswith("-fp32") == fp32 for run in (profile.mistral_run, *profile.eval_runs))
    assert profiles.get_profile("ci") is profiles.PROFILES["ci"]  # only cpu has two sizes
