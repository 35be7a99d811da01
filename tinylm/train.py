"""The training loop: AdamW, warmup + cosine, clipping, accumulation, eval, checkpoints, DDP.

Read `_train` top to bottom, beside nanoGPT's train.py: `_setup` loads the packed tokens, builds
the model and the optimizer (or restores both from a checkpoint), then the loop repeats one
optimizer step at a time: set the learning rate (`lr_at`), run `grad_accum` micro-batches forward
and backward, clip, step (`train_step`). On a GPU too small for the batch, it is cut into more,
smaller micro-batches (`tinylm.hardware.micro_batch_layout`): the same tokens per step, the same
schedule. Every `log_interval` steps a record goes to ``runs/<run_name>/log.jsonl``; every
`eval_interval` steps the model is also scored on fixed batches (`estimate_loss`) and a checkpoint
is written. `train` wraps it: it loads a finished run instead of training it again, joins
torchrun's process group, and holds the run folder's lock while it trains.

What the loop leans on lives beside it: `tinylm.runs` (TrainConfig, RUNS), `tinylm.hardware`
(device, precision, compile, MFU), `tinylm.evaluate` (the fixed eval batches and their loss),
`tinylm.distributed` (DDP and FSDP under ``torchrun``) and `tinylm.run_files` (checkpoints, the
final model and the log, and whether a folder resumes).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import std

from tinylm import data
from tinylm.data import BatchSampler, PackedData
from tinylm.distributed import (
    Distributed,
    barrier,
    env_int,
    gather_full_model,
    gather_optimizer_state,
    gather_rng_states,
    leave,
    setup_distributed,
    shard_model,
    shard_optimizer_state,
    sync_gradients_if,
)
from tinylm.evaluate import estimate_loss, fixed_batches, window_start
from tinylm.hardware import (
    COMPILE_BACKEND_ENV,
    autocast_context,
    grad_scaler,
    mfu,
    micro_batch_layout,
    peak_flops,
    resolve_device,
    use_bf16,
    use_compile,
    use_resident_data,
)
from tinylm.lock import FolderLocked, folder_lock
from tinylm.model import GPT, GPTConfig, flops_per_token, preset
from tinylm.progress import progress_bar
from tinylm.run_files import (
    append_log,
    check_resumable,
    check_run_folder,
    find_checkpoint,
    is_finished,
    load_checkpoint,
    load_model,
    read_log,
    remove_unused_folder,
    rng_state,
    save_checkpoint,
    save_model,
    saved_config,
    set_rng_state,
    start_over,
    write_log,
)
from tinylm.runs import TrainConfig
from tinylm.timing import synchronize
from tinylm.tokenizers import Tokenizer


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """Learning rate of optimizer step `step`: linear warmup to lr, cosine decay to min_lr.

    A run passes its TrainConfig's four numbers: ``lr_at(step, **cfg.schedule)``.
    """
    if step < warmup_steps:
        return lr * (step + 1) / (warmup_steps + 1)
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)  # 0 → 1
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (lr - min_lr)


def build_model_config(cfg: TrainConfig, vocab_size: int) -> GPTConfig:
    """The preset's shape with the tokenizer's vocabulary (padded to 64), dropout and context."""
    overrides = {"block_size": cfg.block_size} if cfg.block_size is not None else {}
    return preset(
        cfg.model, vocab_size=vocab_size, dropout=cfg.dropout, attention=cfg.attention, **overrides
    )


def build_optimizer(
    model: torch.nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.99),
    fused: bool = False,
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings (≥ 2-D) only, not on norms or biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), fused=fused)


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    sampler: BatchSampler,
    autocast: torch.autocast | nullcontext,
    *,
    grad_accum: int = 1,
    grad_clip: float = 1.0,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step over grad_accum micro-batches; (mean loss, grad norm) stay on device.

    grad_clip is the largest global gradient norm (0: no clipping).

    With a scaler (fp16, see `grad_scaler`) the loss is scaled before backward and the
    gradients unscaled before clipping, so the norm is the true one; a step whose gradients
    overflowed is skipped by the scaler and reports norm 0 (nothing was applied).
    """
    total = torch.zeros((), device=sampler.device)
    for micro in range(grad_accum):
        x, y = sampler.sample()  # (B, T) each
        with sync_gradients_if(model, micro == grad_accum - 1):
            with autocast:
                _, loss = model(x, y)
            loss = loss / grad_accum  # the micro-batches' gradients add up to the mean's
            (loss if scaler is None else scaler.scale(loss)).backward()
        total += loss.detach()
    if scaler is not None:
        scaler.unscale_(optimizer)  # clip (and report) the true gradients, not scaled ones
    # Under FSDP the gradients are shards (DTensors): clip_grad_norm_ sums the squares over all
    # ranks, so it clips by the global norm, and returns it as a DTensor.
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf)
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    if scaler is None:
        optimizer.step()
    else:  # skips the step if a gradient overflowed, and adapts the scale for the next one
        scaler.step(optimizer)
        scaler.update()
        norm = torch.where(norm.isfinite(), norm, torch.zeros_like(norm))  # no host sync
    optimizer.zero_grad(set_to_none=True)
    return total, norm


