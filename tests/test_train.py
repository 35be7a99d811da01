"""The training loop on a tiny synthetic corpus: schedule, steps, logs, exact resume, NaN, DDP."""

import json
import math
import os
import shutil
import socket
from contextlib import ExitStack, nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from synthetic import folder_state

from tinylm import data, download, run_files
from tinylm import train as train_mod
from tinylm.model import GPT, preset
from tinylm.runs import TrainConfig
from tinylm.train import TrainingDiverged, lr_at, train, training_split

# dtype float32, not "auto": the same numbers on every CPU, with native bf16 (AMX) or without.
TINY = TrainConfig(
    "tiny",
    model="char-ci",
    tokenizer="char",
    batch_size=4,
    max_steps=20,
    warmup_steps=4,
    lr=3e-3,
    min_lr=3e-4,
    dropout=0.1,
    eval_interval=5,
    eval_batches=2,
    log_interval=1,
    block_size=32,
    dtype="float32",
)


@pytest.fixture
def tiny(workspace, one_thread) -> TrainConfig:
    """TINY, on the synthetic poems packed in a tmp data folder, runs in a tmp runs folder."""
    return TINY


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def test_lr_warms_up_then_decays_to_min_lr():
    cfg = replace(TINY, max_steps=100, warmup_steps=10, lr=1e-3, min_lr=1e-4)
    lrs = [lr_at(step, **cfg.schedule) for step in range(101)]
    assert lrs[0] == pytest.approx(1e-3 / 11) and lrs[9] == pytest.approx(1e-3 * 10 / 11)
    assert lrs[10] == pytest.approx(1e-3)  # the peak, right after warmup
    assert lrs[55] == pytest.approx(5.5e-4)  # half way through the cosine: the mean of the two
    assert lrs[10:] == sorted(lrs[10:], reverse=True)
    assert lrs[100] == pytest.approx(1e-4) and lr_at(500, **cfg.schedule) == 1e-4


def test_timed_steps_counts_the_tokens_it_trains_on():
    torch.manual_seed(0)
    cfg = replace(TINY, batch_size=2, grad_accum=3)
    model = GPT(preset("char-ci", vocab_size=64, block_size=8))
    sampler = data.BatchSampler(np.arange(1000) % 64, 2, 8, "cpu")
    before = model.transformer.h[0].mlp.c_fc.weight.clone()
    optimizer = train_mod.build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    timing = train_mod.timed_steps(
        model,
        optimizer,
        sampler,
        nullcontext(),
        steps=2,
        warmup=1,
        grad_accum=cfg.grad_accum,
    )
    assert set(timing) == {"tokens_per_s", "ms_per_step", "warmup_s", "loss"}
    tokens = 2 * 3 * 2 * 8  # steps x micro-batches x rows x positions
    assert timing["tokens_per_s"] == pytest.approx(tokens / (2 * timing["ms_per_step"] / 1e3))
    assert not torch.equal(before, model.transformer.h[0].mlp.c_fc.weight)  # it trained


def test_a_scaled_step_reports_the_true_norm_and_skips_overflows():
    """Scaling by a power of 2 is exact in fp32: with a scaler the step is the same, bit for bit.

    A scale so large that the gradients overflow makes the scaler skip the step (norm 0, the
    weights unchanged) and halve its scale.
    """
    cfg = replace(TINY, batch_size=2, grad_clip=0.5)
    runs = []
    for scaler in (None, torch.amp.GradScaler("cpu")):
        torch.manual_seed(0)
        model = GPT(preset("char-ci", vocab_size=64, block_size=8))
        sampler = data.BatchSampler(np.arange(1000) % 64, 2, 8, "cpu", seed=0)
        optimizer = train_mod.build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
        norms = [
            train_mod.train_step(
                model,
                optimizer,
                sampler,
                nullcontext(),
                grad_clip=cfg.grad_clip,
                scaler=scaler,
            )[1]
            for _ in range(2)
        ]
        runs.append((norms, params(model)))
    assert torch.equal(torch.stack(runs[0][0]), torch.stack(runs[1][0]))
    assert all(torch.equal(value, runs[1][1][key]) for key, value in runs[0][1].items())
    overflowing = torch.amp.GradScaler("cpu", init_scale=2.0**127)
    before = params(model)
    _, norm = train_mod.train_step(
        model,
        optimizer,
        sampler,
        nullcontext(),
        grad_clip=cfg.grad_clip,
        scaler=overflowing,
    )
    assert norm.item() == 0 and overflowing.get_scale() == 2.0**126
    assert all(torch.equal(value, params(model)[key]) for key, value in before.items())


