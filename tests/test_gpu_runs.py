"""Every gpu-profile run, for a few steps on CPU, as it would run on CUDA; and its memory.

No GPU is available to this project's CI, so a configuration or plumbing bug in a gpu run would
otherwise first show in a learner's workshop. Each run trains here with its exact settings
except the device, a batch of 2 and one evaluation batch, but with what CUDA turns on by
itself: torch.compile (inductor for one run, the "aot_eager" backend for the others), the
resident batch sampler (the corpus on the device) and bf16 autocast
where the CPU has it (dtype "auto" decides, as on the GPU). It evaluates and writes a
checkpoint at its last step, then a second call resumes from that checkpoint. A model too large
to train on a CI machine's CPU (MyMistral-0.4B) trains here at a fraction of its width, every
other field of its preset kept. The last test checks that each run's training memory, at its
real size and batch size, fits the talk's 24 GB A10G.
"""

import math
from dataclasses import replace

import pytest
import torch
from synthetic import synthetic_corpus

from tinylm import data, download, hardware, run_files, runs
from tinylm import train as train_mod
from tinylm.model import PRESETS, GPTConfig, count_parameters, training_memory_bytes
from tinylm.pretrained import profile_runs
from tinylm.profiles import get_profile
from tinylm.runs import RUNS, TrainConfig
from tinylm.scaling import sweep_config
from tinylm.tokenizers import DEFAULT_BPE_VOCAB_SIZE
from tinylm.train import build_model_config, train

GPU = get_profile("gpu")
# The talk's MyMistral run is in RUNS for a GPU (python -m tinylm train --run mymistral-0.4b),
# but no notebook trains it: about 45 minutes on an A10G.
GPU_ONLY_RUNS = ("mymistral-0.4b",)
GPU_RUNS: dict[str, TrainConfig] = {
    **{cfg.run_name: cfg for cfg in profile_runs("gpu")},  # what `make warm` trains on a GPU
    **{name: RUNS[name] for name in GPU_ONLY_RUNS},
}
# 200 fake poems: enough that even the validation split holds more than a 256-token context in
# every tokenizer (char 627 tokens, bpe 429, gpt2 1,185).
SYNTHETIC_POEMS = 200
# Inductor generates C++ on CPU but Triton on CUDA, so compiling every run with it here would
# cost minutes of C++ compiling and test little of what a GPU runs. Every run is traced and
# differentiated by torch.compile (backend "aot_eager": graph breaks, guards and autograd show
# up as on CUDA); this one also goes through inductor, end to end.
INDUCTOR_RUN = "talk-30m"
# Presets above this many parameters train here at 1/CPU_NARROWING of their width (same depth,
# heads, key/value heads, norms, positions, MLP kind and ratio, tied or not): MyMistral-0.4B,
# 542M parameters with GPT-2's vocabulary, would need ~9 GB for weights, gradients and AdamW
# state in fp32, and minutes per step on 2 cores. talk-124m (124M) trains at full size.
CPU_MAX_PARAMETERS = 200_000_000
CPU_NARROWING = 16
A10G_MEMORY_BYTES = 24 * 2**30  # the talk's GPU (AWS g5): 24 GiB
# Left for the CUDA context, cuDNN/cuBLAS workspaces and the caching allocator's fragmentation.
A10G_USABLE_FRACTION = 0.9


def cpu_sized(config: GPTConfig) -> GPTConfig:
    """The preset, or above CPU_MAX_PARAMETERS the same model CPU_NARROWING times narrower."""
    if count_parameters(config, non_embedding=False) <= CPU_MAX_PARAMETERS:
        return config
    return replace(
        config,
        n_embd=config.n_embd // CPU_NARROWING,
        intermediate_size=config.hidden_size // CPU_NARROWING,
    )