def timed_steps(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    sampler: BatchSampler,
    autocast: torch.autocast | nullcontext,
    steps: int,
    *,
    warmup: int = 1,
    grad_accum: int = 1,
    scaler: torch.amp.GradScaler | None = None,
) -> dict:
    """Time `steps` training steps after `warmup` untimed ones: tokens/s, ms/step, last loss."""
    start = time.perf_counter()
    for _ in range(warmup):
        train_step(model, optimizer, sampler, autocast, grad_accum=grad_accum, scaler=scaler)
    synchronize(sampler.device)
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        loss, _ = train_step(
            model, optimizer, sampler, autocast, grad_accum=grad_accum, scaler=scaler
        )
    loss = loss.item()  # waits for the last step
    synchronize(sampler.device)
    seconds = time.perf_counter() - start
    tokens = steps * grad_accum * sampler.batch_size * sampler.block_size
    return {
        "tokens_per_s": tokens / seconds,
        "ms_per_step": 1e3 * seconds / steps,
        "warmup_s": warmup_s,
        "loss": loss,
    }


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN or infinite; the message says what to try."""


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    """What `train` returns: the model (eval mode), its tokenizer, the records, the run folder."""

    model: GPT
    tokenizer: Tokenizer
    history: list[dict]
    out_dir: Path


def train(
    cfg: TrainConfig, resume: bool = True, progress: bool = True, max_steps: int | None = None
) -> TrainResult:
    """Train (or resume, or just load) the run described by cfg; see the module docstring.

    max_steps stops this call after that step while the schedule still spans cfg.max_steps:
    call again to resume. A run already finished with the same config is loaded, not retrained.
    """
    stop = cfg.max_steps if max_steps is None else max_steps
    if not 1 <= stop <= cfg.max_steps:
        raise ValueError(
            f"cannot stop at step {stop}: run {cfg.run_name} has max_steps "
            f"{cfg.max_steps}, so stop at a step from 1 to {cfg.max_steps}"
        )
    check_run_folder(cfg.out_dir)  # before anything is written or deleted there
    if resume and is_finished(cfg):
        finished = load_finished(cfg)
        if finished is not None:
            return finished
    place, owns_group = setup_distributed(resolve_device(cfg.device).type)
    new_folder = not cfg.out_dir.exists()
    try:
        with folder_lock(cfg.out_dir) if place.main else nullcontext():  # one writer per run
            result = _train(cfg, place, resume, progress, stop)
        barrier(place)  # no rank tears the group down while rank 0 is still saving
        return result
    except FolderLocked:  # the folder and its lock are another process's
        raise
    except BaseException:
        if new_folder and place.main:  # refused before it wrote anything: leave no trace
            remove_unused_folder(cfg.out_dir)
        raise
    finally:
        leave(owns_group)


def load_finished(cfg: TrainConfig) -> TrainResult | None:
    """The finished run's model, or None (with a warning) if its files are damaged."""
    try:
        model, tokenizer = load_model(cfg.out_dir / "model")
    except ValueError as error:
        warnings.warn(
            f"{error}; training resumes from the run's checkpoint to write it again", stacklevel=3
        )
        return None
    device = resolve_device(cfg.device, env_int("LOCAL_RANK", 0))
    return TrainResult(model.to(device), tokenizer, read_log(cfg.out_dir), cfg.out_dir)