def test_train_writes_log_checkpoint_and_model(tiny):
    result = train(tiny, progress=False)
    out = tiny.out_dir
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert records == result.history and [r["step"] for r in records] == list(range(21))
    evals = [r for r in records if r["val_loss"] is not None]
    assert [r["step"] for r in evals] == [0, 5, 10, 15, 20]
    assert evals[0]["val_loss"] == pytest.approx(math.log(64), abs=0.3)  # ln V at init
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5
    assert records[-1]["tokens"] == 20 * 4 * 32 and records[-1]["mfu"] is None
    assert {p.name for p in (out / "checkpoint").iterdir()} == {
        "config.json",
        "model.safetensors",
        "trainer_state.pt",
    }
    assert {p.name for p in (out / "model").iterdir()} == {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "train_config.json",
    }
    assert not result.model.training


def test_train_tokens_trains_on_the_start_of_the_split_only(tiny):
    packed = data.load_packed("char")
    small = replace(tiny, run_name="small", train_tokens=200, dropout=0.0, max_steps=30)
    assert (training_split(small, packed) == packed.train[:200]).all()
    evals = [r for r in train(small, progress=False).history if r["val_loss"] is not None]
    full = [
        r
        for r in train(replace(small, run_name="full", train_tokens=None), progress=False).history
        if r["val_loss"] is not None
    ]
    # the same steps over 200 tokens: its training loss (on those tokens) falls further
    assert evals[-1]["eval_train_loss"] < full[-1]["eval_train_loss"]
    too_many = replace(tiny, run_name="too-many", train_tokens=len(packed.train) + 1)
    with pytest.raises(ValueError, match="train_tokens .* lower it"):
        train(too_many, progress=False)
    assert not too_many.out_dir.exists()  # refused before it wrote anything


def test_finished_run_is_loaded_not_retrained(tiny):
    first = train(tiny, progress=False)
    written = folder_state(tiny.out_dir)
    again = train(tiny, progress=False)
    assert folder_state(tiny.out_dir) == written  # nothing trained, nothing written
    assert again.history == first.history
    for key, value in params(first.model).items():
        assert torch.equal(value, params(again.model)[key])
    assert run_files.is_finished(replace(tiny, parallel="fsdp"))  # the same run, spread otherwise
    path = tiny.out_dir / "model" / run_files.TRAIN_CONFIG_FILE
    saved = json.loads(path.read_text())
    del saved["parallel"]  # as written before the field existed
    path.write_text(json.dumps(saved))
    assert run_files.is_finished(tiny) and not run_files.is_finished(replace(tiny, lr=1e-3))


def test_resume_gives_the_same_losses_as_a_straight_run(tiny):
    straight = train(replace(tiny, run_name="straight"), progress=False)
    half = train(tiny, progress=False, max_steps=10)
    assert half.history[-1]["step"] == 10 and not (tiny.out_dir / "model").exists()
    resumed = train(tiny, progress=False)
    losses = [(r["step"], r["train_loss"]) for r in straight.history]
    assert [(r["step"], r["train_loss"]) for r in resumed.history] == losses
    for key, value in params(straight.model).items():
        assert torch.equal(value, params(resumed.model)[key]), key


def test_fp16_trains_with_a_gradient_scaler_and_resumes_exactly(tiny, monkeypatch):
    """fp16 autocast + GradScaler on CPU; the scaler's state is checkpointed and restored.

    The scale doubles every 3 steps here (2,000 by default), so a resumed run that restarted
    the scaler would scale, and round the fp16 gradients, differently from the straight run.
    """
    # Patched on train, not on tinylm.hardware where it is defined: train.py imports the name
    # (`from tinylm.hardware import grad_scaler`), so only its own copy reaches the loop.
    monkeypatch.setattr(
        train_mod,
        "grad_scaler",
        lambda device, dtype: torch.amp.GradScaler(device.type, growth_interval=3),
    )
    fp16 = replace(tiny, dtype="float16", max_steps=10)
    straight = train(replace(fp16, run_name="straight"), progress=False)
    train(fp16, progress=False, max_steps=5)
    scaler = run_files.load_trainer_state(fp16.out_dir / "checkpoint")["scaler"]
    assert scaler["scale"] == 2.0**17 and scaler["_growth_tracker"] == 2  # grew once, at step 3
    resumed = train(fp16, progress=False)
    drop = ("elapsed_s", "tokens_per_s")  # clocks differ
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed.history] == [
        {k: v for k, v in r.items() if k not in drop} for r in straight.history
    ]
    for key, value in params(straight.model).items():
        assert torch.equal(value, params(resumed.model)[key]), key
    evals = [r["val_loss"] for r in straight.history if r["val_loss"] is not None]
    assert all(math.isfinite(v) for v in evals) and evals[-1] < evals[0] - 0.3
    assert all(p.dtype == torch.float32 for p in straight.model.parameters())  # fp32 weights