def on_cpu(cfg: TrainConfig) -> TrainConfig:
    """The run on CPU as CUDA would run it: compiled, the corpus resident; 2 rows, 1 eval batch.

    A run on part of the training split keeps part of the synthetic one (2,000 tokens).
    """
    return replace(
        cfg,
        device="cpu",
        batch_size=2,
        eval_batches=1,
        compile=True,
        resident_data=True,
        train_tokens=None if cfg.train_tokens is None else min(cfg.train_tokens, 2_000),
    )


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> str:
    """A data folder with the synthetic poems packed in every tokenizer the runs use."""
    folder = tmp_path_factory.mktemp("data")
    corpus = synthetic_corpus(SYNTHETIC_POEMS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(download.DATA_DIR_ENV, str(folder))
        for tokenizer in sorted({cfg.tokenizer for cfg in GPU_RUNS.values()}):
            data.prepare(tokenizer, corpus=corpus)
    return str(folder)


@pytest.fixture
def gpu_data(packed, tmp_path, monkeypatch) -> None:
    """The packed synthetic data, a tmp runs folder, and Dynamo's caches and counters reset."""
    monkeypatch.setenv(download.DATA_DIR_ENV, packed)
    monkeypatch.delenv(hardware.COMPILE_BACKEND_ENV, raising=False)
    monkeypatch.setenv(runs.RUNS_DIR_ENV, str(tmp_path / "runs"))
    # Each test compiles its own model: without a reset, Dynamo's per-function recompile limit
    # would be reached after a few runs and the rest would silently run eagerly.
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()


def test_every_gpu_profile_run_is_covered():
    talk = {"talk-30m", "talk-124m", "mymistral-0.4b"}
    twins = {"char-gpu", "mistral-gpu", "char-gpu-rope", "bpe-gpu", "gpt2-gpu"}
    assert talk | twins | set(GPU.overfit_runs) <= set(GPU_RUNS)
    sweep = {sweep_config(model, steps).run_name for model, steps in GPU.scaling_sweep}
    assert len(sweep) == len(GPU.scaling_sweep) and sweep <= set(GPU_RUNS)


def test_only_mymistral_is_narrowed_on_cpu():
    narrowed = {
        name
        for name, cfg in GPU_RUNS.items()
        if cpu_sized(PRESETS[cfg.model]) is not PRESETS[cfg.model]
    }
    assert narrowed == {"mymistral-0.4b"}
    small, real = cpu_sized(PRESETS["mymistral-0.4b"]), PRESETS["mymistral-0.4b"]
    assert (small.n_embd, small.hidden_size, small.head_size) == (128, 256, 16)
    changed = {f for f in GPTConfig.__dataclass_fields__ if getattr(small, f) != getattr(real, f)}
    assert changed == {"n_embd", "intermediate_size"}


def test_resident_data_is_on_cuda_unless_forced(tmp_path, monkeypatch):
    cfg = GPU_RUNS["talk-30m"]
    assert cfg.resident_data == "auto"
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert hardware.use_resident_data(cfg, cuda) and not hardware.use_resident_data(cfg, cpu)
    assert hardware.use_resident_data(replace(cfg, resident_data=True), cpu)
    assert not hardware.use_resident_data(replace(cfg, resident_data=False), cuda)
    with pytest.raises(ValueError, match="TrainConfig.resident_data must be one of"):
        replace(cfg, resident_data="gpu")
    # Where the batches are cut does not change them: a finished run stays finished.
    monkeypatch.setenv(runs.RUNS_DIR_ENV, str(tmp_path))
    saved = train_mod.asdict(replace(cfg, resident_data=True))
    (cfg.out_dir / "model").mkdir(parents=True)
    data.write_json(saved, cfg.out_dir / "model" / run_files.TRAIN_CONFIG_FILE)
    assert run_files.is_finished(cfg) and not run_files.is_finished(replace(cfg, lr=2e-3))
    del saved["resident_data"]  # as written before the field existed
    data.write_json(saved, cfg.out_dir / "model" / run_files.TRAIN_CONFIG_FILE)
    assert run_files.is_finished(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(GPU_RUNS))
def test_gpu_run_trains_evaluates_and_resumes_on_cpu(name, gpu_data, monkeypatch):
    cfg = on_cpu(GPU_RUNS[name])
    monkeypatch.setitem(PRESETS, cfg.model, cpu_sized(PRESETS[cfg.model]))
    if name != INDUCTOR_RUN:  # Dynamo and AOTAutograd as on CUDA; only the code generator differs
        monkeypatch.setenv(hardware.COMPILE_BACKEND_ENV, "aot_eager")
    samplers = []
    real_sampler = train_mod.BatchSampler

    def recording_sampler(*args, **kwargs) -> data.BatchSampler:
        samplers.append(real_sampler(*args, **kwargs))
        return samplers[-1]

    monkeypatch.setattr(train_mod, "BatchSampler", recording_sampler)
    first = train(cfg, progress=False, max_steps=2)
    counters = torch._dynamo.utils.counters
    assert counters["stats"]["unique_graphs"] >= 1  # compiled, not run eagerly
    assert not counters["graph_break"], dict(counters["graph_break"])  # each pass one graph
    assert samplers[0].tokens is not None and samplers[0].tokens.device.type == "cpu"
    evals = [r["step"] for r in first.history if r["val_loss"] is not None]
    assert evals == [0, 2]  # at initialisation, and at the step this call stopped
    state = run_files.load_trainer_state(cfg.out_dir / "checkpoint")
    assert state["step"] == 2 and state["train_config"] == train_mod.asdict(cfg)
    assert not (cfg.out_dir / "model").exists()  # the schedule goes on to cfg.max_steps

    second = train(cfg, progress=False, max_steps=3)
    assert second.history[:-1] == first.history  # resumed: the log up to step 2 is kept
    last = second.history[-1]
    per_step = 2 * cfg.grad_accum * first.model.config.block_size  # 2 rows per micro-batch
    assert last["step"] == 3 and last["tokens"] == 3 * per_step
    assert last["lr"] == pytest.approx(train_mod.lr_at(2, **cfg.schedule))
    for key in ("train_loss", "val_loss", "eval_train_loss", "grad_norm"):
        assert math.isfinite(last[key]), key
    assert run_files.load_trainer_state(cfg.out_dir / "checkpoint")["step"] == 3


GPT2_VOCAB_SIZE = 50_257  # tiktoken's gpt2, known without a download (test_tokenizers checks it)


@pytest.mark.parametrize("name", list(GPU_RUNS))
def test_gpu_run_fits_an_a10g_at_its_batch_size(name):
    """bf16 autocast and flash attention (SDPA on CUDA), as the run trains on the A10G."""
    cfg = GPU_RUNS[name]
    vocab_size = {"char": runs.CHAR_VOCAB, "bpe": DEFAULT_BPE_VOCAB_SIZE, "gpt2": GPT2_VOCAB_SIZE}[
        cfg.tokenizer
    ]  # the real corpus's
    config = build_model_config(cfg, vocab_size)
    memory = training_memory_bytes(config, cfg.batch_size, flash=cfg.attention == "sdpa")
    total = sum(memory.values())
    assert total < A10G_USABLE_FRACTION * A10G_MEMORY_BYTES, (
        f"{name}: about {total / 2**30:.1f} GiB to train at batch {cfg.batch_size} "
        f"({', '.join(f'{k} {v / 2**30:.1f}' for k, v in memory.items())})"
    )