def _load_data(cfg: TrainConfig, place: Distributed) -> PackedData:
    """Rank 0 prepares the packed tokens if needed (a no-op when cached); the others load them.

    Damaged packed files (cut short, changed) are an error that names them, not rebuilt
    silently: `python -m tinylm data` rebuilds them.
    """
    packed = data.prepare(cfg.tokenizer, repair=False) if place.main else None
    barrier(place)  # the other ranks read the files only once rank 0 has checked or written them
    return packed if packed is not None else data.load_packed(cfg.tokenizer)


def training_split(cfg: TrainConfig, packed: PackedData) -> np.ndarray:
    """The training tokens a run draws its batches from: all, or the first cfg.train_tokens."""
    if cfg.train_tokens is None:
        return packed.train
    if cfg.train_tokens > len(packed.train):
        raise ValueError(
            f"TrainConfig.train_tokens is {cfg.train_tokens:,}, but the {cfg.tokenizer} training "
            f"split has only {len(packed.train):,} tokens: lower it, or set it to None for all"
        )
    return packed.train[: cfg.train_tokens]


@dataclass
class _Setup:
    """What `_setup` builds for the loop: the model, its optimizer and data, the run so far."""

    model: torch.nn.Module  # the GPT (its shards under FSDP): what is saved and returned
    train_model: torch.nn.Module  # the same model compiled (use_compile), in DDP across processes
    optimizer: torch.optim.AdamW
    scaler: torch.amp.GradScaler | None  # fp16 only
    autocast: torch.autocast | nullcontext
    sampler: BatchSampler  # this process's training batches
    evals: dict[str, list[tuple[torch.Tensor, torch.Tensor]]]  # record key: its fixed batches
    tokenizer: Tokenizer
    data_meta: dict  # the packed data's meta.json, kept in every checkpoint
    device: torch.device
    fsdp: bool  # the model, its gradients and the optimizer state are sharded across processes
    grad_accum: int  # micro-batches per step (more than cfg's where the GPU is too small)
    layout: dict[str, int]  # micro_batch and grad_accum, logged in every record
    tokens_per_step: int  # over all processes
    flops: int  # per token trained on (model.flops_per_token)
    peak: float | None  # the processes' summed peak FLOP/s, None off known GPUs
    step: int  # the step to start from: 0, or the checkpoint's
    elapsed: float  # seconds trained before this call
    history: list[dict]  # the log's records up to `step`