def test_resume_refuses_another_model_shape(tiny):
    train(tiny, progress=False, max_steps=5)
    with pytest.raises(ValueError, match="block_size 32 → 16.*resume=False"):
        train(replace(tiny, block_size=16), progress=False)
    assert train(replace(tiny, block_size=16), resume=False, progress=False, max_steps=5)


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tiny, monkeypatch):
    monkeypatch.setattr(train_mod, "lr_at", lambda step, **_: math.nan if step >= 7 else 1e-3)
    with pytest.raises(TrainingDiverged, match=r"nan at step 9 .*lower lr.*check the data"):
        train(tiny, progress=False)
    out = tiny.out_dir
    assert run_files.load_trainer_state(out / "checkpoint")["step"] == 5
    model = GPT.from_pretrained(out / "checkpoint")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_config_other_than_the_saved_one_is_refused(tiny):
    """Issue 14, case 3: a checkpoint past the asked-for max_steps was returned as that run."""
    finished = train(replace(tiny, max_steps=10), progress=False)
    for changed in (
        replace(tiny, max_steps=8),
        replace(tiny, max_steps=12),
        replace(tiny, max_steps=10, lr=1e-3),
    ):
        with pytest.raises(
            ValueError,
            match=r"trained with another config \((max_steps 10 → "
            r"\d+|lr 0.003 → 0.001)\).*new run_name.*--no-resume",
        ):
            train(changed, progress=False)
    again = train(replace(tiny, max_steps=10, parallel="fsdp"), progress=False)  # layout only
    assert again.history == finished.history
    for name in ("checkpoint", "checkpoint.old"):  # no checkpoint: the final model's config
        shutil.rmtree(tiny.out_dir / name)
    with pytest.raises(
        ValueError,
        match=r"tiny/model: it was trained with another config "
        r"\(max_steps",
    ):
        train(replace(tiny, max_steps=12), progress=False)
    assert (tiny.out_dir / "model").is_dir()  # nothing was deleted
    assert (
        train(replace(tiny, max_steps=12), resume=False, progress=False).history[-1]["step"] == 12
    )