def _train(
    cfg: TrainConfig, place: Distributed, resume: bool, progress: bool, stop: int
) -> TrainResult:
    """The loop, from `_setup`'s step to `stop`: step, log, evaluate and save.

    A record every log_interval steps; an evaluation and a checkpoint every eval_interval steps
    and at `stop`; the final model once the run reaches cfg.max_steps.
    """
    run = _setup(cfg, place, resume)
    model, train_model, optimizer, step = run.model, run.train_model, run.optimizer, run.step
    bar = progress_bar(
        total=cfg.max_steps,
        initial=step,
        desc=cfg.run_name,
        unit="step",
        disable=not (progress and place.main),
    )
    t0 = time.perf_counter()
    if step == 0:  # the loss at initialisation (≈ ln vocab_size)
        record = _record(0, 0, lr_at(0, **cfg.schedule), run.elapsed, run.layout)
        _evaluate(record, train_model, run.evals, run.autocast, cfg)
        _log(record, run.history, bar, place, cfg.out_dir)
    model.train()
    loss_sum = torch.zeros((), device=run.device)  # summed on the device: no host sync a step
    norm_sum = torch.zeros((), device=run.device)
    steps_since, t_interval = 0, time.perf_counter()
    while step < stop:
        lr = lr_at(step, **cfg.schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, norm = train_step(
            train_model,
            optimizer,
            run.sampler,
            run.autocast,
            grad_accum=run.grad_accum,
            grad_clip=cfg.grad_clip,
            scaler=run.scaler,
        )
        loss_sum += loss
        norm_sum += norm
        steps_since += 1
        step += 1
        bar.update()
        is_eval = step % cfg.eval_interval == 0 or step == stop
        if step % cfg.log_interval and not is_eval:
            continue
        train_loss = loss_sum.item() / steps_since  # the host waits for the GPU here, then
        seconds = time.perf_counter() - t_interval  # the clock includes all queued work
        tokens_per_s = steps_since * run.tokens_per_step / seconds
        record = _record(
            step,
            step * run.tokens_per_step,
            lr,
            run.elapsed + time.perf_counter() - t0,
            run.layout,
            train_loss=train_loss,
            grad_norm=norm_sum.item() / steps_since,
            tokens_per_s=tokens_per_s,
            mfu=mfu(run.flops, tokens_per_s, run.peak),
        )
        _check_finite(record, cfg, "train_loss", "grad_norm")
        if is_eval:
            _evaluate(record, train_model, run.evals, run.autocast, cfg)
            _save(run, cfg, place, step, run.elapsed + time.perf_counter() - t0)
        _log(record, run.history, bar, place, cfg.out_dir)
        loss_sum.zero_()
        norm_sum.zero_()
        steps_since, t_interval = 0, time.perf_counter()
    bar.close()
    if run.fsdp:  # every rank returns the whole model, as under DDP
        model = gather_full_model(model)
    if place.main and step == cfg.max_steps:
        save_model(cfg.out_dir, model, run.tokenizer, cfg)
    return TrainResult(model.eval(), run.tokenizer, run.history, cfg.out_dir)


def _setup(cfg: TrainConfig, place: Distributed, resume: bool) -> _Setup:
    """The device, data, model, optimizer and batches; resumed from the checkpoint if there is one.

    The order is fixed: the seed, then the model's initialisation (unless it is loaded), so a
    run draws the same numbers every time.
    """
    device = resolve_device(cfg.device, place.local_rank)
    if device.type == "cuda":  # TensorFloat-32 for any matmul left in fp32
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed + place.rank)  # dropout differs by rank; rank 0's init is copied
    packed = _load_data(cfg, place)
    config = build_model_config(cfg, packed.tokenizer.vocab_size)
    # cfg's batch, split into more micro-batches where it does not fit this process's GPU
    micro_batch, grad_accum = micro_batch_layout(cfg, config, device, place.world_size)
    checkpoint, state, model = _starting_model(cfg, config, resume)
    model.to(device)
    fsdp = cfg.parallel == "fsdp" and place.world_size > 1
    if fsdp:  # each rank now keeps 1/world_size of every tensor
        model = shard_model(model, device, use_bf16(device, cfg.dtype))
    optimizer = build_optimizer(
        model,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        betas=cfg.betas,
        fused=device.type == "cuda",
    )  # on the shards, if any
    train_tokens = training_split(cfg, packed)
    sampler = BatchSampler(
        train_tokens,
        micro_batch,
        config.block_size,
        device,
        seed=cfg.seed + place.rank,  # each rank draws its own batches
        start_token=window_start(cfg, packed.tokenizer.eot_id),
        resident=use_resident_data(cfg, device),
    )  # GPU: corpus on the GPU
    scaler = grad_scaler(device, cfg.dtype)  # fp16 only
    if state:
        _restore(state, checkpoint, place, optimizer, sampler, scaler, fsdp, device)
    history = _start_log(cfg.out_dir, state, place)
    tokens_per_step = micro_batch * config.block_size * grad_accum * place.world_size
    peak = peak_flops(device)
    return _Setup(
        model=model,
        train_model=_wrap(model, cfg, device, config.block_size, place, fsdp),
        optimizer=optimizer,
        scaler=scaler,
        autocast=autocast_context(device, cfg.dtype),
        sampler=sampler,
        evals={
            key: _split_batches(
                fixed_batches(tokens, cfg, config.block_size, device, packed.tokenizer.eot_id),
                micro_batch,
            )
            for key, tokens in (("val_loss", packed.val), ("eval_train_loss", train_tokens))
        },
        tokenizer=packed.tokenizer,
        data_meta=packed.meta,
        device=device,
        fsdp=fsdp,
        grad_accum=grad_accum,
        layout={"micro_batch": micro_batch, "grad_accum": grad_accum},
        tokens_per_step=tokens_per_step,
        flops=flops_per_token(config),
        peak=None if peak is None else peak * place.world_size,
        step=state["step"] if state else 0,
        elapsed=state["elapsed_s"] if state else 0.0,
        history=history,
    )


def _restore(
    state: dict,
    checkpoint: Path,
    place: Distributed,
    optimizer: torch.optim.Optimizer,
    sampler: BatchSampler,
    scaler: torch.amp.GradScaler | None,
    fsdp: bool,
    device: torch.device,
) -> None:
    """Put the optimizer, every random generator and the fp16 scaler back as they were saved."""
    _check_world_size(state, checkpoint, place)
    optimizer.load_state_dict(
        shard_optimizer_state(state["optimizer"], optimizer) if fsdp else state["optimizer"]
    )
    set_rng_state(state["rng"][place.rank], sampler, device)
    if scaler is not None and "scaler" in state:  # older checkpoints have none
        scaler.load_state_dict(state["scaler"])


def _start_log(out: Path, state: dict | None, place: Distributed) -> list[dict]:
    """The log's records up to the checkpoint's step (rewritten so), or a new run's empty log.

    A new run first removes what an earlier one wrote in the folder (`start_over`).
    """
    history = read_log(out, state["step"]) if state else []
    if place.main:
        if not state:
            start_over(out)
        write_log(out, history)
    return history


def _wrap(
    model: torch.nn.Module,
    cfg: TrainConfig,
    device: torch.device,
    block_size: int,
    place: Distributed,
    fsdp: bool,
) -> torch.nn.Module:
    """The model as the loop trains it: compiled where that pays off, in DDP across processes."""
    if use_compile(cfg, device, block_size):
        model = torch.compile(model, backend=os.environ.get(COMPILE_BACKEND_ENV, "inductor"))
    if place.world_size > 1 and not fsdp:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model


def _evaluate(
    record: dict,
    train_model: torch.nn.Module,
    evals: dict[str, list[tuple[torch.Tensor, torch.Tensor]]],
    autocast: torch.autocast | nullcontext,
    cfg: TrainConfig,
) -> None:
    """Score the fixed batches into record; every rank scores the same ones, staying in step.

    Outside DDP (`.module`): evaluation has no gradients to synchronise.
    """
    model = train_model.module if isinstance(train_model, DDP) else train_model
    for key, batches in evals.items():
        record[key] = estimate_loss(model, batches, autocast)
    _check_finite(record, cfg, "val_loss")