def test_stopping_past_max_steps_names_the_numbers(tiny):
    with pytest.raises(
        ValueError,
        match="cannot stop at step 30: run tiny has max_steps 20, so stop at a step from 1 to 20",
    ):
        train(tiny, progress=False, max_steps=30)


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut a file short, as a full disk or a killed copy would."""
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


@pytest.mark.parametrize("name", [run_files.STATE_FILE, "model.safetensors", "config.json"])
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tiny, name):
    """Issue 14, case 5: a truncated checkpoint file ended in a traceback from torch/safetensors."""
    cfg = replace(tiny, dropout=0.0)
    straight = train(replace(cfg, run_name="straight"), progress=False)
    train(cfg, progress=False, max_steps=10)  # checkpoint/ at step 10, checkpoint.old/ at 5
    truncate(cfg.out_dir / "checkpoint" / name)
    with pytest.warns(
        UserWarning,
        match=rf"checkpoint/{name} is damaged.*checkpoint.old "
        r"\(step 5\)",
    ):
        resumed = train(cfg, progress=False)
    assert [r["step"] for r in resumed.history] == list(range(21))  # steps 6-10 trained again
    assert [r["train_loss"] for r in resumed.history] == [
        r["train_loss"] for r in straight.history
    ]  # and exactly as before


def test_no_readable_checkpoint_says_to_start_over(tiny):
    train(tiny, progress=False, max_steps=10)
    for name in ("checkpoint", "checkpoint.old"):
        truncate(tiny.out_dir / name / run_files.STATE_FILE, keep=0.0)
    with pytest.raises(
        ValueError,
        match=r"checkpoint/trainer_state.pt is damaged.*"
        r"checkpoint.old/trainer_state.pt is damaged.*--no-resume",
    ):
        train(tiny, progress=False)
    assert train(tiny, resume=False, progress=False, max_steps=5).history[-1]["step"] == 5


def test_a_damaged_final_model_is_written_again(tiny):
    first = train(tiny, progress=False)
    truncate(tiny.out_dir / "model" / "model.safetensors")
    with pytest.warns(UserWarning, match="model.safetensors is damaged.*write it again"):
        again = train(tiny, progress=False)  # from the checkpoint at the last step
    assert again.history == first.history
    for key, value in params(first.model).items():
        assert torch.equal(value, params(again.model)[key]), key


def test_damaged_packed_data_stops_training_with_the_fix(tiny):
    """Issue 14, case 2: a truncated train.bin was trained on without a word."""
    path = data.packed_dir("char") / "train.bin"
    truncate(path)
    with pytest.raises(
        download.DataError,
        match="train.bin has .* bytes where meta.json records .*"
        "python -m tinylm data --tokenizer char",
    ):
        train(tiny, progress=False)


def torchrun_worker(
    rank: int,
    world_size: int,
    ports: list[int],
    runs: list[tuple[TrainConfig, int | None]],
    out: Path,
) -> None:
    """One torchrun-like process: the environment torchrun would set, then train each
    (config, max_steps) in turn, saving the returned model's tensors as <run_name>-rank<r>.pt.

    Each call of train joins and leaves its own process group; each gets a fresh port, as a
    group set up again on the same port can meet the last group's leftovers and hang.
    """
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1"
    )
    torch.set_num_threads(1)
    for (cfg, max_steps), port in zip(runs, ports, strict=True):
        os.environ["MASTER_PORT"] = str(port)
        result = train(cfg, progress=False, max_steps=max_steps)
        torch.save(params(result.model), out / f"{cfg.run_name}-rank{rank}.pt")


def spawn_ranks(
    runs: list[tuple[TrainConfig, int | None]], out: Path, world_size: int = 2
) -> dict[str, list[dict[str, torch.Tensor]]]:
    """Run torchrun_worker in world_size processes (gloo on CPU); each run's tensors by rank."""
    with ExitStack() as stack:  # distinct free ports: all held open until all are chosen
        sockets = [stack.enter_context(socket.socket()) for _ in runs]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        ports = [s.getsockname()[1] for s in sockets]
    mp.spawn(torchrun_worker, args=(world_size, ports, runs, out), nprocs=world_size)
    return {
        cfg.run_name: [torch.load(out / f"{cfg.run_name}-rank{r}.pt") for r in range(world_size)]
        for cfg, _ in runs
    }


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tiny, tmp_path):
    cfg = replace(tiny, max_steps=6, eval_interval=3, log_interval=3)
    ranks = spawn_ranks([(cfg, None)], tmp_path)[cfg.run_name]
    for key, value in ranks[0].items():
        assert torch.equal(value, ranks[1][key]), key
    log = (cfg.out_dir / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [0, 3, 6]  # rank 0 only
    assert json.loads(log[-1])["tokens"] == 6 * 2 * 4 * 32  # both processes' tokens
    assert len(run_files.load_trainer_state(cfg.out_dir / "checkpoint")["rng"]) == 2
    assert (cfg.out_dir / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_fsdp_on_two_cpu_processes_trains_like_ddp(tiny, tmp_path):
    """FSDP and DDP runs of one config: same files, same model shapes, the same losses.

    The reference is DDP, not one process: each rank draws its own batches (sampler seeded
    seed + rank), so no single-process run sees the same global batch. DDP and FSDP give each
    rank the same batches and dropout masks and start from rank 0's weights, so the averaged
    gradients match bit for bit (the mean of 2 numbers rounds the same either way). What
    differs is the order of fp32 sums: under FSDP the global gradient norm is summed from
    per-shard squares, which moves the clipping factor in its last bit (~1e-7 relative). Adam
    hardly depends on that factor (it divides by the gradient's scale): after 6 steps the
    losses and norms were seen to agree within 1e-7; we allow 1e-5 (relative).
    grad_accum=2 and clipping (norms > grad_clip) are exercised on the way.
    """
    ddp = replace(tiny, run_name="ddp", max_steps=6, eval_interval=3, grad_accum=2, grad_clip=0.5)
    fsdp = replace(ddp, run_name="fsdp", parallel="fsdp")
    bf16 = replace(fsdp, run_name="fsdp-bf16", dtype="bfloat16", max_steps=2, warmup_steps=1)
    ranks = spawn_ranks([(ddp, None), (fsdp, None), (bf16, None)], tmp_path)
    for key, value in ranks["fsdp"][0].items():  # every rank returns the whole model
        assert torch.equal(value, ranks["fsdp"][1][key]), key
    for folder in ("checkpoint", "model"):  # rank 0 wrote the same files, with whole tensors
        assert {p.name for p in (fsdp.out_dir / folder).iterdir()} == {
            p.name for p in (ddp.out_dir / folder).iterdir()
        }
    model = GPT.from_pretrained(fsdp.out_dir / "model")
    reference = params(GPT.from_pretrained(ddp.out_dir / "model"))
    for key, value in params(model).items():
        assert value.shape == reference[key].shape, key
        torch.testing.assert_close(value, reference[key], rtol=1e-5, atol=1e-6)
    states = [
        run_files.load_trainer_state(run.out_dir / "checkpoint")["optimizer"] for run in (ddp, fsdp)
    ]
    assert states[0]["param_groups"] == states[1]["param_groups"]
    torch.testing.assert_close(states[1]["state"], states[0]["state"], rtol=1e-5, atol=1e-6)
    logs = [run_files.read_log(run.out_dir) for run in (ddp, fsdp)]
    assert [r["step"] for r in logs[1]] == list(range(7))
    for key in ("train_loss", "val_loss", "eval_train_loss", "grad_norm"):
        values = [[r[key] for r in log if r[key] is not None] for log in logs]
        assert len(values[1]) >= 3 and values[1] == pytest.approx(values[0], rel=1e-5), key
    assert max(r["grad_norm"] or 0 for r in logs[1]) > fsdp.grad_clip  # clipping was on
    assert logs[1][-1]["val_loss"] < logs[1][0]["val_loss"] - 0.3
    # bf16 (MixedPrecisionPolicy + autocast): bf16 compute, fp32 weights saved, near fp32's loss
    bf16_log = run_files.read_log(bf16.out_dir)
    assert bf16_log[1]["train_loss"] == pytest.approx(logs[1][1]["train_loss"], rel=1e-2)
    assert all(math.isfinite(r["val_loss"]) for r in bf16_log if r["val_loss"] is not None)
    bf16_model = GPT.from_pretrained(bf16.out_dir / "model")
    assert all(p.dtype == torch.float32 for p in bf16_model.parameters())


@pytest.mark.slow
def test_fsdp_resume_gives_the_same_run(tiny, tmp_path):
    """3 steps, then a resume to 6, equal 6 straight steps under FSDP, bit for bit.

    The checkpoint holds whole tensors (gathered from the shards); resuming cuts them into
    the same shards again, and restores each rank's random states, so nothing is rounded.
    The checkpoint's files are those DDP writes, so a DDP run can also go on under FSDP:
    equal to the straight run up to the last bits of the gradient norm (see the test above).
    """
    straight = replace(
        tiny, run_name="straight", parallel="fsdp", max_steps=6, eval_interval=3, grad_accum=2
    )
    halves = replace(straight, run_name="halves")
    switched = replace(straight, run_name="switched")
    ranks = spawn_ranks(
        [
            (straight, None),
            (halves, 3),
            (halves, None),
            (replace(switched, parallel="ddp"), 3),
            (switched, None),
        ],
        tmp_path,
    )
    for key, value in ranks["straight"][0].items():
        assert torch.equal(value, ranks["halves"][0][key]), key
        assert torch.equal(value, ranks["halves"][1][key]), key
        torch.testing.assert_close(ranks["switched"][1][key], value, rtol=1e-5, atol=1e-6)
    logs = [run_files.read_log(run.out_dir) for run in (straight, halves, switched)]
    drop = ("elapsed_s", "tokens_per_s")  # clocks differ
    assert [{k: v for k, v in r.items() if k not in drop} for r in logs[1]] == [
        {k: v for k, v in r.items() if k not in drop} for r in logs[0]
    ]
    for key in ("train_loss", "val_loss"):
        values = [[r[key] for r in log if r[key] is not None] for log in (logs[0], logs[2])]
        assert len(values[1]) >= 3 and values[1] == pytest.approx(values[0], rel=1e-5), key