def _save(run: _Setup, cfg: TrainConfig, place: Distributed, step: int, elapsed: float) -> None:
    """Write the checkpoint: the model, the optimizer, every rank's generators, the scaler.

    Under FSDP every rank takes part in gathering the whole model and optimizer state; rank 0
    writes the same files as without FSDP.
    """
    rng_states = gather_rng_states(rng_state(run.sampler, run.device), place)
    model = gather_full_model(run.model) if run.fsdp else run.model
    optimizer_state = (
        gather_optimizer_state(run.optimizer, place.main)
        if run.fsdp
        else run.optimizer.state_dict()
    )
    if place.main:
        scaler_state = {"scaler": run.scaler.state_dict()} if run.scaler is not None else {}
        state = {
            "step": step,
            "optimizer": optimizer_state,
            "rng": rng_states,
            "train_config": asdict(cfg),
            "data_meta": run.data_meta,
            "elapsed_s": elapsed,
            **scaler_state,
        }
        save_checkpoint(cfg.out_dir, model, state)


def _log(record: dict, history: list[dict], bar: std.tqdm, place: Distributed, out: Path) -> None:
    """Keep the record, and on rank 0 append it to log.jsonl and show its losses on the bar."""
    history.append(record)
    if place.main:
        append_log(out, record)
        bar.set_postfix(
            {k: f"{record[k]:.3f}" for k in ("train_loss", "val_loss") if record[k] is not None}
        )


def _starting_model(
    cfg: TrainConfig, config: GPTConfig, resume: bool
) -> tuple[Path | None, dict | None, GPT]:
    """(checkpoint folder, trainer state, model) to resume from, or (None, None, a new GPT).

    Refuses a folder trained with another config (tinylm.run_files.check_resumable), including
    a finished model that starting over would delete.
    """
    out = cfg.out_dir
    loaded = load_checkpoint(out, cfg) if resume else None
    if loaded is not None:
        checkpoint, state, model = loaded
        check_resumable(checkpoint, state["train_config"], cfg, model.config, config)
        return checkpoint, state, model
    if resume and (finished := saved_config(out)) is not None:
        check_resumable(out / "model", finished, cfg)
    return None, None, GPT(config)


def _check_world_size(state: dict, checkpoint: Path, place: Distributed) -> None:
    """Refuse to resume a checkpoint written by another number of processes."""
    if len(state["rng"]) != place.world_size:
        raise ValueError(
            f"{checkpoint} was written by {len(state['rng'])} processes; resume "
            "with as many (torchrun --nproc_per_node), or start over with "
            "resume=False"
        )


def _split_batches(
    batches: list[tuple[torch.Tensor, torch.Tensor]], rows: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed eval batches cut into micro-batches of `rows`: the same text and mean loss."""
    return [part for x, y in batches for part in zip(x.split(rows), y.split(rows), strict=True)]


def _record(
    step: int, tokens: int, lr: float, elapsed: float, layout: dict[str, int], **measured: float
) -> dict:
    """A log record with every field: those measured, None where they do not apply.

    layout: the micro_batch and grad_accum this process trains with (`micro_batch_layout`).
    """
    return {
        "step": step,
        "tokens": tokens,
        "lr": lr,
        "train_loss": None,
        "eval_train_loss": None,
        "val_loss": None,
        "grad_norm": None,
        "tokens_per_s": None,
        "mfu": None,
        "elapsed_s": elapsed,
        **layout,
        **measured,  # a field given again keeps its place, with the measured value
    }


def _check_finite(record: dict, cfg: TrainConfig, *keys: str) -> None:
    """Stop the run on a NaN or infinite value; the last checkpoint was saved before it."""
    for key in keys:
        value = record[key]
        if math.isfinite(value):
            continue
        checkpoint = find_checkpoint(cfg.out_dir)
        kept = (
            f"the last good checkpoint ({checkpoint}) is kept, and running again resumes from it"
            if checkpoint
            else "no checkpoint had been written yet"
        )
        raise TrainingDiverged(
            f"{key} became {value} at step {record['step']} (lr {record['lr']:.2e}); the run "
            f"stopped and {kept}. Try a lower lr (now {cfg.lr:g}), more warmup_steps (now "
            f"{cfg.warmup_steps}) or a smaller grad_clip (now {cfg.grad_clip:g}), and check the "
            "data for corrupt or out-of-range token ids."
        )
